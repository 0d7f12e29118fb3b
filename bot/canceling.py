"""Canceling a job from Discord: the Cancel button on its queued/running message,
a ❌ reaction on that message, and `/queue cancel:`.

The owner of a job or a moderator (Manage Messages) may cancel it. A queued job
ends at once; a running one stops at its next step (the worker checks every
step). Either way the queue's `canceled` event reaches `bot.delivery`, which
turns the message into "canceled", and the gate counts the job's images no
more, so the member's quota gets them back.
"""

from __future__ import annotations

import re

import discord

from bot import errors
from bot.client import ArtBot
from bot.errors import refuse
from bot.i18n import t
from bot.permissions import is_moderator
from storage.jobs import Job, JobStatus

CANCEL_EMOJI = "❌"


class CancelButton(discord.ui.DynamicItem[discord.ui.Button], template=r"ab:cancel:(?P<job>\d+)"):
    def __init__(self, job_id: int, locale: str | None = None):
        super().__init__(discord.ui.Button(label=t("button_cancel", locale), emoji="✖️",
                                           style=discord.ButtonStyle.secondary,
                                           custom_id=f"ab:cancel:{job_id}"))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "CancelButton":
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            text = await cancel_job(interaction.client, self.job_id, guild_id=interaction.guild_id,
                                    user_id=interaction.user.id,
                                    permissions=interaction.permissions,
                                    locale=interaction.locale)
            await interaction.response.send_message(text, ephemeral=True)
        except Exception as exc:  # noqa: BLE001 - one sink for every error
            await errors.report(interaction, exc)


def cancel_view(job: Job) -> discord.ui.View:
    """The buttons under a queued or running job: Cancel."""
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job.id, job.locale))
    return view


async def cancel_job(bot: ArtBot, job_id: int, *, guild_id: int | None, user_id: int,
                     permissions: discord.Permissions | None, locale) -> str:
    """Cancel `job_id` for this member if they may; what to tell them."""
    job = await bot.queue.get(job_id)
    if job is None and await bot.queue.was_deleted(job_id):
        raise refuse("job_deleted", job=job_id)
    if job is None or job.server_id != (str(guild_id) if guild_id else None):
        raise refuse("job_not_found", job=job_id)
    if str(user_id) != job.user_id and not is_moderator(permissions):
        raise refuse("cancel_refused", job=job.id)
    if job.status.finished:
        return t("cancel_too_late", locale, job=job.id, status=job.status.value)
    status = await bot.queue.cancel(job.id)
    if status is JobStatus.CANCELED:
        return t("cancel_done", locale, job=job.id)
    if status is JobStatus.RUNNING:
        return t("cancel_stopping", locale, job=job.id)
    return t("cancel_too_late", locale, job=job.id, status=status.value if status else "?")


async def setup(bot: ArtBot) -> None:
    bot.add_dynamic_items(CancelButton)
