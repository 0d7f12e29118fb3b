"""Content and style images the style tests draw themselves."""

import numpy as np
from PIL import Image, ImageDraw


def house_scene(n: int = 96) -> Image.Image:
    """Sky, grass, a house with a red roof, a sun: clear edges to keep."""
    im = Image.new("RGB", (n, n), (135, 200, 235))
    d = ImageDraw.Draw(im)
    d.rectangle([0, n * 3 // 4, n, n], fill=(60, 150, 60))
    d.rectangle([n // 4, n // 2, n * 3 // 4, n * 3 // 4 + 4], fill=(200, 180, 140))
    d.polygon([(n // 5, n // 2), (n // 2, n // 4), (n * 4 // 5, n // 2)], fill=(160, 40, 40))
    d.ellipse([n * 3 // 4, n // 12, n * 3 // 4 + n // 6, n // 12 + n // 6], fill=(250, 220, 60))
    return im


def stripes(n: int = 96, seed: int = 0) -> Image.Image:
    """Diagonal orange and deep-blue stripes with grain: a texture of strong colours."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n]
    band = ((x + y) // 8) % 2 == 1
    arr = np.where(band[..., None], np.array([230, 120, 20]), np.array([40, 20, 120]))
    arr = np.clip(arr + rng.integers(-25, 25, arr.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def edges(image: Image.Image) -> np.ndarray:
    """Gradient magnitude of the luminance."""
    g = np.asarray(image.convert("L"), dtype=np.float32)
    gx = np.zeros_like(g)
    gy = np.zeros_like(g)
    gx[:, 1:-1] = g[:, 2:] - g[:, :-2]
    gy[1:-1, :] = g[2:, :] - g[:-2, :]
    return np.hypot(gx, gy)


def edge_correlation(a: Image.Image, b: Image.Image, blur: int = 2) -> float:
    """Correlation of the (slightly blurred) edge maps: does `a` keep `b`'s structure?"""
    from PIL import ImageFilter

    ea = edges(a.filter(ImageFilter.GaussianBlur(blur)))
    eb = edges(b.resize(a.size).filter(ImageFilter.GaussianBlur(blur)))
    return float(np.corrcoef(ea.ravel(), eb.ravel())[0, 1])


def mean_colour(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 3).mean(0)
