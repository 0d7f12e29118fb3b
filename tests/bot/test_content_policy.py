"""A server's content policy and quota day on Discord, end to end: the real
discord.py client against the Discord-protocol server. Bad regular expressions
and time zones are refused by /settings when they are set; disguised blocked
words are refused by /draw; /quota and /settings show the server's time zone."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest

from storage.db import open_db
from storage.settings import SettingsStore
from tests.bot.discord_server import running_client
from tests.bot.test_admin import EPHEMERAL, answer_of, job_count, text_of
from tests.bot.test_bot import make_bot


async def set_rule(server, key: str, value: str) -> dict:
    return await answer_of(await server.slash_command(server.owner, server.general, "settings set",
                                                      {"key": key, "value": value}))


@pytest.mark.asyncio
async def test_settings_refuse_bad_rules_and_draw_refuses_disguised_words(server, bot_settings):
    guild = str(server.guild.id)
    async with running_client(server, make_bot(bot_settings)):
        # Bad regular expressions: refused privately, naming the entry; nothing stored.
        for value, message in (
                ("/(a+)+$/", "Blocklist entry /(a+)+$/ takes too long on a long prompt"),
                ("+nasty, /([a-z/", "Blocklist entry /([a-z/ is not a valid regular expression"),
                ("/x?/", "Blocklist entry /x?/ matches empty text")):
            data = await set_rule(server, "blocklist", value)
            assert data["flags"] & EPHEMERAL and message in data["content"], data["content"]
        assert SettingsStore(open_db(bot_settings.db_path)).values(guild) == {}

        data = await set_rule(server, "timezone", "Europe/Berln")
        assert data["flags"] & EPHEMERAL
        assert "Unknown time zone 'Europe/Berln' (did you mean Europe/Berlin?)" in data["content"]
        assert SettingsStore(open_db(bot_settings.db_path)).values(guild) == {}

        answers = {key: (await set_rule(server, key, value))["content"] for key, value in (
            ("blocklist", "nasty, /b[l1]ood/"), ("timezone", "europe/berlin"), ("daily_quota", "3"))}
        assert answers["timezone"] == "timezone: default → Europe/Berlin"
        assert answers["blocklist"] == "blocklist: default → nasty, /b[l1]ood/"
        shown = text_of(await answer_of(await server.slash_command(
            server.owner, server.general, "settings show")))
        assert "**timezone**: Europe/Berlin · *server*" in shown

        # Disguised blocked words: refused privately, nothing queued.
        for prompt in ("a n\u0430sty cat", "a n.a.s.t.y cat", "a n a s t y cat", "a N-A-S-T-Y cat",
                       "bl\u03bfod moon", "b_l_o_o_d moon", "a \uff4e\uff41\uff53\uff54\uff59 cat"):
            ix = await server.slash_command(server.alice, server.general, "draw", {"prompt": prompt})
            data = await answer_of(ix)
            assert data["flags"] & EPHEMERAL
            assert "does not allow that prompt" in data["content"], prompt
        assert job_count(bot_settings) == 0

        # /quota says when the day starts, and resets at midnight in Berlin.
        data = await answer_of(await server.slash_command(server.alice, server.general, "quota"))
        quota = text_of(data)
        assert "Days here start at midnight Europe/Berlin." in quota
        (stamp,) = re.findall(r"resets <t:(\d+):R>", quota)
        midnight = dt.datetime.fromtimestamp(int(stamp), ZoneInfo("Europe/Berlin"))
        assert (midnight.hour, midnight.minute) == (0, 0)
        assert 0 < int(stamp) - dt.datetime.now().timestamp() <= 25 * 3600
    server.assert_clean()
