"""Posting a job on Discord: queue it for the member who asked, answer with its
place in the queue, and link the answer to the job.

Every feature that starts work (commands, buttons, the remix dialog,
reactions) goes through `submit_from_interaction` or `submit_from_reaction`,
so each is queued through the one gate and gets the same first message. The
message is linked to its job in the store (buttons and reactions on it find
the job after a restart), and the `job_posted` event tells `bot.delivery` to
keep it up to date.

The helpers below them find what a command or a button refers to: a job of
this server, one of its images, an uploaded image.
"""

from __future__ import annotations

import asyncio
import re

import discord

from artbot.config import Settings
from bot import render
from bot.canceling import cancel_view
from bot.client import ArtBot
from bot.errors import refuse
from storage.images import encode_png
from storage.jobs import ImageRecord, Job, JobStatus
from worker.image_files import read_input_image
from worker.requests import (STRENGTHS, JobSpec, build_outpaint, build_upscale,
                             build_variation_of)

# Largest upload accepted, in megabytes.
UPLOAD_LIMIT_MB = 10


async def submit_from_interaction(bot: ArtBot, interaction: discord.Interaction,
                                  spec: JobSpec, *, notes: list[str] | None = None) -> Job:
    """Queue `spec` for the interaction's user and answer with its queue position.

    The queue's gate (`worker.gate.admit`) applies the server's rules; a
    refusal reaches the user privately through the error sink. `notes` (what
    `store_upload` said of the uploads: an animation's first frame taken) go
    into the job's notes, which its result shows."""
    if notes:
        spec.params["notes"] = [*notes, *spec.params.get("notes", [])]
    job = await bot.queue.submit(
        spec,
        requester=bot.requester_of(interaction),
        settings=bot.settings,
        interaction_token=interaction.token,
        interaction_at=interaction.created_at.timestamp(),
        locale=str(interaction.locale),
    )
    position = (await bot.queue.positions()).get(job.id)
    text = render.status_text(job, "queued" if position else "running", position=position)
    await interaction.response.send_message(text, view=cancel_view(job),
                                            allowed_mentions=discord.AllowedMentions.none())
    message = await interaction.original_response()
    await bot.queue.link_message(job.id, str(message.id), str(interaction.channel_id),
                                 guild_id=job.server_id, via="interaction")
    bot.dispatch("job_posted", job.id, position)
    return job


async def submit_from_reaction(bot: ArtBot, payload: discord.RawReactionActionEvent,
                               spec: JobSpec, locale: str | None) -> Job:
    """Queue `spec` for the member who reacted, and answer in the channel."""
    job = await bot.queue.submit(
        spec,
        requester=bot.requester(payload.member, payload.user_id, payload.guild_id,
                                payload.channel_id, bot.get_channel(payload.channel_id)),
        settings=bot.settings,
        locale=locale,
    )
    position = (await bot.queue.positions()).get(job.id)
    channel = bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
    message = await channel.send(
        render.status_text(job, "queued" if position else "running", position=position),
        reference=discord.MessageReference(message_id=payload.message_id,
                                           channel_id=payload.channel_id,
                                           fail_if_not_exists=False),
        view=cancel_view(job),
        allowed_mentions=discord.AllowedMentions.none(),
    )
    await bot.queue.link_message(job.id, str(message.id), str(payload.channel_id),
                                 guild_id=job.server_id, via="channel")
    bot.dispatch("job_posted", job.id, position)
    return job


# -- what a command or a button refers to ------------------------------------------------


async def job_in_guild(bot: ArtBot, job_id: int, guild_id: int | None) -> Job:
    """The job, if it belongs to this server (history never crosses servers)."""
    job = await bot.queue.get(job_id)
    if job is None and await bot.queue.was_deleted(job_id):
        raise refuse("job_deleted", job=job_id)  # its owner's /forget, or retention
    if job is None or job.server_id != (str(guild_id) if guild_id else None):
        raise refuse("job_not_found", job=job_id)
    return job


async def image_of(bot: ArtBot, job: Job, idx: int | None) -> ImageRecord:
    """Image `idx` of a finished job (the first when None)."""
    if job.status is not JobStatus.SUCCEEDED:
        raise refuse("job_not_image", job=job.id)
    images = await bot.queue.images(job.id)
    if not images:
        raise refuse("job_not_image", job=job.id)
    record = images[min(idx or 0, len(images) - 1)]
    bot.images.by_sha(record.sha256)  # a lost file (ImageLost) is said before a job is queued
    return record


async def variation_spec(bot: ArtBot, settings: Settings, job: Job, idx: int | None,
                         strength: str, prompt: str | None = None) -> JobSpec:
    """A variation of image `idx` of `job`, 'subtle' or 'strong'."""
    record = await image_of(bot, job, idx)
    return build_variation_of(settings, job, record.sha256, (record.width, record.height),
                              strength=STRENGTHS[strength], prompt=prompt,
                              image_seed=record.seed)


# The image-tool buttons: custom-id action -> what it does to one image of a result.
TOOLS = {"up2": ("upscale", 2), "up4": ("upscale", 4), "z15": ("zoom", 1.5), "z2": ("zoom", 2.0),
         "pl": ("pan", "left"), "pr": ("pan", "right"), "pu": ("pan", "up"), "pd": ("pan", "down")}


async def tool_spec(bot: ArtBot, settings: Settings, job: Job, idx: int | None,
                    action: str) -> JobSpec:
    """Upscale, zoom out or pan image `idx` of `job` (`action` is a key of TOOLS)."""
    record = await image_of(bot, job, idx)
    what, how = TOOLS[action]
    size = (record.width, record.height)
    if what == "upscale":
        return build_upscale(settings, job, record.sha256, size, scale=how, image_seed=record.seed)
    if what == "zoom":
        return build_outpaint(settings, job, record.sha256, size, zoom=how, image_seed=record.seed)
    return build_outpaint(settings, job, record.sha256, size, pan=how, image_seed=record.seed)


async def store_upload(bot: ArtBot, attachment: discord.Attachment,
                       notes: list[str] | None = None) -> tuple[str, tuple[int, int]]:
    """Check, read and store an uploaded image; return (sha256, size). What the member
    should know of how it was read (an animation: its first frame) is appended to
    `notes`. A file that cannot be used is refused by its own reason (`ImageRefused`,
    with its `bot.i18n` key): empty, damaged, SVG or HEIC, too many pixels."""
    kind = (attachment.content_type or "").split(";")[0]
    if kind and not kind.startswith("image/"):
        raise refuse("not_an_image", name=attachment.filename)
    if attachment.size > UPLOAD_LIMIT_MB * 1024 * 1024:
        raise refuse("image_too_large", name=attachment.filename,
                     size=f"{attachment.size / 1024 / 1024:.1f}", limit=UPLOAD_LIMIT_MB)
    data = await attachment.read()
    image = await asyncio.to_thread(lambda: read_input_image(data, name=attachment.filename,
                                                             notes=notes))
    sha, _ = await asyncio.to_thread(lambda: bot.images.put_bytes(encode_png(image)))
    return sha, image.size


async def job_from_reference(bot: ArtBot, text: str, guild_id: int | None) -> tuple[Job, int | None]:
    """The job (and image index) a member means by '42', a message link or a message id."""
    job_id, message_id = parse_job_reference(text)
    idx = None
    if message_id is not None:
        link = await bot.queue.message_link(str(message_id))
        if link is None:
            raise refuse("job_not_found", job=text)
        job_id, idx = link.job_id, link.image_idx
    if job_id is None:
        raise refuse("job_not_found", job=text)
    return await job_in_guild(bot, job_id, guild_id), idx


def parse_job_reference(text: str) -> tuple[int | None, int | None]:
    """'42' -> (42, None); a message link -> (None, message id)."""
    text = text.strip().lstrip("#")
    if not text.isascii():  # '²' is a digit to str.isdigit, not to int()
        return None, None
    if text.isdigit() and len(text) < 15:
        return int(text), None
    m = re.search(r"channels/(?:\d+|@me)/\d+/(\d+)", text)
    if m:
        return None, int(m.group(1))
    if text.isdigit():
        return None, int(text)  # a bare message id
    return None, None
