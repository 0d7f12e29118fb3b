"""The bot: a `commands.Bot` that is handed its services (the queue, the image
store, the settings) and runs (by default) a local worker, in one process.

    artbot run      # reads DISCORD_TOKEN; see run_bot()

This module is the bottom of `bot/`: it knows the lifecycle and the shared
services, and nothing of what a command does. The features are discord.py
extensions, loaded by name in `setup_hook` (as discord.py's
`examples/advanced_startup.py` does); each is a module with `async def
setup(bot)`:

- `bot.drawing`: /draw and /vary;
- `bot.tools`: /blend and /describe;
- `bot.results`: the buttons under a result, the remix dialog, reactions;
- `bot.delivery`: a job's message kept up to date, then its result;
- `bot.history`: /history, /job, /queue and /help;
- `bot.styles`: /stylize and /preset;
- `bot.privacy`: /forget, /history's export, and the servers' retention;
- `bot.admin`: /settings, /quota and /stats.

Startup: open the queue, set the translator and the error sink, load the
extensions, sync the commands (globally, or to `ARTBOT_DEV_GUILD` while
developing), serve /healthz and /metrics when `metrics_port` is set
(`worker.health`), then start the worker. Shutdown puts running jobs back on the
queue for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Any

import discord
import yarl
from discord.ext import commands

from artbot.config import Settings
from bot import errors
from bot.i18n import ArtTranslator
from generators.bundled import family_of
from storage.images import ImageStore
from worker.health import HealthServer, serve_queue_health
from worker.policy import Policy, Requester
from worker.queue import JobQueue, LocalJobQueue

log = logging.getLogger(__name__)

# The features, in the order they load. Each module has `async def setup(bot)`.
EXTENSIONS = ("bot.results", "bot.canceling", "bot.delivery", "bot.drawing", "bot.tools",
              "bot.styles", "bot.privacy", "bot.history", "bot.admin")


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
        # Hands jobs to remote workers when settings.redis_url is set (worker.dispatcher).
        self.dispatcher = None
        self._worker_task: asyncio.Task | None = None
        self._closing_down = False
        # /healthz and /metrics, when settings.metrics_port is set: the server, and the
        # port it listens on.
        self.health_server: HealthServer | None = None
        self.metrics_port: int | None = None

    # -- startup and shutdown -------------------------------------------------

    async def setup_hook(self) -> None:
        if isinstance(self.queue, LocalJobQueue):
            await self.queue.open()
        await self.tree.set_translator(ArtTranslator())
        self.tree.on_error = errors.report  # the one sink of every slash command
        for name in EXTENSIONS:
            await self.load_extension(name)
        if self.settings.discord_dev_guild:
            guild = discord.Object(self.settings.discord_dev_guild)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
        else:
            synced = await self.tree.sync()
        log.info("synced %d commands: %s", len(synced), " ".join(f"/{c.name}" for c in synced))
        if self.settings.redis_url:
            from worker.dispatcher import Dispatcher  # remote GPU workers, through Redis

            self.dispatcher = await Dispatcher(self.queue, self.images, self.settings,
                                               url=self.settings.redis_url).start()
        if self.settings.metrics_port:
            await self._serve_metrics()  # before the worker, so it sees every result
        if self.run_worker:
            self.worker = self._make_worker()
            self._worker_task = asyncio.create_task(self.worker.run(), name="artbot-worker")
            if hasattr(self.worker, "warm_up"):
                # Load the default model now, so the first /draw does not wait for it
                # (as the family it is: a bundled emoji model is no diffusers pipeline).
                model = self.settings.default_model
                asyncio.create_task(self.worker.warm_up(
                    family_of(self.settings.resolve_model(model)), model))

    async def _serve_metrics(self) -> None:
        host, port = self.settings.metrics_host, self.settings.metrics_port
        try:
            self.health_server, _ = await serve_queue_health(self.queue, host, port,
                                                             dispatcher=self.dispatcher)
        except OSError as exc:  # the bot still serves Discord
            log.error("cannot serve /metrics and /healthz on %s:%d: %s", host, port, exc)
            return
        self.metrics_port = self.health_server.port
        log.info("metrics on http://%s:%d/metrics, health on /healthz", host, self.metrics_port)

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
        if self.dispatcher is not None:
            await self.dispatcher.close()  # remote workers' jobs stay leased; nothing is lost
        await super().close()  # unloads the extensions: delivery stops there
        if self.health_server is not None:
            await self.health_server.close()
            self.health_server = None
        await self.queue.close()

    # -- who asks, and the rules where they ask -------------------------------------

    async def rules(self, guild_id: int | None, channel_id: int | None = None) -> Policy:
        return await self.queue.rules(self.settings, str(guild_id) if guild_id else None,
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


async def run_bot(settings: Settings) -> int:
    """`artbot run`: the bot and a local worker until SIGTERM or Ctrl-C. Returns an exit code."""
    configure_endpoints(settings)
    bot = ArtBot(settings, run_worker=settings.local_worker)
    if not settings.local_worker and not settings.redis_url:
        log.warning("local_worker is off and no redis_url is set: no worker will run jobs")
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
