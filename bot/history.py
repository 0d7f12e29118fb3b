"""Looking back: /history (private, paged; `export:` sends all of the member's own
jobs as a file, `bot.privacy`), /job, /queue and /help.

/history pages are buttons whose custom id carries the viewer, whose history
it is and the page (`ab:hist:<viewer>:<target>:<page>`), so they keep working
after a restart. /job brings a finished job back with working buttons.
"""

# No `from __future__ import annotations`: discord.py reads the option types
# from the annotations.
import time
from typing import Optional

import discord
from discord import app_commands
from discord.app_commands import locale_str as _

from bot import errors, render
from bot.canceling import cancel_job
from bot.client import ArtBot
from bot.errors import refuse
from bot.i18n import t
from bot.posting import job_in_guild
from bot.privacy import send_export
from bot.results import send_result
from storage.jobs import JobStatus
from storage.workers import LIVE_WITHIN_S
from worker.fleet import SPEED_FROM_LAST_S, estimate_wait, rough_duration

HISTORY_PAGE_SIZE = 5


def wait_text(seconds: float, locale) -> str:
    """An estimated wait in the member's language: "under a minute", "about 2 min"."""
    unit, n = rough_duration(seconds)
    return t(f"wait_{unit}", locale, n=n)


async def queue_estimate(bot: ArtBot):
    """position -> estimated seconds until it starts (None: no estimate), from the
    fleet's speed over the last hour, its live workers and the jobs running now."""
    recent = await bot.queue.recent_run_seconds(since=time.time() - SPEED_FROM_LAST_S)
    alive = sum(1 for w in await bot.queue.workers(within_s=LIVE_WITHIN_S) if w["alive"])
    running = (await bot.queue.status_counts()).get("running", 0)
    return lambda position: estimate_wait(position, recent, alive, running)


class HistoryPageButton(discord.ui.DynamicItem[discord.ui.Button],
                        template=r"ab:hist:(?P<viewer>\d+):(?P<target>\d+):(?P<page>\d+)"):
    def __init__(self, viewer: int, target: int, page: int, *, label: str, emoji: str,
                 disabled: bool = False):
        super().__init__(discord.ui.Button(label=label, emoji=emoji, disabled=disabled,
                                           custom_id=f"ab:hist:{viewer}:{target}:{page}"))
        self.viewer, self.target, self.page = viewer, target, page

    @classmethod
    async def from_custom_id(cls, interaction, item, match) -> "HistoryPageButton":
        return cls(int(match["viewer"]), int(match["target"]), int(match["page"]),
                   label=item.label or "", emoji=str(item.emoji or ""))

    async def callback(self, interaction: discord.Interaction) -> None:
        try:
            await show_history(interaction.client, interaction, self.target, self.page,
                               edit=True, viewer=self.viewer)
        except Exception as exc:  # noqa: BLE001 - one sink for every error
            await errors.report(interaction, exc)


async def show_history(bot: ArtBot, interaction: discord.Interaction, target: int, page: int, *,
                       edit: bool = False, viewer: Optional[int] = None) -> None:
    """A page of a member's finished jobs in this server, newest first."""
    locale = interaction.locale
    guild = str(interaction.guild_id) if interaction.guild_id else None
    jobs = await bot.queue.list_jobs(user_id=str(target), server_id=guild,
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


async def setup(bot: ArtBot) -> None:
    tree = bot.tree
    bot.add_dynamic_items(HistoryPageButton)

    @tree.command(name=_("history"), description=_("Your recent images, with prompts and seeds"))
    @app_commands.describe(user=_("Whose history (default: yours)"),
                           export=_("Send your own prompts, seeds and parameters as a file"))
    @app_commands.rename(user=_("user"), export=_("export"))
    @app_commands.choices(export=[app_commands.Choice(name="JSON", value="json"),
                                  app_commands.Choice(name="CSV", value="csv")])
    async def history(interaction: discord.Interaction,
                      user: Optional[discord.User] = None,
                      export: Optional[app_commands.Choice[str]] = None) -> None:
        if export is not None:
            if user is not None and user.id != interaction.user.id:
                raise refuse("export_others")
            await send_export(bot, interaction, export.value)
            return
        await show_history(bot, interaction, (user or interaction.user).id, 0)

    @tree.command(name=_("job"), description=_("Bring back an earlier job with its buttons"))
    @app_commands.describe(id=_("Job id (the number shown with each result)"))
    @app_commands.rename(id=_("id"))
    async def job_(interaction: discord.Interaction,
                   id: app_commands.Range[int, 1, 2**31 - 1]) -> None:  # noqa: A002
        job = await job_in_guild(bot, id, interaction.guild_id)
        if job.status is not JobStatus.SUCCEEDED:
            position = (await bot.queue.positions()).get(job.id)
            text = (render.failure_text(job) if job.status.finished
                    else render.status_text(job, job.status.value, position=position,
                                            step=job.progress_step, total=job.progress_total))
            await interaction.response.send_message(text, ephemeral=True)
            return
        await send_result(bot, interaction, job)

    async def own_jobs_autocomplete(interaction: discord.Interaction, current: str):
        """The member's queued and running jobs here, newest first, for /queue cancel:."""
        guild = str(interaction.guild_id) if interaction.guild_id else None
        mine = await bot.queue.list_jobs(user_id=str(interaction.user.id), server_id=guild,
                                         statuses=[JobStatus.QUEUED, JobStatus.RUNNING], limit=25)
        return [app_commands.Choice(
                    name=f"{job.id} · {job.status.value} · {job.params.get('prompt') or job.kind}"[:100],
                    value=job.id)
                for job in mine if current.strip() in str(job.id)]

    @tree.command(name=_("queue"), description=_("Your queued and running jobs"))
    @app_commands.describe(cancel=_("Cancel one of your jobs (its id)"))
    @app_commands.rename(cancel=_("cancel"))
    @app_commands.autocomplete(cancel=own_jobs_autocomplete)
    async def queue_(interaction: discord.Interaction,
                     cancel: Optional[app_commands.Range[int, 1, 2**31 - 1]] = None) -> None:
        locale = interaction.locale
        if cancel is not None:
            text = await cancel_job(bot, cancel, guild_id=interaction.guild_id,
                                    user_id=interaction.user.id,
                                    permissions=interaction.permissions, locale=locale)
            await interaction.response.send_message(text, ephemeral=True)
            return
        guild = str(interaction.guild_id) if interaction.guild_id else None
        mine = await bot.queue.list_jobs(user_id=str(interaction.user.id), server_id=guild,
                                         statuses=[JobStatus.QUEUED, JobStatus.RUNNING],
                                         limit=50, newest_first=False)
        positions = await bot.queue.positions()
        running = await bot.queue.list_jobs(statuses=[JobStatus.RUNNING], limit=10)
        embed = discord.Embed(title=t("queue_title", locale), colour=discord.Colour.blurple())
        lines = []
        wait_at = (await queue_estimate(bot)
                   if any(j.status is JobStatus.QUEUED for j in mine) else None)
        for job in mine:
            if job.status is JobStatus.RUNNING:
                progress = (t("step_of", locale, step=job.progress_step, total=job.progress_total)
                            if job.progress_total else t("starting", locale))
                lines.append(t("queue_line_running", locale, job=job.id, progress=progress))
            else:
                position = positions.get(job.id)
                wait = wait_at(position) if wait_at and position else None
                if wait is None:
                    lines.append(t("queue_line_queued", locale, job=job.id,
                                   position=position or "?"))
                else:
                    lines.append(t("queue_line_queued_wait", locale, job=job.id,
                                   position=position, wait=wait_text(wait, locale)))
                if job.relax:  # behind every fast job, and later fast jobs go first
                    lines[-1] += t("queue_line_relax", locale)
        embed.description = "\n".join(lines) if lines else t("queue_empty", locale)
        now = [f"job {j.id} · <@{j.user_id}> · "
               + (t("step_of", locale, step=j.progress_step, total=j.progress_total)
                  if j.progress_total else t("starting", locale)) for j in running]
        embed.add_field(name=t("queue_running_now", locale),
                        value="\n".join(now) if now else t("nothing_running", locale), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @tree.command(name=_("help"), description=_("How to use artbot"))
    async def help_(interaction: discord.Interaction) -> None:
        embed = discord.Embed(title=t("help_title", interaction.locale),
                              description=t("help_text", interaction.locale),
                              colour=discord.Colour.blurple())
        await interaction.response.send_message(embed=embed, ephemeral=True)
