"""Small pictures of an image while it forms, for the job's progress message.

A family hands `progress(step, total, preview)` a `preview(i)` that makes the
picture of image i only when called (see generators/base.py): the worker calls
it at most once every 1.5 s a job, so the steps in between pay nothing. The
ways to make one, cheapest first:

- **Linear** (latent diffusion, no download): each latent channel adds a fixed
  amount of red, green and blue. The factors are the published fits of each
  latent format (ComfyUI's `latent_rgb_factors`, a least-squares fit of decoded
  images against latents) and apply to the latents as the denoiser sees them,
  which is what diffusers hands the step callback. A format they do not fit
  (a new VAE, the tiny test models) gets its first three channels, each
  normalised: a picture, never an error.
- **AutoencoderTiny** (TAESD, TAESDXL, TAESD3, TAEF1 in diffusers' format), when
  the operator names one (`preview_vae` in the model's catalogue entry): a
  distilled decoder of ~1 M parameters that shows the picture nearly as the real
  VAE would, for a few milliseconds on a GPU (a CPU takes a good part of a second;
  docs/benchmarks.md).
- **Pixel space** (the bundled emoji-diffusion): the sampler's own estimate of
  the clean image at this step, as it is.

Latents are the noisy ones of the step (diffusers' callback has no clean
estimate for most schedulers), so the first previews are mostly noise and the
picture sharpens as the steps go: the Midjourney look, for free.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from PIL import Image

from generators.base import PreviewFn

log = logging.getLogger(__name__)

# Previews are enlarged (by whole factors) to about this many pixels on the longer
# side, the size the worker sends (worker.runner.PREVIEW_SIDE): a 64x64 latent grid
# would be a stamp in Discord.
ENLARGE_TO = 256


@dataclass(frozen=True)
class LatentFormat:
    """How the latents of one VAE family map to colour, approximately."""

    name: str
    # One row per latent channel: what a unit of it adds to (R, G, B), in [-1, 1] units.
    factors: tuple[tuple[float, float, float], ...]
    # (R, G, B) added to every pixel.
    bias: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def channels(self) -> int:
        return len(self.factors)


# The VAE of SD 1.x and 2.x (latents scaled by 0.18215).
SD1 = LatentFormat("sd1", (
    (0.3512, 0.2297, 0.3227),
    (0.3250, 0.4974, 0.2350),
    (-0.2829, 0.1762, 0.2721),
    (-0.2120, -0.2616, -0.7177),
))
# SDXL's VAE (scaled by 0.13025), also PixArt-Σ's.
SDXL = LatentFormat("sdxl", (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
), bias=(0.1084, -0.0175, -0.0011))
# SD3's 16-channel VAE (shifted by 0.0609, scaled by 1.5305).
SD3 = LatentFormat("sd3", (
    (-0.0922, -0.0175, 0.0749),
    (0.0311, 0.0633, 0.0954),
    (0.1994, 0.0927, 0.0458),
    (0.0856, 0.0339, 0.0902),
    (0.0587, 0.0272, -0.0496),
    (-0.0006, 0.1104, 0.0309),
    (0.0978, 0.0306, 0.0427),
    (-0.0042, 0.1038, 0.1358),
    (-0.0194, 0.0020, 0.0669),
    (-0.0488, 0.0130, -0.0268),
    (0.0922, 0.0988, 0.0951),
    (-0.0278, 0.0524, -0.0542),
    (0.0332, 0.0456, 0.0895),
    (-0.0069, -0.0030, -0.0810),
    (-0.0596, -0.0465, -0.0293),
    (-0.1448, -0.1463, -0.1189),
), bias=(0.2394, 0.2135, 0.1925))
# Flux's 16-channel VAE (shifted by 0.1159, scaled by 0.3611), before 2x2 packing.
FLUX = LatentFormat("flux", (
    (-0.0346, 0.0244, 0.0681),
    (0.0034, 0.0210, 0.0687),
    (0.0275, -0.0668, -0.0433),
    (-0.0174, 0.0160, 0.0617),
    (0.0859, 0.0721, 0.0329),
    (0.0004, 0.0383, 0.0115),
    (0.0405, 0.0861, 0.0915),
    (-0.0236, -0.0185, -0.0259),
    (-0.0245, 0.0250, 0.1180),
    (0.1008, 0.0755, -0.0421),
    (-0.0515, 0.0201, 0.0011),
    (0.0428, -0.0012, -0.0036),
    (0.0817, 0.0765, 0.0749),
    (-0.1264, -0.0522, -0.1103),
    (-0.0280, -0.0881, -0.0499),
    (-0.1262, -0.0982, -0.0778),
), bias=(-0.0329, -0.0718, -0.0851))


def latent_format(pipe) -> LatentFormat | None:
    """The latent format of a diffusers pipeline: by its class (image-to-image variants
    included), else by its VAE's scaling, which tells the VAE families apart. None:
    one these factors do not know."""
    name = type(pipe).__name__
    if name.startswith("Flux"):
        return FLUX
    if name.startswith("StableDiffusion3"):
        return SD3
    if name.startswith("StableDiffusionXL") or (
            hasattr(pipe, "unet") and getattr(pipe, "text_encoder_2", None) is not None):
        return SDXL
    config = getattr(getattr(pipe, "vae", None), "config", None)
    scaling = getattr(config, "scaling_factor", None)
    channels = getattr(config, "latent_channels", None)
    if channels == 4 and scaling is not None:
        return SDXL if math.isclose(scaling, 0.13025, rel_tol=1e-3) else SD1
    if name.startswith("StableDiffusion"):
        return SD1
    return None


# -- from latents to a picture ---------------------------------------------------


def unpack_latents(latents: torch.Tensor, size: tuple[int, int] | None,
                   vae_scale_factor: int) -> torch.Tensor:
    """Flux's packed latents (B, (h/2)(w/2), 4C) -> the latent image (B, C, h, w).

    The pipeline packs each 2x2 patch of the latent image into one token; `size`
    (height, width) of the image being drawn gives the grid, as the pipeline's own
    unpacking does. Without it, the grid is the most nearly square one with that
    many tokens (right for square images, which is Flux's default).
    """
    B, tokens, packed = latents.shape
    if size is not None:
        rows = int(size[0]) // (vae_scale_factor * 2)
        cols = int(size[1]) // (vae_scale_factor * 2)
    else:
        rows = next(r for r in range(math.isqrt(tokens), 0, -1) if tokens % r == 0)
        cols = tokens // rows
    if rows * cols != tokens:
        raise ValueError(f"{tokens} packed latents do not make a {rows}x{cols} grid")
    x = latents.view(B, rows, cols, packed // 4, 2, 2)  # (B, h/2, w/2, C, 2, 2)
    x = x.permute(0, 3, 1, 4, 2, 5)  # (B, C, h/2, 2, w/2, 2)
    return x.reshape(B, packed // 4, rows * 2, cols * 2)


def _rgb_image(rgb: torch.Tensor) -> Image.Image:
    """(3, H, W) in about [-1, 1] -> a PIL RGB image, enlarged to about ENLARGE_TO."""
    pixels = ((rgb.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    image = Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy(), "RGB")
    factor = ENLARGE_TO // max(image.size)
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.BILINEAR)
    return image


def linear_preview(latent: torch.Tensor, fmt: LatentFormat | None) -> Image.Image:
    """One latent image (C, h, w) as the format's factors colour it, or, for a format
    they do not fit, its first three channels each scaled to its own spread."""
    latent = latent.float()
    if fmt is not None and fmt.channels == latent.shape[0]:
        factors = torch.tensor(fmt.factors, device=latent.device)  # (C, 3)
        bias = torch.tensor(fmt.bias, device=latent.device)
        rgb = torch.einsum("chw,cr->rhw", latent, factors) + bias[:, None, None]  # (3, h, w)
    else:
        first = latent[torch.arange(3, device=latent.device) % latent.shape[0]]  # (3, h, w)
        mean = first.mean(dim=(1, 2), keepdim=True)
        spread = first.std(dim=(1, 2), keepdim=True).clamp(min=1e-6)
        rgb = (first - mean) / (2 * spread)
    return _rgb_image(rgb)


def tiny_vae_preview(vae, latent: torch.Tensor) -> Image.Image:
    """One latent image (C, h, w) decoded by an AutoencoderTiny, at about the size shown.

    As a pipeline would with it as its VAE: unscaled by its own scaling and shift.
    The published tiny VAEs have 1 and 0 there (they decode the latents as the
    denoiser sees them), so this is their config's business, not a guess here.

    The latents are first averaged down (by a whole factor) to what decodes to about
    ENLARGE_TO pixels: the worker sends no more than that, and decoding a 1024 px
    image to show 256 would cost 16 times as much (seconds on a CPU) for nothing.
    """
    config = vae.config
    up = config.upsampling_scaling_factor ** (len(config.decoder_block_out_channels) - 1)
    z = latent[None].to(device=vae.device, dtype=vae.dtype)  # (1, C, h, w)
    shrink = max(1, max(z.shape[-2:]) * up // ENLARGE_TO)
    if shrink > 1:
        z = torch.nn.functional.interpolate(
            z, size=(max(1, z.shape[-2] // shrink), max(1, z.shape[-1] // shrink)), mode="area")
    z = z / config.scaling_factor + getattr(config, "shift_factor", 0.0)
    image = vae.decode(z).sample[0]  # (3, up * h / shrink, up * w / shrink) in [-1, 1]
    return _rgb_image(image)


def diffusion_preview(pipe, latents: torch.Tensor, *, preview_vae=None,
                      size: tuple[int, int] | None = None) -> PreviewFn:
    """`preview(i)` of a diffusers pipeline's step: image i of `latents` as the step
    callback has them ((B, C, h, w), or Flux's packed (B, tokens, 4C); with guidance,
    already the guided batch of one row per image), decoded only when called.

    `preview_vae`: an AutoencoderTiny for this pipeline's latents (`load_preview_vae`);
    without one, the linear preview. `size`: (height, width) of the image, which
    Flux's packed latents need to be unpacked when they are not square.
    """
    fmt = latent_format(pipe)
    factor = int(getattr(pipe, "vae_scale_factor", 8) or 8)

    @torch.inference_mode()
    def preview(i: int) -> Image.Image:
        latent = latents[i][None]  # (1, C, h, w) or (1, tokens, 4C)
        if latent.ndim == 3:
            latent = unpack_latents(latent, size, factor)
        if preview_vae is not None and preview_vae.config.latent_channels == latent.shape[1]:
            return tiny_vae_preview(preview_vae, latent[0])
        return linear_preview(latent[0], fmt)

    return preview


def pixel_preview(x0: torch.Tensor) -> PreviewFn:
    """`preview(i)` of a pixel-space sampler's step: image i of its clean estimate x0
    (B, 3, S, S) in [-1, 1], enlarged."""

    def preview(i: int) -> Image.Image:
        return _rgb_image(x0[i])

    return preview


def load_preview_vae(ref: str, device: torch.device, dtype: torch.dtype, pipe):
    """The operator's AutoencoderTiny (a diffusers folder such as madebyollin/taesdxl's),
    on the pipeline's device and dtype, or None when it cannot serve this pipeline.

    A preview is a nicety: a folder that does not load, or a tiny VAE made for
    latents of another width, is logged and the linear preview is used instead,
    so a wrong path never fails a job.
    """
    from diffusers import AutoencoderTiny

    try:
        vae = AutoencoderTiny.from_pretrained(ref).to(device=device, dtype=dtype).eval()
    except Exception as exc:  # noqa: BLE001 - any failure to load means "no tiny VAE"
        log.warning("preview_vae %s did not load (%s); previews use the linear approximation",
                    ref, exc)
        return None
    wanted = getattr(getattr(getattr(pipe, "vae", None), "config", None), "latent_channels", None)
    if wanted is not None and vae.config.latent_channels != wanted:
        log.warning("preview_vae %s decodes %d latent channels, the model has %d; previews use "
                    "the linear approximation", ref, vae.config.latent_channels, wanted)
        return None
    return vae
