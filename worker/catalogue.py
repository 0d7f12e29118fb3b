"""The model catalogue as people see it: every model a request may name, what it
is, where it comes from, what it runs with, and what it needs in memory.

`artbot models` prints it. Everything here is read from the model's files
without loading it (no torch): the architecture from its configs or tensor
names, the memory from the parameter counts in its safetensors headers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from artbot.config import ConfigError, Settings
from artbot.errors import UserError
from generators.bundled import bundled_path, family_of, model_defaults, native_size
from worker.requests import default_size, model_choices, model_profile

# Bytes per parameter of the dtypes a worker loads models in.
DTYPE_BYTES = {"float16": 2, "float32": 4}


@dataclass
class ModelInfo:
    name: str  # as a request names it
    source: str  # the folder, file or hub id it is loaded from
    kind: str  # "folder", "file", "hub", "bundled"
    family: str
    architecture: str  # "Stable Diffusion XL", "artbot GAN", ...
    size: str  # the default size, WIDTHxHEIGHT
    steps: int | None
    guidance: float | None
    sampler: str | None  # the catalogue's default sampler; None: the model's own
    description: str = ""
    sizes: list[str] = field(default_factory=list)  # offered on Discord
    can: list[str] = field(default_factory=list)  # what it supports, in words
    loras: list[str] | None = None  # allowed with it; None: all
    parameters: int | None = None  # None: not known without downloading it
    loaded_on: list[str] = field(default_factory=list)  # the live workers holding it
    problem: str = ""  # why it cannot be described (a bad catalogue entry)

    def memory(self, dtype: str) -> int | None:
        return None if self.parameters is None else self.parameters * DTYPE_BYTES[dtype]


def _kind(source: str) -> str:
    if bundled_path(source) is not None:
        return "bundled"
    path = Path(source).expanduser()
    if path.is_dir():
        return "folder"
    if path.suffix.lower() in (".safetensors", ".ckpt"):
        return "file"
    return "hub"


def _weight_files(source: str) -> list[Path]:
    """The safetensors files a model would load (one precision of each component)."""
    path = bundled_path(source) or Path(source).expanduser()
    if path.is_file():
        return [path] if path.suffix.lower() == ".safetensors" else []
    if not path.is_dir():
        from generators.diffusion.checkpoints import cached_config

        snapshot = cached_config(source)
        if snapshot is None:
            return []
        path = snapshot
    files = sorted(path.rglob("*.safetensors"))
    plain = [f for f in files if ".fp16." not in f.name]
    return plain or files


def parameter_count(source: str) -> int | None:
    """The model's parameters, summed over its safetensors headers; None when unknown."""
    from generators.diffusion.checkpoints import read_tensor_names

    files = _weight_files(source)
    if not files:
        return None
    total = 0
    for file in files:
        try:
            shapes = read_tensor_names(file)
        except UserError:
            return None
        total += sum(math.prod(shape) for shape in shapes.values())
    return total


def describe(settings: Settings, name: str,
             loaded: dict[str, list[str]] | None = None) -> ModelInfo:
    entry = settings.models.get(name)
    source = settings.resolve_model(name)
    family = family_of(source)
    loaded_on = (loaded or {}).get(source, [])
    info = ModelInfo(name=name, source=source, kind=_kind(source), family=family,
                     architecture=family, size="", steps=None, guidance=None, sampler=None,
                     description=entry.description if entry else "",
                     loras=entry.loras if entry else None, loaded_on=loaded_on)
    try:
        profile = model_profile(settings, source, family)
    except (ConfigError, UserError) as exc:  # a broken model folder or file says what is wrong
        info.problem = str(exc)
        return info
    if profile is None:
        side = native_size(source)
        defaults = model_defaults(source)
        info.architecture = {"gan": "artbot GAN", "vae": "artbot VAE",
                             "pixel-diffusion": "artbot pixel diffusion"}.get(family, family)
        info.size = f"{side}x{side}" if side else settings.default_size
        info.steps = int(defaults.get("steps", settings.default_steps)) if family in (
            "pixel-diffusion",) else None
        info.guidance = defaults.get("guidance")
        info.can = ["draw", "vary"]
    else:
        w, h = default_size(profile, settings)
        guess = {"name": " (guessed from its name)", "file": " (from its tensors)",
                 "catalogue": " (as the catalogue says)"}.get(profile.detected_from, "")
        info.architecture = f"{profile.label}{guess}"
        info.size = f"{w}x{h}"
        info.steps = min(profile.steps, settings.max_steps)
        info.guidance = profile.guidance
        info.sampler = entry.sampler if entry else None
        info.sizes = [f"{sw}x{sh}" for sw, sh in profile.sizes(settings.max_size)]
        info.can = [what for what, yes in [
            ("negative prompt", profile.negative_prompt),
            ("vary and stylize", profile.img2img),
            ("samplers", profile.samplers),
            ("LoRAs", profile.lora),
            ("(word:1.3) weighting and long prompts", profile.weighting),
        ] if yes]
        if profile.token_limit:
            info.can.append(f"prompts up to {profile.token_limit} tokens")
    info.parameters = parameter_count(source)
    return info


def catalogue(settings: Settings, loaded: dict[str, list[str]] | None = None) -> list[ModelInfo]:
    """Every model a request may name: the default, the catalogue, the bundled models."""
    return [describe(settings, name, loaded) for name in model_choices(settings)]
