"""The bot's error sink (bot/errors.py): refusals from the gate in the member's
language, with channels as mentions and times as Discord timestamps; the same
refusal reads as plain text on the CLI."""

import re

import pytest

from artbot.errors import Refusal
from bot.errors import describe, refuse, user_text
from storage.db import open_db
from storage.jobs import JobStore
from tests.worker.test_policy import ART, GENERAL, alice, set_, submit


@pytest.fixture
def store(settings):
    return JobStore(open_db(settings.db_path))


def test_a_channel_refusal_names_the_channels_as_mentions(store, settings):
    set_(store, settings, "channels", f"<#{ART}>")
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice(channel_id=GENERAL))
    assert "<#" not in info.value.message and ART in info.value.message  # the CLI's text
    assert user_text(info.value, "en-US") == f"I only draw in <#{ART}> on this server."
    assert user_text(info.value, "zh-CN") == f"在本服务器我只在 <#{ART}> 画图。"


def test_a_quota_refusal_says_when_as_a_discord_timestamp(store, settings):
    set_(store, settings, "daily_quota", "1")
    set_(store, settings, "relax", "off")  # else the second job goes to relax time
    submit(store, settings, alice())
    with pytest.raises(Refusal) as info:
        submit(store, settings, alice())
    stamp = f"<t:{int(info.value.retry_at)}:R>"
    assert user_text(info.value, "en-US").endswith(f"the quota resets {stamp}.")
    assert stamp not in info.value.message  # the CLI shows a local time instead


def test_the_bots_own_refusals_and_bugs(caplog):
    assert user_text(refuse("job_not_found", job=42), "en-US") == "There is no job 42 in this server."
    assert user_text(refuse("job_not_found", job=42), "zh-CN") == "本服务器没有编号为 42 的作品。"
    # A bug: the user gets a reference, never the details; the log has both, once.
    text = describe(ZeroDivisionError("secret detail"), "en-US", where="a test")
    assert "secret detail" not in text
    ref = re.search(r"\(error ([0-9a-f]{8})\)", text).group(1)
    logged = [r for r in caplog.records if "a test" in r.getMessage()]
    assert len(logged) == 1 and ref in logged[0].getMessage()
    assert "secret detail" in str(logged[0].exc_info[1])


def test_a_storage_fault_tells_the_member_the_short_reason_and_the_log_the_whole(tmp_path, caplog):
    from storage.faults import disk_full

    fault = disk_full(tmp_path / "data" / "artbot.db")
    with caplog.at_level("ERROR", logger="bot.errors"):
        text = describe(fault, "en-US", where="interaction 1 (draw)")
    assert text.startswith("The bot cannot save anything right now (the disk is full).")
    assert str(tmp_path) not in text  # no paths for members
    assert str(tmp_path) in caplog.text and "Free some space" in caplog.text
    assert "Traceback" not in caplog.text
    assert describe(fault, "zh-CN", where="x").startswith("机器人现在无法保存")
