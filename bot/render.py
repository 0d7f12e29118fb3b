"""What a job looks like on Discord: status lines, the result embed and image.

Pure functions of a job and its images (plus PIL for the grid); no network.
"""

from __future__ import annotations

import io
from pathlib import Path

import discord
from PIL import Image

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
        return f"{head}\n{t('queued', locale, position=position or 1)}"
    if kind == "progress" and total and step:
        return f"{head}\n{t('progress', locale, step=step, total=total)}"
    return f"{head}\n{t('starting', locale)}"


def _headline(job: Job) -> str:
    prompt = job.params.get("prompt") or t("variation", job.locale)
    return f"**{_clip(prompt, 300)}** · <@{job.user_id}> · job {job.id}"


def _clip(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def failure_text(job: Job) -> str:
    if job.status is JobStatus.CANCELED:
        return f"{_headline(job)}\n{t('canceled', job.locale, job=job.id)}"
    return f"{_headline(job)}\n{t('failed', job.locale, job=job.id, error=job.error or '?')}"


def result_embed(job: Job, images: list[ImageRecord], filename: str) -> discord.Embed:
    locale = job.locale
    p = job.params
    prompt = p.get("prompt") or t("variation", locale)
    embed = discord.Embed(title=_clip(prompt, TITLE_MAX), colour=discord.Colour.blurple())
    if p.get("negative_prompt"):
        embed.description = f"🚫 {_clip(p['negative_prompt'], 1000)}"
    seeds = ", ".join(str(im.seed) for im in images)
    embed.add_field(name=t("field_seeds" if len(images) > 1 else "field_seed", locale), value=seeds)
    embed.add_field(name=t("field_model", locale), value=_clip(short_model(job.model), 100))
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
        embed.add_field(name=t("field_parent", locale), value=f"job {job.parent_id}")
    if not p.get("spoiler"):  # a spoiler stays hidden: no embed preview of it
        embed.set_image(url=f"attachment://{filename}")
    embed.set_footer(text=f"job {job.id} · {images[0].width}×{images[0].height}")
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
        grid(opened).save(buf, format="PNG")
        data = buf.getvalue()
    # The server's rules may ask for spoilers: Discord then blurs the image until clicked.
    return discord.File(io.BytesIO(data), filename=name, spoiler=bool(job.params.get("spoiler")))


def preview_file(job: Job, jpeg: bytes) -> discord.File:
    """A preview of the image forming (the worker's small JPEG) as an attachment,
    behind a spoiler when the result will be."""
    return discord.File(io.BytesIO(jpeg), filename=f"artbot-{job.id}-preview.jpg",
                        spoiler=bool(job.params.get("spoiler")))


def result_content(job: Job) -> str:
    return _headline(job)
