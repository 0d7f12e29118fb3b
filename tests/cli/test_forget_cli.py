"""`artbot forget` and `artbot history --export` (cli.privacy): a member's data deleted
after a confirmation (a terminal's `yes`, or --yes), a server's retention applied now,
and a member's jobs written to a file. Two command-line users draw with the bundled
emoji GAN; who runs the CLI is `local:<login name>`."""

import io
import json
import sqlite3
import time

import pytest

GUILD = "123456789012"


class Terminal(io.StringIO):
    """stdin as a terminal that answers with `typed`."""

    def isatty(self) -> bool:
        return True


def as_user(monkeypatch, name):
    monkeypatch.setattr("getpass.getuser", lambda: name)


def counts(db) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return {user: n for user, n in conn.execute(
            "SELECT user_id, COUNT(*) FROM jobs GROUP BY user_id")}
    finally:
        conn.close()


def files(db) -> set[str]:
    conn = sqlite3.connect(db)
    try:
        return {row[0] for row in conn.execute("SELECT path FROM images")}
    finally:
        conn.close()


@pytest.fixture
def two_members(artbot, monkeypatch):
    """alice made two images (one in server GUILD), bob one."""
    for name, prompt, extra in (("alice", "a heart", ()), ("alice", "a star", ("--server", GUILD)),
                                ("bob", "a moon", ())):
        as_user(monkeypatch, name)
        code, _, err = artbot("draw", prompt, "--model", "emoji-gan", "--seed", "5", *extra)
        assert code == 0, err
    return artbot


def test_forget_refuses_without_a_terminal_and_asks_on_one(two_members, monkeypatch, tmp_path):
    artbot = two_members
    before, stored = counts(artbot.db), files(artbot.db)
    assert before == {"local:alice": 2, "local:bob": 1}

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # no terminal, no --yes
    code, out, err = artbot("forget", "local:alice")
    assert code == 2 and out == ""
    assert err == ("error: This would delete 2 jobs and 2 images of local:alice in every "
                   "server; there is no terminal to ask on, so add --yes to confirm.")
    monkeypatch.setattr("sys.stdin", Terminal("no\n"))
    code, out, _ = artbot("forget", "local:alice")
    assert code == 1 and out.endswith("Type yes to go on: Nothing deleted.\n")
    assert counts(artbot.db) == before and files(artbot.db) == stored

    monkeypatch.setattr("sys.stdin", Terminal("yes\n"))
    code, out, _ = artbot("forget", "local:alice", "--server", GUILD)
    assert code == 0
    question, answer = out.split(" Type yes to go on: ")  # (a terminal echoes the yes)
    assert question == f"Delete 1 job and 1 image of local:alice in server {GUILD}? This " \
        "cannot be undone."
    assert answer == (f"Deleted 1 job and 1 image of local:alice in server {GUILD} (1 file "
                      "removed from the image store).\n")
    assert counts(artbot.db) == {"local:alice": 1, "local:bob": 1}

    code, out, _ = artbot("forget", "local:alice", "--yes")
    assert code == 0 and out.startswith("Deleted 1 job and 1 image of local:alice in every server")
    assert counts(artbot.db) == {"local:bob": 1}
    data = tmp_path / "data" / "images"
    assert {str(p.relative_to(data)) for p in data.rglob("*.png")} == files(artbot.db)
    assert len(files(artbot.db)) == 1  # bob's image, and nothing else

    code, out, _ = artbot("forget", "local:alice", "--yes")
    assert code == 0 and out == "local:alice has no jobs in every server; nothing to delete.\n"
    code, _, err = artbot("forget", "alice", "--yes")
    assert code == 2 and "is not a member" in err


def test_expired_results_go_and_the_history_exports_one_member(two_members, tmp_path):
    artbot = two_members
    assert artbot("settings", "set", GUILD, "retention", "30")[0] == 0
    conn = sqlite3.connect(artbot.db)
    conn.execute("UPDATE jobs SET created_at = ? WHERE server_id = ?",
                 (time.time() - 31 * 86_400, GUILD))
    conn.commit()
    conn.close()
    code, out, _ = artbot("forget", "--expired")
    assert code == 0
    assert out == ("Deleted 1 job and 1 image older than their server's retention (1 file "
                   "removed from the image store).\n")
    assert counts(artbot.db) == {"local:alice": 1, "local:bob": 1}
    assert artbot("forget", "--expired")[1] == "Nothing is older than its server's retention.\n"

    code, out, _ = artbot("history", "--export", "mine.json", "--user", "local:alice")
    assert code == 0 and out == "Wrote 1 job of local:alice to mine.json (JSON).\n"
    doc = json.loads((tmp_path / "mine.json").read_text())
    assert [(j["prompt"], j["seeds"]) for j in doc["jobs"]] == [("a heart", [5])]
    code, out, _ = artbot("history", "--export", "all.csv")
    assert code == 0 and "2 jobs of every member" in out
    assert "a moon" in (tmp_path / "all.csv").read_text(encoding="utf-8-sig")
