"""Random-weight diffusers pipelines with the real SD 1.5, SDXL and SD-Turbo shapes.

The configurations below are those of the models' own `config.json` files
(stable-diffusion-v1-5, stable-diffusion-xl-base-1.0, sd-turbo), written out here
so that nothing is downloaded; the weights are random, which costs the same FLOPs
and memory as the real ones. `scale` shrinks every width (channels, hidden sizes,
attention heads in proportion, keeping each head's width) for CPU runs; depths,
block layouts and the VAE's factor 8 stay real at any scale. The tokenizers are
the byte-level CLIP ones of generators/diffusion/tiny.py (77 tokens, a small local
vocabulary); at scale 1 the text encoders keep CLIP's 49408-token embedding table.

    path = build_pipeline("sdxl", tmp / "sdxl", scale=0.1)   # a diffusers folder

Used by benchmarks/bench_gpu.py and benchmarks/bench_speed_switches.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from generators.diffusion.tiny import _clip_config, _clip_tokenizer

CLIP_VOCAB = 49408


@dataclass(frozen=True)
class Arch:
    """What a run of the architecture looks like: its size, steps and guidance."""

    name: str
    size: int  # native image side, pixels
    steps: int  # a usual number of denoising steps
    guidance: float  # classifier-free guidance (0: none, one UNet row an image)


ARCHES = {
    "sd15": Arch("sd15", 512, 30, 7.5),
    "sdxl": Arch("sdxl", 1024, 30, 6.0),
    "sd-turbo": Arch("sd-turbo", 512, 1, 0.0),
}


def _width(channels: int, scale: float, multiple: int = 32) -> int:
    """A scaled width, a multiple of `multiple` (GroupNorm's 32 groups), at least one."""
    return max(multiple, multiple * round(channels * scale / multiple))


def _heads(heads: int, width: int, scale: float) -> int:
    """Attention heads for a scaled width: the real count scaled, dividing the width."""
    n = max(1, round(heads * scale))
    while width % n:
        n -= 1
    return n


def _clip(tokenizer, scale: float, *, hidden: int, layers: int, heads: int, act: str,
          projection: int | None = None):
    """A CLIP text-encoder config of the real depth, its widths scaled."""
    width = _width(hidden, scale, 64)
    fields = dict(hidden_size=width, intermediate_size=4 * width,
                  num_attention_heads=_heads(heads, width, scale), num_hidden_layers=layers,
                  hidden_act=act, max_position_embeddings=77,
                  vocab_size=CLIP_VOCAB if scale >= 1 else len(tokenizer))
    if projection is not None:
        fields["projection_dim"] = _width(projection, scale, 64)
    return _clip_config(tokenizer, **fields)


def _vae(scale: float, *, sample_size: int, scaling_factor: float):
    """The AutoencoderKL of SD 1.5, SD 2.x and SDXL: (128, 256, 512, 512), 2 layers a block."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=[_width(c, scale) for c in (128, 256, 512, 512)],
        down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
        norm_num_groups=32, sample_size=sample_size, scaling_factor=scaling_factor)


def _unet(scale: float, *, blocks, heads, cross_attention_dim: int, **config):
    """A UNet2DConditionModel of the real layout with scaled widths. `heads` are the
    config's `attention_head_dim` (which diffusers reads as heads per block)."""
    from diffusers import UNet2DConditionModel

    widths = [_width(c, scale) for c in blocks]
    return UNet2DConditionModel(
        block_out_channels=widths,
        attention_head_dim=[_heads(h, w, scale) for h, w in zip(heads, widths)],
        cross_attention_dim=cross_attention_dim, layers_per_block=2, norm_num_groups=32,
        in_channels=4, out_channels=4, **config)


def _sd15_scheduler():
    from diffusers import PNDMScheduler

    return PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                         skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False)


def _sd(path: Path, scale: float, scheduler, *, clip: dict, heads: tuple, linear: bool):
    """SD 1.x and 2.x: one CLIP encoder, four UNet blocks, cross-attention in the first three."""
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextModel

    tokenizer = _clip_tokenizer(path)
    text = _clip(tokenizer, scale, **clip)
    unet = _unet(scale, blocks=(320, 640, 1280, 1280), heads=heads,
                 cross_attention_dim=text.hidden_size, sample_size=64,
                 use_linear_projection=linear,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    return StableDiffusionPipeline(
        unet=unet, vae=_vae(scale, sample_size=512, scaling_factor=0.18215),
        text_encoder=CLIPTextModel(text), tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def _sd15(path: Path, scale: float, scheduler):
    """SD 1.5: CLIP-L (OpenAI, quick_gelu), 8 heads a block, convolution projections."""
    return _sd(path, scale, scheduler, heads=(8, 8, 8, 8), linear=False,
               clip=dict(hidden=768, layers=12, heads=12, act="quick_gelu"))


def _euler(spacing: str):
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", steps_offset=1,
                                  timestep_spacing=spacing)


def _sdxl(path: Path, scale: float, scheduler):
    from diffusers import StableDiffusionXLPipeline
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    tokenizer, tokenizer_2 = _clip_tokenizer(path), _clip_tokenizer(path)
    text = _clip(tokenizer, scale, hidden=768, layers=12, heads=12, act="quick_gelu")
    text_2 = _clip(tokenizer_2, scale, hidden=1280, layers=32, heads=20, act="gelu",
                   projection=1280)
    time_dim = 256  # addition_time_embed_dim: 6 size and crop ids of 256 each
    unet = _unet(scale, blocks=(320, 640, 1280), heads=(5, 10, 20),
                 cross_attention_dim=text.hidden_size + text_2.hidden_size, sample_size=128,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
                 addition_embed_type="text_time", addition_time_embed_dim=time_dim,
                 projection_class_embeddings_input_dim=6 * time_dim + text_2.projection_dim)
    return StableDiffusionXLPipeline(
        unet=unet, vae=_vae(scale, sample_size=1024, scaling_factor=0.13025),
        text_encoder=CLIPTextModel(text), text_encoder_2=CLIPTextModelWithProjection(text_2),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, scheduler=scheduler,
        image_encoder=None, feature_extractor=None)


def _sd_turbo(path: Path, scale: float, scheduler):
    """SD-Turbo: the SD 2.1 architecture (OpenCLIP-H, 23 layers as SD 2 uses it, linear
    projections, heads 5/10/20/20), at 512 px, drawn in one step without guidance."""
    return _sd(path, scale, scheduler, heads=(5, 10, 20, 20), linear=True,
               clip=dict(hidden=1024, layers=23, heads=16, act="gelu", projection=512))


# arch -> (networks builder, scheduler)
_BUILDERS = {"sd15": (_sd15, _sd15_scheduler), "sdxl": (_sdxl, lambda: _euler("leading")),
             "sd-turbo": (_sd_turbo, lambda: _euler("trailing"))}


def build_pipeline(arch: str, path: str | Path, *, scale: float = 1.0, seed: int = 0,
                   size: int | None = None, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32) -> Path:
    """Build `arch` ("sd15", "sdxl", "sd-turbo") with weights drawn from `seed`, widths
    times `scale`, and save it to `path`: a diffusers folder of `dtype` weights. The
    weights are drawn on `device` (a GPU draws SDXL's 3.5 billion in a moment). `size`
    makes that its native image side (the size it draws unless told) instead of the
    real model's."""
    path = Path(path)
    torch.manual_seed(seed)
    build, scheduler = _BUILDERS[arch]
    schedule = scheduler()  # its tables stay on the CPU, as diffusers keeps them
    with torch.device(device):
        pipe = build(path, scale, schedule)
    if size is not None:
        pipe.unet.register_to_config(sample_size=size // 8)
        pipe.vae.register_to_config(sample_size=size)
    if dtype != torch.float32:
        pipe.to(dtype=dtype)
    pipe.save_pretrained(path, safe_serialization=True)
    return path


def meta_pipeline(arch: str, scale: float = 1.0):
    """`arch` at `scale` with its networks on the meta device: shapes without memory or
    arithmetic, to count parameters and FLOPs of any size in seconds."""
    import tempfile

    build, scheduler = _BUILDERS[arch]
    with tempfile.TemporaryDirectory() as tmp:
        schedule = scheduler()
        with torch.device("meta"):
            return build(Path(tmp), scale, schedule)


def parameter_counts(arch: str, scale: float = 1.0) -> dict[str, int]:
    """Parameters of each network of `arch` at `scale`."""
    pipe = meta_pipeline(arch, scale)
    return {name: sum(p.numel() for p in module.parameters())
            for name, module in pipe.components.items() if isinstance(module, torch.nn.Module)}
