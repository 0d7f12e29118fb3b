"""Members own their data, on Discord: /forget, a server's retention and /history's
export, end to end (the real bot against tests/bot/discord_server.py, drawing with the
bundled emoji GAN, which takes a moment on the CPU). Every test ends with `server.assert_clean()`."""

from __future__ import annotations

import csv
import io
import json
import sys
import time

import pytest

from storage.db import open_db
from tests.storage.test_privacy import rows as rows_of
from tests.bot.discord_server import running_client
from tests.bot.test_bot import draw, make_bot, result
from tests.bot.test_image_tools import set_rule
from worker.privacy import expire

DAY = 86_400


async def sketch(server, user, prompt, seed):
    """A finished result of `user`, drawn by the bundled emoji GAN."""
    return await result(await draw(server, user, prompt, seed=seed, model="emoji-gan"))


def rows(settings, user) -> dict[str, int]:
    """Every row that names the member, table by table (every table with a user column)."""
    db = open_db(settings.db_path)
    try:
        return rows_of(db, str(user.id))
    finally:
        db.conn.close()


def files_of(settings, user) -> set:
    db = open_db(settings.db_path)
    try:
        return {settings.image_dir / path for (path,) in db.conn.execute(
            "SELECT path FROM images WHERE job_id IN (SELECT id FROM jobs WHERE user_id = ?)",
            (str(user.id),))}
    finally:
        db.conn.close()


async def forget_question(server, user, options=None):
    ix = await server.slash_command(user, server.general, "forget", options or {})
    answer = await ix.wait_response()
    assert answer["data"]["flags"] & 64  # private
    return ix, answer["data"]["content"]


def answer_button(message, answer):
    return next(b["custom_id"] for b in message.buttons
                if b["custom_id"].startswith(f"ab:forget:{answer}:"))


@pytest.mark.asyncio
async def test_forget_asks_then_deletes_only_the_members_rows_files_and_messages(
        server, bot_settings, monkeypatch):
    async with running_client(server, make_bot(bot_settings)):
        await server.wait_for_commands("forget")
        fox = await sketch(server, server.alice, "a red fox", 3)
        owl = await sketch(server, server.alice, "an owl", 4)
        # Bob's image has the same bytes as alice's fox: one file in the store for both.
        bobs = await sketch(server, server.bob, "a red fox", 3)
        bob_rows, bob_files = rows(bot_settings, server.bob), files_of(bot_settings, server.bob)
        alice_files = files_of(bot_settings, server.alice)
        assert bob_files & alice_files and len(alice_files) == 2
        before = rows(bot_settings, server.alice)
        assert before == {"jobs": 2, "images": 2, "messages": 2, "users": 1}

        # Cancel: nothing happens.
        ix, text = await forget_question(server, server.alice)
        assert "Delete your 2 jobs and 2 images in this server" in text
        ix = await server.press_button(server.alice, ix.original, answer_button(ix.original, "no"))
        assert (await ix.wait_response())["data"]["content"] == "Nothing was deleted."
        assert rows(bot_settings, server.alice) == before

        # A question that timed out deletes nothing either.
        ix, _ = await forget_question(server, server.alice)
        # (the extension as the bot loaded it)
        monkeypatch.setattr(sys.modules["bot.privacy"], "CONFIRM_WITHIN_S", -1)
        late = await server.press_button(server.alice, ix.original,
                                         answer_button(ix.original, "yes"))
        assert "expired" in (await late.wait_response())["data"]["content"]
        assert rows(bot_settings, server.alice) == before
        monkeypatch.undo()

        # Only the member who asked can answer.
        ix, _ = await forget_question(server, server.alice)
        yes = answer_button(ix.original, "yes")
        other = await server.press_button(server.bob, ix.original, yes)
        assert "Only the member who ran /forget" in (await other.wait_response())["data"]["content"]
        assert rows(bot_settings, server.alice) == before

        done = await server.press_button(server.alice, ix.original, yes)
        message = await done.wait_original(lambda m: m.content.startswith("Deleted"), timeout=15)
        assert message.content == "Deleted 2 jobs and 2 images of yours in this server."
        assert not message.buttons
        assert rows(bot_settings, server.alice) == {"jobs": 0, "images": 0, "messages": 0,
                                                   "users": 0}
        assert rows(bot_settings, server.bob) == bob_rows
        assert all(path.exists() for path in bob_files)  # the shared fox file too
        assert [p.exists() for p in sorted(alice_files - bob_files)] == [False]
        # The bot's messages that showed her results are gone from the channel; bob's stays.
        await server.wait_for(lambda: server.message(fox.id).deleted and
                              server.message(owl.id).deleted, what="her results deleted")
        assert not server.message(bobs.id).deleted

        _, text = await forget_question(server, server.alice, {"server": "everywhere"})
        assert text == "You have no jobs in every server; there is nothing to delete."
    server.assert_clean()


@pytest.mark.asyncio
async def test_retention_deletes_old_results_and_their_buttons_say_so_and_export_sends_own(
        server, bot_settings):
    async with running_client(server, make_bot(bot_settings)) as bot:
        await server.wait_for_commands("forget", "history")
        old = await sketch(server, server.alice, "an old lighthouse", 11)
        await sketch(server, server.alice, "a new lighthouse", 12)
        await sketch(server, server.bob, "bob's secret garden", 13)
        old_files = files_of(bot_settings, server.alice)
        (old_id,) = {int(b["custom_id"].split(":")[2]) for b in old.buttons
                     if b["custom_id"].startswith("ab:reroll:")}
        set_rule(bot_settings, server, "retention", "30")
        db = open_db(bot_settings.db_path)
        db.conn.execute("UPDATE jobs SET created_at = ? WHERE id = ?", (time.time() - 40 * DAY,
                                                                        old_id))
        db.conn.close()

        erased = await expire(bot.queue, bot.images)  # what the hourly sweep does
        assert erased.job_ids == [old_id] and erased.images == 1
        assert rows(bot_settings, server.alice)["jobs"] == 1
        assert rows(bot_settings, server.bob)["jobs"] == 1
        gone = old_files - files_of(bot_settings, server.alice)
        assert len(gone) == 1 and not any(p.exists() for p in gone)

        # The old message is still on Discord; its buttons say what happened.
        ix = await server.press_button(server.bob, old, f"ab:reroll:{old_id}")
        answer = (await ix.wait_response())["data"]
        assert answer["flags"] & 64
        assert answer["content"].startswith(f"This result was deleted (job {old_id})")

        # /history export: her own jobs only, as a private file.
        ix = await server.slash_command(server.alice, server.general, "history",
                                        {"export": "json"})
        message = await ix.wait_original(lambda m: not m.loading and m.attachments)
        assert message.ephemeral and "Your 1 jobs" in message.content
        doc = json.loads(message.attachment_bytes(0))
        assert [(j["prompt"], j["seeds"]) for j in doc["jobs"]] == [("a new lighthouse", [12])]
        assert doc["jobs"][0]["model"] == "emoji-gan" and doc["jobs"][0]["images"][0]["seed"] == 12
        ix = await server.slash_command(server.alice, server.general, "history", {"export": "csv"})
        message = await ix.wait_original(lambda m: not m.loading and m.attachments)
        table = list(csv.DictReader(io.StringIO(message.attachment_bytes(0).decode("utf-8-sig"))))
        assert [(r["prompt"], r["seeds"]) for r in table] == [("a new lighthouse", "12")]
        assert "garden" not in message.attachment_bytes(0).decode("utf-8-sig")

        ix = await server.slash_command(server.alice, server.general, "history",
                                        {"user": server.bob, "export": "json"})
        answer = (await ix.wait_response())["data"]
        assert answer["flags"] & 64 and answer["content"] == "You can export only your own history."
    server.assert_clean()
