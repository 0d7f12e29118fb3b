"""What can be done with a result: its buttons, the remix dialog and reactions.

Every button is a `DynamicItem` whose custom id carries what it acts on
(`ab:reroll:42`, `ab:v:42:2`), and the database knows the rest, so a button
works after a restart and days later. A reaction means exactly what the button
of the same emoji means: both call the actions below.

    reroll: same request, new seeds     vs / vS: vary subtle / strong
    remix: edit the prompt, then run    del: delete the message
    v: vary image N of a grid           u: show image N of a grid on its own
    up2 / up4: upscale ×2 / ×4          z15 / z2: zoom out 1.5× / 2×
    pl / pr / pu / pd: pan ⬅️ ➡️ ⬆️ ⬇️    dd: draw prompt N of a /describe

The image tools (upscale, zoom, pan) are offered on one image (a single result,
or one picked from a grid with U1-U4) where the job's model can do them
(`worker.requests.tools_for`). A ✉️ reaction sends the member
who reacts a private message with the job's parameters.
"""

from __future__ import annotations

import logging
import re

import discord
from discord.ext import commands

from bot import errors, render
from bot.canceling import CANCEL_EMOJI, cancel_job
from artbot.config import Settings
from bot.client import ArtBot
from bot.errors import refuse
from bot.errors import REACTION_ANSWER_S
from bot.i18n import t
from bot.permissions import is_moderator
from bot.posting import (
    TOOLS,
    job_in_guild,
    submit_from_interaction,
    submit_from_reaction,
    tool_spec,
    variation_spec,
)
from storage.jobs import Job
from worker.requests import (MAX_UPSCALED_SIDE, PANS, TOOL_FAMILIES, UPSCALES, ZOOMS, build_draw,
                             build_reroll, outpaint_pads, tools_for)

log = logging.getLogger(__name__)

RESULT_TEMPLATE = (r"ab:(?P<action>reroll|vs|vS|remix|del|v|u|up2|up4|z15|z2|pl|pr|pu|pd|dd)"
                   r":(?P<job>\d+)(?::(?P<idx>\d))?")
# Reactions on a job's message and what they do. (U+FE0F, the emoji variation selector,
# is ignored.) ❌ cancels a job that is still queued or running; ✉️ sends its details privately.
REACTIONS = {"🔁": "reroll", "🎲": "vary", "🗑": "delete", CANCEL_EMOJI: "cancel", "✉": "details"}
PAN_ACTIONS = {"left": "pl", "right": "pr", "up": "pu", "down": "pd"}


# -- the buttons ----------------------------------------------------------------------


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
        try:
            await press(interaction.client, interaction, self.action, self.job_id, self.idx)
        except Exception as exc:  # noqa: BLE001 - one sink for every error
            await errors.report(interaction, exc)


def result_view(job: Job, count: int, *, picked: int | None = None, settings: Settings | None = None,
                size: tuple[int, int] | None = None) -> discord.ui.View:
    """The buttons under a result: one image (or one picked from a grid), or a grid.

    On one image, Midjourney-like rows: upscale and vary; zoom out; pan; then reroll,
    remix and delete. The tools are offered where the model can do them (`settings`,
    the operator's, decides; without it none are) and where the image of `size`
    stays within the largest size allowed. A grid gets U1-U4, V1-V4 and one row."""
    loc = job.locale
    view = discord.ui.View(timeout=None)
    if job.kind == "describe":
        return describe_view(job)
    # Style transfer of the same inputs gives the same picture again; an upscaler network
    # too: no reroll. A tool's own family (an upscaler network) cannot vary or remix.
    fixed = (job.kind == "stylize" and job.family == "style") or \
        (job.kind == "upscale" and job.family == "upscaler")
    can_vary = not fixed and job.family not in TOOL_FAMILIES
    can_remix = job.kind in ("draw", "vary", "stylize") and not fixed
    if count > 1 and picked is None:
        for i in range(count):
            view.add_item(ResultButton("u", job.id, i, label=f"U{i + 1}", row=0))
        if can_vary:
            for i in range(count):
                view.add_item(ResultButton("v", job.id, i, label=f"V{i + 1}", row=1))
        _last_row(view, job, None, 2, reroll=not fixed, vary=can_vary, remix=can_remix)
        return view
    idx = picked
    row = 0
    upscale, outpaint = tools_for(settings, job) if settings is not None else (False, False)
    if upscale:
        for n in UPSCALES:
            if size is None or max(size) * n <= MAX_UPSCALED_SIDE:
                view.add_item(ResultButton(f"up{n}", job.id, idx, label=t("button_upscale", loc, n=n),
                                           style=discord.ButtonStyle.primary, row=row))
    if can_vary:
        view.add_item(ResultButton("vs", job.id, idx, label=t("button_vary_subtle", loc), emoji="🎲",
                                   row=row))
        view.add_item(ResultButton("vS", job.id, idx, label=t("button_vary_strong", loc), emoji="🌀",
                                   row=row))
    if view.children:
        row += 1
    if outpaint:
        def fits(**how) -> bool:
            if size is None:
                return True
            left, top, right, bottom = outpaint_pads(*size, **how)
            return max(size[0] + left + right, size[1] + top + bottom) <= settings.max_size

        zooms = [z for z in sorted(ZOOMS, reverse=True) if fits(zoom=z)]
        for z in zooms:
            action = "z" + f"{z:g}".replace(".", "")
            view.add_item(ResultButton(action, job.id, idx, label=t("button_zoom", loc, n=f"{z:g}"),
                                       emoji="🔍", row=row))
        pans = [way for way in PANS if fits(pan=way)]
        row += bool(zooms)
        for way in pans:
            view.add_item(ResultButton(PAN_ACTIONS[way], job.id, idx, emoji=render.PAN_ARROWS[way],
                                       row=row))
        row += bool(pans)
    _last_row(view, job, idx, row, reroll=not fixed, vary=False, remix=can_remix)
    return view


def _last_row(view: discord.ui.View, job: Job, idx: int | None, row: int, *, reroll: bool,
              vary: bool, remix: bool) -> None:
    loc = job.locale
    if reroll:
        view.add_item(ResultButton("reroll", job.id, label=t("button_reroll", loc), emoji="🔁", row=row))
    if vary:
        view.add_item(ResultButton("vs", job.id, idx, label=t("button_vary_subtle", loc), emoji="🎲",
                                   row=row))
        view.add_item(ResultButton("vS", job.id, idx, label=t("button_vary_strong", loc), emoji="🌀",
                                   row=row))
    if remix:
        view.add_item(ResultButton("remix", job.id, label=t("button_remix", loc), emoji="✏️", row=row))
    view.add_item(ResultButton("del", job.id, label=t("button_delete", loc), emoji="🗑️",
                               style=discord.ButtonStyle.danger, row=row))


def describe_view(job: Job) -> discord.ui.View:
    """Under a /describe answer: a Draw button for each prompt it found, and Delete."""
    view = discord.ui.View(timeout=None)
    for i, _prompt in enumerate(render.describe_prompts(job)):
        view.add_item(ResultButton("dd", job.id, i, label=t("button_draw", job.locale, n=i + 1),
                                   emoji="🎨", style=discord.ButtonStyle.primary, row=0))
    view.add_item(ResultButton("del", job.id, label=t("button_delete", job.locale), emoji="🗑️",
                               style=discord.ButtonStyle.danger, row=1))
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
        settings = await bot.settings_for(interaction)
        await submit_from_interaction(bot, interaction,
                                      build_reroll(settings, self.job, prompt=self.prompt.value))

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await errors.report(interaction, error)


# -- what they do -------------------------------------------------------------------------


async def press(bot: ArtBot, interaction: discord.Interaction, action: str, job_id: int,
                idx: int | None) -> None:
    job = await job_in_guild(bot, job_id, interaction.guild_id)
    if action == "reroll":
        settings = await bot.settings_for(interaction)
        await submit_from_interaction(bot, interaction, build_reroll(settings, job))
    elif action in ("vs", "vS", "v"):
        if idx is None and interaction.message is not None:
            link = await bot.queue.message_link(str(interaction.message.id))
            idx = link.image_idx if link else None
        strength = "subtle" if action == "vs" else "strong"
        settings = await bot.settings_for(interaction)
        await submit_from_interaction(
            bot, interaction, await variation_spec(bot, settings, job, idx, strength))
    elif action in TOOLS:
        if idx is None and interaction.message is not None:
            link = await bot.queue.message_link(str(interaction.message.id))
            idx = link.image_idx if link else None
        settings = await bot.settings_for(interaction)
        await submit_from_interaction(bot, interaction,
                                      await tool_spec(bot, settings, job, idx, action))
    elif action == "dd":
        prompts = render.describe_prompts(job)
        if idx is None or not 0 <= idx < len(prompts):
            raise refuse("describe_no_prompt", job=job.id, n=(idx or 0) + 1)
        settings = await bot.settings_for(interaction)  # the server's default model and size
        await submit_from_interaction(bot, interaction,
                                      build_draw(settings, prompt=prompts[idx], parent_id=job.id))
    elif action == "u":
        await send_result(bot, interaction, job, only=idx or 0)
    elif action == "remix":
        await interaction.response.send_modal(RemixModal(job, interaction.locale))
    elif action == "del":
        await delete_result(bot, interaction, job)


async def send_result(bot: ArtBot, interaction: discord.Interaction, job: Job,
                      only: int | None = None) -> None:
    """Answer with a finished job's image(s) and working buttons (/job, U1-U4).

    The message is linked to the job, so reactions on it work too; `only`
    shows one image of a grid on its own.
    """
    images = await bot.queue.images(job.id)
    if job.kind == "describe" and only is None:  # its result is words
        await interaction.response.send_message(content=render.describe_text(job),
                                                view=describe_view(job),
                                                allowed_mentions=discord.AllowedMentions.none())
        message = await interaction.original_response()
        await bot.queue.link_message(job.id, str(message.id), str(interaction.channel_id),
                                     guild_id=job.server_id, via="interaction", primary=False)
        return
    if only is not None and not 0 <= only < len(images):
        raise refuse("job_not_image", job=job.id)
    if not images:
        raise refuse("job_not_image", job=job.id)
    shown = images if only is None else [images[only]]
    name = f"artbot-{job.id}.png" if only is None else f"artbot-{job.id}-{only + 1}.png"
    model = bot.settings.model_name(job.model)  # the catalogue's name for it
    await interaction.response.send_message(
        content=render.result_content(job, model),
        embed=render.result_embed(job, shown, name, model),
        file=render.result_file(job, images, bot.images.root, only=only),
        view=result_view(job, len(images), picked=only, settings=bot.settings,
                         size=(shown[0].width, shown[0].height)),
        allowed_mentions=discord.AllowedMentions.none(),
    )
    message = await interaction.original_response()
    await bot.queue.link_message(job.id, str(message.id), str(interaction.channel_id),
                                 guild_id=job.server_id, via="interaction", image_idx=only,
                                 primary=False)


async def may_delete(bot: ArtBot, job: Job, user_id: int,
                     permissions: discord.Permissions | None, guild_id: int | None) -> bool:
    """The server's delete_by rule: owner or moderators (default), moderators, or anyone."""
    policy = await bot.rules(guild_id)
    return policy.may_delete(is_owner=str(user_id) == job.user_id,
                             is_mod=is_moderator(permissions))


async def delete_result(bot: ArtBot, interaction: discord.Interaction, job: Job) -> None:
    if not await may_delete(bot, job, interaction.user.id, interaction.permissions,
                            interaction.guild_id):
        raise refuse("delete_refused")
    message = interaction.message
    await interaction.response.send_message(t("deleted", interaction.locale), ephemeral=True)
    if message is not None:
        await message.delete()
        await bot.queue.forget_message(str(message.id))


# -- reactions ------------------------------------------------------------------------------


class Reactions(commands.Cog):
    """🔁 rerolls, 🎲 varies, 🗑️ deletes, ❌ cancels: the same as the buttons."""

    def __init__(self, bot: ArtBot):
        self.bot = bot

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        bot = self.bot
        if bot.user is None or payload.user_id == bot.user.id:
            return
        action = REACTIONS.get(str(payload.emoji).replace("\ufe0f", ""))
        if action is None:
            return
        link = await bot.queue.message_link(str(payload.message_id))
        if link is None:
            return
        locale = None
        try:
            job = await job_in_guild(bot, link.job_id, payload.guild_id)
            locale = job.locale
            if action == "cancel":
                if not job.status.finished:  # on a result it means nothing
                    perms = payload.member.guild_permissions if payload.member else None
                    log.info("job %d: %s", job.id, await cancel_job(
                        bot, job.id, guild_id=payload.guild_id, user_id=payload.user_id,
                        permissions=perms, locale=None))
                return
            if action == "details":
                await send_details(bot, payload, job)
                return
            settings = (await bot.rules(payload.guild_id, payload.channel_id)).apply(bot.settings)
            if action == "reroll":
                await submit_from_reaction(bot, payload, build_reroll(settings, job), job.locale)
            elif action == "vary":
                spec = await variation_spec(bot, settings, job, link.image_idx, "subtle")
                await submit_from_reaction(bot, payload, spec, job.locale)
            elif action == "delete":
                perms = payload.member.guild_permissions if payload.member else None
                if not await may_delete(bot, job, payload.user_id, perms, payload.guild_id):
                    log.info("user %s may not delete job %d; reaction ignored", payload.user_id, job.id)
                    return
                channel = bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
                await channel.get_partial_message(payload.message_id).delete()
                await bot.queue.forget_message(str(payload.message_id))
        except Exception as exc:  # noqa: BLE001 - one sink for every error
            await errors.report_reaction(bot, payload, exc, locale)


async def send_details(bot: ArtBot, payload: discord.RawReactionActionEvent, job: Job) -> None:
    """✉️: the job's id, seeds, model, sampler and all its parameters, in a private message
    to the member who reacted. If their privacy settings refuse it, say so in the channel
    (briefly: the answer goes away like a refused reaction's)."""
    images = await bot.queue.images(job.id)
    link = render.jump_link(payload.guild_id, payload.channel_id, payload.message_id)
    text = render.job_details(job, images, link)
    user = payload.member or await bot.fetch_user(payload.user_id)
    try:
        await user.send(text, allowed_mentions=discord.AllowedMentions.none())
    except discord.HTTPException as exc:
        if exc.code != 50007 and exc.status != 403:
            raise
        log.info("user %s accepts no private messages; job %d's details not sent",
                 payload.user_id, job.id)
        channel = bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        await channel.send(t("dm_closed", job.locale, mention=f"<@{payload.user_id}>", job=job.id),
                           delete_after=REACTION_ANSWER_S,
                           allowed_mentions=discord.AllowedMentions(users=True, roles=False,
                                                                    everyone=False))


async def setup(bot: ArtBot) -> None:
    bot.add_dynamic_items(ResultButton)
    await bot.add_cog(Reactions(bot))
