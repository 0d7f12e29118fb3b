"""Which chat message shows which job, and whether its final state was shown.

A job's result may be shown by several Discord messages: the one that answered
the command (edited as the job runs), one that `/job` or U1-U4 posted later,
a channel message posted when the interaction token had expired. Each is a row
of `discord_messages`, so a button or a reaction on any of them finds its job
after a restart. `jobs.delivered_at` records that the final state was shown,
so it is shown exactly once, even for jobs that finished while the bot was down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlite_utils

from storage.db import fetch_all, fetch_one, transaction
from storage.jobs import Job


@dataclass(frozen=True)
class MessageLink:
    message_id: str
    channel_id: str
    guild_id: str | None
    job_id: int
    image_idx: int | None  # set when the message shows one image of the job
    via: str  # 'interaction' (edited with the interaction token) or 'channel'
    created_at: float


class MessageStore:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.conn = db.conn

    def link(self, job_id: int, message_id: str, channel_id: str, *, guild_id: str | None,
             via: str, image_idx: int | None = None, primary: bool = True) -> None:
        """Record that a message shows `job_id` (primary: it is where the job reports)."""
        with transaction(self.conn):
            self.conn.execute(
                """INSERT OR REPLACE INTO discord_messages
                       (message_id, channel_id, guild_id, job_id, image_idx, via, created_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (message_id, channel_id, guild_id, job_id, image_idx, via, time.time()),
            )
            if primary:
                self.conn.execute(
                    "UPDATE jobs SET message_id = ?, channel_id = COALESCE(channel_id, ?) WHERE id = ?",
                    (message_id, channel_id, job_id),
                )

    def get(self, message_id: str) -> MessageLink | None:
        """The job a message shows, or None for a message that shows no job."""
        row = fetch_one(self.conn, "SELECT * FROM discord_messages WHERE message_id = ?",
                        (message_id,))
        return MessageLink(**row) if row else None

    def forget(self, message_id: str) -> None:
        """The message was deleted: its buttons and reactions no longer lead anywhere."""
        with transaction(self.conn):
            self.conn.execute("DELETE FROM discord_messages WHERE message_id = ?", (message_id,))

    def mark_delivered(self, job_id: int) -> None:
        with transaction(self.conn):
            self.conn.execute("UPDATE jobs SET delivered_at = ? WHERE id = ?", (time.time(), job_id))

    def undelivered(self, source: str = "discord") -> list[Job]:
        """Finished jobs whose final state has not been shown where they were asked for."""
        return [
            Job.from_row(r)
            for r in fetch_all(
                self.conn,
                "SELECT * FROM jobs WHERE source = ? AND delivered_at IS NULL "
                "AND status IN ('succeeded', 'failed', 'canceled') ORDER BY id",
                (source,),
            )
        ]
