"""What a request means: validated options turned into a job for the queue.

The CLI and the bot call these functions with what the user typed; they check
every option, pick seeds and defaults, and return a `JobSpec` ready for
`JobQueue.submit`. A bad option raises `InvalidRequest` with a message for the
user, before anything is recorded. Nothing here imports torch or discord.
"""

from __future__ import annotations

import io
import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from artbot.config import Settings
from artbot.errors import InvalidRequest
from generators.bundled import available, family_of, model_defaults, native_size
from generators.diffusion import samplers
from storage.jobs import Job

SEED_LIMIT = 2**32  # seeds are 0 .. 2**32 - 1
DEFAULT_GUIDANCE = 7.5
DEFAULT_STRENGTH = 0.6
# The two variation strengths offered by buttons and reactions.
STRENGTHS = {"subtle": 0.35, "strong": 0.7}
# Largest input image accepted, in pixels (an 8000 x 8000 photo is 64 Mpx).
MAX_INPUT_PIXELS = 64_000_000
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
        """Jobs with the same key can share one batched forward pass."""
        p = self.params
        key = {
            "kind": self.kind,
            "generator": self.family,
            "model": self.model,
            "size": [p.get("width"), p.get("height")],
            "steps": p.get("steps"),
            "guidance": p.get("guidance"),
            "strength": p.get("strength"),
            "sampler": p.get("sampler"),
        }
        return json.dumps(key, sort_keys=True)


def model_choices(settings: Settings) -> list[str]:
    """Model names to offer: the default, the configured short names, the bundled models."""
    return list(dict.fromkeys([settings.default_model, *settings.models, *available()]))


def parse_size(text: str | None, settings: Settings) -> tuple[int, int]:
    """'512x768' -> (512, 768), checking the limits Stable Diffusion needs."""
    if text is None or not str(text).strip():
        text = settings.default_size
    m = re.fullmatch(r"\s*(\d{1,5})\s*[xX×*]\s*(\d{1,5})\s*", str(text))
    if not m:
        raise InvalidRequest(f"Size {text!r} is not WIDTHxHEIGHT, for example 512x512.")
    width, height = int(m.group(1)), int(m.group(2))
    check_size(width, height, settings)
    return width, height


def check_size(width: int, height: int, settings: Settings) -> None:
    if width % 8 or height % 8:
        raise InvalidRequest(
            f"Size {width}x{height} is not a multiple of 8 in both directions "
            f"(try {max(8, width // 8 * 8)}x{max(8, height // 8 * 8)})."
        )
    if not (8 <= width <= settings.max_size and 8 <= height <= settings.max_size):
        raise InvalidRequest(
            f"Size {width}x{height} is outside 8..{settings.max_size} pixels per side."
        )


def check_sampler(sampler: str | None, family: str, model: str) -> str | None:
    """The sampler's A1111 name, for a diffusers model; a clear refusal otherwise."""
    name = samplers.canonical(sampler)
    if name is not None and family != "diffusion":
        raise InvalidRequest(f"{model} samples its own way; a sampler applies to diffusers "
                             f"models only (leave it out).")
    return name


def pick_seeds(seed: int | None, count: int) -> list[int]:
    """One seed per image: `seed`, `seed + 1`, ... or random ones."""
    if seed is None:
        seed = secrets.randbelow(SEED_LIMIT)
    if not 0 <= seed < SEED_LIMIT:
        raise InvalidRequest(f"Seed {seed} is outside 0..{SEED_LIMIT - 1}.")
    return [(seed + i) % SEED_LIMIT for i in range(count)]


def _check_common(
    settings: Settings, *, prompt: str, steps: int, guidance: float, count: int
) -> None:
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"The prompt is longer than {MAX_PROMPT_CHARS} characters.")
    if not 1 <= steps <= settings.max_steps:
        raise InvalidRequest(f"Steps must be between 1 and {settings.max_steps}, not {steps}.")
    if not 0.0 <= guidance <= 30.0:
        raise InvalidRequest(f"Guidance must be between 0 and 30, not {guidance}.")
    if not 1 <= count <= settings.max_count:
        raise InvalidRequest(f"Count must be between 1 and {settings.max_count}, not {count}.")


def _model_and_defaults(settings: Settings, model: str | None, family: str | None,
                        steps: int | None, guidance: float | None) -> tuple[str, str, int, float]:
    """The model a request means, its family, and the steps and guidance it runs with:
    what was asked, else an artbot-trained model's own defaults, else the operator's."""
    model = settings.resolve_model(model)
    family = family or family_of(model)
    defaults = model_defaults(model) if family != "diffusion" else {}
    steps = int(defaults.get("steps", settings.default_steps)) if steps is None else int(steps)
    guidance = float(defaults.get("guidance", DEFAULT_GUIDANCE)) if guidance is None else float(guidance)
    return model, family, steps, guidance


def _image_params(prompt: str, negative_prompt: str, width: int, height: int, steps: int,
                  guidance: float, seeds: list[int], sampler: str | None) -> dict[str, Any]:
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
) -> JobSpec:
    prompt = (prompt or "").strip()
    if not prompt:
        raise InvalidRequest("The prompt is empty: say what to draw.")
    model, family, steps, guidance = _model_and_defaults(settings, model, family, steps, guidance)
    _check_common(settings, prompt=prompt, steps=steps, guidance=guidance, count=count)
    native = native_size(model) if family != "diffusion" else None
    if native and (size is None or not str(size).strip()):
        size = f"{native}x{native}"  # an artbot-trained model draws at its own size
    width, height = parse_size(size, settings)
    sampler = check_sampler(sampler, family, model)
    seeds = pick_seeds(seed, count)
    return JobSpec(
        kind="draw",
        family=family,
        model=model,
        params=_image_params(prompt, negative_prompt, width, height, steps, guidance, seeds,
                             sampler),
        seeds=seeds,
        parent_id=parent_id,
    )


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
) -> JobSpec:
    """A variation of a stored image. The output has the input's size, rounded
    down to a multiple of 8 and scaled down to fit `settings.max_size`."""
    strength = DEFAULT_STRENGTH if strength is None else float(strength)
    if not 0.0 < strength <= 1.0:
        raise InvalidRequest(f"Strength must be above 0 and at most 1, not {strength}.")
    model, family, steps, guidance = _model_and_defaults(settings, model, family, steps, guidance)
    prompt = (prompt or "").strip()
    _check_common(settings, prompt=prompt, steps=steps, guidance=guidance, count=count)
    if int(steps * strength) < 1:
        raise InvalidRequest(
            f"With strength {strength}, {steps} steps run no denoising step at all; "
            f"raise the strength or the steps."
        )
    width, height = fit_size(*init_size, settings.max_size)
    sampler = check_sampler(sampler, family, model)
    seeds = pick_seeds(seed, count)
    return JobSpec(
        kind="vary",
        family=family,
        model=model,
        params={
            **_image_params(prompt, negative_prompt, width, height, steps, guidance, seeds,
                            sampler),
            "strength": strength,
            "init_image": init_image_sha,
            **({"options": dict(options)} if options else {}),
        },
        seeds=seeds,
        parent_id=parent_id,
    )


def fit_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Scale (width, height) down to fit max_side, then round down to multiples of 8."""
    scale = min(1.0, max_side / max(width, height))
    w = max(8, int(width * scale) // 8 * 8)
    h = max(8, int(height * scale) // 8 * 8)
    return w, h


def read_input_image(data: bytes, *, name: str = "the file") -> Image.Image:
    """Decode an uploaded or given image as RGB, upright, transparency on white.

    Raises InvalidRequest, with a message for the user, for anything that is
    not an image or is too large to process.
    """
    if not data:
        raise InvalidRequest(f"{name} is empty, not an image.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            if width * height > MAX_INPUT_PIXELS:
                raise InvalidRequest(
                    f"{name} is {width}x{height}, larger than the {MAX_INPUT_PIXELS // 1_000_000} "
                    f"megapixels accepted."
                )
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except InvalidRequest:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise InvalidRequest(f"{name} is not an image that can be read (PNG, JPEG, WebP, GIF...).") from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


STYLE_METHODS = ("gatys", "adain", "diffusion")
STYLE_DEFAULT_STEPS = 100  # gatys iterations over all scales
STYLE_DEFAULT_SIZE = 256


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
    prompt = (prompt or "").strip()
    if bool(style_sha) == bool(prompt):
        raise InvalidRequest("Give one style: a style image, a preset, or a style prompt.")
    method = (method or ("diffusion" if prompt else "gatys")).lower()
    if method not in STYLE_METHODS:
        raise InvalidRequest(f"Method {method!r} is not one of {', '.join(STYLE_METHODS)}.")
    if method == "diffusion" and not prompt:
        raise InvalidRequest("The diffusion method restyles by text: give a style prompt.")
    if method != "diffusion" and not style_sha:
        raise InvalidRequest(f"The {method} method needs a style image or a preset.")
    size = STYLE_DEFAULT_SIZE if size is None else int(size)
    if not 32 <= size <= settings.max_style_size:
        raise InvalidRequest(f"Size must be between 32 and {settings.max_style_size} pixels.")
    width, height = fit_size(*content_size, size)
    seeds = pick_seeds(seed, 1)
    if method == "diffusion":
        strength = DEFAULT_STRENGTH if strength is None else float(strength)
        if not 0.0 < strength <= 1.0:
            raise InvalidRequest(f"Strength must be above 0 and at most 1, not {strength}.")
        steps = settings.default_steps if steps is None else int(steps)
        if not 1 <= steps <= settings.max_steps:
            raise InvalidRequest(f"Steps must be between 1 and {settings.max_steps}, not {steps}.")
        model = settings.resolve_model(model)
        family = family_of(model)
        if family not in ("diffusion", "pixel-diffusion"):
            raise InvalidRequest(f"Model {model} cannot restyle by text; choose a diffusion model.")
        options: dict[str, Any] = {"method": "diffusion"}
    else:
        strength = 1.0 if strength is None else float(strength)
        top = 1.0 if method == "adain" else 10.0
        if not 0.0 < strength <= top:
            raise InvalidRequest(f"Strength for {method} must be above 0 and at most {top:g}.")
        steps = STYLE_DEFAULT_STEPS if steps is None else int(steps)
        if not 1 <= steps <= 2000:
            raise InvalidRequest(f"Steps must be between 1 and 2000, not {steps}.")
        model = settings.vgg19_weights or "vgg19"
        family = "style"
        options = {"method": method}
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
        "guidance": DEFAULT_GUIDANCE, "init_image": content_sha, "options": options,
    }
    if style_sha:
        params["style_image"] = style_sha
    if preset:
        params["preset"] = preset
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
    )


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
    )
