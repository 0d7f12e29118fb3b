"""Server rules on Discord, end to end: the real discord.py client against the
Discord-protocol server, the tiny diffusion model and a real worker, with the
operator's `artbot settings` run in-process on the same data directory."""

from __future__ import annotations

import concurrent.futures
import re
import time

import pytest

from cli.main import main as artbot
from storage.db import open_db
from storage.jobs import JobStore
from storage.settings import SettingsStore
from tests.bot.discord_server import Permissions, running_client
from tests.bot.test_bot import RESULT_WAIT, draw, make_bot, result

EPHEMERAL = 64


def operator(bot_settings, monkeypatch, capsys, *argv: str) -> str:
    """`artbot ARGV...` as the operator types it, on the bot's data directory."""
    monkeypatch.setenv("ARTBOT_DATA_DIR", str(bot_settings.data_dir))
    monkeypatch.setenv("ARTBOT_DEFAULT_MODEL", bot_settings.default_model)
    capsys.readouterr()
    # On a thread of its own: the CLI runs its own event loop, and some tests call this
    # from inside the bot's.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        code = pool.submit(artbot, list(argv)).result()
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


async def answer_of(ix) -> dict:
    data = (await ix.wait_response())["data"]
    return data


def text_of(data: dict) -> str:
    parts = [data.get("content") or ""]
    for embed in data.get("embeds") or []:
        parts += [embed.get("title") or "", embed.get("description") or ""]
        parts += [f"{f['name']}: {f['value']}" for f in embed.get("fields") or []]
    return "\n".join(parts)


async def crafted(server, member, channel, name: str, options: dict):
    """A /command interaction sent as if Discord had shown the command to `member`
    (a server can override default permissions, and a client can craft requests)."""
    root, *path = name.split()
    cmd = server.command(root) or server.command(root, server.guild.id)
    opts, resolved = server._command_options(cmd, path, options, channel)
    data = {"id": cmd["id"], "name": cmd["name"], "type": 1, "options": opts}
    if resolved:
        data["resolved"] = resolved
    return await server._interact(2, member, channel, data)


def job_count(bot_settings) -> int:
    return len(JobStore(open_db(bot_settings.db_path)).list_jobs(limit=1000))


@pytest.mark.asyncio
async def test_done_when_quota_settings_blocklist_and_audit(server, bot_settings, monkeypatch, capsys):
    guild = str(server.guild.id)
    operator(bot_settings, monkeypatch, capsys, "settings", "set", guild, "daily_quota", "2")
    # Without relax time a member past the quota is refused (with it: test_relax_time_...).
    operator(bot_settings, monkeypatch, capsys, "settings", "set", guild, "relax", "off")
    async with running_client(server, make_bot(bot_settings)):
        # Two draws go through; the third of the day is refused with the reset time.
        for seed in (1, 2):
            await result(await draw(server, server.alice, seed=seed))
        assert job_count(bot_settings) == 2
        ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "a fox"})
        data = await answer_of(ix)
        assert data["flags"] & EPHEMERAL
        assert "used your 2 images" in data["content"]
        (stamp,) = re.findall(r"<t:(\d+):R>", data["content"])
        assert int(stamp) % 86_400 == 0 and 0 < int(stamp) - time.time() <= 86_400  # next midnight UTC
        assert job_count(bot_settings) == 2  # nothing queued

        # Every other way in passes the same gate: a button and a reaction.
        first = server.messages_in(server.general)[0]
        reroll = next(b["custom_id"] for b in first.buttons if b["custom_id"].startswith("ab:reroll"))
        ix = await server.press_button(server.alice, first, reroll)
        data = await answer_of(ix)
        assert data["flags"] & EPHEMERAL and "used your 2 images" in data["content"]
        await server.add_reaction(server.alice, first, "🔁")
        note = await server.wait_for_message(
            channel_id=server.general.id, predicate=lambda m: not m.ephemeral and "used your 2 images" in m.content)
        assert f"<@{server.alice.id}>" in note.content
        assert job_count(bot_settings) == 2

        # /quota says the same; bob, who has drawn nothing, has his own 2.
        data = await answer_of(await server.slash_command(server.alice, server.general, "quota"))
        assert "**0** of your 2" in text_of(data) and data["flags"] & EPHEMERAL
        assert "Relax time is off" in text_of(data)
        data = await answer_of(await server.slash_command(server.bob, server.general, "quota"))
        assert "**2** of your 2" in text_of(data) and "You are on fast time" in text_of(data)

        # A member without Manage Server: Discord hides /settings, and a crafted call is refused.
        with pytest.raises(PermissionError):
            await server.slash_command(server.bob, server.general, "settings show")
        ix = await crafted(server, server.bob, server.general, "settings set",
                           {"key": "daily_quota", "value": "unlimited"})
        data = await answer_of(ix)
        assert data["flags"] & EPHEMERAL and "manage this server" in data["content"]
        ix = await crafted(server, server.bob, server.general, "stats", {})
        assert "manage this server" in (await answer_of(ix))["content"]

        # An admin blocks a word; disguised, it is still refused, privately.
        ix = await server.slash_command(server.owner, server.general, "settings set",
                                        {"key": "blocklist", "value": "+nasty, /gr[o0]ss/"})
        data = await answer_of(ix)
        assert data["flags"] & EPHEMERAL and "blocklist" in data["content"]
        for prompt in ("a NASTY cat", "a ｎａｓｔｙ cat", "a na\u200bsty cat", "gr0ss"):
            ix = await server.slash_command(server.bob, server.general, "draw", {"prompt": prompt})
            data = await answer_of(ix)
            assert data["flags"] & EPHEMERAL and "does not allow that prompt" in data["content"]
        assert job_count(bot_settings) == 2

        # The admin's change is in `artbot settings show` and in the audit table.
        shown = operator(bot_settings, monkeypatch, capsys, "settings", "show", guild)
        assert re.search(r"daily_quota\s+2\s+\(server\)", shown)
        assert re.search(r"blocklist\s+nasty, /gr\[o0\]ss/\s+\(server\)", shown)
        assert f"{server.owner.id} (discord)  blocklist: (default) -> nasty, /gr[o0]ss/" in shown
        entries = SettingsStore(open_db(bot_settings.db_path)).audit(guild)
        assert [(e.key, e.via, e.old_value, e.new_value) for e in entries] == [
            ("blocklist", "discord", None, ["nasty", "/gr[o0]ss/"]), ("relax", "cli", None, False),
            ("daily_quota", "cli", None, 2)]
        assert entries[0].actor == str(server.owner.id) and entries[1].actor.startswith("local:")
        data = await answer_of(await server.slash_command(server.owner, server.general, "settings audit"))
        assert "blocklist" in text_of(data) and "daily_quota" in text_of(data)

        # /stats for the admin.
        data = await answer_of(await server.slash_command(server.owner, server.general, "stats"))
        stats = text_of(data)
        assert "today 2" in stats and f"<@{server.alice.id}> · 2" in stats

    # Settings and used quota survive a restart.
    async with running_client(server, make_bot(bot_settings)):
        ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "a fox"})
        assert "used your 2 images" in (await answer_of(ix))["content"]
    server.assert_clean()


@pytest.mark.asyncio
async def test_channel_overrides_channels_spoilers_and_delete_rule(server, bot_settings):
    async with running_client(server, make_bot(bot_settings)):
        ix = await server.slash_command(server.owner, server.general, "settings set",
                                        {"key": "max_steps", "value": "3", "channel": server.art})
        data = await answer_of(ix)
        assert "max_steps" in data["content"] and server.art.mention in data["content"]
        ix = await server.slash_command(server.alice, server.art, "draw", {"prompt": "a fox", "steps": 4})
        assert "between 1 and 3" in (await answer_of(ix))["content"]
        await result(await draw(server, server.alice, steps=4))  # general keeps the server's limit
        # A rule that is per server cannot be set per channel.
        ix = await server.slash_command(server.owner, server.general, "settings set",
                                        {"key": "daily_quota", "value": "5", "channel": server.art})
        assert "whole server" in (await answer_of(ix))["content"]

        data = await answer_of(await server.slash_command(server.owner, server.general, "settings show",
                                                          {"channel": server.art}))
        assert "**max_steps**: 3 · *channel*" in text_of(data)

        # Only in #art, as spoilers.
        for key, value in (("channels", server.art.mention), ("spoiler", "on")):
            await answer_of(await server.slash_command(server.owner, server.general, "settings set",
                                                       {"key": key, "value": value}))
        ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "a fox"})
        assert f"only draw in {server.art.mention}" in (await answer_of(ix))["content"]
        message = await result(await server.slash_command(server.alice, server.art, "draw",
                                                          {"prompt": "a fox", "steps": 2}))
        assert message.attachments[0]["filename"].startswith("SPOILER_")
        assert not (message.payload["embeds"][0].get("image"))  # no unblurred preview

        # delete_by mods: even the owner of a result cannot delete it, a moderator can.
        await answer_of(await server.slash_command(server.owner, server.general, "settings set",
                                                   {"key": "delete_by", "value": "mods"}))
        delete = next(b["custom_id"] for b in message.buttons if b["custom_id"].startswith("ab:del"))
        data = await answer_of(await server.press_button(server.alice, message, delete))
        assert data["flags"] & EPHEMERAL and not server.messages[message.id].deleted
        mod = server.add_member("mod", permissions=Permissions.MANAGE_MESSAGES)
        await answer_of(await server.press_button(mod, message, delete))
        await server.wait_for(lambda: server.messages[message.id].deleted, what="the deletion")
    server.assert_clean()


@pytest.mark.asyncio
async def test_role_tier_and_cooldown_on_discord(server, bot_settings):
    patron = server.add_role("Patron")
    carol = server.add_member("carol", roles=[patron])
    async with running_client(server, make_bot(bot_settings)):
        for key, value in (("daily_quota", "1"), ("cooldown", "1h")):
            await answer_of(await server.slash_command(server.owner, server.general, "settings set",
                                                       {"key": key, "value": value}))
        data = await answer_of(await server.slash_command(server.owner, server.general, "settings tier",
                                                          {"role": patron, "quota": "unlimited"}))
        assert f"<@&{patron.id}>=unlimited" in data["content"]
        await result(await draw(server, carol))
        ix = await server.slash_command(carol, server.general, "draw", {"prompt": "again"})
        content = (await answer_of(ix))["content"]
        assert "Slow down" in content and re.search(r"<t:\d+:R>", content)  # the cooldown, not the quota
        data = await answer_of(await server.slash_command(carol, server.general, "quota"))
        assert "No daily limit" in text_of(data) and "Cooldown" in text_of(data)
    server.assert_clean()


@pytest.mark.asyncio
async def test_one_server_never_sees_anothers_rules_history_or_jobs(server, bot_settings):
    other = server.add_guild("Other Guild", members=[server.alice])
    elsewhere = other.channel("general")
    async with running_client(server, make_bot(bot_settings)):
        for key, value in (("daily_quota", "1"), ("relax", "off")):
            await answer_of(await server.slash_command(server.owner, server.general, "settings set",
                                                       {"key": key, "value": value}))
        await result(await draw(server, server.alice, "a lighthouse"))
        job_id = re.search(r"job (\d+)", text_of(server.messages_in(server.general)[0].payload)).group(1)
        ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": "again"})
        assert "used your 1 image" in (await answer_of(ix))["content"]

        # In the other server: no quota, no history, no access to the first server's job.
        data = await answer_of(await server.slash_command(server.alice, elsewhere, "quota"))
        assert "No daily limit" in text_of(data)
        data = await answer_of(await server.slash_command(server.alice, elsewhere, "history"))
        assert "No images yet" in text_of(data) and "lighthouse" not in text_of(data)
        data = await answer_of(await server.slash_command(server.alice, elsewhere, "job",
                                                          {"id": int(job_id)}))
        assert f"no job {job_id} in this server" in data["content"]
        data = await answer_of(await server.slash_command(server.owner, elsewhere, "settings show"))
        assert "**daily_quota**: unlimited" in text_of(data)
        ix = await server.slash_command(server.alice, elsewhere, "draw", {"prompt": "a fox", "steps": 2})
        await result(ix)
        # And back home, history shows only that server's image.
        data = await answer_of(await server.slash_command(server.alice, server.general, "history"))
        assert "lighthouse" in text_of(data) and "a fox" not in text_of(data)
    server.assert_clean()


@pytest.mark.asyncio
async def test_relax_time_past_the_fast_quota_runs_after_the_queued_fast_jobs(server, bot_settings):
    """Alice's second draw of the day is past her fast quota of 1: it goes to the relax
    queue, and though queued before Carol's two fast jobs it runs after both (in plain
    fair order it would run between them). The worker runs in burst mode once all four
    are queued, so the order is the queue's, not the timing's."""
    from worker.runner import Worker

    patron = server.add_role("Patron")
    carol = server.add_member("carol", roles=[patron])
    async with running_client(server, make_bot(bot_settings, run_worker=False)) as bot:
        await answer_of(await server.slash_command(server.owner, server.general, "settings set",
                                                   {"key": "daily_quota", "value": "1"}))
        await answer_of(await server.slash_command(server.owner, server.general, "settings tier",
                                                   {"role": patron, "quota": "5"}))
        data = await answer_of(await server.slash_command(server.owner, server.general, "settings show"))
        assert "**relax**: on" in text_of(data)  # the default, shown with the other rules

        fast = await draw(server, server.alice, "a fast fox", seed=1)
        assert "Queued, position 1" in fast.callback["data"]["content"]
        relax = await draw(server, server.alice, "a relaxed fox", seed=2)
        assert "relax queue, position 2" in relax.callback["data"]["content"]
        carols = [await draw(server, carol, f"carol's fox {i}", seed=10 + i) for i in range(2)]
        assert all("Queued" in ix.callback["data"]["content"] for ix in carols)
        # Carol's fast jobs go ahead of it: its message moves back to the end of the queue.
        await relax.wait_original(lambda m: "relax queue, position 4" in (m.content or ""),
                                  timeout=RESULT_WAIT)

        data = await answer_of(await server.slash_command(server.alice, server.general, "quota"))
        text = text_of(data)
        assert "Fast time: **0** of your 1 image left today (resets <t:" in text
        assert "You are on relax time: your jobs run when no fast job waits." in text
        assert "Relax time today: 1 image." in text
        data = await answer_of(await server.slash_command(carol, server.general, "quota"))
        assert "**3** of your 5" in text_of(data) and "You are on fast time" in text_of(data)

        jobs = {j.params["prompt"]: j for j in await bot.queue.list_jobs(limit=10)}
        assert [p for p, j in jobs.items() if j.relax] == ["a relaxed fox"]
        assert await Worker(bot.queue, bot.images, bot_settings).run(burst=True) == 4
        shown = [await result(ix) for ix in (fast, relax, *carols)]
        done = sorted(await bot.queue.list_jobs(limit=10), key=lambda j: j.started_at)
        assert [j.params["prompt"] for j in done] == [
            "a fast fox", "carol's fox 0", "carol's fox 1", "a relaxed fox"]
        assert "made in relax time" in shown[1].embeds[0]["footer"]["text"]
        assert "relax" not in shown[0].embeds[0]["footer"]["text"]
    server.assert_clean()
