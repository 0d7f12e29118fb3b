"""LoRAs a request asks for: `<lora:name:0.8>` in the prompt (as A1111, ComfyUI and
Civitai write it) or named apart (`--lora name:0.8`, Discord's `lora` option).

A LoRA is a file `NAME.safetensors` in the operator's `lora_dir`; a request
names it by NAME. The tags are taken out of the prompt (the text encoder would
read them as words) and stored with the job as `loras`, so the job, its PNG
and its result say which LoRAs made it, and a reroll uses them again.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from artbot.config import ModelEntry, Settings
from artbot.errors import InvalidRequest
from generators.diffusion.lora import lora_base_model
from generators.diffusion.profiles import Profile

# What `lora_base_model` calls the family each architecture belongs to.
_LORA_FAMILY = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sd2-v": "SD 2.x", "sdxl": "SDXL",
                "sd3": "SD3", "flux-dev": "Flux", "flux-schnell": "Flux"}

# <lora:name> or <lora:name:weight>; A1111 also accepts a third field (the text
# encoder's weight), which is not supported here and is refused by the weight check.
LORA_TAG = re.compile(r"<\s*lora\s*:\s*([^:<>]+?)\s*(?::\s*([^<>]*?)\s*)?>", re.IGNORECASE)
MAX_LORAS = 5
WEIGHT_LIMIT = 4.0


def available_loras(settings: Settings) -> list[str]:
    """The LoRA names the operator offers: the .safetensors files in lora_dir."""
    folder = settings.lora_dir
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.safetensors") if p.is_file())


def lora_path(settings: Settings, name: str) -> Path:
    """The file of LoRA `name` (for the worker); InvalidRequest if it is gone."""
    if settings.lora_dir is not None:
        path = settings.lora_dir / f"{name}.safetensors"
        if path.is_file():
            return path
    raise InvalidRequest(f"The LoRA {name!r} is no longer in the operator's LoRA folder.")


def parse_lora(text: str) -> tuple[str, float]:
    """'name' or 'name:0.8' -> ('name', 0.8)."""
    name, _, weight = text.strip().partition(":")
    return name.strip(), _weight(weight, name)


def _weight(text: str, name: str) -> float:
    if not text.strip():
        return 1.0
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(f"The weight of LoRA {name.strip()!r} must be a number such as 0.8, "
                             f"not {text.strip()!r}.") from None
    if not -WEIGHT_LIMIT <= value <= WEIGHT_LIMIT:
        raise InvalidRequest(f"The weight of LoRA {name.strip()!r} must be between "
                             f"-{WEIGHT_LIMIT:g} and {WEIGHT_LIMIT:g}, not {value:g}.")
    return value


def take_loras(
    prompt: str,
    settings: Settings,
    *,
    model: str,
    profile: Profile | None,
    entry: ModelEntry | None,
    named: list[tuple[str, float]] | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """The prompt without its `<lora:...>` tags, and every LoRA asked for (tags and
    `named`) as [{"name", "weight"}], checked against the operator's folder and the
    model; a later mention of the same LoRA replaces an earlier one."""
    found: dict[str, float] = {}
    for m in LORA_TAG.finditer(prompt or ""):
        found[m.group(1).strip()] = _weight(m.group(2) or "", m.group(1))
    for name, weight in named or []:
        found[name.strip()] = _weight(str(weight), name)
    clean = re.sub(r"\s{2,}", " ", LORA_TAG.sub(" ", prompt or "")).strip()
    clean = re.sub(r"\s+([,.;])", r"\1", clean).strip(" ,")
    if not found:
        return clean, []
    shown = settings.model_name(model)
    if profile is None or not profile.lora:
        what = profile.label if profile is not None else shown
        raise InvalidRequest(f"{what} cannot take LoRAs; remove the <lora:...> tags.")
    if len(found) > MAX_LORAS:
        raise InvalidRequest(f"At most {MAX_LORAS} LoRAs at once, not {len(found)}.")
    known = available_loras(settings)
    for name in found:
        if name not in known:
            offer = f"LoRAs: {', '.join(known)}" if known else "the operator has set up no LoRAs"
            raise InvalidRequest(f"No LoRA named {name!r}; {offer}.")
        if entry is not None and entry.loras is not None and name not in entry.loras:
            raise InvalidRequest(f"The LoRA {name!r} is not meant for {shown}; with it: "
                                 f"{', '.join(entry.loras) or 'none'}.")
        made_for = lora_base_model(settings.lora_dir / f"{name}.safetensors")
        family = _LORA_FAMILY.get(profile.arch)
        if made_for and family and made_for != family:
            raise InvalidRequest(f"The LoRA {name!r} was made for {made_for} models; {shown} is "
                                 f"{profile.label}.")
    return clean, [{"name": name, "weight": weight} for name, weight in found.items()]
