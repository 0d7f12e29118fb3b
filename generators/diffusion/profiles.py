"""What a diffusers model is, and what it wants: its architecture profile.

A request is built from the model's profile first (native size, steps,
guidance, what it can do), then from the operator's per-model overrides and
limits. The profile is read from the model's own files without loading it and
without torch, so the bot can offer the right sizes and refuse what a model
cannot do before anything is queued:

- a diffusers folder (or a hub id in the local cache): `model_index.json`
  names the pipeline class; the component configs give the native size
  (``sample_size`` x the VAE's scale factor), the prediction type (SD 2.x
  v-prediction), whether Flux is guidance-distilled (dev) or not (schnell),
  whether SD3 has its T5 encoder;
- a single checkpoint file: its tensor names (`checkpoints.checkpoint_arch`);
- anything else: the name (``...xl...``, ``flux``, ``turbo``), said as a guess.

Few-step distilled models (SD-Turbo, SDXL-Turbo, Lightning, Hyper, LCM, Flux
schnell) are recognised by their scheduler (LCM), their config (schnell has no
guidance embedding) or their name; an operator can mark one with
``distilled = true`` in the model catalogue when none of these says so.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from artbot.errors import ModelNotFound
from generators.diffusion.model_files import (check_checkpoint_file, check_model_folder,
                                              read_config, read_model_index)

# The aspect-ratio buckets SDXL was trained on, at 1024 pixels; other models
# get them scaled to their own native size (SD 1.x at 512: 608x416, ...).
BUCKETS_1024 = [(1024, 1024), (1152, 896), (896, 1152), (1216, 832), (832, 1216),
                (1344, 768), (768, 1344)]

# Above this many pixels on the native side, buckets are rounded to 64 as
# the models were trained; tiny test models round to their size multiple.
_ROUND_LARGE = 64


@dataclass(frozen=True)
class Profile:
    arch: str  # "sd1", "sd2", "sd2-v", "sdxl", "sd3", "flux-dev", "flux-schnell", "pixart-sigma", "other"
    label: str  # for people: "Stable Diffusion XL"
    pipeline: str  # the diffusers text-to-image class, when known
    native: tuple[int, int]  # what the model draws best, (width, height)
    steps: int
    guidance: float
    negative_prompt: bool  # does the model take one at all
    img2img: bool  # vary and stylize by text
    multiple: int  # width and height must be multiples of this
    # The prompt's token limit; None: no limit (CLIP models encode long prompts in chunks).
    token_limit: int | None
    weighting: bool  # A1111 "(word:1.3)" weighting and long prompts (CLIP text encoders)
    samplers: bool  # can take an A1111 sampler (not flow matching)
    lora: bool  # diffusers can load LoRAs into it
    distilled: bool = False  # a few-step model: little or no guidance
    # Where the profile came from: "config" (the model's own files), "file" (a
    # checkpoint's tensors), "name" (a guess from the name), "catalogue".
    detected_from: str = "config"

    def sizes(self, max_side: int | None = None) -> list[tuple[int, int]]:
        """The sizes to offer: the aspect-ratio buckets at this model's native area,
        squarest first, those within `max_side`."""
        w0, h0 = self.native
        side = math.sqrt(w0 * h0)
        step = _ROUND_LARGE if side >= 512 else self.multiple
        out: list[tuple[int, int]] = []
        for bw, bh in BUCKETS_1024:
            w = max(step, round(bw * side / 1024 / step) * step)
            h = max(step, round(bh * side / 1024 / step) * step)
            if (w, h) not in out and (max_side is None or max(w, h) <= max_side):
                out.append((w, h))
        if self.native not in out and (max_side is None or max(self.native) <= max_side):
            out.insert(0, self.native)
        return out

    def with_overrides(self, **changes) -> "Profile":
        return dataclasses.replace(self, **changes)


# Each architecture at its real size, before the model's own configs refine it.
_BASE: dict[str, Profile] = {p.arch: p for p in [
    Profile("sd1", "Stable Diffusion 1.x", "StableDiffusionPipeline", (512, 512), 30, 7.5,
            True, True, 8, None, True, True, True),
    Profile("sd2", "Stable Diffusion 2.x", "StableDiffusionPipeline", (512, 512), 30, 7.5,
            True, True, 8, None, True, True, True),
    Profile("sd2-v", "Stable Diffusion 2.x (v-prediction)", "StableDiffusionPipeline",
            (768, 768), 30, 7.5, True, True, 8, None, True, True, True),
    Profile("sdxl", "Stable Diffusion XL", "StableDiffusionXLPipeline", (1024, 1024), 30, 7.0,
            True, True, 8, None, True, True, True),
    Profile("sd3", "Stable Diffusion 3", "StableDiffusion3Pipeline", (1024, 1024), 28, 7.0,
            True, True, 16, 256, False, False, True),
    Profile("flux-dev", "Flux (dev)", "FluxPipeline", (1024, 1024), 28, 3.5,
            False, True, 16, 512, False, False, True),
    Profile("flux-schnell", "Flux (schnell)", "FluxPipeline", (1024, 1024), 4, 0.0,
            False, True, 16, 256, False, False, True, distilled=True),
    Profile("pixart-sigma", "PixArt-Σ", "PixArtSigmaPipeline", (1024, 1024), 20, 4.5,
            True, False, 16, 300, False, False, False),
    Profile("other", "diffusers pipeline", "", (512, 512), 30, 7.5,
            True, True, 8, 77, False, True, False),
]}

ARCHITECTURES = tuple(_BASE)
_PIPELINE_ARCH = {
    "StableDiffusionPipeline": "sd1",
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux-dev",
    "PixArtSigmaPipeline": "pixart-sigma",
}
# A few-step model runs these steps at this guidance (LCM keeps a little guidance).
DISTILLED_STEPS = 4
_DISTILLED_NAME = re.compile(r"turbo|lightning|hyper|\blcm\b|lcm[-_]|schnell", re.I)


def base_profile(arch: str) -> Profile:
    return _BASE[arch]


def _read_json(path: Path) -> dict:
    """A config the profile reads: {} when the file is not there (a hub cache may lack
    it); `ModelNotFound` saying what is wrong when it is there and broken."""
    return read_config(path, required=False) or {}


def distilled(profile: Profile, *, lcm: bool = False) -> Profile:
    if profile.distilled and not lcm:
        return profile
    return profile.with_overrides(
        distilled=True, steps=DISTILLED_STEPS, guidance=1.0 if lcm else 0.0,
        label=profile.label + (" (LCM)" if lcm else " (few-step)"))


def from_folder(folder: Path, name: str = "") -> Profile:
    """The profile of a diffusers pipeline folder, from its configs (`ModelNotFound`
    when its model_index.json is missing or broken)."""
    index = read_model_index(folder)
    pipeline = str(index.get("_class_name", ""))
    arch = _PIPELINE_ARCH.get(pipeline.replace("Img2Img", "").replace("Inpaint", ""), "other")
    vae = _read_json(folder / "vae" / "config.json")
    scale = 2 ** (len(vae.get("block_out_channels", [0, 0, 0, 0])) - 1)
    scheduler = _read_json(folder / "scheduler" / "scheduler_config.json")
    denoiser = _read_json(folder / "unet" / "config.json") or _read_json(
        folder / "transformer" / "config.json")

    if arch == "sd1":
        text = _read_json(folder / "text_encoder" / "config.json")
        if text.get("hidden_act") == "gelu":  # OpenCLIP ViT-H: Stable Diffusion 2.x
            arch = "sd2-v" if scheduler.get("prediction_type") == "v_prediction" else "sd2"
    if arch == "flux-dev" and denoiser.get("guidance_embeds") is False:
        arch = "flux-schnell"
    profile = _BASE[arch].with_overrides(pipeline=pipeline or _BASE[arch].pipeline)

    sample = denoiser.get("sample_size")
    if arch.startswith("flux"):
        sample = 128  # FluxPipeline's default_sample_size; the transformer has none
    if isinstance(sample, (list, tuple)):
        sample = sample[0]
    if isinstance(sample, int) and sample > 0:
        side = sample * scale
        profile = profile.with_overrides(native=(side, side))
    patch = denoiser.get("patch_size", 1) if arch in ("sd3", "pixart-sigma") else (
        2 if arch.startswith("flux") else 1)
    profile = profile.with_overrides(multiple=max(8, scale * int(patch or 1)))

    if arch == "sd3" and not (folder / "text_encoder_3").is_dir():
        profile = profile.with_overrides(token_limit=77, label=profile.label + " (without T5)")
    if arch == "other" and pipeline:
        profile = profile.with_overrides(label=pipeline)
    if scheduler.get("_class_name") == "LCMScheduler":
        profile = distilled(profile, lcm=True)
    elif _DISTILLED_NAME.search(name or folder.name) and not profile.distilled:
        profile = distilled(profile)
    return profile


def from_name(ref: str, *, detected_from: str = "name") -> Profile:
    """A guess from the model's name, for a hub model that is not in the local cache."""
    low = ref.lower()
    if "flux" in low:
        arch = "flux-schnell" if "schnell" in low else "flux-dev"
    elif "pixart" in low:
        arch = "pixart-sigma"
    elif re.search(r"sd3|stable-diffusion-3", low):
        arch = "sd3"
    elif re.search(r"xl|pony|illustrious|noob", low):
        arch = "sdxl"
    elif re.search(r"stable-diffusion-2|sd2|sd-turbo", low):
        arch = "sd2-v" if "768" in low else "sd2"
    else:
        arch = "sd1"
    profile = _BASE[arch].with_overrides(detected_from=detected_from)
    if _DISTILLED_NAME.search(low):
        profile = distilled(profile, lcm=bool(re.search(r"lcm", low)))
    return profile


def from_checkpoint(path: Path, config: Path | None = None) -> Profile:
    """A single file: its configuration folder if the operator gave one, else its tensors.
    A file that is here and broken (empty, random bytes, cut short) raises
    `ModelNotFound`; one that is not here (only a remote worker has it) is guessed
    from its name."""
    if config is not None and (config / "model_index.json").is_file():
        return from_folder(config, path.name).with_overrides(detected_from="file")
    from generators.diffusion.checkpoints import checkpoint_arch

    arch = None
    if path.is_file():
        if path.suffix.lower() == ".ckpt":
            check_checkpoint_file(path)
        try:
            arch = checkpoint_arch(path)
        except ModelNotFound:
            raise
        except Exception:  # noqa: BLE001 - what the header check missed is said at load time
            arch = None
    if arch in (None, "lora"):
        return from_name(path.name)
    if arch == "sdxl-refiner":
        arch = "sdxl"
    if arch == "flux":
        arch = "flux-schnell" if "schnell" in path.name.lower() else "flux-dev"
    profile = _BASE.get(arch, _BASE["sd1"]).with_overrides(detected_from="file")
    if _DISTILLED_NAME.search(path.name) and not profile.distilled:
        profile = distilled(profile)
    return profile


_CACHE: dict[tuple, Profile] = {}


def with_configs(profile: Profile, ref: str, config: str | None = None) -> Profile:
    """An architecture the operator named, with the size the model's own configs give."""
    found = detect(ref, config=config)
    if found.detected_from in ("config", "file"):
        profile = profile.with_overrides(native=found.native, multiple=found.multiple)
    return profile.with_overrides(detected_from="catalogue")


def detect(ref: str, *, config: str | None = None) -> Profile:
    """The profile of a diffusers model reference: a folder, a file or a hub id."""
    path = Path(ref).expanduser()
    try:
        stamp = os.stat(path / "model_index.json" if path.is_dir() else path).st_mtime_ns
    except OSError:
        stamp = None
    key = (ref, config, stamp)
    if key not in _CACHE:
        if path.is_dir():
            check_model_folder(path)  # its components, configs and weights: all there and whole
            profile = from_folder(path)
        elif path.suffix.lower() in (".safetensors", ".ckpt"):
            profile = from_checkpoint(path, Path(config).expanduser() if config else None)
        else:
            from generators.diffusion.checkpoints import cached_config

            snapshot = cached_config(ref)
            profile = from_folder(snapshot, ref) if snapshot else from_name(ref)
        _CACHE[key] = profile
    return _CACHE[key]
