"""The bot: a `commands.Bot` that owns the queue, the image store and (by default)
a local worker, in one process.

    artbot run      # reads DISCORD_TOKEN; see run_bot()

Startup (`setup_hook`): open the database, register the persistent buttons and
the translator, add the slash commands, sync them (globally, or to
`ARTBOT_DEV_GUILD` while developing), then start delivering job updates and the
worker. Shutdown puts running jobs back on the queue for the next start.

Everything a button, a reaction or a command *does* goes through a method
here, so a reaction and a button mean exactly the same thing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import signal
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from artbot.config import Settings
from artbot.errors import UserError
from bot import render
from bot.delivery import Delivery
from bot.i18n import ArtTranslator, has_text, t
from bot.views import HistoryPageButton, RemixModal, ResultButton, result_view
from storage.images import ImageStore, encode_png
from storage.jobs import Job, JobStatus
from worker.jobs import (
    STRENGTHS,
    JobSpec,
    build_reroll,
    build_variation_of,
    read_input_image,
)
from worker.policy import Policy, PolicyRefusal, Requester
from worker.queue import JobQueue, LocalJobQueue

log = logging.getLogger(__name__)

HISTORY_PAGE_SIZE = 5
# Reactions on a result and what they do. (U+FE0F, the emoji variation selector, is ignored.)
REACTIONS = {"🔁": "reroll", "🎲": "vary", "🗑": "delete"}


class Refusal(UserError):
    """A user mistake with a translated message: `t(key, locale, **values)`."""

    def __init__(self, key: str, **values: Any):
        super().__init__(t(key, None, **values))
        self.key, self.values = key, values

    def text(self, locale) -> str:
        return t(self.key, locale, **self.values)


def configure_endpoints(settings: Settings) -> None:
    """Point discord.py at a Discord-compatible server other than discord.com, if set."""
    if settings.discord_api_base:
        discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway)


class ArtBot(commands.Bot):
    def __init__(self, settings: Settings, *, queue: JobQueue | None = None,
                 images: ImageStore | None = None, run_worker: bool = True,
                 worker_factory=None, guild_ready_timeout: float = 2.0):
        # artbot has no voice features; don't warn operators about voice libraries.
        discord.VoiceClient.warn_nacl = False
        if hasattr(discord.VoiceClient, "warn_dave"):
            discord.VoiceClient.warn_dave = False
        intents = discord.Intents.default()  # guilds, reactions; no privileged intents needed
        super().__init__(command_prefix=commands.when_mentioned, intents=intents,
                         help_command=None, guild_ready_timeout=guild_ready_timeout,
                         allowed_mentions=discord.AllowedMentions.none())
        self.settings = settings
        self.queue: JobQueue = queue or LocalJobQueue(settings.db_path)
        self.images = images or ImageStore(settings.image_dir)
        self.run_worker = run_worker
        self.worker_factory = worker_factory
        self.worker = None
        self._worker_task: asyncio.Task | None = None
        self.delivery = Delivery(self)
        self._closing_down = False

    # -- startup and shutdown -------------------------------------------------

    async def setup_hook(self) -> None:
        if isinstance(self.queue, LocalJobQueue):
            await self.queue.open()
        self.add_dynamic_items(ResultButton, HistoryPageButton)
        await self.tree.set_translator(ArtTranslator())
        self.tree.on_error = self.on_app_command_error
        from bot.commands import register_commands

        register_commands(self)
        if self.settings.discord_dev_guild:
            guild = discord.Object(self.settings.discord_dev_guild)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d commands: %s", len(synced), " ".join(f"/{c.name}" for c in synced))
        self.delivery.start()
        await self.delivery.catch_up()
        if self.run_worker:
            self.worker = self._make_worker()
            self._worker_task = asyncio.create_task(self.worker.run(), name="artbot-worker")
            if hasattr(self.worker, "warm_up"):
                # Load the default model now, so the first /draw does not wait for it.
                asyncio.create_task(self.worker.warm_up("diffusion", self.settings.default_model))

    def _make_worker(self):
        if self.worker_factory is not None:
            return self.worker_factory(self.queue, self.images, self.settings)
        from worker.runner import Worker  # loads torch lazily, on the worker's own thread

        return Worker(self.queue, self.images, self.settings)

    async def close(self) -> None:
        if self._closing_down:
            return
        self._closing_down = True
        if self.worker is not None:
            await self.worker.shutdown()
        if self._worker_task is not None:
            try:
                await asyncio.wait_for(self._worker_task, 10)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):  # noqa: BLE001
                self._worker_task.cancel()
        await self.delivery.close()
        await super().close()
        await self.queue.close()

    # -- the server's rules ------------------------------------------------------

    async def rules(self, guild_id: int | None, channel_id: int | None = None) -> Policy:
        return await self.queue.policy(self.settings, str(guild_id) if guild_id else None,
                                       str(channel_id) if channel_id and guild_id else None)

    async def settings_for(self, interaction: discord.Interaction) -> Settings:
        """The settings requests here are built with: the server's (and channel's)
        default model and limits on top of the operator's."""
        policy = await self.rules(interaction.guild_id, interaction.channel_id)
        return policy.apply(self.settings)

    @staticmethod
    def requester(user: discord.abc.User | None, user_id: int, guild_id: int | None,
                  channel_id: int | None, channel: Any = None) -> Requester:
        """Who asks, from where: the user's roles (for role quotas) and whether the
        channel is age-restricted (for the safety checker)."""
        roles = tuple(str(r.id) for r in getattr(user, "roles", ()))
        is_nsfw = getattr(channel, "is_nsfw", None)
        return Requester(user_id=str(user_id), user_name=getattr(user, "name", None),
                         source="discord",
                         server_id=str(guild_id) if guild_id else None,
                         channel_id=str(channel_id) if channel_id else None,
                         role_ids=roles, channel_nsfw=bool(is_nsfw and is_nsfw()))

    def requester_of(self, interaction: discord.Interaction) -> Requester:
        return self.requester(interaction.user, interaction.user.id, interaction.guild_id,
                              interaction.channel_id, interaction.channel)

    # -- submitting jobs --------------------------------------------------------

    async def submit_from_interaction(self, interaction: discord.Interaction, spec: JobSpec) -> Job:
        """Queue `spec` for the interaction's user and answer with its queue position.

        The queue's gate (`worker.policy.admit`) applies the server's rules;
        a refusal reaches the user privately through `report_error`."""
        job = await self.queue.submit(
            spec,
            requester=self.requester_of(interaction),
            settings=self.settings,
            interaction_token=interaction.token,
            interaction_at=interaction.created_at.timestamp(),
            locale=str(interaction.locale),
        )
        position = (await self.queue.positions()).get(job.id)
        text = render.status_text(job, "queued" if position else "running", position=position)
        await interaction.response.send_message(text, allowed_mentions=discord.AllowedMentions.none())
        message = await interaction.original_response()
        await self.queue.run(lambda s: s.link_message(
            job.id, str(message.id), str(interaction.channel_id),
            guild_id=job.server_id, via="interaction"))
        self.delivery.track(job.id, position)
        return job

    async def submit_from_reaction(self, payload: discord.RawReactionActionEvent, spec: JobSpec,
                                   locale: str | None) -> Job:
        job = await self.queue.submit(
            spec,
            requester=self.requester(payload.member, payload.user_id, payload.guild_id,
                                     payload.channel_id, self.get_channel(payload.channel_id)),
            settings=self.settings,
            locale=locale,
        )
        position = (await self.queue.positions()).get(job.id)
        channel = self.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        message = await channel.send(
            render.status_text(job, "queued" if position else "running", position=position),
            reference=discord.MessageReference(message_id=payload.message_id,
                                               channel_id=payload.channel_id,
                                               fail_if_not_exists=False),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        await self.queue.run(lambda s: s.link_message(
            job.id, str(message.id), str(payload.channel_id), guild_id=job.server_id, via="channel"))
        self.delivery.track(job.id, position)
        return job

    async def job_in_guild(self, job_id: int, guild_id: int | None) -> Job:
        """The job, if it belongs to this server (history never crosses servers)."""
        job = await self.queue.get(job_id)
        if job is None or job.server_id != (str(guild_id) if guild_id else None):
            raise Refusal("job_not_found", job=job_id)
        return job

    async def image_of(self, job: Job, idx: int | None):
        if job.status is not JobStatus.SUCCEEDED:
            raise Refusal("job_not_image", job=job.id)
        images = await self.queue.images(job.id)
        if not images:
            raise Refusal("job_not_image", job=job.id)
        return images[min(idx or 0, len(images) - 1)]

    async def variation_spec(self, settings: Settings, job: Job, idx: int | None, strength: str,
                             prompt: str | None = None) -> JobSpec:
        record = await self.image_of(job, idx)
        return build_variation_of(settings, job, record.sha256,
                                  (record.width, record.height),
                                  strength=STRENGTHS[strength], prompt=prompt,
                                  image_seed=record.seed)

    async def store_upload(self, attachment: discord.Attachment) -> tuple[str, tuple[int, int]]:
        """Check, read and store an uploaded image; return (sha256, size)."""
        limit_mb = 10
        kind = (attachment.content_type or "").split(";")[0]
        if kind and not kind.startswith("image/"):
            raise Refusal("not_an_image", name=attachment.filename)
        if attachment.size > limit_mb * 1024 * 1024:
            raise Refusal("image_too_large", name=attachment.filename,
                          size=f"{attachment.size / 1024 / 1024:.1f}", limit=limit_mb)
        data = await attachment.read()
        try:
            image = await asyncio.to_thread(read_input_image, data, name=attachment.filename)
        except UserError:
            raise Refusal("not_an_image", name=attachment.filename) from None
        sha, _ = await asyncio.to_thread(lambda: self.images.put_bytes(encode_png(image)))
        return sha, image.size

    # -- buttons ---------------------------------------------------------------

    async def press_result_button(self, interaction: discord.Interaction, action: str,
                                  job_id: int, idx: int | None) -> None:
        job = await self.job_in_guild(job_id, interaction.guild_id)
        if action == "reroll":
            settings = await self.settings_for(interaction)
            await self.submit_from_interaction(interaction, build_reroll(settings, job))
        elif action in ("vs", "vS", "v"):
            if idx is None and interaction.message is not None:
                link = await self.queue.run(lambda s: s.message_link(str(interaction.message.id)))
                idx = link["image_idx"] if link else None
            strength = "subtle" if action == "vs" else "strong"
            settings = await self.settings_for(interaction)
            await self.submit_from_interaction(
                interaction, await self.variation_spec(settings, job, idx, strength))
        elif action == "u":
            await self.send_result(interaction, job, only=idx or 0)
        elif action == "remix":
            await interaction.response.send_modal(RemixModal(job, interaction.locale))
        elif action == "del":
            await self.delete_result(interaction, job)

    async def remix(self, interaction: discord.Interaction, job: Job, prompt: str) -> None:
        settings = await self.settings_for(interaction)
        await self.submit_from_interaction(interaction, build_reroll(settings, job, prompt=prompt))

    async def send_result(self, interaction: discord.Interaction, job: Job,
                          only: int | None = None) -> None:
        """Answer with a finished job's image(s) and working buttons (/job, U1-U4).

        The message is linked to the job, so reactions on it work too; `only`
        shows one image of a grid on its own.
        """
        images = await self.queue.images(job.id)
        if only is not None and not 0 <= only < len(images):
            raise Refusal("job_not_image", job=job.id)
        shown = images if only is None else [images[only]]
        name = f"artbot-{job.id}.png" if only is None else f"artbot-{job.id}-{only + 1}.png"
        await interaction.response.send_message(
            content=render.result_content(job),
            embed=render.result_embed(job, shown, name),
            file=render.result_file(job, images, self.images.root, only=only),
            view=result_view(job, len(images), picked=only),
            allowed_mentions=discord.AllowedMentions.none(),
        )
        message = await interaction.original_response()
        await self.queue.run(lambda s: s.link_message(
            job.id, str(message.id), str(interaction.channel_id), guild_id=job.server_id,
            via="interaction", image_idx=only, primary=False))

    async def may_delete(self, job: Job, user_id: int, permissions: discord.Permissions | None,
                         guild_id: int | None) -> bool:
        """The server's delete_by rule: owner or moderators (default), moderators, or anyone.
        A moderator has Manage Messages (or is an administrator)."""
        is_mod = bool(permissions and (permissions.manage_messages or permissions.administrator))
        policy = await self.rules(guild_id)
        return policy.may_delete(is_owner=str(user_id) == job.user_id, is_mod=is_mod)

    async def delete_result(self, interaction: discord.Interaction, job: Job) -> None:
        if not await self.may_delete(job, interaction.user.id, interaction.permissions,
                                     interaction.guild_id):
            raise Refusal("delete_refused")
        message = interaction.message
        await interaction.response.send_message(t("deleted", interaction.locale), ephemeral=True)
        if message is not None:
            await message.delete()
            await self.queue.run(lambda s: s.forget_message(str(message.id)))

    # -- reactions -------------------------------------------------------------

    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.user is None or payload.user_id == self.user.id:
            return
        action = REACTIONS.get(str(payload.emoji).replace("\ufe0f", ""))
        if action is None:
            return
        link = await self.queue.run(lambda s: s.message_link(str(payload.message_id)))
        if link is None:
            return
        locale = None
        try:
            job = await self.job_in_guild(link["job_id"], payload.guild_id)
            locale = job.locale
            settings = (await self.rules(payload.guild_id, payload.channel_id)).apply(self.settings)
            if action == "reroll":
                await self.submit_from_reaction(payload, build_reroll(settings, job), job.locale)
            elif action == "vary":
                spec = await self.variation_spec(settings, job, link["image_idx"], "subtle")
                await self.submit_from_reaction(payload, spec, job.locale)
            elif action == "delete":
                perms = payload.member.guild_permissions if payload.member else None
                if not await self.may_delete(job, payload.user_id, perms, payload.guild_id):
                    log.info("user %s may not delete job %d; reaction ignored", payload.user_id, job.id)
                    return
                channel = self.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
                await channel.get_partial_message(payload.message_id).delete()
                await self.queue.run(lambda s: s.forget_message(str(payload.message_id)))
        except UserError as exc:
            # A reaction has no private reply: answer briefly in the channel, then tidy up.
            channel = self.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
            text = user_error_text(exc, locale)
            await channel.send(f"<@{payload.user_id}> {text}", delete_after=30,
                               allowed_mentions=discord.AllowedMentions(users=True))
        except Exception:  # noqa: BLE001
            log.exception("reaction %s on message %s failed", payload.emoji, payload.message_id)

    # -- history ---------------------------------------------------------------

    async def show_history(self, interaction: discord.Interaction, target: int, page: int, *,
                           edit: bool = False, viewer: int | None = None) -> None:
        locale = interaction.locale
        guild = str(interaction.guild_id) if interaction.guild_id else None
        jobs = await self.queue.list_jobs(user_id=str(target), server_id=guild,
                                          statuses=[JobStatus.SUCCEEDED], limit=500)
        pages = max(1, (len(jobs) + HISTORY_PAGE_SIZE - 1) // HISTORY_PAGE_SIZE)
        page = max(0, min(page, pages - 1))
        embed = discord.Embed(title=t("history_title", locale, user=f"<@{target}>")[:250],
                              colour=discord.Colour.blurple())
        if not jobs:
            embed.description = t("history_empty", locale)
        lines = []
        for job in jobs[page * HISTORY_PAGE_SIZE:(page + 1) * HISTORY_PAGE_SIZE]:
            prompt = job.params.get("prompt") or t("variation", locale)
            seeds = ", ".join(map(str, job.seeds))
            when = f"<t:{int(job.created_at)}:R>"
            link = (f" · [↗]({render.jump_link(job.server_id, job.channel_id, job.message_id)})"
                    if job.message_id and job.channel_id else "")
            lines.append(f"**job {job.id}** · {when} · {render.short_model(job.model)} · "
                         f"seed {seeds}{link}\n> {prompt[:150]}")
        if lines:
            embed.description = "\n".join(lines)
        embed.set_footer(text=t("history_page", locale, page=page + 1, pages=pages))
        viewer_id = viewer or interaction.user.id
        view = discord.ui.View(timeout=None)
        view.add_item(HistoryPageButton(viewer_id, target, max(page - 1, 0), emoji="◀️",
                                        label=t("button_previous", locale), disabled=page == 0))
        view.add_item(HistoryPageButton(viewer_id, target, page + 1, emoji="▶️",
                                        label=t("button_next", locale), disabled=page >= pages - 1))
        if edit:
            await interaction.response.edit_message(embed=embed, view=view)
        else:
            await interaction.response.send_message(embed=embed, view=view, ephemeral=True)

    # -- errors ----------------------------------------------------------------

    async def on_app_command_error(self, interaction: discord.Interaction,
                                   error: app_commands.AppCommandError) -> None:
        await self.report_error(interaction, getattr(error, "original", error))

    async def report_error(self, interaction: discord.Interaction, error: BaseException) -> None:
        """The one sink: user mistakes get a private answer; bugs are logged once with a reference."""
        if isinstance(error, UserError):
            text = user_error_text(error, interaction.locale)
        elif isinstance(error, app_commands.CheckFailure):
            text = str(error) or "You cannot use this here."
        else:
            ref = secrets.token_hex(4)
            log.error("error %s in interaction %s (%s)", ref, interaction.id,
                      getattr(interaction.command, "name", interaction.data and interaction.data.get("custom_id")),
                      exc_info=error)
            text = t("internal_error", interaction.locale, ref=ref)
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except discord.HTTPException:
            log.warning("could not tell the user about an error in interaction %s", interaction.id)


def user_error_text(error: UserError, locale) -> str:
    """A user mistake or a refusal in the user's language, with times as Discord timestamps
    (each reader sees their own time zone)."""
    if isinstance(error, Refusal):
        return error.text(locale)
    if isinstance(error, PolicyRefusal):
        when = f"<t:{int(error.retry_at)}:R>" if error.retry_at else ""
        if has_text(f"policy_{error.key}"):
            return t(f"policy_{error.key}", locale, when=when, **error.values)
        return error.render(when)
    return error.message


def parse_job_reference(text: str) -> tuple[int | None, int | None]:
    """'42' -> (42, None); a message link -> (None, message id)."""
    text = text.strip().lstrip("#")
    if text.isdigit() and len(text) < 15:
        return int(text), None
    m = re.search(r"channels/(?:\d+|@me)/\d+/(\d+)", text)
    if m:
        return None, int(m.group(1))
    if text.isdigit():
        return None, int(text)  # a bare message id
    return None, None


async def run_bot(settings: Settings) -> int:
    """`artbot run`: the bot and a local worker until SIGTERM or Ctrl-C. Returns an exit code."""
    import sys

    configure_endpoints(settings)
    bot = ArtBot(settings)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()

    def stop() -> None:
        if not stopping.is_set():
            log.info("shutting down: running jobs go back on the queue")
            stopping.set()
            loop.create_task(bot.close())

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            pass
    try:
        async with bot:
            await bot.start(settings.discord_token)
    except discord.LoginFailure:
        print("error: Discord rejected the token in DISCORD_TOKEN (401 Unauthorized).", file=sys.stderr)
        return 2
    except discord.PrivilegedIntentsRequired:
        print("error: this bot needs intents that are not enabled for it.", file=sys.stderr)
        return 2
    except (OSError, discord.GatewayNotFound, discord.ConnectionClosed) as exc:
        if stopping.is_set():
            return 0
        print(f"error: cannot reach Discord: {exc}", file=sys.stderr)
        return 1
    return 0
