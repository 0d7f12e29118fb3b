"""The one error sink of the bot.

Slash commands (`CommandTree.on_error`), buttons, the remix dialog and
reactions all end up here when something goes wrong:

- a `UserError` (a mistake or a limit the user can act on) is answered in the
  user's language: a `Refusal` by its translation key, with times as Discord
  timestamps and channels as mentions; any other user error as it is written;
- a permission check that discord.py itself refused is answered as it says;
- anything else is a bug or an outage: logged once with a short reference,
  and the user is told that reference, never the details.

Interactions get a private answer; a reaction has nobody to answer privately,
so its answer is posted in the channel, mentioning the user, and deleted after
half a minute.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
from discord import app_commands

from artbot.errors import Refusal, StorageFault, UserError
from bot.i18n import MESSAGES, has_text, t

log = logging.getLogger(__name__)

# How long the channel answer to a refused reaction stays, in seconds.
REACTION_ANSWER_S = 30


def refuse(key: str, **values: Any) -> Refusal:
    """The bot's own refusal by its `bot.i18n` key (English text for the logs)."""
    return Refusal(key, MESSAGES[key]["en"], **values)


def user_text(error: UserError, locale) -> str:
    """A user error in the user's language, ready to post."""
    if not isinstance(error, Refusal):
        return error.message
    values = dict(error.values)
    values["when"] = f"<t:{int(error.retry_at)}:R>" if error.retry_at else ""
    if "channel_ids" in values:  # channels are shown as mentions, which Discord links
        values["channels"] = ", ".join(f"<#{c}>" for c in values["channel_ids"])
    if has_text(error.key):
        return t(error.key, locale, **values)
    return error.render(**values)


def describe(error: BaseException, locale, *, where: str) -> str:
    """What the user sees for `error`; a bug is logged here, once, with its reference."""
    if isinstance(error, StorageFault):
        # The operator's fault to fix, not the member's: the log has the whole message
        # (paths, what to do); the member gets the short reason.
        log.error("storage fault in %s: %s", where, error.message)
        return t("storage_fault", locale, reason=error.reason)
    if isinstance(error, UserError):
        return user_text(error, locale)
    if isinstance(error, app_commands.CheckFailure):
        return str(error) or "You cannot use this here."
    ref = secrets.token_hex(4)
    log.error("error %s in %s", ref, where, exc_info=error)
    return t("internal_error", locale, ref=ref)


async def report(interaction: discord.Interaction, error: BaseException) -> None:
    """Answer an interaction that failed, privately."""
    error = getattr(error, "original", error)  # app_commands wraps what the command raised
    what = getattr(interaction.command, "name", None) or (
        interaction.data.get("custom_id") if interaction.data else None)
    text = describe(error, interaction.locale, where=f"interaction {interaction.id} ({what})")
    try:
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the user about an error in interaction %s", interaction.id)


async def report_reaction(client: discord.Client, payload: discord.RawReactionActionEvent,
                          error: BaseException, locale) -> None:
    """Answer a reaction that failed: briefly, in its channel, then tidy up."""
    text = describe(error, locale, where=f"reaction {payload.emoji} on message {payload.message_id}")
    channel = client.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
    try:
        await channel.send(f"<@{payload.user_id}> {text}", delete_after=REACTION_ANSWER_S,
                           allowed_mentions=discord.AllowedMentions(users=True))
    except discord.HTTPException:
        log.warning("could not answer the reaction on message %s", payload.message_id)

