"""A job's life on Discord: queue position, progress, then the result.

`Delivery` listens to the queue's events and keeps each job's message up to
date: "queued, position N" (refreshed as the queue moves), "step k of n" while
it runs, and finally the image with its buttons, or the reason it failed.

Rules it keeps:

- At most one edit per `EDIT_INTERVAL` seconds per message. Updates that come
  faster are merged: only the newest is sent, when the interval is up.
- While a job runs, the worker's progress events may carry a small JPEG of the
  image forming; the next progress edit attaches the newest one (edits without a
  new one leave it in place), and the final edit replaces it with the result.
- A message made as an interaction response is edited through the
  interaction's webhook, which Discord accepts for 15 minutes. From
  `LATE_AFTER` seconds on, or if Discord says the token is gone, the result is
  sent to the channel as a new message that mentions the user instead.
- The final state is shown exactly once (`jobs.delivered_at`); jobs that
  finished while the bot was down are delivered when it starts.

It is an extension: `setup` adds the `Deliveries` cog, which starts `Delivery`
when it loads, stops it when it unloads, and hears `job_posted` (dispatched by
`bot.posting` once a job's first message exists).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import discord
from discord.ext import commands

from bot import render
from bot.client import ArtBot
from bot.i18n import t
from bot.results import describe_view, result_view
from storage.jobs import Job, JobStatus
from worker.queue import JobEvent

log = logging.getLogger(__name__)

EDIT_INTERVAL = 1.5
LATE_AFTER = 14 * 60


@dataclass
class _MessageState:
    last_edit: float = 0.0
    pending: dict[str, Any] | None = None
    flusher: asyncio.Task | None = None
    shown_position: int | None = None
    # The newest preview JPEG not yet shown: kept when a newer progress without a
    # preview replaces the update it came with, so the next edit still shows it.
    preview: bytes | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Delivery:
    def __init__(self, bot: ArtBot, *, edit_interval: float = EDIT_INTERVAL,
                 late_after: float = LATE_AFTER):
        self.bot = bot
        self.queue = bot.queue
        self.edit_interval = edit_interval
        self.late_after = late_after
        self._states: dict[int, _MessageState] = {}
        self._refresh: asyncio.Task | None = None
        self._task: asyncio.Task | None = None
        self._subscription = None

    # -- lifecycle ------------------------------------------------------------

    def start(self) -> None:
        self._subscription = self.queue.subscribe()
        self._task = asyncio.create_task(self._run(), name="artbot-delivery")

    async def close(self) -> None:
        if self._subscription is not None:
            self._subscription.close()
        tasks = [self._task, self._refresh] + [s.flusher for s in self._states.values()]
        for task in tasks:
            if task is not None and not task.done():
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t is not None), return_exceptions=True)

    async def catch_up(self) -> None:
        """Show the final state of jobs that finished while nobody was listening."""
        for job in await self.queue.undelivered("discord"):
            if job.message_id is not None:
                self._schedule(job.id, {"final": True})
        self._schedule_refresh()

    async def _run(self) -> None:
        async for event in self._subscription:
            try:
                await self._on_event(event)
            except Exception:  # noqa: BLE001 - one bad event must not stop deliveries
                log.exception("delivery of job %d failed on %s", event.job_id, event.kind)

    async def _on_event(self, event: JobEvent) -> None:
        if event.kind == "progress":
            if event.preview:
                self._states.setdefault(event.job_id, _MessageState()).preview = event.preview
            self._schedule(event.job_id, {"kind": "progress", "step": event.step, "total": event.total})
            return
        if event.kind == "running":
            self._schedule(event.job_id, {"kind": "running"})
        elif event.final:
            self._schedule(event.job_id, {"final": True})
        # Any change in the queue moves the others' positions.
        self._schedule_refresh()

    def track(self, job_id: int, position: int | None) -> None:
        """A job's message now exists; deliver anything it has missed."""
        state = self._states.setdefault(job_id, _MessageState())
        state.shown_position = position
        state.last_edit = time.monotonic()  # the message was just written
        self._schedule(job_id, {"check": True})

    # -- positions --------------------------------------------------------------

    def _schedule_refresh(self) -> None:
        if self._refresh is None or self._refresh.done():
            self._refresh = asyncio.create_task(self._refresh_positions())

    async def _refresh_positions(self) -> None:
        await asyncio.sleep(0.1)  # let a burst of events settle
        positions = await self.queue.positions()
        queued = await self.queue.list_jobs(statuses=[JobStatus.QUEUED], limit=500)
        for job in queued:
            if job.source != "discord" or job.message_id is None:
                continue
            state = self._states.setdefault(job.id, _MessageState())
            position = positions.get(job.id)
            if position is not None and position != state.shown_position:
                state.shown_position = position
                self._schedule(job.id, {"kind": "queued", "position": position})

    # -- throttled edits ------------------------------------------------------

    def _schedule(self, job_id: int, update: dict[str, Any]) -> None:
        state = self._states.setdefault(job_id, _MessageState())
        if state.pending and state.pending.get("final"):
            return  # the final state wins over anything older
        state.pending = update
        if state.flusher is None or state.flusher.done():
            state.flusher = asyncio.create_task(self._flush(job_id, state))

    async def _flush(self, job_id: int, state: _MessageState) -> None:
        while state.pending is not None:
            update = state.pending
            if not update.get("final") and not update.get("check"):
                wait = state.last_edit + self.edit_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue  # pick up whatever is newest now
            state.pending = None
            try:
                async with state.lock:
                    edited = await self._apply(job_id, update, state)
            except Exception:  # noqa: BLE001
                log.exception("could not update the message of job %d", job_id)
                edited = False
            if edited:
                state.last_edit = time.monotonic()

    async def _apply(self, job_id: int, update: dict[str, Any], state: _MessageState) -> bool:
        job = await self.queue.get(job_id)
        if job is None or job.source != "discord" or job.message_id is None or \
                job.delivered_at is not None:
            state.preview = None  # nowhere to show it (yet); the next one will do
            return False
        if job.status.finished:
            state.preview = None  # the result takes its place
            wait = state.last_edit + self.edit_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            await self._deliver_final(job)
            return True
        if update.get("check") or update.get("final"):
            return False
        kind = update.get("kind")
        if kind == "queued" and job.status is not JobStatus.QUEUED:
            return False
        text = render.status_text(job, kind or "running", position=update.get("position"),
                                  step=update.get("step"), total=update.get("total"))
        preview = state.preview if kind == "progress" else None
        if preview is None:
            return await self._edit(job, final=False, content=text)
        make = lambda: dict(content=text,  # noqa: E731 - a fresh file object for each attempt
                            attachments=[render.preview_file(job, preview)])
        edited = await self._edit(job, final=False, make=make)
        if edited and state.preview is preview:
            state.preview = None  # shown; edits without a newer one leave it on the message
        return edited

    # -- sending ----------------------------------------------------------------

    async def _deliver_final(self, job: Job) -> None:
        images = await self.queue.images(job.id) if job.status is JobStatus.SUCCEEDED else []
        if job.status is JobStatus.SUCCEEDED and job.kind == "describe":
            # A /describe's result is words: its prompts, each with a Draw button.
            make = lambda: dict(content=render.describe_text(job), embed=None,  # noqa: E731
                                attachments=[], view=describe_view(job))
        elif job.status is JobStatus.SUCCEEDED and images:
            size = (images[0].width, images[0].height)
            model = self.bot.settings.model_name(job.model)  # the catalogue's name for it
            make = lambda: dict(  # noqa: E731 - fresh file objects for each attempt
                content=render.result_content(job, model),
                embed=render.result_embed(job, images, f"artbot-{job.id}.png", model),
                attachments=[render.result_file(job, images, self.bot.images.root)],
                view=result_view(job, len(images), settings=self.bot.settings, size=size),
            )
        else:
            make = lambda: dict(content=render.failure_text(job), embed=None,  # noqa: E731
                                attachments=[], view=None)
        await self._edit(job, final=True, make=make)
        await self.queue.mark_delivered(job.id)

    def _token_fresh(self, job: Job) -> bool:
        return bool(job.interaction_token) and (
            time.time() - (job.interaction_at or 0) < self.late_after
        )

    async def _edit(self, job: Job, *, final: bool, content: str | None = None, make=None) -> bool:
        """Edit the job's message; for a late final result, post to the channel instead."""
        if make is None:
            make = lambda: dict(content=content)  # noqa: E731
        link = await self.queue.message_link(job.message_id)
        via = link.via if link else "interaction"
        channel_id = int(link.channel_id if link else job.channel_id)

        if via == "interaction" and self._token_fresh(job):
            webhook = discord.Webhook.partial(self.bot.application_id, job.interaction_token,
                                              client=self.bot)
            try:
                await webhook.edit_message(int(job.message_id), allowed_mentions=_NO_PINGS, **make())
                return True
            except discord.NotFound:
                log.info("job %d: interaction token no longer valid; using the channel", job.id)
            except discord.HTTPException as exc:
                if exc.status not in (401, 403):
                    raise
        if via == "channel":
            channel = self.bot.get_partial_messageable(channel_id)
            await channel.get_partial_message(int(job.message_id)).edit(
                allowed_mentions=_NO_PINGS, **make())
            return True
        if not final:
            return False  # progress after the token expired is not worth a new message
        kwargs = make()
        kwargs.pop("attachments", None)
        files = make().get("attachments") or []
        channel = self.bot.get_partial_messageable(channel_id)
        message = await channel.send(
            content=f"{t('late_result', job.locale, mention=f'<@{job.user_id}>', job=job.id)}\n"
                    f"{kwargs.pop('content') or ''}",
            files=files,
            allowed_mentions=discord.AllowedMentions(users=True, roles=False, everyone=False),
            **{k: v for k, v in kwargs.items() if v is not None},
        )
        await self.queue.link_message(job.id, str(message.id), str(channel_id),
                                      guild_id=job.server_id, via="channel")
        return True


_NO_PINGS = discord.AllowedMentions.none()


class Deliveries(commands.Cog):
    """Runs `Delivery` while the extension is loaded."""

    def __init__(self, bot: ArtBot):
        self.delivery = Delivery(bot)

    async def cog_load(self) -> None:
        self.delivery.start()
        await self.delivery.catch_up()

    async def cog_unload(self) -> None:
        await self.delivery.close()

    @commands.Cog.listener()
    async def on_job_posted(self, job_id: int, position: int | None) -> None:
        self.delivery.track(job_id, position)


async def setup(bot: ArtBot) -> None:
    await bot.add_cog(Deliveries(bot))
