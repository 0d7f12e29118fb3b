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
from typing import Any

import sqlite_utils

from storage.db import transaction


# A worker renews its row every couple of seconds (worker.runner.SEEN_EVERY_S); one not
# seen for this long is not serving now.
LIVE_WITHIN_S = 10.0


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
             models: list[str] | None = None, info: dict[str, Any] | None = None) -> None:
        """The worker is alive (its first call records when it started), holding `models`;
        `info` is what it says of itself (device, memory, jobs done, current jobs)."""
        now = time.time() if now is None else now
        held = json.dumps(sorted(models or []))
        with transaction(self.conn):
            self.conn.execute(
                "INSERT INTO workers (id, started_at, seen_at, models, info) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET seen_at = excluded.seen_at, "
                "models = excluded.models, info = excluded.info",
                (worker_id, now, now, held, json.dumps(info or {}, sort_keys=True)),
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

    def listing(self, *, within_s: float, now: float | None = None) -> list[dict[str, Any]]:
        """Every worker seen in the last `within_s` seconds, oldest first: its id, when it
        started and was last seen, the models it holds, what it says of itself, and
        whether it is alive now (seen within `LIVE_WITHIN_S` and its process exists)."""
        now = time.time() if now is None else now
        rows = self.conn.execute(
            "SELECT id, started_at, seen_at, models, info FROM workers WHERE seen_at >= ? "
            "ORDER BY started_at", (now - within_s,)).fetchall()
        return [{"id": worker_id, "started_at": started, "seen_at": seen,
                 "models": json.loads(models or "[]"), "info": json.loads(info or "{}"),
                 "alive": now - seen <= LIVE_WITHIN_S and not worker_gone(worker_id)}
                for worker_id, started, seen, models, info in rows]
