"""What users have used: the counts behind the queue limit, the cooldown, the
daily quota and /stats, read from the jobs and images tables.

Nothing is counted separately: a job's images count from the moment it is
queued, and a job that fails or is canceled simply stops counting, which is
how the quota refunds it. A job the member deleted (`/forget`, a server's
retention) leaves a row in `usage_kept` for two days, with only its time and
image count, so that deleting cannot reset a quota or a cooldown. Works on the caller's connection, so the gate can
count inside the transaction that inserts a job.
"""

from __future__ import annotations

from typing import Any

import sqlite_utils

from artbot.errors import QueueFull


class Usage:
    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.conn = db.conn

    def pending_count(self, user_id: str) -> int:
        """The user's jobs waiting or running, in every server."""
        (n,) = self.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')",
            (user_id,),
        ).fetchone()
        return n

    def check_pending(self, user_id: str, max_queued: int) -> None:
        """Raise QueueFull if the user already has `max_queued` jobs waiting or running."""
        pending = self.pending_count(user_id)
        if pending >= max_queued:
            raise QueueFull(pending, max_queued)

    def images_since(self, server_id: str | None, user_id: str, since: float, *,
                     relax: bool = False) -> int:
        """Images the user's fast jobs (with `relax`: relax jobs) in this server asked
        for since `since`.

        Queued, running and succeeded jobs count; failed and canceled ones do
        not, which is how a job that fails or is canceled gives its images back
        to the quota.
        """
        (n,) = self.conn.execute(
            "SELECT COALESCE(SUM(json_array_length(seeds)), 0) FROM jobs "
            "WHERE server_id IS ? AND user_id = ? AND created_at >= ? "
            "AND status IN ('queued', 'running', 'succeeded') AND relax = ?",
            (server_id, user_id, since, int(relax)),
        ).fetchone()
        (kept,) = self.conn.execute(
            "SELECT COALESCE(SUM(images), 0) FROM usage_kept "
            "WHERE server_id IS ? AND user_id = ? AND created_at >= ? AND relax = ?",
            (server_id, user_id, since, int(relax)),
        ).fetchone()
        return int(n) + int(kept)

    def last_job_at(self, server_id: str | None, user_id: str) -> float | None:
        """When the user last queued a job in this server (for the cooldown)."""
        (at,) = self.conn.execute(
            "SELECT MAX(at) FROM (SELECT MAX(created_at) AS at FROM jobs "
            "WHERE server_id IS ? AND user_id = ? UNION ALL SELECT MAX(created_at) "
            "FROM usage_kept WHERE server_id IS ? AND user_id = ?)",
            (server_id, user_id, server_id, user_id),
        ).fetchone()
        return at

    def server_stats(self, server_id: str, *, day_start: float, week_start: float,
                     top: int = 5) -> dict[str, Any]:
        """Numbers for /stats: images made today and this week, the top users this
        week, the queue now, and mean wait and generation time per model this week."""
        def images(since: float) -> int:
            (n,) = self.conn.execute(
                "SELECT COUNT(*) FROM images i JOIN jobs j ON j.id = i.job_id "
                "WHERE j.server_id = ? AND j.created_at >= ?", (server_id, since)).fetchone()
            return n

        top_users = self.conn.execute(
            "SELECT j.user_id, COUNT(i.id) AS n FROM jobs j JOIN images i ON i.job_id = j.id "
            "WHERE j.server_id = ? AND j.created_at >= ? GROUP BY j.user_id "
            "ORDER BY n DESC, j.user_id LIMIT ?", (server_id, week_start, top)).fetchall()
        queued, running = self.conn.execute(
            "SELECT COALESCE(SUM(status = 'queued'), 0), COALESCE(SUM(status = 'running'), 0) "
            "FROM jobs WHERE server_id = ? AND status IN ('queued', 'running')",
            (server_id,)).fetchone()
        (queued_all,) = self.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued'").fetchone()
        models = self.conn.execute(
            "SELECT model, COUNT(*), AVG(started_at - created_at), AVG(run_seconds) FROM jobs "
            "WHERE server_id = ? AND created_at >= ? AND status = 'succeeded' "
            "GROUP BY model ORDER BY COUNT(*) DESC", (server_id, week_start)).fetchall()
        return {
            "images_today": images(day_start),
            "images_week": images(week_start),
            "top_users": [(user, n) for user, n in top_users],
            "queued": queued, "running": running, "queued_all_servers": queued_all,
            "models": [{"model": m, "jobs": n, "mean_wait_s": wait, "mean_run_s": run}
                       for m, n, wait, run in models],
        }

    def status_counts(self) -> dict[str, int]:
        """Jobs by status, every server (the queue depth and outcomes /metrics reports)."""
        rows = self.conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {status: n for status, n in rows}

    def recent_run_seconds(self, *, since: float, limit: int = 50) -> list[float]:
        """Generation time of the last `limit` jobs that succeeded since `since`, newest
        first: the fleet's recent speed, which /queue's wait estimate is made from."""
        rows = self.conn.execute(
            "SELECT run_seconds FROM jobs WHERE status = 'succeeded' AND finished_at >= ? "
            "AND run_seconds IS NOT NULL ORDER BY finished_at DESC LIMIT ?",
            (since, limit)).fetchall()
        return [seconds for (seconds,) in rows]
