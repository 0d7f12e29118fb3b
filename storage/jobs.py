"""Jobs and their images in SQLite: the truth about every request.

The queue is the `jobs` table. Every state change is one short `BEGIN
IMMEDIATE` transaction, so several processes (the bot, a CLI run, later remote
workers) can share one database safely:

- `submit` inserts a queued job, refusing it if the user already has too many;
- `claim` takes the next job in fair order and marks it running under a fresh
  claim token and a lease;
- `heartbeat` renews the lease and records progress;
- `complete` stores the images and marks the job succeeded, but only if the
  caller still holds the claim: a worker that was presumed dead and whose job
  was handed to another can never finish it a second time;
- `requeue_abandoned` puts back jobs whose worker died (its process is gone,
  or its lease ran out), failing them after too many attempts.

Fairness: each user has a `last_served` turn number. `claim` takes the oldest
queued job of the user who was served least recently, so a user with fifty
queued jobs delays a newcomer by at most the one job already running.

Fast and relax time: a job is queued in relax time (`relax` 1) when its member
was past their daily fast images (`worker.gate`). `claim` takes fast jobs first,
in the fair order above, and a relax job only when no fast job it could run is
queued; among relax jobs the same fair order holds. A batch is all fast or all
relax.
"""

from __future__ import annotations

import enum
import heapq
import json
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import sqlite_utils

from storage.db import fetch_all, fetch_one, transaction
from storage.images import StoredImage
from storage.usage import Usage
from storage.workers import worker_gone


class JobStatus(str, enum.Enum):
    QUEUED = "queued"  # waiting for a worker; also a job put back after its worker died
    RUNNING = "running"  # claimed by a worker, which holds its claim token and lease
    SUCCEEDED = "succeeded"  # images stored; final
    FAILED = "failed"  # `error` says why in words a user can read; final
    CANCELED = "canceled"  # stopped at the user's request; final

    @property
    def finished(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


@dataclass
class ImageRecord:
    job_id: int
    idx: int
    seed: int
    path: str
    sha256: str
    width: int
    height: int
    lost: bool = False  # its file was found gone or changed (`artbot doctor --repair`)


@dataclass
class Job:
    id: int
    user_id: str
    server_id: str | None
    channel_id: str | None
    source: str
    kind: str
    family: str  # the generator family: the `generator` column
    model: str
    model_revision: str | None
    params: dict[str, Any]
    seeds: list[int]
    batch_key: str
    status: JobStatus
    attempts: int
    claim_token: str | None
    worker_id: str | None
    lease_until: float | None
    cancel_requested: bool
    progress_step: int | None
    progress_total: int | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    run_seconds: float | None
    parent_id: int | None
    message_id: str | None
    interaction_token: str | None = field(default=None, repr=False)
    interaction_at: float | None = None
    delivered_at: float | None = None
    locale: str | None = None
    relax: bool = False  # queued in relax time: runs only when no fast job waits

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "Job":
        row = dict(row)
        row["family"] = row.pop("generator")
        row["params"] = json.loads(row["params"])
        row["seeds"] = json.loads(row["seeds"])
        row["status"] = JobStatus(row["status"])
        row["cancel_requested"] = bool(row["cancel_requested"])
        row["relax"] = bool(row.get("relax", 0))
        return cls(**row)


# SQLite's limit on `?` in one statement is 999 in old builds: lists go in chunks below it.
CHUNK = 500


def referenced_images(conn, inputs: Callable[[dict[str, Any]], Iterable[str]],
                      among: set[str] | None = None) -> set[str]:
    """The sha256 of the stored files something still references: an image row, a job's
    inputs (`inputs(params)`: its init or style image, a blend's images) or a style
    preset. With `among`, only which of those are: what a deletion may remove
    (`storage.privacy`); without, all of them: what is not an orphan (`storage.doctor`)."""
    has_presets = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'style_presets'").fetchone()
    queries = ["SELECT DISTINCT sha256 FROM images"]
    if has_presets:
        queries.append("SELECT DISTINCT image_sha FROM style_presets")
    used: set[str] = set()
    if among is None:
        for sql in queries:
            used.update(row[0] for row in conn.execute(sql))
    else:
        listed = sorted(among)
        for start in range(0, len(listed), CHUNK):
            chunk = listed[start:start + CHUNK]
            where = f" WHERE {{}} IN ({','.join('?' * len(chunk))})"
            for sql, column in zip(queries, ("sha256", "image_sha")):
                used.update(row[0] for row in conn.execute(sql + where.format(column), chunk))
        if used >= among:
            return used
    # Inputs are inside each job's JSON parameters.
    for (params,) in conn.execute("SELECT params FROM jobs"):
        try:
            shas = inputs(json.loads(params or "{}"))
        except ValueError:
            continue
        used.update(shas if among is None else among.intersection(shas))
    return used


def this_worker_id() -> str:
    """host:pid, so a restarted process can tell its dead predecessor's jobs."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobStore:
    """The queue's transitions and reads, on one connection (synchronous)."""

    def __init__(self, db: sqlite_utils.Database):
        self.db = db
        self.conn = db.conn

    # -- transactions -------------------------------------------------------

    def _write(self, fn: Callable[[], Any]) -> Any:
        with transaction(self.conn):
            return fn()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
        return fetch_one(self.conn, sql, params)

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return fetch_all(self.conn, sql, params)

    # -- users and servers --------------------------------------------------

    def _ensure_user(self, user_id: str, name: str | None) -> None:
        self.conn.execute(
            "INSERT INTO users (id, name, created_at) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET name = COALESCE(excluded.name, users.name)",
            (user_id, name, time.time()),
        )

    def _ensure_server(self, server_id: str | None) -> None:
        if server_id is not None:
            self.conn.execute(
                "INSERT OR IGNORE INTO servers (id, created_at) VALUES (?, ?)",
                (server_id, time.time()),
            )

    # -- the queue ----------------------------------------------------------

    def submit(
        self,
        *,
        user_id: str,
        kind: str,
        family: str,
        model: str,
        params: dict[str, Any],
        seeds: list[int],
        batch_key: str,
        source: str,
        max_queued: int | None = None,
        user_name: str | None = None,
        server_id: str | None = None,
        channel_id: str | None = None,
        parent_id: int | None = None,
        interaction_token: str | None = None,
        interaction_at: float | None = None,
        locale: str | None = None,
        relax: bool = False,
        admit: Callable[[sqlite_utils.Database], dict[str, Any] | None] | None = None,
    ) -> Job:
        """Queue a job. Raises QueueFull if the user has `max_queued` unfinished jobs.

        `relax` queues it in relax time (it runs only when no fast job waits); so
        does `admit` returning `{"relax": True}`. A relax job's params say so
        (`params["relax"]` is True), so that its result can tell; a fast job's
        params never carry the key.

        `admit(db)`, if given, runs inside the same transaction just before
        the job is inserted: it checks the server's rules against what is in the
        database right now (quota used, last job, queued jobs) and raises a
        UserError to refuse, or returns parameters to add to the job. Nothing
        can slip in between its check and the insert, so concurrent requests
        can never overspend a quota.
        """

        def txn() -> int:
            self._ensure_user(user_id, user_name)
            self._ensure_server(server_id)
            extra = admit(self.db) if admit is not None else None
            if max_queued is not None:
                Usage(self.db).check_pending(user_id, max_queued)
            job_params = {**params, **extra} if extra else dict(params)
            # Only the caller or the gate decides: a "relax" copied in params counts for nothing.
            in_relax = relax or bool(extra and extra.get("relax"))
            job_params.pop("relax", None)
            if in_relax:
                job_params["relax"] = True
            cur = self.conn.execute(
                """INSERT INTO jobs (user_id, server_id, channel_id, source, kind, generator,
                       model, params, seeds, batch_key, status, created_at, parent_id,
                       interaction_token, interaction_at, locale, relax)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?)""",
                (
                    user_id, server_id, channel_id, source, kind, family, model,
                    json.dumps(job_params, sort_keys=True), json.dumps(seeds), batch_key,
                    time.time(), parent_id, interaction_token, interaction_at, locale,
                    int(in_relax),
                ),
            )
            return cur.lastrowid

        job_id = self._write(txn)
        return self.get(job_id)

    def claim(
        self,
        worker_id: str,
        *,
        lease_s: float,
        max_jobs: int = 1,
        max_images: int | None = None,
        families: Iterable[str] | None = None,
        models: Iterable[str] | None = None,
    ) -> list[Job]:
        """Take up to `max_jobs` jobs (and `max_images` images) in fair order, for one call.

        The first job is the oldest queued job of the least recently served user.
        The next one is whatever the fair order gives next, and it joins only if it
        shares the first one's batch key and its images still fit: the batch is the
        fair order's longest run of compatible jobs, so batching never lets a user
        ahead of someone the order would serve first. Returns [] when nothing is queued.

        Fast jobs come first: a relax job is taken only when no fast job (of those
        this claimant can run) is queued, and the relax jobs follow the same fair
        order among themselves. A batch is all fast or all relax.

        `families` and `models` (model references) limit the jobs to those a worker
        can run: a remote worker that lacks a model is never handed its jobs, and the
        fair order among the jobs it can run still holds.
        """
        gen_filter = ""
        gen_params: list[Any] = []
        if families is not None:
            gens = list(families)
            gen_filter = f" AND generator IN ({','.join('?' * len(gens))})"
            gen_params = gens
        if models is not None:
            refs = list(models)
            gen_filter += f" AND model IN ({','.join('?' * len(refs))})"
            gen_params = gen_params + refs

        def txn() -> list[int]:
            claimed: list[int] = []
            batch_key = batch_relax = None
            images = 0
            while len(claimed) < max_jobs:
                # Each user's oldest queued job in each time; fast (relax 0) before relax,
                # then the least recently served user.
                row = self.conn.execute(
                    f"""SELECT j.id, j.user_id, j.batch_key, json_array_length(j.seeds), j.relax
                        FROM jobs j
                        JOIN (SELECT relax, user_id, MIN(id) AS head FROM jobs
                              WHERE status = 'queued'{gen_filter} GROUP BY relax, user_id) h
                          ON j.id = h.head
                        JOIN users u ON u.id = j.user_id
                        ORDER BY h.relax, u.last_served, j.id LIMIT 1""",
                    gen_params,
                ).fetchone()
                if row is None:
                    break
                job_id, user_id, key, count, relax = row
                if claimed and (key != batch_key or relax != batch_relax or
                                (max_images is not None and images + count > max_images)):
                    break
                batch_key, batch_relax = key, relax
                images += count
                now = time.time()
                self.conn.execute(
                    """UPDATE jobs SET status = 'running', attempts = attempts + 1,
                           claim_token = ?, worker_id = ?, lease_until = ?, started_at = ?,
                           progress_step = NULL, progress_total = NULL
                       WHERE id = ?""",
                    (uuid.uuid4().hex, worker_id, now + lease_s, now, job_id),
                )
                self.conn.execute("UPDATE queue_counter SET turn = turn + 1 WHERE id = 1")
                self.conn.execute(
                    "UPDATE users SET last_served = (SELECT turn FROM queue_counter WHERE id = 1) "
                    "WHERE id = ?",
                    (user_id,),
                )
                claimed.append(job_id)
            return claimed

        ids = self._write(txn)
        return [self.get(i) for i in ids]

    def heartbeat(
        self,
        job_id: int,
        claim_token: str,
        *,
        lease_s: float,
        step: int | None = None,
        total: int | None = None,
    ) -> tuple[bool, bool]:
        """Renew the lease and record progress. Returns (still_ours, cancel_requested)."""
        cur = self.conn.execute(
            """UPDATE jobs SET lease_until = ?,
                   progress_step = COALESCE(?, progress_step),
                   progress_total = COALESCE(?, progress_total)
               WHERE id = ? AND claim_token = ? AND status = 'running'""",
            (time.time() + lease_s, step, total, job_id, claim_token),
        )
        if cur.rowcount == 0:
            return False, False
        (cancel,) = self.conn.execute(
            "SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        return True, bool(cancel)

    def complete(
        self,
        job_id: int,
        claim_token: str,
        images: Sequence[tuple[int, StoredImage]],
        *,
        model_revision: str | None,
        run_seconds: float,
        params_update: dict[str, Any] | None = None,
    ) -> bool:
        """Store the images (seed, stored image) and mark the job succeeded.

        Returns False, changing nothing, if the caller no longer holds the claim.
        """

        def txn() -> bool:
            row = self.conn.execute(
                "SELECT params FROM jobs WHERE id = ? AND claim_token = ? AND status = 'running'",
                (job_id, claim_token),
            ).fetchone()
            if row is None:
                return False
            params = json.loads(row[0])
            if params_update:
                params.update(params_update)
            now = time.time()
            for idx, (seed, image) in enumerate(images):
                self.conn.execute(
                    """INSERT INTO images (job_id, idx, seed, path, sha256, width, height, created_at)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                    (job_id, idx, seed, image.path, image.sha256, image.width, image.height, now),
                )
            self.conn.execute(
                """UPDATE jobs SET status = 'succeeded', finished_at = ?, run_seconds = ?,
                       model_revision = ?, seeds = ?, params = ?, error = NULL,
                       claim_token = NULL, lease_until = NULL,
                       progress_step = progress_total
                   WHERE id = ?""",
                (
                    now, run_seconds, model_revision,
                    json.dumps([seed for seed, _ in images]), json.dumps(params, sort_keys=True),
                    job_id,
                ),
            )
            return True

        return self._write(txn)

    def finish_unsuccessfully(
        self, job_id: int, claim_token: str, status: JobStatus, error: str
    ) -> bool:
        """Mark a running job failed or canceled, if the caller holds its claim."""
        assert status in (JobStatus.FAILED, JobStatus.CANCELED)
        cur = self._write(
            lambda: self.conn.execute(
                """UPDATE jobs SET status = ?, error = ?, finished_at = ?,
                       claim_token = NULL, lease_until = NULL
                   WHERE id = ? AND claim_token = ? AND status = 'running'""",
                (status.value, error, time.time(), job_id, claim_token),
            )
        )
        return cur.rowcount == 1

    def requeue(self, job_id: int, claim_token: str) -> bool:
        """Give a running job back to the queue (a worker shutting down cleanly)."""
        cur = self._write(
            lambda: self.conn.execute(
                """UPDATE jobs SET status = 'queued', claim_token = NULL, worker_id = NULL,
                       lease_until = NULL, attempts = MAX(attempts - 1, 0),
                       progress_step = NULL, progress_total = NULL
                   WHERE id = ? AND claim_token = ? AND status = 'running'""",
                (job_id, claim_token),
            )
        )
        return cur.rowcount == 1

    def cancel(self, job_id: int, *, error: str) -> JobStatus | None:
        """Cancel a queued job at once (with `error` as its reason); ask a running one to
        stop. Returns its status now, or None if there is no such job."""

        def txn() -> JobStatus | None:
            row = self.conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            status = JobStatus(row[0])
            if status is JobStatus.QUEUED:
                self.conn.execute(
                    "UPDATE jobs SET status = 'canceled', error = ?, finished_at = ? WHERE id = ?",
                    (error, time.time(), job_id),
                )
                return JobStatus.CANCELED
            if status is JobStatus.RUNNING:
                self.conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return status

        return self._write(txn)

    def requeue_abandoned(
        self,
        *,
        max_attempts: int,
        give_up: Callable[[int], str],
        held_tokens: Iterable[str] = (),
        now: float | None = None,
        leases_only: bool = False,
    ) -> list[int]:
        """Put back running jobs whose worker is gone. Returns the ids touched.

        A worker on this host is gone when its process no longer exists (or is
        this very process, which has only just started); any worker is gone
        when its lease has run out. A job that has already been attempted
        `max_attempts` times is failed instead of retried, with `give_up(attempts)`
        as its error. Jobs whose claim
        token is in `held_tokens` (this process's own running jobs) are left
        alone. With `leases_only`, only a lease that ran out counts (the dispatcher of
        remote workers, which shares its process with a local worker it must not judge).
        """
        now = time.time() if now is None else now
        held = set(held_tokens)

        def txn() -> list[int]:
            touched = []
            for job_id, token, worker_id, lease_until, attempts in self.conn.execute(
                "SELECT id, claim_token, worker_id, lease_until, attempts FROM jobs "
                "WHERE status = 'running'"
            ).fetchall():
                if token in held:
                    continue
                dead = lease_until is not None and lease_until < now
                if not dead and not leases_only:
                    # This process has only just started, so a job it "holds" is a
                    # predecessor's with the same pid; any other dead pid here is gone.
                    dead = worker_id == this_worker_id() or worker_gone(worker_id)
                if not dead:
                    continue
                if attempts >= max_attempts:
                    self.conn.execute(
                        """UPDATE jobs SET status = 'failed', finished_at = ?, claim_token = NULL,
                               lease_until = NULL,
                               error = ? WHERE id = ?""",
                        (now, give_up(attempts), job_id),
                    )
                else:
                    self.conn.execute(
                        """UPDATE jobs SET status = 'queued', claim_token = NULL, worker_id = NULL,
                               lease_until = NULL, progress_step = NULL, progress_total = NULL
                           WHERE id = ?""",
                        (job_id,),
                    )
                touched.append(job_id)
            return touched

        return self._write(txn)

    # -- reading ------------------------------------------------------------

    def get(self, job_id: int) -> Job | None:
        row = self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    def images(self, job_id: int) -> list[ImageRecord]:
        return [
            ImageRecord(**r)
            for r in self._all(
                "SELECT job_id, idx, seed, path, sha256, width, height, "
                "lost_at IS NOT NULL AS lost FROM images WHERE job_id = ? ORDER BY idx",
                (job_id,),
            )
        ]

    def positions(self) -> dict[int, int]:
        """Queue position (1 = next) of every queued job, in the order `claim` will take
        them one at a time: every fast job, in the fair order, then every relax job.

        (Jobs queued later can still come before a job: a newcomer's, and for a relax
        job any fast job.)"""
        rows = self.conn.execute(
            """SELECT j.id, j.user_id, j.relax, u.last_served FROM jobs j
               JOIN users u ON u.id = j.user_id
               WHERE j.status = 'queued' ORDER BY j.id"""
        ).fetchall()
        served: dict[str, int] = {}
        tiers: dict[int, dict[str, list[int]]] = {}
        for job_id, user_id, relax, last_served in rows:
            tiers.setdefault(relax, {}).setdefault(user_id, []).append(job_id)
            served[user_id] = last_served
        positions: dict[int, int] = {}
        turn = max(served.values(), default=0)
        for relax in sorted(tiers):
            per_user = tiers[relax]
            # The least recently served user's oldest job next (ties: the oldest job), as
            # `claim` does; serving a user makes them the most recently served.
            heads = [(served[user], jobs[0], user) for user, jobs in per_user.items()]
            heapq.heapify(heads)
            nxt = {user: 0 for user in per_user}
            while heads:
                _, job_id, user = heapq.heappop(heads)
                positions[job_id] = len(positions) + 1
                turn += 1
                served[user] = turn
                nxt[user] += 1
                if nxt[user] < len(per_user[user]):
                    heapq.heappush(heads, (turn, per_user[user][nxt[user]], user))
        return positions

    def list_jobs(
        self,
        *,
        statuses: Iterable[JobStatus] | None = None,
        user_id: str | None = None,
        server_id: str | None = None,
        limit: int = 20,
        newest_first: bool = True,
    ) -> list[Job]:
        where, params = [], []
        if statuses is not None:
            sts = [JobStatus(s).value for s in statuses]
            where.append(f"status IN ({','.join('?' * len(sts))})")
            params.extend(sts)
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if server_id is not None:
            where.append("server_id = ?")
            params.append(server_id)
        sql = "SELECT * FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id {'DESC' if newest_first else 'ASC'} LIMIT ?"
        params.append(limit)
        return [Job.from_row(r) for r in self._all(sql, params)]
