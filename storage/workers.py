"""The worker processes that serve this database, so a front door can tell
whether someone will run the job it queues.

A worker adds its row when it starts, renews `seen_at` while it runs (idle or
busy) and removes the row when it stops. A worker that died leaves its row
behind; it counts as gone once it has not been seen for a while, or at once
when it ran on this host and its process no longer exists.
"""

from __future__ import annotations

import json
import os
import socket
import time

import sqlite_utils

from storage.db import transaction


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_gone(worker_id: str | None) -> bool:
    """True when `worker_id` (host:pid) ran on this host and its process is gone."""
    host, _, pid = (worker_id or "").rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


class WorkerRegistry:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.conn = db.conn

    def seen(self, worker_id: str, now: float | None = None,
             models: list[str] | None = None) -> None:
        """The worker is alive (its first call records when it started), holding `models`."""
        now = time.time() if now is None else now
        held = json.dumps(sorted(models or []))
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO workers (id, started_at, seen_at, models) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET seen_at = excluded.seen_at, models = excluded.models",
                (worker_id, now, now, held),
            )

    def gone(self, worker_id: str) -> None:
        with transaction(self.conn):
            self.conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def live(self, *, within_s: float, now: float | None = None) -> list[str]:
        """Workers seen in the last `within_s` seconds whose process still exists."""
        now = time.time() if now is None else now
        rows = self.conn.execute(
            "SELECT id FROM workers WHERE seen_at >= ? ORDER BY started_at", (now - within_s,)
        ).fetchall()
        return [worker_id for (worker_id,) in rows if not worker_gone(worker_id)]

    def loaded_models(self, *, within_s: float, now: float | None = None) -> dict[str, list[str]]:
        """model reference -> the live workers that have it in memory."""
        now = time.time() if now is None else now
        rows = self.conn.execute(
            "SELECT id, models FROM workers WHERE seen_at >= ? ORDER BY started_at",
            (now - within_s,)).fetchall()
        held: dict[str, list[str]] = {}
        for worker_id, models in rows:
            if worker_gone(worker_id):
                continue
            for model in json.loads(models or "[]"):
                held.setdefault(model, []).append(worker_id)
        return held
