"""Server rules on Discord: /settings and /stats for admins, /quota for everyone.

What the rules mean lives in `worker.policy` and `worker.server_settings`;
these commands only read and write them through the queue. /settings and
/stats are hidden from members without Manage Server by Discord's default
permissions, but a server can change those, and a crafted interaction skips
them: so every call checks the permission here too (`bot.permissions`), before
anything is read or written.
"""

# No `from __future__ import annotations`: discord.py reads the option types
# from the annotations.
import time
from typing import Any, Optional

import discord
from discord import app_commands
from discord.app_commands import locale_str as _

from bot import render
from bot.client import ArtBot
from bot.i18n import t
from bot.permissions import require_manage_server
from storage.workers import LIVE_WITHIN_S
from worker.fleet import WorkerSummary, summarize_worker
from worker.gate import images
from worker.policy import Policy
from worker.quota_day import day_start
from worker.server_settings import KEYS, format_value

WEEK = 7 * 86_400
KEY_CHOICES = [app_commands.Choice(name=name, value=name) for name in KEYS]


def _cut(text: str, n: int) -> str:
    """Cut to `n` characters with an ellipsis, keeping line breaks (render's clip joins
    lines, which suits a prompt but not a list of settings)."""
    return text if len(text) <= n else text[: n - 1] + "…"


def shown_value(name: str, value: Any) -> str:
    """A setting's value as /settings shows it: channels and roles as mentions."""
    kind = KEYS[name].kind
    if kind == "channels" and value:
        return ", ".join(f"<#{c}>" for c in value)
    if kind == "tiers" and value:
        return ", ".join(f"<@&{r}>={q}" for r, q in value.items())
    return format_value(name, value)


def settings_embed(policy: Policy, overrides: dict[str, dict], locale, *, title: str,
                   channel_id: int | None) -> discord.Embed:
    """Every rule with its value and where it comes from (default, server, channel)."""
    embed = discord.Embed(title=title, colour=discord.Colour.blurple())
    lines = []
    for name in KEYS:
        source = policy.source(name)
        value = _cut(shown_value(name, policy[name]), 200)
        mark = "" if source == "default" else f" · *{source}*"
        lines.append(f"**{name}**: {value}{mark}")
    embed.description = _cut("\n".join(lines), 4000)
    if overrides and not channel_id:
        shown = [f"<#{c}>: " + ", ".join(f"{k}={_cut(shown_value(k, v), 60)}"
                                         for k, v in values.items())
                 for c, values in overrides.items()]
        embed.add_field(name=t("settings_overrides", locale), value=_cut("\n".join(shown), 1024),
                        inline=False)
    embed.set_footer(text="/settings set · /settings reset · /settings tier · /settings audit")
    return embed


def worker_entry(w: WorkerSummary, locale) -> str:
    """One live worker for /stats: device and memory, jobs done, what it runs, when it
    was last seen (a Discord timestamp), and its loaded models on a second line."""
    device = w.device_text if w.device else t("stats_worker_no_device", locale)
    if w.memory_text != "-":
        device += f" · {w.memory_text}"
    current = (t("stats_worker_running", locale, jobs=", ".join(map(str, w.current)))
               if w.current else t("stats_worker_idle", locale))
    line = t("stats_worker_line", locale, id=_cut(w.id, 60), where=t(f"stats_worker_{w.where}", locale),
             device=_cut(device, 80), jobs=w.jobs_done, current=_cut(current, 100),
             seen=f"<t:{int(w.seen_at)}:R>")
    models = t("stats_worker_models", locale, models=_cut(", ".join(w.models) or "-", 200))
    return f"{line}\n{models}"


def packed_fields(entries: list[str], *, more, limit: int = 1024, fields: int = 2) -> list[str]:
    """Entries (one or more lines each) packed whole into at most `fields` embed field
    values of at most `limit` characters (Discord's field limit); entries that do not
    fit are counted in a last line, `more(n)`."""
    room = 80  # kept free in the last field for the `more` line
    values: list[list[str]] = [[]]
    for i, entry in enumerate(entries):
        entry = _cut(entry, limit - room)
        last = len(values) == fields
        if len("\n".join(values[-1] + [entry])) <= (limit - room if last else limit):
            values[-1].append(entry)
        elif not last:
            values.append([entry])
        else:
            values[-1].append(_cut(more(len(entries) - i), room - 1))
            break
    return ["\n".join(v) for v in values if v]


async def setup(bot: ArtBot) -> None:
    tree = bot.tree
    settings = bot.settings

    group = app_commands.Group(name=_("settings"), description=_("Server rules for artbot (Manage Server)"),
                               guild_only=True, default_permissions=discord.Permissions(manage_guild=True))

    async def change(interaction: discord.Interaction, key: str, text: Optional[str],
                     channel: Optional[discord.abc.GuildChannel]) -> None:
        require_manage_server(interaction)  # before anything is read or written
        server = str(interaction.guild_id)
        channel_id = str(channel.id) if channel is not None else None
        changed = await bot.queue.change_setting(settings, server, key, text,
                                                 actor=str(interaction.user.id), via="discord",
                                                 channel_id=channel_id)
        policy = await bot.rules(interaction.guild_id, channel.id if channel else None)
        if changed is None:
            answer = t("settings_unchanged", interaction.locale, name=key,
                       value=shown_value(key, policy[key]))
        else:
            old, _new = changed
            old_text = "default" if old is None else shown_value(key, old)
            answer = t("settings_changed", interaction.locale, name=key, old=_cut(old_text, 800),
                       new=_cut(shown_value(key, policy[key]), 800))
            if channel is not None:
                answer += f" ({channel.mention})"
        await interaction.response.send_message(answer, ephemeral=True)

    @group.command(name=_("show"), description=_("Show this server's rules, or one channel's"))
    @app_commands.describe(channel=_("Only in this channel (for rules that allow it)"))
    @app_commands.rename(channel=_("channel"))
    async def show(interaction: discord.Interaction,
                   channel: Optional[discord.TextChannel] = None) -> None:
        require_manage_server(interaction)
        policy = await bot.rules(interaction.guild_id, channel.id if channel else None)
        server = str(interaction.guild_id)
        overrides = await bot.queue.channel_overrides(server)
        title = (t("settings_channel_title", interaction.locale, channel=f"#{channel.name}") if channel
                 else t("settings_title", interaction.locale, server=interaction.guild.name
                        if interaction.guild else server))
        await interaction.response.send_message(
            embed=settings_embed(policy, overrides, interaction.locale, title=title,
                                 channel_id=channel.id if channel else None), ephemeral=True)

    @group.command(name=_("set"), description=_("Change one rule"))
    @app_commands.describe(key=_("Which rule"), value=_("The new value (lists: a, b; +a adds; -a removes)"),
                           channel=_("Only in this channel (for rules that allow it)"))
    @app_commands.rename(key=_("key"), value=_("value"), channel=_("channel"))
    @app_commands.choices(key=KEY_CHOICES)
    async def set_(interaction: discord.Interaction, key: app_commands.Choice[str],
                   value: app_commands.Range[str, 1, 1000],
                   channel: Optional[discord.TextChannel] = None) -> None:
        await change(interaction, key.value, value, channel)

    @group.command(name=_("reset"), description=_("Put one rule back to its default"))
    @app_commands.describe(key=_("Which rule"), channel=_("Only in this channel (for rules that allow it)"))
    @app_commands.rename(key=_("key"), channel=_("channel"))
    @app_commands.choices(key=KEY_CHOICES)
    async def reset(interaction: discord.Interaction, key: app_commands.Choice[str],
                    channel: Optional[discord.TextChannel] = None) -> None:
        await change(interaction, key.value, None, channel)

    @group.command(name=_("tier"), description=_("Give a role its own daily quota"))
    @app_commands.describe(role=_("The role"), quota=_("Images per day, unlimited, or none to remove the tier"))
    @app_commands.rename(role=_("role"), quota=_("quota"))
    async def tier(interaction: discord.Interaction, role: discord.Role,
                   quota: app_commands.Range[str, 1, 20]) -> None:
        text = f"-{role.id}" if quota.strip().lower() in ("none", "remove") else f"+{role.id}={quota}"
        await change(interaction, "role_quotas", text, None)

    @group.command(name=_("audit"), description=_("Recent changes to the rules"))
    async def audit(interaction: discord.Interaction) -> None:
        require_manage_server(interaction)
        server = str(interaction.guild_id)
        entries = await bot.queue.audit(server, limit=15)
        lines = []
        for e in entries:
            def shown(v):
                return "default" if v is None else _cut(shown_value(e.key, v), 80)
            where = f" in <#{e.channel_id}>" if e.channel_id else ""
            actor = f"<@{e.actor}>" if e.actor.isdigit() else f"`{e.actor}`"
            lines.append(f"<t:{int(e.created_at)}:R> {actor} ({e.via}) **{e.key}**{where}: "
                         f"{shown(e.old_value)} → {shown(e.new_value)}")
        embed = discord.Embed(title=t("settings_audit_title", interaction.locale),
                              description=_cut("\n".join(lines), 4000) if lines
                              else t("settings_audit_empty", interaction.locale),
                              colour=discord.Colour.blurple())
        await interaction.response.send_message(embed=embed, ephemeral=True)

    tree.add_command(group)

    @tree.command(name=_("quota"), description=_("How many images you have left today"))
    @app_commands.guild_only()
    async def quota(interaction: discord.Interaction) -> None:
        locale = interaction.locale
        requester = bot.requester_of(interaction)
        status = await bot.queue.quota_status(settings, requester, time.time())
        when = f"<t:{int(status.resets_at)}:R>"
        if status.quota is None:
            lines = [t("quota_unlimited", locale, used=status.used)]
        else:
            lines = [t("quota_left", locale, left=status.left, quota=status.quota,
                       images=images(status.quota), when=when),
                     t({"fast": "quota_on_fast", "relax": "quota_on_relax"}.get(
                         status.mode, "quota_no_relax"), locale)]
        if status.relax_used:
            lines.append(t("quota_relax_used", locale, used=status.relax_used,
                           images=images(status.relax_used)))
        if status.cooldown_until:
            lines.append(t("quota_cooldown", locale, when=f"<t:{int(status.cooldown_until) + 1}:R>"))
        lines.append(t("quota_queued", locale, pending=status.pending, limit=status.max_queued))
        lines.append(t("quota_day", locale, zone=status.timezone))
        embed = discord.Embed(title=t("quota_title", locale), description="\n".join(lines),
                              colour=discord.Colour.blurple())
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @tree.command(name=_("stats"), description=_("This server's usage: images, top users, queue, speed"))
    @app_commands.guild_only()
    @app_commands.default_permissions(manage_guild=True)
    async def stats(interaction: discord.Interaction) -> None:
        require_manage_server(interaction)
        locale = interaction.locale
        server = str(interaction.guild_id)
        now = time.time()
        zone = (await bot.rules(interaction.guild_id))["timezone"]  # "today" is the server's day
        data = await bot.queue.server_stats(server, day_start=day_start(now, zone),
                                            week_start=now - WEEK)
        embed = discord.Embed(title=t("stats_title", locale, server=interaction.guild.name
                                      if interaction.guild else server),
                              colour=discord.Colour.blurple())
        embed.add_field(name=t("stats_images", locale), inline=False,
                        value=t("stats_images_value", locale, today=data["images_today"],
                                week=data["images_week"]))
        top = "\n".join(f"<@{user}> · {n}" if user.isdigit() else f"`{user}` · {n}"
                        for user, n in data["top_users"])
        embed.add_field(name=t("stats_top", locale), value=top or t("nobody_yet", locale), inline=False)
        embed.add_field(name=t("stats_queue", locale), inline=False,
                        value=t("stats_queue_value", locale, queued=data["queued"],
                                running=data["running"], all=data["queued_all_servers"]))
        models = "\n".join(
            f"{_cut(render.short_model(m['model']), 40)} · {m['jobs']} · "
            f"{m['mean_wait_s'] or 0:.1f} s · {m['mean_run_s'] or 0:.1f} s" for m in data["models"])
        embed.add_field(name=t("stats_models", locale), value=models or "-", inline=False)
        fleet = [w for w in (summarize_worker(row, now)
                             for row in await bot.queue.workers(within_s=LIVE_WITHIN_S)) if w.alive]
        values = packed_fields([worker_entry(w, locale) for w in fleet],
                               more=lambda n: t("stats_workers_more", locale, n=n))
        for value in values or [t("stats_workers_none", locale)]:
            embed.add_field(name=t("stats_workers", locale), value=value, inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())
