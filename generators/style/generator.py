"""The style-transfer generator the worker runs (family 'style').

    request.task == Task.STYLIZE
    request.init_image   the content image
    request.style_image  the style image
    request.options      {"method": "gatys" | "adain", "keep_colors": bool, "decoder": path}
    request.strength     gatys: style weight multiplier (1 = default); adain: alpha (0..1]
    request.steps        gatys: optimiser iterations over all scales

The output has the request's width and height (the content image scaled to
them). The result's parameters say which VGG weights ran, so a result made
with random weights is never passed off as the real thing.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from generators.base import (
    GenerationRequest,
    GenerationResult,
    Generator,
    ProgressCallback,
    UnsupportedTask,
)
from generators.style.adain import AdaIN, build_decoder
from generators.style.gatys import GatysConfig, stylize as gatys_stylize
from generators.style.vgg import load_vgg19

RANDOM_NOTE = ("No ImageNet VGG-19 weights were at hand, so this ran on fixed-seed random "
               "VGG weights: textures and colours transfer, finer style less so.")


def to_tensor01(image: Image.Image, size: tuple[int, int] | None = None) -> torch.Tensor:
    image = image.convert("RGB")
    if size is not None and image.size != size:
        image = image.resize(size, Image.LANCZOS)
    arr = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()


def to_pil(x: torch.Tensor) -> Image.Image:
    arr = (x[0].detach().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def keep_content_colors(result: Image.Image, content: Image.Image) -> Image.Image:
    """The result's luminance with the content's colour (YCbCr chroma)."""
    y, _, _ = result.convert("YCbCr").split()
    _, cb, cr = content.resize(result.size, Image.LANCZOS).convert("YCbCr").split()
    return Image.merge("YCbCr", (y, cb, cr)).convert("RGB")


class StyleGenerator(Generator):
    family = "style"

    def __init__(self, vgg, device: torch.device):
        super().__init__(model_revision=f"vgg19-{vgg.weights_name}")
        self.vgg = vgg.to(device)
        self.device = device
        self._decoders: dict[str, torch.nn.Module] = {}

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype) -> "StyleGenerator":
        # `ref` is "vgg19" (configured file, cache or download) or a path to the weights file.
        vgg = load_vgg19(None if ref in ("vgg19", "", None) else ref)
        return cls(vgg, device)

    @property
    def random_weights(self) -> bool:
        return self.vgg.weights_name.startswith("random")

    def stylize(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        method = request.options.get("method", "gatys")
        if request.style_image is None:
            raise UnsupportedTask(f"The {method} method needs a style image (or a preset).")
        size = (request.width, request.height)
        content = to_tensor01(request.init_image, size).to(self.device)
        # The style image keeps its own aspect, scaled to about the output's area.
        sw, sh = request.style_image.size
        scale = (size[0] * size[1] / (sw * sh)) ** 0.5
        style = to_tensor01(request.style_image,
                            (max(16, round(sw * scale)), max(16, round(sh * scale)))).to(self.device)
        params: dict = {"method": method, "vgg": self.vgg.weights_name}
        if self.random_weights:
            params["note"] = RANDOM_NOTE
        if method == "gatys":
            cfg = GatysConfig(steps=request.steps, scales=3 if max(size) >= 384 else 2)
            out = gatys_stylize(self.vgg, content, style, cfg, strength=request.strength,
                                progress=progress)
            image = to_pil(out.image)
            params.update(scales=cfg.scales, first_style_loss=round(out.first_style_loss, 6),
                          final_style_loss=round(out.style_losses[-1], 6) if out.style_losses else None)
        elif method == "adain":
            model = AdaIN(self.vgg, self._decoder(request.options.get("decoder")))
            progress(0, 1)
            image = to_pil(model(content, style, alpha=min(1.0, max(0.0, request.strength))))
            progress(1, 1)
        else:
            raise UnsupportedTask(f"Unknown style-transfer method {method!r}: use gatys or adain.")
        if request.options.get("keep_colors"):
            image = keep_content_colors(image, request.init_image)
        return GenerationResult(images=[image] * request.count, seeds=list(request.seeds), params=params)

    def _decoder(self, path: str | None) -> torch.nn.Module:
        if self.random_weights:
            raise UnsupportedTask(
                "AdaIN needs ImageNet VGG-19 weights, and none are at hand (no vgg19_weights "
                "setting, nothing in the cache, no network). Use --method gatys, or set vgg19_weights.")
        if not path:
            raise UnsupportedTask(
                "AdaIN needs its decoder weights: set adain_decoder (ARTBOT_ADAIN_DECODER) to a "
                "decoder .pth trained for torchvision's VGG-19, or use --method gatys.")
        if path not in self._decoders:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except FileNotFoundError:
                raise UnsupportedTask(f"AdaIN decoder file {path} does not exist.") from None
            decoder = build_decoder()
            decoder.load_state_dict(state)
            self._decoders[path] = decoder.to(self.device).eval().requires_grad_(False)
        return self._decoders[path]
