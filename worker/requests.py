"""What a request means: validated options turned into a job for the queue.

The CLI and the bot call these functions with what the user typed; they check
every option, pick seeds and defaults, and return a `JobSpec` ready for
`JobQueue.submit`. A bad option raises `InvalidRequest` with a message for the
user, before anything is recorded. Nothing here imports torch or discord.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import unicodedata
from dataclasses import dataclass
from typing import Any

from artbot.config import ConfigError, Settings
from artbot.errors import InvalidRequest, ModelNotFound
from generators.bundled import available, family_of, model_defaults, native_size
from generators.diffusion import profiles, samplers
from generators.diffusion.lora import is_lora_file
from generators.diffusion.profiles import Profile
from worker.loras import take_loras
from worker.prompts import clean_prompt, has_controls, has_visible
from storage.jobs import Job

SEED_LIMIT = 2**32  # seeds are 0 .. 2**32 - 1
DEFAULT_GUIDANCE = 7.5
DEFAULT_STRENGTH = 0.6
# The two variation strengths offered by buttons and reactions.
STRENGTHS = {"subtle": 0.35, "strong": 0.7}
MAX_PROMPT_CHARS = 1000
# The samplers a request may name (diffusers models), as A1111 writes them.
SAMPLER_NAMES = tuple(samplers.SAMPLERS)


@dataclass
class JobSpec:
    """Everything needed to queue a job and to make its images again."""

    kind: str  # 'draw' | 'vary' | 'stylize'
    family: str  # the generator family: 'diffusion', 'pixel-diffusion', 'gan', 'vae', 'style'
    model: str
    params: dict[str, Any]
    seeds: list[int]
    parent_id: int | None = None

    @property
    def batch_key(self) -> str:
        """Jobs with the same key can share one generator call: everything that must
        be the same for every image of one call is in it. A job whose images cannot
        share a call with another's gets a key of its own (its seeds are in it):
        samplers whose noise is drawn for the whole batch from one seed (the SDE ones),
        and style transfer, which runs one image at a time anyway."""
        p = self.params
        alone = self.family == "style" or str(p.get("sampler") or "").startswith("DPM++ SDE")
        key = {
            "kind": self.kind,
            "generator": self.family,
            "model": self.model,
            "size": [p.get("width"), p.get("height")],
            "steps": p.get("steps"),
            "guidance": p.get("guidance"),
            "strength": p.get("strength"),
            "sampler": p.get("sampler"),
            "loras": p.get("loras"),
            "clip_skip": p.get("clip_skip"),
            "options": p.get("options"),
            **({"seeds": self.seeds, "prompt": p.get("prompt")} if alone else {}),
        }
        return json.dumps(key, sort_keys=True)


def model_choices(settings: Settings) -> list[str]:
    """Model names to offer: the default, the configured short names, the bundled models."""
    default = settings.model_name(settings.resolve_model(None))
    return list(dict.fromkeys([default, *settings.models, *available()]))


def parse_size(text: str | None, settings: Settings, multiple: int = 8) -> tuple[int, int]:
    """'512x768' -> (512, 768), checking the limits the model needs."""
    if text is None or not str(text).strip():
        text = settings.default_size
    # NFKC: full-width digits and 'ｘ', as CJK input methods type them, are the ASCII ones;
    # other scripts' digits are refused (a size is written in ASCII digits).
    typed = unicodedata.normalize("NFKC", str(text))
    m = re.fullmatch(r"\s*([0-9]{1,7})\s*[xX×*]\s*([0-9]{1,7})\s*", typed)
    if not m:
        raise InvalidRequest(f"Size {shown(text)} is not WIDTHxHEIGHT, for example 512x512.")
    width, height = int(m.group(1)), int(m.group(2))
    check_size(width, height, settings, multiple)
    return width, height


def check_size(width: int, height: int, settings: Settings, multiple: int = 8) -> None:
    """Refuse a size the model cannot draw, suggesting the nearest one it can."""
    inside = multiple <= width <= settings.max_size and multiple <= height <= settings.max_size
    if width % multiple or height % multiple:
        near = valid_size_near(width, height, settings.max_size, multiple)
        raise InvalidRequest(
            f"Size {width}x{height} is not a multiple of {multiple} in both directions, as "
            f"this model needs" + ("" if inside else
                                   f", and is outside {multiple}..{settings.max_size} pixels per side")
            + (f" (try {near[0]}x{near[1]})." if near else ".")
        )
    if not inside:
        near = valid_size_near(width, height, settings.max_size, multiple)
        raise InvalidRequest(
            f"Size {width}x{height} is outside {multiple}..{settings.max_size} pixels per side."
            + (f" Try {near[0]}x{near[1]}." if near else "")
        )


def valid_size_near(width: int, height: int, max_size: int,
                    multiple: int = 8) -> tuple[int, int] | None:
    """The size to suggest for one that cannot be drawn: scaled down to fit `max_size`
    (keeping its shape) when too large, each side rounded down to a multiple and kept
    within multiple..max_size. None when no side is allowed at all (a max_size below
    the model's multiple)."""
    top = max_size // multiple * multiple
    if top < multiple:
        return None
    longest = max(width, height)
    if longest > max_size:
        width, height = width * max_size / longest, height * max_size / longest
    return tuple(min(top, max(multiple, int(side) // multiple * multiple))
                 for side in (width, height))


def model_profile(settings: Settings, model: str, family: str | None = None) -> Profile | None:
    """A diffusers model's architecture profile with the catalogue's overrides applied
    (None for artbot's own families, which carry their defaults in their config)."""
    if (family or family_of(model)) != "diffusion":
        return None
    entry = settings.model_entry(model)
    ref = settings.resolve_model(model)
    if ref.lower().endswith(".safetensors") and is_lora_file(ref):
        name = ref.replace("\\", "/").rsplit("/", 1)[-1]
        raise InvalidRequest(
            f"{name} is a LoRA, not a model: put it in the lora_dir folder and name it in the "
            f"prompt, <lora:{name[:-len('.safetensors')]}:0.8>, with a model it was made for.")
    if entry is not None and entry.arch:
        if entry.arch not in profiles.ARCHITECTURES:
            raise ConfigError(f"models: arch {entry.arch!r} of {settings.model_name(ref)} is not "
                              f"one of {', '.join(profiles.ARCHITECTURES)}")
        profile = profiles.with_configs(profiles.base_profile(entry.arch), ref, entry.config)
    else:
        profile = profiles.detect(ref, config=entry.config if entry else None)
    if entry is None:
        return profile
    if entry.distilled and not profile.distilled:
        profile = profiles.distilled(profile)
    changes: dict[str, Any] = {"detected_from": profile.detected_from}
    if entry.steps is not None:
        changes["steps"] = entry.steps
    if entry.guidance is not None:
        changes["guidance"] = entry.guidance
    if entry.size:
        try:
            w, h = parse_size(entry.size, settings, profile.multiple)
        except InvalidRequest as exc:
            raise ConfigError(f"models: size of {settings.model_name(ref)}: {exc}") from None
        changes["native"] = (w, h)
    return profile.with_overrides(**changes)


def default_size(profile: Profile, settings: Settings) -> tuple[int, int]:
    """The model's native size, scaled down to fit the operator's largest side."""
    return fit_size(*profile.native, settings.max_size, profile.multiple)


def size_choices(settings: Settings, model: str | None,
                 max_side: int | None = None) -> list[tuple[str, str]]:
    """(label, WIDTHxHEIGHT) of the sizes to offer for a model: its aspect-ratio
    buckets at its native size within the limits; the configured default size for
    models without a profile."""
    model = settings.resolve_model(model)
    limit = min(settings.max_size, max_side or settings.max_size)
    try:
        profile = model_profile(settings, model)
    except (ConfigError, ModelNotFound):  # the request itself says what is wrong
        profile = None
    if profile is None:
        native = native_size(model)
        if native:
            return [(f"Square {native}×{native}", f"{native}x{native}")]
        w, h = parse_size(settings.default_size, settings)
        sizes = [(w, h), (w, min(limit, h * 3 // 2 // 8 * 8)), (min(limit, w * 3 // 2 // 8 * 8), h)]
    else:
        sizes = profile.sizes(limit) or [default_size(profile, settings)]
    out = []
    for w, h in sizes:
        g = math.gcd(w, h)
        shape = "Square" if w == h else "Landscape" if w > h else "Portrait"
        out.append((f"{shape} {w}×{h} ({w // g}:{h // g})" if w != h else f"{shape} {w}×{h}",
                    f"{w}x{h}"))
    return out


def check_sampler(sampler: str | None, family: str, model: str,
                  profile: Profile | None = None) -> str | None:
    """The sampler's A1111 name, for a diffusers model that takes one; a clear refusal otherwise."""
    if sampler is not None and (not isinstance(sampler, str) or len(sampler) > 40):
        raise InvalidRequest(f"Unknown sampler {shown(sampler)}; samplers: "
                             f"{', '.join(SAMPLER_NAMES)}.")
    name = samplers.canonical(sampler)
    if name is not None and family != "diffusion":
        raise InvalidRequest(f"{model} samples its own way; a sampler applies to diffusers "
                             f"models only (leave it out).")
    if name is not None and profile is not None and not profile.samplers:
        raise InvalidRequest(f"{profile.label} samples with its own flow-matching scheduler; "
                             f"it cannot take the sampler {name} (leave it out).")
    return name


def check_negative(negative_prompt: str, guidance: float, profile: Profile | None) -> str:
    """The negative prompt, where the model will really use it; refused where it would not."""
    negative = (negative_prompt or "").strip()
    if not negative or profile is None:
        return negative
    if not profile.negative_prompt:
        raise InvalidRequest(f"{profile.label} has no negative prompt; leave it out and say in "
                             f"the prompt what you want instead.")
    if guidance <= 1.0:
        raise InvalidRequest(f"At guidance {guidance:g} the model draws without classifier-free "
                             f"guidance, so a negative prompt would do nothing; raise the guidance "
                             f"above 1 or leave the negative prompt out.")
    return negative


def pick_seeds(seed: int | None, count: int) -> list[int]:
    """One seed per image: `seed`, `seed + 1`, ... or random ones."""
    if seed is None:
        seed = secrets.randbelow(SEED_LIMIT)
    seed = as_int(seed, "Seed")
    if not 0 <= seed < SEED_LIMIT:
        raise InvalidRequest(f"Seed {shown(seed)} is outside 0..{SEED_LIMIT - 1}.")
    return [(seed + i) % SEED_LIMIT for i in range(as_int(count, "Count"))]


# -- options as typed: numbers, prompts, names ---------------------------------------------

# Longest preset name (Discord's /preset add takes at most as many).
MAX_PRESET_CHARS = 40
# Longest model name, and longest part of a path to a model (file systems allow 255 bytes).
MAX_MODEL_CHARS = 400
MAX_NAME_PART = 255
# The shape of a Hugging Face model id: 'name' or 'org/name'.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?")


def shown(value: Any, width: int = 40) -> str:
    """A value the user gave, as a message quotes it: text escaped (control and
    bidirectional characters as \\x1b, \\u202e) and clipped; numbers short."""
    if isinstance(value, str):
        text = repr(value)
        return text if len(text) <= width else text[:width - 1] + "…"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**15:
        return f"{float(value):.3g}" if abs(value) < 10**300 else "a number of 300 digits or more"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int):
        return str(value)
    return shown(str(value), width)


def as_int(value: Any, what: str) -> int:
    """A whole-number option as an int: an int, a whole finite float, or ASCII digits.
    Anything else (2.5, nan, 'ten', True) is refused with `what` named."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9]{1,30}\s*", value):
        return int(value)
    raise InvalidRequest(f"{what} must be a whole number, not {shown(value)}.")


def as_float(value: Any, what: str) -> float:
    """A number option as a finite float; nan, inf and anything not a number are refused."""
    number = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an int past 1e308
            number = math.inf
    elif isinstance(value, str) and re.fullmatch(
            r"\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]{1,4})?\s*", value):
        number = float(value)
    if number is None or not math.isfinite(number):
        raise InvalidRequest(f"{what} must be a number, not {shown(value)}.")
    return number


def check_prompt(text: str | None, *, what: str = "The prompt",
                 hint: str = "write something, or leave it out", required: bool = False) -> str:
    """A prompt option as it is stored: cleaned first (`worker.prompts.clean_prompt`:
    control and bidirectional characters out, white space one space), then at most
    MAX_PROMPT_CHARS long and with something visible in it; `hint` says what to do
    about it. An empty one stays '' unless the request needs it (`required`)."""
    if text is not None and not isinstance(text, str):
        raise InvalidRequest(f"{what} must be text.")
    cleaned = clean_prompt(text or "")
    if len(cleaned) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"{what} is longer than {MAX_PROMPT_CHARS} characters "
                             f"({len(cleaned):,}); shorten it.")
    if text and not has_visible(cleaned):
        raise InvalidRequest(f"{what} has nothing visible in it, only spaces, invisible or "
                             f"control characters: {hint}.")
    if not cleaned and required:
        raise InvalidRequest(f"{what} is empty: {hint}.")
    return cleaned


def check_preset_name(name: str | None) -> str:
    """A style preset's name as it is saved and looked up: cleaned like a prompt, with
    something visible, at most MAX_PRESET_CHARS long."""
    cleaned = clean_prompt(name or "") if isinstance(name, str) else ""
    if not has_visible(cleaned):
        raise InvalidRequest("A preset name needs something visible in it: letters, digits "
                             "or signs.")
    if len(cleaned) > MAX_PRESET_CHARS:
        raise InvalidRequest(f"A preset name is at most {MAX_PRESET_CHARS} characters long.")
    return cleaned


def _path_like(ref: str) -> bool:
    """Whether a model reference is meant as a file or folder (not a name or a hub id)."""
    return (ref.startswith(("/", ".", "~")) or "\\" in ref or ":" in ref
            or ref.lower().endswith((".safetensors", ".ckpt"))
            or ".." in re.split(r"[/\\]", ref))


def _known_model(settings: Settings, name: str) -> bool:
    """A model the operator offers by name: the catalogue's, the bundled, the default."""
    return (name in settings.models or name in available() or name == settings.default_model
            or name in {e.source for e in settings.models.values()})


def check_model_name(settings: Settings, model: str | None) -> None:
    """Refuse a model option that cannot name a model, before any file is read for
    it: empty, too long, with control characters, a path to nothing, or neither a
    path nor a name. None (not given) means the default model."""
    if model is None:
        return
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("The model name is empty: name a model (see: artbot models), or "
                             "leave the option out for the default one.")
    if has_controls(model):
        raise InvalidRequest(f"The model name {shown(model)} has control characters in it; "
                             f"name a model as `artbot models` lists it.")
    name = model.strip()
    if _known_model(settings, name):
        return
    ref = settings.resolve_model(name)
    if len(ref) > MAX_MODEL_CHARS or any(len(p) > MAX_NAME_PART for p in re.split(r"[/\\]", ref)):
        raise InvalidRequest(f"The model name {shown(ref)} is too long to name a model.")
    path = os.path.expanduser(ref)
    if _path_like(ref) or os.path.exists(path):
        if not os.path.exists(path):
            raise ModelNotFound(f"There is no model folder or file {shown(ref)}; give a diffusers "
                                f"folder, a .safetensors file or a name from `artbot models`.")
        if os.path.isdir(path):
            if not any(os.path.isfile(os.path.join(path, f))
                       for f in ("model_index.json", "config.json")):
                raise ModelNotFound(f"{shown(ref)} is a folder but not a model (it has no "
                                    f"model_index.json): give a diffusers pipeline folder, a "
                                    f".safetensors file or a name from `artbot models`.")
        elif not ref.lower().endswith((".safetensors", ".ckpt")):
            raise ModelNotFound(f"{shown(ref)} is a file but not a model: give a diffusers "
                                f"folder, a .safetensors or .ckpt file, or a name from "
                                f"`artbot models`.")
        return
    if not _HUB_ID.fullmatch(ref):
        raise ModelNotFound(f"Unknown model {shown(ref)}: not a name from `artbot models`, a "
                            f"folder, a file or a Hugging Face id (such as org/name).")


def check_member_model(settings: Settings, model: str | None) -> None:
    """A model a Discord member names: one the operator offers (catalogue, bundled,
    default) or a Hugging Face id; never a file or folder on the bot's machine,
    whether or not it exists (the answer is the same either way)."""
    if model is None:
        return
    if isinstance(model, str) and model.strip() and not has_controls(model):
        name = model.strip()
        if not _known_model(settings, name) and (
                _path_like(name) or len(name) > MAX_MODEL_CHARS
                or os.path.exists(os.path.expanduser(name))):
            raise InvalidRequest(f"{shown(name)} is not one of this bot's models; choose one "
                                 f"from the list the model option offers.")
    check_model_name(settings, model)


def _check_common(settings: Settings, *, steps: int, guidance: float, count: int) -> None:
    if not 1 <= steps <= settings.max_steps:
        raise InvalidRequest(f"Steps must be between 1 and {settings.max_steps}, "
                             f"not {shown(steps)}.")
    if not 0.0 <= guidance <= 30.0:
        raise InvalidRequest(f"Guidance must be between 0 and 30, not {shown(guidance)}.")
    if not 1 <= count <= settings.max_count:
        raise InvalidRequest(f"Count must be between 1 and {settings.max_count}, "
                             f"not {shown(count)}.")


@dataclass
class ModelChoice:
    """The model a request means, with what it runs with when the request does not say."""

    model: str  # the reference stored with the job
    family: str
    profile: Profile | None  # diffusers models only
    steps: int
    guidance: float
    sampler: str | None
    clip_skip: int | None = None  # the catalogue's, for CLIP models


def _model_and_defaults(settings: Settings, model: str | None, family: str | None,
                        steps: int | None, guidance: float | None,
                        sampler: str | None = None) -> ModelChoice:
    """The model a request means, its family, and the steps, guidance and sampler it runs
    with: what was asked, else the catalogue's values for the model, else its
    architecture's (diffusers) or its own config's (artbot-trained models), else the
    operator's defaults."""
    check_model_name(settings, model)
    entry = settings.model_entry(model)
    model = settings.resolve_model(model)
    family = family or family_of(model)
    profile = model_profile(settings, model, family)
    if profile is not None:
        defaults = {"steps": min(profile.steps, settings.max_steps), "guidance": profile.guidance}
    else:
        defaults = model_defaults(model)
    steps = int(defaults.get("steps", settings.default_steps)) if steps is None else \
        as_int(steps, "Steps")
    guidance = float(defaults.get("guidance", DEFAULT_GUIDANCE)) if guidance is None else \
        as_float(guidance, "Guidance")
    if sampler is None and entry is not None and entry.sampler and family == "diffusion":
        sampler = entry.sampler
    sampler = check_sampler(sampler, family, model, profile)
    clip_skip = entry.clip_skip if entry is not None and profile is not None and \
        profile.weighting else None
    return ModelChoice(model, family, profile, steps, guidance, sampler, clip_skip)


def _image_params(prompt: str, negative_prompt: str, width: int, height: int, steps: int,
                  guidance: float, seeds: list[int], sampler: str | None,
                  loras: list[dict[str, Any]], clip_skip: int | None = None) -> dict[str, Any]:
    """The parameters every drawing job stores (vary adds its own)."""
    return {
        "prompt": prompt,
        "negative_prompt": (negative_prompt or "").strip(),
        "width": width,
        "height": height,
        "steps": steps,
        "guidance": guidance,
        "count": len(seeds),
        "seed": seeds[0],
        **({"sampler": sampler} if sampler else {}),
        **({"loras": loras} if loras else {}),
        **({"clip_skip": clip_skip} if clip_skip else {}),
    }


def build_draw(
    settings: Settings,
    *,
    prompt: str,
    negative_prompt: str = "",
    model: str | None = None,
    seed: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    size: str | None = None,
    count: int = 1,
    family: str | None = None,
    parent_id: int | None = None,
    sampler: str | None = None,
    loras: list[tuple[str, float]] | None = None,
    style_sha: str | None = None,
    style_method: str | None = None,
    options: dict[str, Any] | None = None,
) -> JobSpec:
    """A text-to-image job. `<lora:name:weight>` tags in the prompt, and `loras`,
    name the LoRAs it applies; `style_sha`, a stored image, is a style reference its
    images are restyled by (`style_reference`)."""
    prompt = check_prompt(prompt, hint="say what to draw", required=True)
    negative_prompt = check_prompt(negative_prompt, what="The negative prompt")
    count = as_int(count, "Count")
    choice = _model_and_defaults(settings, model, family, steps, guidance, sampler)
    prompt, lora_list = take_loras(prompt, settings, model=choice.model, profile=choice.profile,
                                   entry=settings.model_entry(choice.model), named=loras)
    if not prompt:
        raise InvalidRequest("The prompt is empty: say what to draw.")
    if not has_visible(prompt):  # only tags, and invisible characters around them
        check_prompt(prompt, hint="say what to draw", required=True)
    _check_common(settings, steps=choice.steps, guidance=choice.guidance,
                  count=count)
    profile = choice.profile
    negative_prompt = check_negative(negative_prompt, choice.guidance, profile)
    if size is None or not str(size).strip():
        if profile is not None:  # a diffusers model draws at its architecture's size
            size = "{}x{}".format(*default_size(profile, settings))
        elif native_size(choice.model):  # an artbot-trained model at its own size
            size = f"{native_size(choice.model)}x{native_size(choice.model)}"
    width, height = parse_size(size, settings, profile.multiple if profile else 8)
    seeds = pick_seeds(seed, count)
    params = _image_params(prompt, negative_prompt, width, height, choice.steps,
                           choice.guidance, seeds, choice.sampler, lora_list, choice.clip_skip)
    options = dict(options or {})
    if style_sha:
        options.update(style_reference(settings, style_sha, style_method))
        params["style_image"] = style_sha
    if options:
        params["options"] = options
    return JobSpec(kind="draw", family=choice.family, model=choice.model, params=params,
                   seeds=seeds, parent_id=parent_id)


def build_vary(
    settings: Settings,
    *,
    init_image_sha: str,
    init_size: tuple[int, int],
    prompt: str = "",
    negative_prompt: str = "",
    model: str | None = None,
    strength: float | None = None,
    seed: int | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    count: int = 1,
    family: str | None = None,
    parent_id: int | None = None,
    options: dict[str, Any] | None = None,
    sampler: str | None = None,
    loras: list[tuple[str, float]] | None = None,
) -> JobSpec:
    """A variation of a stored image. The output has the input's size, rounded
    down to a multiple of 8 and scaled down to fit `settings.max_size`."""
    prompt = check_prompt(prompt, hint="say what the variation should show, or leave it out")
    negative_prompt = check_prompt(negative_prompt, what="The negative prompt")
    count = as_int(count, "Count")
    strength = DEFAULT_STRENGTH if strength is None else as_float(strength, "Strength")
    if not 0.0 < strength <= 1.0:
        raise InvalidRequest(f"Strength must be above 0 and at most 1, not {shown(strength)}.")
    choice = _model_and_defaults(settings, model, family, steps, guidance, sampler)
    steps, profile = choice.steps, choice.profile
    prompt, lora_list = take_loras(prompt, settings, model=choice.model, profile=profile,
                                   entry=settings.model_entry(choice.model), named=loras)
    _check_common(settings, steps=steps, guidance=choice.guidance, count=count)
    check_img2img(profile)
    negative_prompt = check_negative(negative_prompt, choice.guidance, profile)
    if int(steps * strength) < 1:
        raise InvalidRequest(
            f"With strength {strength}, {steps} steps run no denoising step at all; "
            f"raise the strength or the steps."
        )
    width, height = fit_size(*init_size, settings.max_size, profile.multiple if profile else 8)
    seeds = pick_seeds(seed, count)
    return JobSpec(
        kind="vary",
        family=choice.family,
        model=choice.model,
        params={
            **_image_params(prompt, negative_prompt, width, height, steps, choice.guidance,
                            seeds, choice.sampler, lora_list, choice.clip_skip),
            "strength": strength,
            "init_image": init_image_sha,
            **({"options": dict(options)} if options else {}),
        },
        seeds=seeds,
        parent_id=parent_id,
    )


def check_img2img(profile: Profile | None) -> None:
    if profile is not None and not profile.img2img:
        raise InvalidRequest(f"{profile.label} has no image-to-image pipeline, so it cannot vary "
                             f"or restyle an image; choose another model.")


def fit_size(width: int, height: int, max_side: int, multiple: int = 8) -> tuple[int, int]:
    """Scale (width, height) down to fit max_side, then round down to multiples of `multiple`."""
    scale = min(1.0, max_side / max(width, height))
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


STYLE_METHODS = ("gatys", "adain", "diffusion")
STYLE_DEFAULT_STEPS = 100  # gatys iterations over all scales
STYLE_DEFAULT_SIZE = 256
# The shortest side gatys and AdaIN work at: VGG-19 halves the image four times before
# its last style layer (relu5_1), so a side under 16 pixels vanishes there; at 32 each
# style layer still sees 2x2 or more.
STYLE_MIN_SIDE = 32


def style_transfer_size(content_size: tuple[int, int], size: int,
                        max_side: int) -> tuple[int, int, str | None]:
    """The output size of gatys and AdaIN for a content image: fitted to `size`, and
    scaled up until its short side is STYLE_MIN_SIDE when it is smaller (with a note
    saying so), as long as its long side then stays within `max_side`; a thinner image
    is refused in one line."""
    width, height = fit_size(*content_size, size)
    if min(width, height) >= STYLE_MIN_SIDE:
        return width, height, None
    cw, ch = content_size
    scale = STYLE_MIN_SIDE / min(cw, ch)
    width, height = (max(STYLE_MIN_SIDE, round(side * scale / 8) * 8) for side in (cw, ch))
    if max(width, height) > max_side:
        raise InvalidRequest(
            f"The content image is {cw}x{ch}, too long and thin for style transfer: it needs "
            f"{STYLE_MIN_SIDE} pixels on its short side, which would make it {max(width, height)} "
            f"pixels long, over the {max_side} allowed. Crop it to at most "
            f"{max_side // STYLE_MIN_SIDE}:1, or restyle it by text (a style prompt).")
    return width, height, (f"Style transfer needs {STYLE_MIN_SIDE} pixels a side or more, so the "
                           f"{cw}x{ch} content image was restyled at {width}x{height}.")


def build_stylize(
    settings: Settings,
    *,
    content_sha: str,
    content_size: tuple[int, int],
    style_sha: str | None = None,
    prompt: str | None = None,
    method: str | None = None,
    size: int | None = None,
    steps: int | None = None,
    strength: float | None = None,
    seed: int | None = None,
    keep_colors: bool = False,
    model: str | None = None,
    preset: str | None = None,
    parent_id: int | None = None,
) -> JobSpec:
    """Style transfer of a stored content image: by a style image (gatys, adain) or by text.

    Give exactly one of `style_sha` (an uploaded image or a preset's) and `prompt`.
    Without a method, a style image means gatys and a prompt means diffusion.
    """
    prompt = check_prompt(prompt, what="The style prompt",
                          hint="describe the style in words, or give a style image")
    if bool(style_sha) == bool(prompt):
        raise InvalidRequest("Give one style: a style image, a preset, or a style prompt.")
    method = (method or ("diffusion" if prompt else "gatys")).lower()
    if method not in STYLE_METHODS:
        raise InvalidRequest(f"Method {method!r} is not one of {', '.join(STYLE_METHODS)}.")
    if method == "diffusion" and not prompt:
        raise InvalidRequest("The diffusion method restyles by text: give a style prompt.")
    if method != "diffusion" and not style_sha:
        raise InvalidRequest(f"The {method} method needs a style image or a preset.")
    size = STYLE_DEFAULT_SIZE if size is None else as_int(size, "Size")
    if not 32 <= size <= settings.max_style_size:
        raise InvalidRequest(f"Size must be between 32 and {settings.max_style_size} pixels.")
    width, height = fit_size(*content_size, size)
    seeds = pick_seeds(seed, 1)
    guidance = DEFAULT_GUIDANCE
    scaled_up = None  # the note of a content image too small for gatys and AdaIN
    if method == "diffusion":
        strength = DEFAULT_STRENGTH if strength is None else as_float(strength, "Strength")
        if not 0.0 < strength <= 1.0:
            raise InvalidRequest(f"Strength must be above 0 and at most 1, "
                                 f"not {shown(strength)}.")
        check_model_name(settings, model)
        if family_of(settings.resolve_model(model)) not in ("diffusion", "pixel-diffusion"):
            raise InvalidRequest(f"Model {settings.resolve_model(model)} cannot restyle by text; "
                                 f"choose a diffusion model.")
        choice = _model_and_defaults(settings, model, None, steps, None)
        model, family, steps, guidance = choice.model, choice.family, choice.steps, choice.guidance
        if not 1 <= steps <= settings.max_steps:
            raise InvalidRequest(f"Steps must be between 1 and {settings.max_steps}, "
                                 f"not {shown(steps)}.")
        check_img2img(choice.profile)
        if choice.profile is not None:
            width, height = fit_size(*content_size, size, choice.profile.multiple)
        options: dict[str, Any] = {"method": "diffusion"}
    else:
        strength = 1.0 if strength is None else as_float(strength, "Strength")
        top = 1.0 if method == "adain" else 10.0
        if not 0.0 < strength <= top:
            raise InvalidRequest(f"Strength for {method} must be above 0 and at most {top:g}.")
        steps = STYLE_DEFAULT_STEPS if steps is None else as_int(steps, "Steps")
        if not 1 <= steps <= 2000:
            raise InvalidRequest(f"Steps must be between 1 and 2000, not {shown(steps)}.")
        model = settings.vgg19_weights or "vgg19"
        family = "style"
        options = {"method": method}
        width, height, scaled_up = style_transfer_size(content_size, size, settings.max_style_size)
        if method == "adain":
            if not settings.adain_decoder:
                raise InvalidRequest(
                    "AdaIN needs decoder weights, and none are configured (set adain_decoder or "
                    "ARTBOT_ADAIN_DECODER); use --method gatys, which needs none.")
            options["decoder"] = settings.adain_decoder
    if keep_colors:
        options["keep_colors"] = True
    params: dict[str, Any] = {
        "prompt": prompt, "negative_prompt": "", "width": width, "height": height,
        "steps": steps, "strength": strength, "count": 1, "seed": seeds[0],
        "guidance": guidance, "init_image": content_sha, "options": options,
    }
    if style_sha:
        params["style_image"] = style_sha
    if preset:
        params["preset"] = preset
    if scaled_up:
        params["notes"] = [scaled_up]
    return JobSpec(kind="stylize", family=family, model=model, params=params, seeds=seeds,
                   parent_id=parent_id)


def build_reroll(settings: Settings, job: Job, *, prompt: str | None = None) -> JobSpec:
    """The same request as `job` with new seeds (and, for a remix, a new prompt)."""
    p = job.params
    if job.kind == "vary":
        return build_vary(
            settings,
            init_image_sha=p["init_image"],
            init_size=(p["width"], p["height"]),
            prompt=p.get("prompt", "") if prompt is None else prompt,
            negative_prompt=p.get("negative_prompt", ""),
            model=job.model,
            strength=p.get("strength"),
            steps=p.get("steps"),
            guidance=p.get("guidance"),
            count=p.get("count", len(job.seeds)),
            family=job.family,
            parent_id=job.id,
            options=p.get("options"),
            sampler=p.get("sampler"),
            loras=_loras_of(p),
        )
    if job.kind == "stylize":
        if job.family == "style":
            raise InvalidRequest("Style transfer of the same images gives the same picture; "
                                 "change the style or the strength instead.")
        return build_stylize(
            settings, content_sha=p["init_image"], content_size=(p["width"], p["height"]),
            prompt=p.get("prompt") if prompt is None else prompt, method="diffusion",
            size=max(p["width"], p["height"]), steps=p.get("steps"), strength=p.get("strength"),
            model=job.model, parent_id=job.id,
        )
    if job.kind in ("upscale", "outpaint", "blend"):
        return _reroll_tool(settings, job)
    if job.kind != "draw":
        raise InvalidRequest(f"A {job.kind} job cannot be rerolled.")
    return build_draw(
        settings,
        prompt=p.get("prompt", "") if prompt is None else prompt,
        negative_prompt=p.get("negative_prompt", ""),
        model=job.model,
        steps=p.get("steps"),
        guidance=p.get("guidance"),
        size=f"{p['width']}x{p['height']}",
        count=p.get("count", len(job.seeds)),
        family=job.family,
        parent_id=job.id,
        sampler=p.get("sampler"),
        loras=_loras_of(p),
        style_sha=p.get("style_image"),
        style_method=(p.get("options") or {}).get("style_method"),
    )


def _reroll_tool(settings: Settings, job: Job) -> JobSpec:
    """An upscale (hires fix), zoom, pan or blend again with a new seed: the same inputs
    and geometry, another fill."""
    if job.kind == "upscale" and job.family == "upscaler":
        raise InvalidRequest("An upscaler network gives the same picture again; nothing to reroll.")
    seed = secrets.randbelow(SEED_LIMIT)
    params = {**job.params, "seed": seed}
    for gate_or_result in ("spoiler", "relax", "notes"):  # set again by this job's own run
        params.pop(gate_or_result, None)
    options = {k: v for k, v in (params.get("options") or {}).items() if k != "safety_checker"}
    if options:
        params["options"] = options
    else:
        params.pop("options", None)
    return JobSpec(kind=job.kind, family=job.family, model=job.model, params=params,
                   seeds=[seed], parent_id=job.id)


def _loras_of(params: dict[str, Any]) -> list[tuple[str, float]]:
    return [(x["name"], x["weight"]) for x in params.get("loras", [])]


def build_variation_of(
    settings: Settings,
    job: Job,
    image_sha: str,
    image_size: tuple[int, int],
    *,
    strength: float,
    prompt: str | None = None,
    image_seed: int | None = None,
) -> JobSpec:
    """A variation of one image of `job`, with the job's prompt and model; one image.

    `image_seed` (the seed that made that image) lets latent-space families
    (the GAN) vary around the image's own latent instead of its pixels.
    """
    p = job.params
    if job.family == "upscaler":
        raise InvalidRequest(f"Job {job.id} was upscaled by a super-resolution network, which "
                             f"cannot vary; vary job {job.parent_id or job.id}'s picture instead.")
    return build_vary(
        settings,
        init_image_sha=image_sha,
        init_size=image_size,
        prompt=p.get("prompt", "") if prompt is None else prompt,
        negative_prompt=p.get("negative_prompt", ""),
        model=job.model,
        strength=strength,
        steps=p.get("steps"),
        guidance=p.get("guidance"),
        count=1,
        family=job.family,
        parent_id=job.id,
        options={"source_seed": image_seed} if image_seed is not None else None,
        sampler=p.get("sampler"),
        loras=_loras_of(p),
    )


# -- image tools: upscale, zoom out and pan, blend, describe --------------------------------

UPSCALES = (2, 4)
ZOOMS = (1.5, 2.0)
PANS = ("left", "right", "up", "down")
# Largest side of an upscaled image. Upscaling is not drawing: it may go past max_size
# (a 1024 SDXL picture x4 is 4096), up to this.
MAX_UPSCALED_SIDE = 4096
# A hires fix redraws the enlarged picture this far: enough to sharpen, too little to change it.
HIRES_STRENGTH = 0.3
# A blend is refined by image to image this far from the mean of its images.
BLEND_STRENGTH = 0.5
# Families whose jobs are tools on images, not models that draw: exempt from the
# server's allowed families and models (the job they act on passed those already).
TOOL_FAMILIES = ("upscaler", "describe")
# Kinds whose results are images (a describe job's result is text).
IMAGE_KINDS = ("draw", "vary", "stylize", "upscale", "outpaint", "blend")


def input_images(params: dict[str, Any]) -> list[str]:
    """The sha256 of every stored image a job reads: what a remote worker must be sent."""
    shas = [params.get("init_image"), params.get("style_image"), *params.get("images", [])]
    return list(dict.fromkeys(s for s in shas if s))


def _img2img_profile(settings: Settings, job: Job) -> Profile | None:
    """The diffusers profile of a job's model when it has image to image, else None
    (also None when the model's files cannot be read here)."""
    if job.family != "diffusion":
        return None
    try:
        profile = model_profile(settings, job.model, job.family)
    except (ConfigError, InvalidRequest, ModelNotFound, OSError, ValueError):
        return None
    return profile if profile is not None and profile.img2img else None


def tools_for(settings: Settings, job: Job) -> tuple[bool, bool]:
    """Which tools a result of `job` offers here, with one look at the model's files:
    (upscale: by the operator's upscaler network, any picture, else by a hires fix of its
    own diffusers model; zoom out and pan: its model must be a diffusers model with an
    image-to-image or inpainting pipeline)."""
    if job.kind not in IMAGE_KINDS:
        return False, False
    img2img = _img2img_profile(settings, job) is not None
    return bool(settings.upscaler) or img2img, img2img


def file_parent(settings: Settings, model: str | None, prompt: str = "") -> Job:
    """What a tool needs of "the job that made it" for an image given as a file (`artbot
    upscale photo.png`): the model to work with (default: the default model), its steps
    and guidance, and the prompt, if one is given. It is not stored; its id is None."""
    choice = _model_and_defaults(settings, model, None, None, None)
    return Job(id=None, user_id="", server_id=None, channel_id=None, source="cli", kind="draw",
               family=choice.family, model=choice.model, model_revision=None,
               params={"prompt": prompt, "steps": choice.steps, "guidance": choice.guidance,
                       **({"sampler": choice.sampler} if choice.sampler else {})},
               seeds=pick_seeds(None, 1), batch_key="", status=None, attempts=0,
               claim_token=None, worker_id=None, lease_until=None, cancel_requested=False,
               progress_step=None, progress_total=None, error=None, created_at=0.0,
               started_at=None, finished_at=None, run_seconds=None, parent_id=None,
               message_id=None)


def _from_parent(job: Job, image_seed: int | None) -> dict[str, Any]:
    """What a tool's job keeps of the job it acts on: prompt, sampler, LoRAs, seed."""
    p = job.params
    keep = {k: p[k] for k in ("prompt", "negative_prompt", "sampler", "loras", "clip_skip")
            if p.get(k) not in (None, "", [])}
    seed = image_seed if image_seed is not None else (job.seeds[0] if job.seeds else 0)
    return {"prompt": "", "negative_prompt": "", **keep, "seed": seed, "count": 1}


def build_upscale(settings: Settings, job: Job, image_sha: str, image_size: tuple[int, int],
                  *, scale: int, image_seed: int | None = None) -> JobSpec:
    """Upscale one image of `job` x2 or x4: with the operator's upscaler network if there
    is one, else a hires fix (enlarge, then image to image at low strength) with the
    job's own diffusers model. The result keeps the parent's prompt, seed and parameters."""
    if scale not in UPSCALES:
        raise InvalidRequest(f"Upscale by {' or '.join(map(str, UPSCALES))}, not {scale}.")
    if job.kind not in IMAGE_KINDS:
        raise InvalidRequest(f"A {job.kind} job has no image to upscale.")
    width, height = image_size[0] * scale, image_size[1] * scale
    if max(width, height) > MAX_UPSCALED_SIDE:
        raise InvalidRequest(f"Upscaling {image_size[0]}x{image_size[1]} x{scale} would make "
                             f"{width}x{height}, larger than the {MAX_UPSCALED_SIDE} pixels per "
                             f"side allowed; try x2." if scale > 2 else
                             f"That image is too large to upscale: at most {MAX_UPSCALED_SIDE} "
                             f"pixels per side after upscaling.")
    params = {**_from_parent(job, image_seed), "width": width, "height": height,
              "init_image": image_sha}
    if settings.upscaler:
        params.update(steps=1, guidance=0.0, options={"scale": scale, "method": "upscaler"})
        family, model = "upscaler", settings.upscaler
    else:
        profile = _img2img_profile(settings, job)
        if profile is None:
            raise InvalidRequest(
                f"{settings.model_name(job.model)} cannot upscale its pictures and no upscaler "
                f"model is configured (the operator can set upscaler in artbot.toml).")
        steps = min(int(job.params.get("steps") or profile.steps), settings.max_steps)
        if int(steps * HIRES_STRENGTH) < 1:
            steps = min(settings.max_steps, max(steps, math.ceil(1 / HIRES_STRENGTH)))
        params.update(steps=steps, guidance=float(job.params.get("guidance", profile.guidance)),
                      strength=HIRES_STRENGTH, options={"scale": scale, "method": "hires-fix"})
        family, model = job.family, job.model
    return JobSpec(kind="upscale", family=family, model=model, params=params,
                   seeds=[params["seed"]], parent_id=job.id)


def outpaint_pads(width: int, height: int, *, zoom: float | None = None, pan: str | None = None,
                  multiple: int = 8) -> tuple[int, int, int, int]:
    """[left, top, right, bottom] pixels to add around a width x height picture: a zoom
    out by `zoom` (the picture stays centred) or a pan that extends one side by half
    the picture. The canvas keeps multiples of `multiple`."""
    def grow(side: int, factor: float) -> int:
        return max(multiple, math.ceil(side * factor / multiple) * multiple) - side

    if zoom is not None:
        dx, dy = grow(width, zoom), grow(height, zoom)
        return dx // 2, dy // 2, dx - dx // 2, dy - dy // 2
    if pan == "left":
        return grow(width, 1.5), 0, 0, 0
    if pan == "right":
        return 0, 0, grow(width, 1.5), 0
    if pan == "up":
        return 0, grow(height, 1.5), 0, 0
    if pan == "down":
        return 0, 0, 0, grow(height, 1.5)
    raise InvalidRequest(f"Pan {pan!r} is not one of {', '.join(PANS)}.")


def build_outpaint(settings: Settings, job: Job, image_sha: str, image_size: tuple[int, int],
                   *, zoom: float | None = None, pan: str | None = None,
                   image_seed: int | None = None) -> JobSpec:
    """Zoom out (1.5x, 2x) or pan (left, right, up, down) one image of `job`: a larger
    canvas whose new border its diffusers model fills, the old pixels kept."""
    if (zoom is None) == (pan is None):
        raise InvalidRequest("Say either how far to zoom out or which way to pan.")
    if zoom is not None and zoom not in ZOOMS:
        raise InvalidRequest(f"Zoom out by {' or '.join(f'{z:g}x' for z in ZOOMS)}, not {zoom:g}x.")
    if pan is not None and pan not in PANS:
        raise InvalidRequest(f"Pan {pan!r} is not one of {', '.join(PANS)}.")
    profile = _img2img_profile(settings, job)
    if profile is None or job.kind not in IMAGE_KINDS:
        raise InvalidRequest(f"{settings.model_name(job.model)} cannot zoom out or pan: that "
                             f"needs a diffusers model with image to image or inpainting.")
    w, h = image_size
    left, top, right, bottom = outpaint_pads(w, h, zoom=zoom, pan=pan, multiple=profile.multiple)
    width, height = w + left + right, h + top + bottom
    if max(width, height) > settings.max_size:
        raise InvalidRequest(f"That would make a {width}x{height} picture, larger than the "
                             f"{settings.max_size} pixels per side allowed here"
                             + ("; try 1.5x." if zoom and zoom > 1.5 else "."))
    steps = min(int(job.params.get("steps") or profile.steps), settings.max_steps)
    params = {**_from_parent(job, image_seed), "width": width, "height": height,
              "steps": steps, "guidance": float(job.params.get("guidance", profile.guidance)),
              "strength": 1.0, "init_image": image_sha,
              "options": {"pad": [left, top, right, bottom],
                          **({"zoom": zoom} if zoom is not None else {"pan": pan})}}
    return JobSpec(kind="outpaint", family=job.family, model=job.model, params=params,
                   seeds=[params["seed"]], parent_id=job.id)


BLEND_FAMILIES = ("diffusion", "pixel-diffusion", "vae")


def build_blend(settings: Settings, *, image_shas: list[str], sizes: list[tuple[int, int]],
                prompt: str = "", model: str | None = None, seed: int | None = None,
                size: str | None = None, parent_id: int | None = None) -> JobSpec:
    """One picture from 2 to 5 images: a diffusers model blends them in its VAE's latent
    space and refines the mean by image to image; the emoji VAE blends in its own
    latent space; emoji-diffusion refines their pixel mean."""
    if not 2 <= len(image_shas) <= 5:
        raise InvalidRequest(f"Blend 2 to 5 images, not {len(image_shas)}.")
    prompt = check_prompt(prompt, hint="say what the blend should show, or leave it out")
    choice = _model_and_defaults(settings, model, None, None, None)
    if choice.family not in BLEND_FAMILIES:
        raise InvalidRequest(f"{settings.model_name(choice.model)} cannot blend images; choose "
                             f"emoji-vae, emoji-diffusion or a diffusers model.")
    check_img2img(choice.profile)
    prompt, lora_list = take_loras(prompt or "", settings, model=choice.model,
                                   profile=choice.profile,
                                   entry=settings.model_entry(choice.model))
    _check_common(settings, steps=choice.steps, guidance=choice.guidance, count=1)
    profile = choice.profile
    if size is not None and str(size).strip():
        width, height = parse_size(size, settings, profile.multiple if profile else 8)
    elif profile is not None:
        width, height = default_size(profile, settings)
    elif native_size(choice.model):
        width = height = native_size(choice.model)
    else:
        width, height = fit_size(*sizes[0], settings.max_size)
    seeds = pick_seeds(seed, 1)
    params = {**_image_params(prompt, "", width, height, choice.steps, choice.guidance, seeds,
                              choice.sampler, lora_list, choice.clip_skip),
              "strength": BLEND_STRENGTH, "images": list(image_shas)}
    return JobSpec(kind="blend", family=choice.family, model=choice.model, params=params,
                   seeds=seeds, parent_id=parent_id)


DESCRIBER = "emoji-classifier"


def build_describe(settings: Settings, *, image_sha: str, image_size: tuple[int, int],
                   parent_id: int | None = None) -> JobSpec:
    """Put an image into a few prompts: the operator's captioning model, else the
    bundled emoji classifier. The job makes no image; its prompts are its result."""
    model = settings.captioner or DESCRIBER
    seeds = pick_seeds(None, 1)
    params = {"prompt": "", "count": 1, "seed": seeds[0], "init_image": image_sha,
              "source_size": list(image_size)}
    return JobSpec(kind="describe", family="describe", model=model, params=params, seeds=seeds,
                   parent_id=parent_id)


def style_reference(settings: Settings, style_sha: str, style_method: str | None) -> dict[str, Any]:
    """The options of a draw job with a style reference: its images are restyled after
    drawing by AdaIN (when the operator has its decoder) or Gatys."""
    method = (style_method or ("adain" if settings.adain_decoder else "gatys")).lower()
    if method not in ("adain", "gatys"):
        raise InvalidRequest(f"Style method {method!r} is not adain or gatys.")
    if method == "adain" and not settings.adain_decoder:
        raise InvalidRequest("AdaIN needs decoder weights, and none are configured; use gatys.")
    options: dict[str, Any] = {"style_method": method}
    if method == "adain":
        options["decoder"] = settings.adain_decoder
    return options
