"""The canvas, mask and paste-back of zooming out and panning (outpainting), without torch.

A zoom out or pan puts the image on a larger canvas, `pad` = (left, top, right,
bottom) pixels added around it, and asks a model to fill the new border:

    canvas = extend_canvas(image, pad)      # the border started from the image's edges
    mask = outpaint_mask(image.size, pad)   # white: the new area, to be filled
    filled = <inpainting or image to image of canvas, mask>
    result = paste_back(filled, image, pad) # the old pixels exactly, the seam feathered

The new border starts as the image's edge pixels carried outwards and blurred,
so that image to image (which keeps much of what it is given) has colours to
start from rather than black. `paste_back` puts the original's pixels back
unchanged and blends, over the first `feather` pixels of the new area only,
from the edge-carried original into the generated fill, so that the centre
stays pixel-identical and the seam does not show.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from artbot.errors import InvalidRequest

# Pixels over which the new area blends from the original's edges into the fill.
FEATHER = 12
Pad = tuple[int, int, int, int]  # (left, top, right, bottom)


def parse_pad(pad) -> Pad:
    """`options["pad"]` as four whole, non-negative pixel counts, at least one of them > 0."""
    try:
        values = tuple(int(v) for v in pad)
    except (TypeError, ValueError):
        raise InvalidRequest("Zooming out or panning needs the pixels to add on each side "
                             "(left, top, right, bottom).") from None
    if len(values) != 4 or min(values) < 0 or max(values) == 0:
        raise InvalidRequest("Zooming out or panning adds 0 or more pixels on each of the four "
                             "sides, and more than 0 on at least one.")
    return values  # type: ignore[return-value]


def round_pad(size: tuple[int, int], pad: Pad, multiple: int) -> Pad:
    """`pad` with the right and bottom grown so that the canvas is a multiple of `multiple`
    on each side (a model's latents need it); the caller crops the extra off afterwards."""
    w, h = size
    left, top, right, bottom = pad
    width, height = w + left + right, h + top + bottom
    return (left, top, right + (-width) % multiple, bottom + (-height) % multiple)


def canvas_size(size: tuple[int, int], pad: Pad) -> tuple[int, int]:
    left, top, right, bottom = pad
    return size[0] + left + right, size[1] + top + bottom


def edge_extended(image: Image.Image, pad: Pad) -> Image.Image:
    """The image on its canvas with every new pixel a copy of the nearest edge pixel."""
    left, top, right, bottom = pad
    arr = np.asarray(image.convert("RGB"))  # (H, W, 3)
    return Image.fromarray(np.pad(arr, ((top, bottom), (left, right), (0, 0)), mode="edge"), "RGB")


def extend_canvas(image: Image.Image, pad: Pad) -> Image.Image:
    """The canvas to fill: the edge-extended image, its new area blurred (the streaks of
    the carried edges smoothed into colour fields), the original pasted back in the middle."""
    left, top, right, bottom = pad
    canvas = edge_extended(image, pad)
    radius = max(2.0, max(pad) / 4)
    blurred = canvas.filter(ImageFilter.GaussianBlur(radius))
    blurred.paste(image.convert("RGB"), (left, top))
    return blurred


def outpaint_mask(size: tuple[int, int], pad: Pad) -> Image.Image:
    """The mask an inpainting pipeline takes: white (255) over the new area, black over the
    original (which it keeps)."""
    left, top, _, _ = pad
    mask = Image.new("L", canvas_size(size, pad), 255)
    mask.paste(0, (left, top, left + size[0], top + size[1]))
    return mask


def distance_outside(size: tuple[int, int], pad: Pad) -> np.ndarray:
    """(H, W) of the canvas: how many pixels each lies outside the original's rectangle
    (0 inside it, 1 for the first ring of new pixels, ...; the larger of the two axes)."""
    w, h = size
    left, top, _, _ = pad
    width, height = canvas_size(size, pad)
    xs = np.arange(width) - left
    ys = np.arange(height) - top
    dx = np.maximum(np.maximum(-xs, xs - (w - 1)), 0)
    dy = np.maximum(np.maximum(-ys, ys - (h - 1)), 0)
    return np.maximum(dx[None, :], dy[:, None])


def paste_back(filled: Image.Image, image: Image.Image, pad: Pad, feather: int = FEATHER
               ) -> Image.Image:
    """The final canvas: the original's pixels exactly at (left, top); in the new area, a
    linear blend over `feather` pixels from the edge-extended original (weight 1 - d / (feather
    + 1) at d pixels out) into `filled`; beyond it, `filled` alone."""
    size = canvas_size(image.size, pad)
    if filled.size != size:
        filled = filled.resize(size, Image.LANCZOS)
    fill = np.asarray(filled.convert("RGB"), dtype=np.float32)
    edges = np.asarray(edge_extended(image, pad), dtype=np.float32)
    d = distance_outside(image.size, pad).astype(np.float32)
    keep = np.clip(1.0 - d / (feather + 1), 0.0, 1.0)[..., None] if feather > 0 else \
        (d == 0).astype(np.float32)[..., None]
    out = edges * keep + fill * (1.0 - keep)
    result = Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")
    result.paste(image.convert("RGB"), (pad[0], pad[1]))  # exactly, whatever the arithmetic did
    return result
