"""`artbot settings` and `--server` as an operator runs them: subprocesses on a
fresh data dir, with the bundled emoji-diffusion model (no network, CPU)."""

import sqlite3

from tests.cli.test_cli import env, run, statuses  # noqa: F401

GUILD = "123456789012345678"
ART = "234567890123456789"


def test_operator_sets_rules_that_the_cli_obeys_when_acting_for_the_server(env):  # noqa: F811
    data, work = env
    ok = run(["settings", "set", GUILD, "daily_quota", "1"], data, work)
    assert ok.returncode == 0 and ok.stdout.strip() == f"daily_quota = 1 for server {GUILD}"
    run(["settings", "set", GUILD, "blocklist", "+nasty, /gr[o0]ss/"], data, work)
    run(["settings", "set", GUILD, "max_steps", "12", "--channel", ART], data, work)
    run(["settings", "set", GUILD, "relax", "off"], data, work)  # past the quota: refused

    # Bad values: one line, exit 2, nothing changed.
    for args, message in ((["max_steps", "9999"], "between 1 and 150 (the operator's limit)"),
                          (["daily_quota", "lots"], "whole number"),
                          (["colour", "red"], "Unknown setting 'colour'"),
                          (["blocklist", "/([/"], "not a valid regular expression")):
        bad = run(["settings", "set", GUILD, *args], data, work)
        assert bad.returncode == 2 and message in bad.stderr and len(bad.stderr.splitlines()) == 1
    bad = run(["settings", "set", GUILD, "daily_quota", "3", "--channel", ART], data, work)
    assert bad.returncode == 2 and "whole server" in bad.stderr

    shown = run(["settings", "show", GUILD], data, work).stdout
    assert "daily_quota       1" in shown and "(server)" in shown
    assert f"channel {ART}: max_steps=12" in shown
    assert "blocklist: (default) -> nasty, /gr[o0]ss/" in shown
    audit = sqlite3.connect(data / "artbot.db").execute(
        "SELECT key, channel_id, old_value, new_value, via FROM settings_audit ORDER BY id").fetchall()
    assert audit == [("daily_quota", None, None, "1", "cli"),
                     ("blocklist", None, None, '["nasty", "/gr[o0]ss/"]', "cli"),
                     ("max_steps", ART, None, "12", "cli"), ("relax", None, None, "false", "cli")]

    # The CLI acting for the server: the blocklist, then the quota.
    blocked = run(["draw", "ＧＲ0ＳＳ", "--server", GUILD], data, work)
    assert blocked.returncode == 2 and "does not allow that prompt" in blocked.stderr
    first = run(["draw", "a red heart", "--server", GUILD, "--seed", "3", "--out", "h.png"], data, work)
    assert first.returncode == 0, first.stderr
    second = run(["draw", "a red heart", "--server", GUILD], data, work)
    assert second.returncode == 2 and "used your 1 image for today; the quota resets" in second.stderr
    assert statuses(data) == ["succeeded"]
    # Without --server the operator's own draws are not the server's business.
    assert run(["draw", "a red heart", "--out", "h2.png"], data, work).returncode == 0


def test_settings_help_lists_every_key_the_rules_know(env):  # noqa: F811
    from worker.server_settings import KEYS

    data, work = env
    shown = " ".join(run(["settings", "--help"], data, work).stdout.split())  # argparse wraps lines
    missing = [key for key in KEYS if key not in shown]
    assert not missing, shown
