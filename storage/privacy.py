"""Members' data: deleting a member's jobs (`forget`), deleting results past a
server's retention, and reading a member's records (for an export).

    store = PrivacyStore(db, ImageStore(root), inputs=input_images)
    store.member_counts("1234", "5678")   # (jobs, images) of a member in one server
    store.erase_member("1234", None)      # every server: an `Erased` saying what went
    store.erase_expired(now)              # each server's `retention` setting

What deleting a job removes, in one transaction: the job's row, its image rows,
the rows of the Discord messages that show it, and its owner's `users` row once
they have no job left. Jobs made from a deleted job (a variation, an upscale)
stay; they only lose their `parent_id`. So that deleting cannot hand a member
their quota or their cooldown back, a deleted job that still counts (queued in
the last `KEEP_USAGE_S` seconds) leaves a row in `usage_kept`: its server,
member, time and image count, nothing else; the row goes after two days.

Then the files. The image store is content-addressed (`storage.images`): two
jobs that made the same bytes share one file, and a job's inputs (an upload to
vary, a style image, a blend's images) are files that another job may read as
well. A file is removed only when, after the rows are gone, no image row, no
job's inputs (`inputs(params)`, as `artbot doctor` counts them) and no style
preset references it. That check and the removal run while holding the write
lock, so no job can complete with a reference to the file in between; a file
that cannot be removed (a read-only disk) is counted in `files_left` and stays
an orphan for `artbot doctor --repair`.

Job ids are never reused (AUTOINCREMENT), so an id at or below the highest one
ever given that has no row was deleted (`was_deleted`): buttons on an old
message can say so rather than that there is no such job.

Callers stop a member's queued and running jobs first (`worker.privacy`): a
worker must not store the images of a job whose row is gone.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import sqlite_utils

from storage.db import begin, fetch_all, transaction
from storage.images import ImageStore
from storage.jobs import CHUNK, ImageRecord, Job, referenced_images

DAY = 86_400.0
# How long what the quota and the cooldown need of a deleted job is kept: longer than
# any quota day (a day in the server's time zone is at most 25 hours).
KEEP_USAGE_S = 2 * DAY
# Statuses whose jobs are done with: retention deletes these only, never a job in the queue.
FINISHED = ("succeeded", "failed", "canceled")


@dataclass
class Erased:
    """What a deletion removed."""

    jobs: int = 0
    images: int = 0  # result images of the deleted jobs (rows)
    files: int = 0  # files removed from the image store
    files_left: int = 0  # unreferenced files that could not be removed (see `artbot doctor`)
    # (channel id, message id) of every Discord message that showed a deleted job.
    messages: list[tuple[str, str]] = field(default_factory=list)
    job_ids: list[int] = field(default_factory=list)

    def __add__(self, other: "Erased") -> "Erased":
        return Erased(self.jobs + other.jobs, self.images + other.images,
                      self.files + other.files, self.files_left + other.files_left,
                      self.messages + other.messages, self.job_ids + other.job_ids)


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


def _marks(ids: Sequence[Any]) -> str:
    return ",".join("?" * len(ids))


class PrivacyStore:
    def __init__(self, db: sqlite_utils.Database, images: ImageStore | None = None, *,
                 inputs: Callable[[dict[str, Any]], Iterable[str]] | None = None):
        """`images` and `inputs(params)` (the sha256 of every stored image a job reads)
        are needed to delete; reading needs neither."""
        self.db = db
        self.conn = db.conn
        self.images = images
        self.inputs = inputs

    # -- reading ----------------------------------------------------------------

    @staticmethod
    def _scope(user_id: str, server_id: str | None) -> tuple[str, list[Any]]:
        """WHERE clause for a member's jobs in one server, or every one (None)."""
        if server_id is None:
            return "user_id = ?", [user_id]
        return "user_id = ? AND server_id = ?", [user_id, server_id]

    def member_counts(self, user_id: str, server_id: str | None) -> tuple[int, int]:
        """(jobs, result images) of a member in one server, or in every one (None)."""
        where, params = self._scope(user_id, server_id)
        (jobs,) = self.conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {where}", params).fetchone()
        (images,) = self.conn.execute(
            f"SELECT COUNT(*) FROM images WHERE job_id IN (SELECT id FROM jobs WHERE {where})",
            params).fetchone()
        return jobs, images

    def was_deleted(self, job_id: int) -> bool:
        """Whether job `job_id` existed once and was deleted (ids are never reused)."""
        if self.conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone():
            return False
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone()
        return row is not None and 1 <= job_id <= row[0]

    def records(self, user_id: str | None) -> list[tuple[Job, list[ImageRecord]]]:
        """Every job of a member (None: of everyone), oldest first, with its images."""
        where, params = ("WHERE user_id = ?", [user_id]) if user_id is not None else ("", [])
        jobs = [Job.from_row(r) for r in fetch_all(
            self.conn, f"SELECT * FROM jobs {where} ORDER BY id", params)]
        images: dict[int, list[ImageRecord]] = {}
        for row in fetch_all(
                self.conn,
                "SELECT job_id, idx, seed, path, sha256, width, height, lost_at IS NOT NULL AS lost "
                f"FROM images WHERE job_id IN (SELECT id FROM jobs {where}) ORDER BY job_id, idx",
                params):
            images.setdefault(row["job_id"], []).append(ImageRecord(**row))
        return [(job, images.get(job.id, [])) for job in jobs]

    # -- deleting ---------------------------------------------------------------

    def erase_member(self, user_id: str, server_id: str | None, *,
                     now: float | None = None) -> Erased:
        """Delete every job of a member in one server (or every one: None), with its
        images, message links and the files nothing else references."""
        where, params = self._scope(user_id, server_id)
        ids = [r[0] for r in self.conn.execute(f"SELECT id FROM jobs WHERE {where}", params)]
        return self.erase_jobs(ids, now=now)

    def retention(self) -> dict[str, int]:
        """server id -> days its results are kept, for the servers that set `retention`."""
        out = {}
        for server_id, value in self.conn.execute(
                "SELECT server_id, value FROM server_settings WHERE key = 'retention'"):
            try:
                days = int(json.loads(value))
            except (TypeError, ValueError):
                continue
            if days > 0:
                out[server_id] = days
        return out

    def erase_expired(self, now: float | None = None) -> Erased:
        """Delete the finished jobs older than their server's `retention` (in days), with
        their images; forget the kept usage that no quota day can still need."""
        now = time.time() if now is None else now
        ids: list[int] = []
        for server_id, days in self.retention().items():
            ids += [r[0] for r in self.conn.execute(
                f"SELECT id FROM jobs WHERE server_id = ? AND created_at < ? "
                f"AND status IN ({_marks(FINISHED)}) ORDER BY id",
                (server_id, now - days * DAY, *FINISHED))]
        erased = self.erase_jobs(ids, now=now)
        with transaction(self.conn):
            self.conn.execute("DELETE FROM usage_kept WHERE created_at < ?", (now - KEEP_USAGE_S,))
        return erased

    def erase_jobs(self, ids: Sequence[int], *, now: float | None = None) -> Erased:
        """Delete these jobs and everything that is theirs alone (see the module's text)."""
        now = time.time() if now is None else now
        assert self.images is not None and self.inputs is not None, "deleting needs both"
        erased = Erased()
        if not ids:
            return erased
        candidates: dict[str, str] = {}  # sha256 -> path in the store, of files to check
        with transaction(self.conn):
            users: set[str] = set()
            for chunk in _chunks(list(ids)):
                marks = _marks(chunk)
                for job_id, user_id, params in self.conn.execute(
                        f"SELECT id, user_id, params FROM jobs WHERE id IN ({marks})", chunk):
                    users.add(user_id)
                    erased.job_ids.append(job_id)
                    for sha in self.inputs(json.loads(params or "{}")):
                        candidates.setdefault(sha, str(self.images.path_for(sha)
                                                       .relative_to(self.images.root)))
                for sha, path in self.conn.execute(
                        f"SELECT sha256, path FROM images WHERE job_id IN ({marks})", chunk):
                    candidates[sha] = path
                    erased.images += 1
                erased.messages += [(c, m) for m, c in self.conn.execute(
                    f"SELECT message_id, channel_id FROM discord_messages WHERE job_id IN ({marks})",
                    chunk)]
                # What the quota and the cooldown still count: time and image count only.
                self.conn.execute(
                    f"""INSERT INTO usage_kept (server_id, user_id, created_at, images, relax)
                        SELECT server_id, user_id, created_at,
                               CASE WHEN status IN ('queued', 'running', 'succeeded')
                                    THEN json_array_length(seeds) ELSE 0 END, relax
                        FROM jobs WHERE id IN ({marks}) AND created_at >= ?""",
                    (*chunk, now - KEEP_USAGE_S))
                self.conn.execute(f"UPDATE jobs SET parent_id = NULL WHERE parent_id IN ({marks})",
                                  chunk)
                self.conn.execute(f"DELETE FROM discord_messages WHERE job_id IN ({marks})", chunk)
                self.conn.execute(f"DELETE FROM images WHERE job_id IN ({marks})", chunk)
                erased.jobs += self.conn.execute(f"DELETE FROM jobs WHERE id IN ({marks})",
                                                 chunk).rowcount
            gone = sorted(users)
            self.conn.execute(
                f"DELETE FROM users WHERE id IN ({_marks(gone)}) "
                "AND NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.user_id = users.id)", gone)
        erased.files, erased.files_left = self._remove_files(candidates)
        return erased

    def _remove_files(self, candidates: dict[str, str]) -> tuple[int, int]:
        """Remove the files of `candidates` (sha256 -> path) that nothing references any
        more, holding the write lock so that no job can take one up meanwhile.
        Returns (removed, could not be removed)."""
        if not candidates:
            return 0, 0
        begin(self.conn)
        try:
            used = referenced_images(self.conn, self.inputs, among=set(candidates))
            removed = left = 0
            for sha, path in candidates.items():
                if sha in used:
                    continue
                try:
                    (self.images.root / path).unlink()
                    removed += 1
                except FileNotFoundError:
                    pass  # already gone (lost, or removed by another process)
                except OSError:
                    left += 1
        finally:
            self.conn.execute("COMMIT")  # nothing was written: this only ends the lock
        return removed, left
