"""Buttons and the remix dialog.

Every button is a `DynamicItem` whose custom id carries what it acts on
(`ab:reroll:42`, `ab:v:42:2`, `ab:hist:<viewer>:<target>:<page>`), and the
database knows the rest, so a button works after a restart and days later.
The callbacks only route to `ArtBot` methods, which hold the meaning.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import discord

from bot.i18n import t
from storage.jobs import Job

if TYPE_CHECKING:  # pragma: no cover
    from bot.client import ArtBot

# Result buttons: action, job id and (for V/U and one-image results) an image index.
#   reroll: same prompt, new seed      vs / vS: vary subtle / strong
#   remix: edit the prompt, then run   del: delete the message
#   v: vary image N of a grid          u: show image N of a grid on its own
RESULT_TEMPLATE = r"ab:(?P<action>reroll|vs|vS|remix|del|v|u):(?P<job>\d+)(?::(?P<idx>\d))?"


class ResultButton(discord.ui.DynamicItem[discord.ui.Button], template=RESULT_TEMPLATE):
    def __init__(self, action: str, job_id: int, idx: int | None = None, *,
                 label: str | None = None, emoji: str | None = None,
                 style: discord.ButtonStyle = discord.ButtonStyle.secondary, row: int | None = None):
        custom_id = f"ab:{action}:{job_id}" + (f":{idx}" if idx is not None else "")
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style,
                                           custom_id=custom_id, row=row))
        self.action, self.job_id, self.idx = action, job_id, idx

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> "ResultButton":
        idx = match["idx"]
        return cls(match["action"], int(match["job"]), int(idx) if idx is not None else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        bot: ArtBot = interaction.client  # type: ignore[assignment]
        try:
            await bot.press_result_button(interaction, self.action, self.job_id, self.idx)
        except Exception as exc:  # noqa: BLE001 - one sink for every error
            await bot.report_error(interaction, exc)


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
        bot: ArtBot = interaction.client  # type: ignore[assignment]
        try:
            await bot.show_history(interaction, self.target, self.page, edit=True,
                                   viewer=self.viewer)
        except Exception as exc:  # noqa: BLE001
            await bot.report_error(interaction, exc)


def result_view(job: Job, count: int, *, picked: int | None = None) -> discord.ui.View:
    """The buttons under a result: one image (or one picked from a grid), or a grid."""
    loc = job.locale
    view = discord.ui.View(timeout=None)
    if job.kind == "stylize" and job.generator == "style":
        # The same inputs give the same picture again: only Delete makes sense.
        view.add_item(ResultButton("del", job.id, label=t("button_delete", loc), emoji="🗑️",
                                   style=discord.ButtonStyle.danger))
        return view
    if count > 1 and picked is None:
        for i in range(count):
            view.add_item(ResultButton("u", job.id, i, label=f"U{i + 1}", row=0))
        for i in range(count):
            view.add_item(ResultButton("v", job.id, i, label=f"V{i + 1}", row=1))
        row = 2
    else:
        row = 0
    idx = picked if picked is not None else None
    view.add_item(ResultButton("reroll", job.id, label=t("button_reroll", loc), emoji="🔁", row=row))
    view.add_item(ResultButton("vs", job.id, idx, label=t("button_vary_subtle", loc), emoji="🎲", row=row))
    view.add_item(ResultButton("vS", job.id, idx, label=t("button_vary_strong", loc), emoji="🌀", row=row))
    view.add_item(ResultButton("remix", job.id, label=t("button_remix", loc), emoji="✏️", row=row))
    view.add_item(ResultButton("del", job.id, label=t("button_delete", loc), emoji="🗑️",
                               style=discord.ButtonStyle.danger, row=row))
    return view


class RemixModal(discord.ui.Modal):
    """Edit the prompt of a job, then run it again with a new seed."""

    def __init__(self, job: Job, locale):
        super().__init__(title=t("remix_title", locale)[:45], custom_id=f"ab:remix-modal:{job.id}",
                         timeout=None)
        self.job = job
        self.prompt = discord.ui.TextInput(
            label=t("remix_label", locale), style=discord.TextStyle.paragraph,
            default=job.params.get("prompt", "")[:1000], max_length=1000, required=True,
            custom_id="ab:remix-prompt",
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        bot: ArtBot = interaction.client  # type: ignore[assignment]
        try:
            await bot.remix(interaction, self.job, self.prompt.value)
        except Exception as exc:  # noqa: BLE001
            await bot.report_error(interaction, exc)
