"""A server's content policy and quota day through `artbot settings` and `artbot draw
--server`, in-process (`cli.main.main`) on a fresh data directory: disguised
blocked words refused, bad regular expressions and time zones refused when set,
the quota resetting at the server's midnight."""

import datetime as dt
import os
import sqlite3
import time
from zoneinfo import ZoneInfo

import pytest

GUILD = "123456789012345678"


@pytest.fixture
def in_tokyo():
    """The operator's terminal in Tokyo: the CLI writes times in its local zone."""
    old = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if old is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = old
    time.tzset()


def jobs(artbot) -> list[str]:
    conn = sqlite3.connect(artbot.db)
    try:
        return [prompt for (prompt,) in conn.execute(
            "SELECT json_extract(params, '$.prompt') FROM jobs ORDER BY id")]
    finally:
        conn.close()


def test_disguised_words_are_refused_and_innocent_prompts_drawn(artbot, tiny_pipeline, in_tokyo):
    for key, value in (("blocklist", "nasty, /b[l1]ood/"), ("daily_quota", "1"), ("relax", "off"),
                       ("timezone", "asia/tokyo")):
        code, out, err = artbot("settings", "set", GUILD, key, value)
        assert code == 0, err
    assert out.strip() == f"timezone = Asia/Tokyo for server {GUILD}"

    model = ["--model", str(tiny_pipeline), "--size", "64x64", "--steps", "2"]
    for prompt in ("a n\u0430sty cat",                 # Cyrillic а
                   "a N.A.S.T.Y cat", "a n a s t y cat", "a n-a-s-t-y cat", "a n_a_s_t_y cat",
                   "a NAS\u0422Y cat",                  # Cyrillic Т
                   "bl\u03bf\u03bfd moon",              # Greek ο
                   "b.l.o.o.d moon"):
        code, out, err = artbot("draw", prompt, "--server", GUILD, *model)
        assert (code, err) == (2, "error: This server does not allow that prompt."), prompt
    assert jobs(artbot) == []

    code, out, err = artbot("draw", "a glass of water in class", "--server", GUILD, "--seed", "1",
                            "--out", "ok.png", *model)
    assert code == 0, err
    assert jobs(artbot) == ["a glass of water in class"]

    # The quota of one is spent; it comes back at midnight in Tokyo, which the
    # terminal (in Tokyo too) writes as 00:00.
    code, out, err = artbot("draw", "a dynasty of cats", "--server", GUILD, *model)
    tomorrow = dt.datetime.now(ZoneInfo("Asia/Tokyo")).date() + dt.timedelta(days=1)
    assert code == 2 and "used your 1 image for today" in err
    assert f"the quota resets {tomorrow:%Y-%m-%d} 00:00 JST" in err, err
    assert len(jobs(artbot)) == 1


def test_bad_regular_expressions_and_time_zones_are_refused_when_set(artbot):
    assert artbot("settings", "set", GUILD, "blocklist", "nasty")[0] == 0
    for value, message in (
            ("+/(a+)+$/", "error: Blocklist entry /(a+)+$/ takes too long on a long prompt (nested "
                          "repeats such as (a+)+ backtrack without end); rewrite it without them."),
            ("/([a-z/", "error: Blocklist entry /([a-z/ is not a valid regular expression: "),
            ("+/.*/", "error: Blocklist entry /.*/ matches empty text"),
            ("cat, /(x+x+)+y/", "error: Blocklist entry /(x+x+)+y/ takes too long")):
        code, out, err = artbot("settings", "set", GUILD, "blocklist", value)
        assert code == 2 and err.startswith(message) and len(err.splitlines()) == 1, err
    code, out, err = artbot("settings", "set", GUILD, "timezone", "Europe/Berln")
    assert (code, err) == (2, "error: Unknown time zone 'Europe/Berln' (did you mean "
                              "Europe/Berlin?); give an IANA name such as Europe/Berlin, "
                              "America/New_York or UTC.")
    code, out, err = artbot("settings", "show", GUILD)
    assert code == 0
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert lines["blocklist"].split()[1:] == ["nasty", "(server)"]  # nothing changed
    assert lines["timezone"].split()[1:] == ["UTC", "(default)"]
    conn = sqlite3.connect(artbot.db)
    assert conn.execute("SELECT COUNT(*) FROM settings_audit").fetchone() == (1,)
    conn.close()
