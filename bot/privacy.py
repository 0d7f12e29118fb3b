"""Members own their data: /forget, /history's export, and the servers' retention.

/forget asks first, privately: "Delete your 12 jobs and 31 images in this server?"
with Delete them / Cancel buttons. Their custom ids carry who asked, where
(`0`: every server) and when (`ab:forget:yes:<user>:<guild>:<unix time>`), so an
answer works after a restart, only the member who asked may give it, and after
`CONFIRM_WITHIN_S` it deletes nothing and says so. Deleting (`worker.privacy.forget`)
stops the member's unfinished jobs, removes their rows and the files nothing else
uses; then the bot's messages that showed those jobs are deleted from the channels,
in the background.

/history `export:` (see `bot.history`) sends the member every job of theirs, in
every server, as a JSON or CSV file, privately.

While the extension is loaded, the servers' `retention` is applied at start and
then every `worker.privacy.RETENTION_EVERY_S` seconds.
"""

# No `from __future__ import annotations`: discord.py reads the option types
# from the annotations.
import asyncio
import io
import logging
import re
import time
from typing import Optional

import discord
from discord import app_commands
from discord.app_commands import locale_str as _
from discord.ext import commands

from bot import errors
from bot.client import ArtBot
from bot.errors import refuse
from bot.i18n import t
from storage.faults import size_text
from storage.privacy import Erased
from worker.privacy import export_csv, export_json, forget, keep_expiring

log = logging.getLogger(__name__)

# How long the /forget question can be answered, in seconds.
CONFIRM_WITHIN_S = 300
# The largest export sent as a Discord file (Discord's limit for bots is 10 MiB).
EXPORT_LIMIT_BYTES = 8 * 1024 * 1024
EXPORTS = {"json": (export_json, "json"), "csv": (export_csv, "csv")}


def _where(server_id: Optional[str], locale) -> str:
    return t("forget_where_here" if server_id else "forget_where_everywhere", locale)


class ForgetButton(discord.ui.DynamicItem[discord.ui.Button],
                   template=r"ab:forget:(?P<answer>yes|no):(?P<user>\d+):(?P<scope>\d+):(?P<at>\d+)"):
    """Delete them / Cancel, under the /forget question."""

    def __init__(self, answer: str, user_id: int, scope: int, at: int, *, locale=None):
        yes = answer == "yes"
        super().__init__(discord.ui.Button(
            label=t("forget_button_confirm" if yes else "forget_button_cancel", locale),
            style=discord.ButtonStyle.danger if yes else discord.ButtonStyle.secondary,
            custom_id=f"ab:forget:{answer}:{user_id}:{scope}:{at}"))
        self.answer, self.user_id, self.scope, self.at = answer, user_id, scope, at

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match) -> "ForgetButton":
        return cls(match["answer"], int(match["user"]), int(match["scope"]), int(match["at"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await answer(interaction.client, interaction, self)
        except Exception as exc:  # noqa: BLE001 - one sink for every error
            await errors.report(interaction, exc)


async def ask(bot: ArtBot, interaction: discord.Interaction, everywhere: bool) -> None:
    """/forget: say what would be deleted and ask, privately."""
    locale = interaction.locale
    guild = interaction.guild_id
    server_id = None if everywhere or not guild else str(guild)
    jobs, images = await bot.queue.member_counts(str(interaction.user.id), server_id)
    where = _where(server_id, locale)
    if not jobs:
        await interaction.response.send_message(t("forget_nothing", locale, where=where),
                                                ephemeral=True)
        return
    scope, at = int(server_id or 0), int(time.time())
    view = discord.ui.View(timeout=None)
    view.add_item(ForgetButton("yes", interaction.user.id, scope, at, locale=locale))
    view.add_item(ForgetButton("no", interaction.user.id, scope, at, locale=locale))
    await interaction.response.send_message(
        t("forget_confirm", locale, jobs=jobs, images=images, where=where,
          minutes=CONFIRM_WITHIN_S // 60), view=view, ephemeral=True)


async def answer(bot: ArtBot, interaction: discord.Interaction, button: ForgetButton) -> None:
    """The member answered the /forget question."""
    locale = interaction.locale
    if interaction.user.id != button.user_id:
        raise refuse("forget_not_yours")
    if button.answer == "no":
        await interaction.response.edit_message(content=t("forget_canceled", locale), view=None)
        return
    if time.time() - button.at > CONFIRM_WITHIN_S:
        await interaction.response.edit_message(content=t("forget_expired", locale), view=None)
        return
    cog: Optional[Forgetting] = bot.get_cog("Forgetting")  # type: ignore[assignment]
    user_id = str(button.user_id)
    if cog is None or user_id in cog.busy:
        raise refuse("forget_busy")
    server_id = str(button.scope) if button.scope else None
    cog.busy.add(user_id)
    try:
        await interaction.response.edit_message(content=t("forget_working", locale), view=None)
        erased = await forget(bot.queue, bot.images, user_id, server_id)
    finally:
        cog.busy.discard(user_id)
    await interaction.edit_original_response(content=t(
        "forget_done", locale, jobs=erased.jobs, images=erased.images,
        where=_where(server_id, locale)))
    cog.remove_messages(erased)


async def send_export(bot: ArtBot, interaction: discord.Interaction, kind: str) -> None:
    """/history export: every job of the member, in every server, as a file, privately."""
    locale = interaction.locale
    user_id = str(interaction.user.id)
    await interaction.response.defer(ephemeral=True, thinking=True)
    records = await bot.queue.records(user_id)
    if not records:
        await interaction.followup.send(t("export_empty", locale), ephemeral=True)
        return
    write, suffix = EXPORTS[kind]
    data = await asyncio.to_thread(write, records)
    if len(data) > EXPORT_LIMIT_BYTES:
        await interaction.followup.send(t("export_too_large", locale, size=size_text(len(data)),
                                          user=user_id), ephemeral=True)
        return
    await interaction.followup.send(
        t("export_done", locale, jobs=len(records), format=suffix.upper()),
        file=discord.File(io.BytesIO(data), filename=f"artbot-history-{user_id}.{suffix}"),
        ephemeral=True)


class Forgetting(commands.Cog):
    """/forget's state (whose data is being deleted now) and the retention task."""

    def __init__(self, bot: ArtBot):
        self.bot = bot
        self.busy: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._retention: Optional[asyncio.Task] = None

    async def cog_load(self) -> None:
        self._retention = asyncio.create_task(keep_expiring(self.bot.queue, self.bot.images),
                                              name="artbot-retention")

    async def cog_unload(self) -> None:
        tasks = [t for t in [self._retention, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def remove_messages(self, erased: Erased) -> None:
        """Delete, in the background, the bot's messages that showed the deleted jobs."""
        if not erased.messages:
            return
        task = asyncio.create_task(self._remove(erased.messages))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remove(self, messages: list[tuple[str, str]]) -> None:
        for channel_id, message_id in messages:
            channel = self.bot.get_partial_messageable(int(channel_id))
            try:
                await channel.get_partial_message(int(message_id)).delete()
            except (discord.NotFound, discord.Forbidden):
                pass  # deleted already, or a channel the bot can no longer see
            except discord.HTTPException as exc:
                log.warning("could not delete message %s of a forgotten job: %s", message_id, exc)


async def setup(bot: ArtBot) -> None:
    bot.add_dynamic_items(ForgetButton)
    await bot.add_cog(Forgetting(bot))

    @bot.tree.command(name=_("forget"),
                      description=_("Delete your jobs and images, here or in every server"))
    @app_commands.describe(server=_("Where to delete (default: this server)"))
    @app_commands.rename(server=_("server"))
    @app_commands.choices(server=[app_commands.Choice(name=_("This server"), value="here"),
                                  app_commands.Choice(name=_("Every server"), value="everywhere")])
    async def forget_(interaction: discord.Interaction,
                      server: Optional[app_commands.Choice[str]] = None) -> None:
        await ask(bot, interaction, everywhere=server is not None and server.value == "everywhere")
