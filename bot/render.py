"""What a job looks like on Discord: status lines, the result embed and image.

Pure functions of a job and its images (plus PIL for the grid); no network.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import discord
from PIL import Image, PngImagePlugin

from bot.i18n import t
from storage.jobs import ImageRecord, Job, JobStatus
from worker.fleet import short_model

# Discord embeds: 256-char titles, 4096-char descriptions.
TITLE_MAX = 250


def jump_link(guild_id: str | int | None, channel_id: str | int, message_id: str | int) -> str:
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


def status_text(job: Job, kind: str, *, position: int | None = None, step: int | None = None,
                total: int | None = None) -> str:
    locale = job.locale
    head = _headline(job)
    if kind == "queued":
        key = "queued_relax" if job.relax else "queued"
        return f"{head}\n{t(key, locale, position=position or 1)}"
    if kind == "progress" and total and step:
        return f"{head}\n{t('progress', locale, step=step, total=total)}"
    return f"{head}\n{t('starting', locale)}"


# The arrow a pan button shows, by the way it extends the picture.
PAN_ARROWS = {"left": "⬅️", "right": "➡️", "up": "⬆️", "down": "⬇️"}


def _headline(job: Job) -> str:
    origin = origin_text(job)
    return (f"**{_clip(_title(job), 300)}**" + (f" · {origin}" if origin else "")
            + f" · <@{job.user_id}> · job {job.id}")


def _title(job: Job) -> str:
    """The prompt, or what the job is when it has none."""
    prompt = job.params.get("prompt")
    if prompt:
        return prompt
    if job.kind == "describe":
        return t("describe_heading", job.locale)
    if job.kind == "blend":
        return t("origin_blend", job.locale, n=len(job.params.get("images", [])))
    return t("variation", job.locale)


def origin_text(job: Job) -> str | None:
    """What an image tool made this from: "Upscaled ×2 from job 12", "Zoomed out 2× from
    job 12", "Panned ⬅️ from job 12", "Blend of 3 images"; None for other jobs."""
    loc, options = job.locale, job.params.get("options") or {}
    if job.kind == "upscale" and job.parent_id:
        return t("origin_upscale", loc, n=options.get("scale", "?"), job=job.parent_id)
    if job.kind == "outpaint" and job.parent_id:
        if options.get("zoom"):
            return t("origin_zoom", loc, n=f"{float(options['zoom']):g}", job=job.parent_id)
        if options.get("pan") in PAN_ARROWS:
            return t("origin_pan", loc, arrow=PAN_ARROWS[options["pan"]], job=job.parent_id)
        return t("origin_outpaint", loc, job=job.parent_id)
    if job.kind == "blend" and job.params.get("prompt"):
        return t("origin_blend", loc, n=len(job.params.get("images", [])))
    return None


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def failure_text(job: Job) -> str:
    if job.status is JobStatus.CANCELED:
        return f"{_headline(job)}\n{t('canceled', job.locale, job=job.id)}"
    return f"{_headline(job)}\n{t('failed', job.locale, job=job.id, error=job.error or '?')}"


def model_shown(job: Job, name: str | None = None) -> str:
    """The model's name on Discord: the catalogue name when the caller knows it
    (`Settings.model_name`), else the job's reference, a folder or file by its last
    part: never an operator's long path."""
    return _clip(short_model(name or job.model), 100)


def result_embed(job: Job, images: list[ImageRecord], filename: str,
                 model: str | None = None) -> discord.Embed:
    locale = job.locale
    p = job.params
    embed = discord.Embed(title=_clip(_title(job), TITLE_MAX), colour=discord.Colour.blurple())
    lines = [origin] if (origin := origin_text(job)) else []
    if p.get("negative_prompt"):
        lines.append(f"🚫 {_clip(p['negative_prompt'], 1000)}")
    if lines:
        embed.description = "\n".join(lines)
    seeds = ", ".join(str(im.seed) for im in images)
    embed.add_field(name=t("field_seeds" if len(images) > 1 else "field_seed", locale), value=seeds)
    embed.add_field(name=t("field_model", locale), value=model_shown(job, model))
    embed.add_field(name=t("field_steps", locale), value=str(p.get("steps")))
    if p.get("sampler"):
        embed.add_field(name=t("field_sampler", locale), value=p["sampler"])
    if p.get("guidance") is not None and job.kind != "stylize":
        embed.add_field(name=t("field_guidance", locale), value=f"{p['guidance']:g}")
    if p.get("loras"):
        embed.add_field(name=t("field_loras", locale), value=_clip(", ".join(
            f"{x['name']}:{x['weight']:g}" for x in p["loras"]), 200))
    for note in p.get("notes", []):
        embed.add_field(name=t("field_note", locale), value=_clip(note, 200), inline=False)
    if job.run_seconds is not None:
        embed.add_field(name=t("field_time", locale), value=f"{job.run_seconds:.1f} s")
    if "strength" in p:
        embed.add_field(name=t("field_strength", locale), value=str(p["strength"]))
    if job.parent_id:
        varied = job.kind in ("vary", "stylize")  # a reroll, an upscale...: made "from" it
        embed.add_field(name=t("field_parent" if varied else "field_from", locale),
                        value=f"job {job.parent_id}")
    if not p.get("spoiler"):  # a spoiler stays hidden: no embed preview of it
        embed.set_image(url=f"attachment://{filename}")
    footer = f"job {job.id} · {images[0].width}×{images[0].height}"
    if p.get("relax"):
        footer += f" · {t('made_in_relax', locale)}"
    embed.set_footer(text=footer)
    return embed


def grid(images: list[Image.Image]) -> Image.Image:
    """Up to four images as a 2x2 grid (two side by side for two)."""
    w, h = images[0].size
    cols = 1 if len(images) == 1 else 2
    rows = (len(images) + cols - 1) // cols
    sheet = Image.new("RGB", (w * cols, h * rows), (32, 34, 37))
    for i, im in enumerate(images):
        sheet.paste(im.convert("RGB").resize((w, h)), ((i % cols) * w, (i // cols) * h))
    return sheet


def result_file(job: Job, images: list[ImageRecord], image_root: Path,
                only: int | None = None) -> discord.File:
    """The job's image (or one of them, or a grid of all) as a PNG attachment."""
    if only is not None:
        chosen = [images[only]]
        name = f"artbot-{job.id}-{only + 1}.png"
    else:
        chosen = images
        name = f"artbot-{job.id}.png"
    if len(chosen) == 1:
        data = (image_root / chosen[0].path).read_bytes()
    else:
        opened = []
        for record in chosen:
            with Image.open(image_root / record.path) as im:
                opened.append(im.convert("RGB"))
        buf = io.BytesIO()
        grid(opened).save(buf, format="PNG", pnginfo=_marks_of(image_root / chosen[0].path))
        data = buf.getvalue()
    # The server's rules may ask for spoilers: Discord then blurs the image until clicked.
    return discord.File(io.BytesIO(data), filename=name, spoiler=bool(job.params.get("spoiler")))


def _marks_of(path: Path) -> PngImagePlugin.PngInfo:
    """A grid's text chunks: the XMP that says AI made its images, and `Software`, from
    the first of them (a job's images share their model); not its parameters, whose
    seed is that one image's."""
    info = PngImagePlugin.PngInfo()
    with Image.open(path) as im:
        for key in ("Software", "XML:com.adobe.xmp"):
            if isinstance(im.info.get(key), str):
                info.add_itxt(key, im.info[key])
    return info


def preview_file(job: Job, jpeg: bytes) -> discord.File:
    """A preview of the image forming (the worker's small JPEG) as an attachment,
    behind a spoiler when the result will be."""
    return discord.File(io.BytesIO(jpeg), filename=f"artbot-{job.id}-preview.jpg",
                        spoiler=bool(job.params.get("spoiler")))


def result_content(job: Job, model: str | None = None) -> str:
    """The result message's text: the headline, then a small line saying that AI made
    the image and with which model (`model`: its catalogue name, as in `model_shown`),
    seen where embeds are off and under a spoiler too."""
    return f"{_headline(job)}\n-# {t('made_by_ai', job.locale, model=model_shown(job, model))}"


# Discord allows 2000 characters in a message.
MESSAGE_MAX = 2000
NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")


def describe_prompts(job: Job) -> list[str]:
    """The prompts a finished describe job found (at most five: one button each)."""
    return [str(x) for x in job.params.get("prompts", []) if str(x).strip()][:len(NUMBERS)]


def describe_text(job: Job) -> str:
    """A finished /describe: its prompts, numbered like their Draw buttons, who described
    the image, and plainly what it could not describe."""
    loc = job.locale
    lines = [_headline(job)]
    prompts = describe_prompts(job)
    lines.append(t("describe_result", loc) if prompts else t("describe_none", loc))
    room = (MESSAGE_MAX - 400) // max(1, len(prompts))
    lines += [f"{NUMBERS[i]} {_clip(prompt, room)}" for i, prompt in enumerate(prompts)]
    if job.params.get("described_by"):
        lines.append(f"-# {t('describe_by', loc, model=_clip(str(job.params['described_by']), 100))}")
    for note in job.params.get("notes", []):
        lines.append(f"ℹ️ {_clip(str(note), 300)}")
    return _clip_lines(lines)


def _clip_lines(lines: list[str]) -> str:
    text = "\n".join(lines)
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 1] + "…"


def job_details(job: Job, images: list[ImageRecord], link: str | None = None) -> str:
    """Everything about a job, for the ✉️ reaction's private message: its id, seeds,
    model, sampler and all of its parameters."""
    loc, p = job.locale, job.params
    seeds = [im.seed for im in images] or list(job.seeds)
    head = [f"**{t('dm_title', loc, job=job.id)}** · {job.kind} · {job.status.value}",
            f"**{_clip(_title(job), 300)}**"]
    if origin := origin_text(job):
        head.append(origin)
    head.append(f"{t('field_seeds' if len(seeds) > 1 else 'field_seed', loc)}: "
                f"{', '.join(map(str, seeds)) or '-'}")
    head.append(f"{t('field_model', loc)}: {job.model}")
    head.append(f"{t('field_sampler', loc)}: {p.get('sampler') or p.get('scheduler') or '-'}")
    if job.parent_id:
        head.append(f"{t('field_from', loc)}: job {job.parent_id}")
    if link:
        head.append(link)
    params = json.dumps(p, ensure_ascii=False, indent=1, sort_keys=True, default=str)
    room = MESSAGE_MAX - len("\n".join(head)) - 20
    if len(params) > room:
        params = json.dumps(p, ensure_ascii=False, sort_keys=True, default=str)
        params = params if len(params) <= room else params[: room - 1] + "…"
    return "\n".join(head) + f"\n```json\n{params}\n```"
