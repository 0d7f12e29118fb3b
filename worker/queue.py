"""The queue transport: the interface every front door and worker talks to, and
its in-process SQLite implementation.

`JobQueue` names everything the bot, the CLI and the workers need from the
queue and the job store, as typed async methods: submitting (through the one
gate), reading jobs, their images and the queue order, cancelling, live
events, the chat messages that show a job, style presets, server rules and
usage, members' data (counting, deleting, exporting: `storage.privacy`), and the worker's side (claim, heartbeat, complete, requeue). Nobody
outside this module reaches into SQLite.

`LocalJobQueue` keeps everything in the SQLite database (the stores in
`storage`) and delivers live events to subscribers in the same process; a
process that only watches a job another process runs (`watch`) reads its state
from the database. A Redis-backed transport for remote GPU workers will
implement the same interface; the jobs table stays the truth either way.

Async callers never block the event loop on SQLite: every database call runs
on one dedicated thread that owns the connection (the single-writer pattern of
datasette), so writes are also serialised within the process.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterable, Sequence, TypeVar

import sqlite_utils

from artbot.config import Settings
from storage.db import open_db
from storage.faults import explain
from storage.images import ImageStore, StoredImage
from storage.jobs import ImageRecord, Job, JobStatus, JobStore
from storage.messages import MessageLink, MessageStore
from storage.presets import Preset, PresetStore
from storage.privacy import Erased, PrivacyStore
from storage.settings import AuditEntry, SettingsStore
from storage.usage import Usage
from storage.workers import WorkerRegistry
from worker.gate import QuotaStatus, gate, quota_status
from worker.policy import Policy, Requester, change_setting
from worker.requests import JobSpec, input_images

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a job's history says when the queue, not its generator, ended it.
CANCELED_BEFORE_START = "Canceled before it started."


def gave_up_after(attempts: int) -> str:
    return f"The worker stopped while running this job {attempts} times; giving up on it."


@dataclass(frozen=True)
class JobEvent:
    """A change in a job's life, delivered to subscribers."""

    job_id: int
    # 'queued', 'running', 'progress', or a final status: 'succeeded', 'failed', 'canceled'.
    kind: str
    step: int | None = None
    total: int | None = None
    error: str | None = None
    # 'progress' events may carry the image forming: a small JPEG (see Worker.PREVIEW_EVERY_S).
    preview: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def final(self) -> bool:
        return self.kind in ("succeeded", "failed", "canceled")

    @classmethod
    def of(cls, job: Job) -> "JobEvent":
        """The event that describes where `job` stands now."""
        if job.status is JobStatus.RUNNING and job.progress_total:
            return cls(job.id, "progress", step=job.progress_step, total=job.progress_total)
        return cls(job.id, job.status.value, error=job.error if job.status.finished else None)


class Subscription:
    """An async iterator over events, for one job or for all jobs."""

    def __init__(self, queue: "JobQueue", job_id: int | None):
        self._queue = queue
        self.job_id = job_id
        self._events: asyncio.Queue[JobEvent] = asyncio.Queue()

    def _deliver(self, event: JobEvent) -> None:
        self._events.put_nowait(event)

    async def get(self, timeout: float | None = None) -> JobEvent:
        return await asyncio.wait_for(self._events.get(), timeout)

    def __aiter__(self) -> AsyncIterator[JobEvent]:
        return self

    async def __anext__(self) -> JobEvent:
        return await self._events.get()

    def close(self) -> None:
        self._queue._unsubscribe(self)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class WorkerQueue(abc.ABC):
    """The worker's side of the transport: what `worker.runner.Worker` needs to take
    jobs, report on them and finish them. `JobQueue` (the SQLite queue, on the
    database's machine) has it, and so does `worker.remote.RedisWorkerQueue`, through
    which a worker on another machine is handed jobs and sends back its results."""

    @abc.abstractmethod
    def publish(self, event: JobEvent) -> None:
        """A job's event (progress, with its preview) for whoever follows the job."""

    @abc.abstractmethod
    async def wait_for_work(self, timeout: float) -> None:
        """Return when a job may be waiting, or after `timeout` seconds."""

    @abc.abstractmethod
    async def worker_seen(self, worker_id: str, models: list[str] | None = None,
                          info: dict[str, Any] | None = None) -> None:
        """The worker is alive and holds `models` (references) in memory; `info` is what
        it says of itself (see `worker.runner.Worker.describe`)."""

    @abc.abstractmethod
    async def worker_gone(self, worker_id: str) -> None: ...

    @abc.abstractmethod
    async def claim(self, worker_id: str, *, lease_s: float, max_jobs: int = 1,
                    max_images: int | None = None,
                    models: Iterable[str] | None = None) -> list[Job]:
        """Jobs for one generator call: the fair order's run of jobs sharing a batch key
        (`storage.jobs.JobStore.claim`), at most `max_jobs` of them and `max_images` images,
        of the `models` (references) the worker has, if given."""

    @abc.abstractmethod
    async def heartbeat(self, job: Job, *, lease_s: float, step: int | None,
                        total: int | None) -> tuple[bool, bool]:
        """Renew the job's lease, record its step: (still ours, cancel requested)."""

    @abc.abstractmethod
    async def complete(self, job: Job, images: Sequence[tuple[int, StoredImage]], *,
                       model_revision: str | None, run_seconds: float,
                       params_update: dict[str, Any] | None = None) -> bool:
        """The job's images (seed, stored image): succeeded, if the claim is still ours."""

    @abc.abstractmethod
    async def finish_unsuccessfully(self, job: Job, status: JobStatus, error: str) -> bool: ...

    @abc.abstractmethod
    async def requeue(self, job: Job) -> bool: ...

    @abc.abstractmethod
    async def requeue_abandoned(self, *, max_attempts: int, held_tokens: Iterable[str] = (),
                                leases_only: bool = False) -> list[int]: ...


class JobQueue(WorkerQueue):
    """The transport between front doors (bot, CLI) and workers."""

    def __init__(self) -> None:
        self._subs: dict[int | None, set[Subscription]] = {}
        self._work = asyncio.Event()
        # Called with a job id when a running job is asked to stop, so that whoever runs
        # it elsewhere (worker.dispatcher, for remote workers) can pass it on at once.
        self.cancel_listeners: list[Callable[[int], None]] = []

    async def __aenter__(self) -> "JobQueue":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        pass

    # -- events -------------------------------------------------------------

    def subscribe(self, job_id: int | None = None) -> Subscription:
        """Events of one job, or of every job when `job_id` is None, from this process."""
        sub = Subscription(self, job_id)
        self._subs.setdefault(job_id, set()).add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.job_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                self._subs.pop(sub.job_id, None)

    def publish(self, event: JobEvent) -> None:
        for key in (event.job_id, None):
            for sub in list(self._subs.get(key, ())):
                sub._deliver(event)

    async def wait_for_work(self, timeout: float) -> None:
        """Return when a job may be waiting: one was submitted here, or `timeout` passed."""
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        self._work.clear()

    async def watch(self, job_id: int, *, poll_s: float = 0.25) -> AsyncIterator[JobEvent]:
        """The events of one job until its final one, whichever process runs it.

        Events published here arrive at once; a job run by another process is
        read from the store every `poll_s` seconds, and each change in its
        state (queued, running, step k of n, finished) becomes one event.
        """
        with self.subscribe(job_id) as events:
            last: JobEvent | None = None
            while True:
                try:
                    event = await events.get(timeout=poll_s)
                except asyncio.TimeoutError:
                    job = await self.get(job_id)
                    if job is None:
                        return
                    event = JobEvent.of(job)
                    if event == last:
                        continue
                last = event
                yield event
                if event.final:
                    return

    # -- front doors: jobs ------------------------------------------------------

    @abc.abstractmethod
    async def submit(self, spec: JobSpec, *, requester: Requester, settings: Settings,
                     interaction_token: str | None = None, interaction_at: float | None = None,
                     locale: str | None = None) -> Job:
        """Queue `spec` for `requester`, if the server's rules admit it.

        Implementations must run `worker.gate.admit` inside the transaction
        that records the job: it is the one gate every request passes.
        """

    @abc.abstractmethod
    async def get(self, job_id: int) -> Job | None: ...

    @abc.abstractmethod
    async def images(self, job_id: int) -> list[ImageRecord]: ...

    @abc.abstractmethod
    async def positions(self) -> dict[int, int]:
        """Queue position (1 = next) of every queued job: the fast jobs in fair order,
        then the relax jobs (`storage.jobs.JobStore.positions`)."""

    @abc.abstractmethod
    async def list_jobs(self, *, statuses: Iterable[JobStatus] | None = None,
                        user_id: str | None = None, server_id: str | None = None,
                        limit: int = 20, newest_first: bool = True) -> list[Job]: ...

    @abc.abstractmethod
    async def cancel(self, job_id: int) -> JobStatus | None:
        """Cancel a queued job at once; ask a running one to stop. Returns its status now."""

    # -- front doors: members' data -------------------------------------------------

    @abc.abstractmethod
    async def member_counts(self, user_id: str, server_id: str | None) -> tuple[int, int]:
        """(jobs, result images) of a member in one server, or every server (None)."""

    @abc.abstractmethod
    async def erase_member(self, user_id: str, server_id: str | None, *,
                           images: ImageStore) -> Erased:
        """Delete a member's jobs, images, message links and the files nothing else uses
        (`storage.privacy`). Stop their unfinished jobs first: `worker.privacy.forget`."""

    @abc.abstractmethod
    async def erase_expired(self, *, images: ImageStore, now: float | None = None) -> Erased:
        """Delete the finished jobs older than their server's `retention`, with their images."""

    @abc.abstractmethod
    async def was_deleted(self, job_id: int) -> bool:
        """Whether the job existed and was deleted (by `forget` or retention)."""

    @abc.abstractmethod
    async def records(self, user_id: str | None) -> list[tuple[Job, list[ImageRecord]]]:
        """Every job of a member (None: everyone's), oldest first, with its images."""

    # -- front doors: the chat messages that show jobs ----------------------------

    @abc.abstractmethod
    async def link_message(self, job_id: int, message_id: str, channel_id: str, *,
                           guild_id: str | None, via: str, image_idx: int | None = None,
                           primary: bool = True) -> None: ...

    @abc.abstractmethod
    async def message_link(self, message_id: str) -> MessageLink | None: ...

    @abc.abstractmethod
    async def forget_message(self, message_id: str) -> None: ...

    @abc.abstractmethod
    async def mark_delivered(self, job_id: int) -> None: ...

    @abc.abstractmethod
    async def undelivered(self, source: str) -> list[Job]: ...

    # -- front doors: style presets -----------------------------------------------

    @abc.abstractmethod
    async def save_preset(self, server_id: str | None, name: str, image_sha: str,
                          created_by: str | None) -> None: ...

    @abc.abstractmethod
    async def presets(self, server_id: str | None) -> list[Preset]: ...

    @abc.abstractmethod
    async def preset(self, server_id: str | None, name: str) -> Preset | None: ...

    @abc.abstractmethod
    async def delete_preset(self, server_id: str | None, name: str) -> bool: ...

    # -- front doors: server rules and usage --------------------------------------

    @abc.abstractmethod
    async def rules(self, settings: Settings, server_id: str | None,
                    channel_id: str | None = None) -> Policy:
        """The rules of a server (and channel), as stored now."""

    @abc.abstractmethod
    async def change_setting(self, settings: Settings, server_id: str, key: str,
                             text: str | None, *, actor: str, via: str,
                             channel_id: str | None = None) -> tuple[Any, Any] | None:
        """Set a key from what was typed (None: reset), audited; (old, new) or None."""

    @abc.abstractmethod
    async def channel_overrides(self, server_id: str) -> dict[str, dict[str, Any]]: ...

    @abc.abstractmethod
    async def audit(self, server_id: str, limit: int = 20) -> list[AuditEntry]: ...

    @abc.abstractmethod
    async def quota_status(self, settings: Settings, requester: Requester,
                           now: float) -> QuotaStatus: ...

    @abc.abstractmethod
    async def server_stats(self, server_id: str, *, day_start: float,
                           week_start: float) -> dict[str, Any]: ...

    # -- the fleet ----------------------------------------------------------------

    @abc.abstractmethod
    async def live_workers(self, *, within_s: float) -> list[str]:
        """Workers serving this queue now (seen in the last `within_s` seconds)."""

    @abc.abstractmethod
    async def loaded_models(self, *, within_s: float) -> dict[str, list[str]]:
        """model reference -> the live workers that hold it in memory."""

    @abc.abstractmethod
    async def workers(self, *, within_s: float) -> list[dict[str, Any]]:
        """Every worker seen in the last `within_s` seconds, local and remote
        (`storage.workers.WorkerRegistry.listing`): the fleet `artbot workers` and
        `/stats` show."""

    @abc.abstractmethod
    async def status_counts(self) -> dict[str, int]:
        """Jobs by status, every server."""

    @abc.abstractmethod
    async def recent_run_seconds(self, *, since: float, limit: int = 50) -> list[float]:
        """Generation times of recent successful jobs, newest first (the fleet's speed)."""


class LocalJobQueue(JobQueue):
    """The default transport: the SQLite jobs table, events within this process."""

    def __init__(self, db_path: str | Path) -> None:
        super().__init__()
        self.db_path = db_path
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="artbot-db"
        )
        self._db: sqlite_utils.Database | None = None

    async def _call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run `fn(db, ...)` on the database thread, which owns the connection."""

        def run() -> T:
            if self._db is None:
                self._db = open_db(self.db_path)
            try:
                return fn(self._db, *args, **kwargs)
            except (sqlite3.Error, OSError) as exc:
                # The disk or the file failing (full, read-only, locked, damaged) is
                # said in words; anything else is a bug and stays as it is.
                fault = explain(exc, self.db_path)
                if fault is None:
                    raise
                if self._db.conn.in_transaction:
                    try:
                        self._db.conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass  # the transaction is gone with the fault
                raise fault from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def open(self) -> "LocalJobQueue":
        await self._call(lambda db: None)  # open and migrate now, not on first use
        return self

    async def __aenter__(self) -> "LocalJobQueue":
        return await self.open()

    async def close(self) -> None:
        def shut(db: sqlite_utils.Database) -> None:
            db.conn.close()
            self._db = None

        if self._db is not None:
            await self._call(shut)
        self._executor.shutdown(wait=True)

    # -- jobs -----------------------------------------------------------------

    async def submit(self, spec, *, requester, settings, interaction_token=None,
                     interaction_at=None, locale=None) -> Job:
        job = await self._call(
            lambda db: JobStore(db).submit(
                user_id=requester.user_id,
                kind=spec.kind,
                family=spec.family,
                model=spec.model,
                params=spec.params,
                seeds=spec.seeds,
                batch_key=spec.batch_key,
                source=requester.source,
                user_name=requester.user_name,
                server_id=requester.server_id,
                channel_id=requester.channel_id,
                parent_id=spec.parent_id,
                interaction_token=interaction_token,
                interaction_at=interaction_at,
                locale=locale,
                admit=gate(spec, requester, settings, time.time),
            )
        )
        log.info("job %d queued: %s %s by %s", job.id, job.kind, job.model, requester.user_id)
        self._work.set()
        self.publish(JobEvent(job.id, "queued"))
        return job

    async def get(self, job_id):
        return await self._call(lambda db: JobStore(db).get(job_id))

    async def images(self, job_id):
        return await self._call(lambda db: JobStore(db).images(job_id))

    async def positions(self):
        return await self._call(lambda db: JobStore(db).positions())

    async def list_jobs(self, *, statuses=None, user_id=None, server_id=None, limit=20,
                        newest_first=True):
        return await self._call(lambda db: JobStore(db).list_jobs(
            statuses=statuses, user_id=user_id, server_id=server_id, limit=limit,
            newest_first=newest_first))

    async def cancel(self, job_id):
        status = await self._call(
            lambda db: JobStore(db).cancel(job_id, error=CANCELED_BEFORE_START))
        if status is JobStatus.CANCELED:
            log.info("job %d canceled before it started", job_id)
            self.publish(JobEvent(job_id, "canceled", error=CANCELED_BEFORE_START))
        elif status is JobStatus.RUNNING:
            for listener in list(self.cancel_listeners):
                listener(job_id)
        return status

    # -- members' data ----------------------------------------------------------------

    def _privacy(self, db: sqlite_utils.Database, images: ImageStore) -> PrivacyStore:
        return PrivacyStore(db, images, inputs=input_images)

    async def member_counts(self, user_id, server_id):
        return await self._call(lambda db: PrivacyStore(db)
                                .member_counts(user_id, server_id))

    async def erase_member(self, user_id, server_id, *, images):
        erased = await self._call(lambda db: self._privacy(db, images)
                                  .erase_member(user_id, server_id))
        log.info("forgot %s in %s: %d job(s), %d image(s), %d file(s) removed", user_id,
                 f"server {server_id}" if server_id else "every server", erased.jobs,
                 erased.images, erased.files)
        return erased

    async def erase_expired(self, *, images, now=None):
        erased = await self._call(lambda db: self._privacy(db, images).erase_expired(now))
        if erased.jobs:
            log.info("retention: deleted %d job(s) past their server's retention, %d image(s), "
                     "%d file(s) removed", erased.jobs, erased.images, erased.files)
        return erased

    async def was_deleted(self, job_id):
        return await self._call(lambda db: PrivacyStore(db)
                                .was_deleted(job_id))

    async def records(self, user_id):
        return await self._call(lambda db: PrivacyStore(db)
                                .records(user_id))

    # -- chat messages --------------------------------------------------------------

    async def link_message(self, job_id, message_id, channel_id, *, guild_id, via,
                           image_idx=None, primary=True):
        await self._call(lambda db: MessageStore(db).link(
            job_id, message_id, channel_id, guild_id=guild_id, via=via, image_idx=image_idx,
            primary=primary))

    async def message_link(self, message_id):
        return await self._call(lambda db: MessageStore(db).get(message_id))

    async def forget_message(self, message_id):
        await self._call(lambda db: MessageStore(db).forget(message_id))

    async def mark_delivered(self, job_id):
        await self._call(lambda db: MessageStore(db).mark_delivered(job_id))

    async def undelivered(self, source):
        return await self._call(lambda db: MessageStore(db).undelivered(source))

    # -- presets ------------------------------------------------------------------

    async def save_preset(self, server_id, name, image_sha, created_by):
        await self._call(lambda db: PresetStore(db).save(server_id, name, image_sha, created_by))

    async def presets(self, server_id):
        return await self._call(lambda db: PresetStore(db).list(server_id))

    async def preset(self, server_id, name):
        return await self._call(lambda db: PresetStore(db).get(server_id, name))

    async def delete_preset(self, server_id, name):
        return await self._call(lambda db: PresetStore(db).delete(server_id, name))

    # -- server rules and usage ----------------------------------------------------

    async def rules(self, settings, server_id, channel_id=None):
        return await self._call(
            lambda db: Policy.load(SettingsStore(db), settings, server_id, channel_id))

    async def change_setting(self, settings, server_id, key, text, *, actor, via,
                             channel_id=None):
        return await self._call(lambda db: change_setting(
            SettingsStore(db), settings, server_id, key, text, actor=actor, via=via,
            channel_id=channel_id))

    async def channel_overrides(self, server_id):
        return await self._call(lambda db: SettingsStore(db).channel_overrides(server_id))

    async def audit(self, server_id, limit=20):
        return await self._call(lambda db: SettingsStore(db).audit(server_id, limit=limit))

    async def quota_status(self, settings, requester, now):
        return await self._call(lambda db: quota_status(db, settings, requester, now))

    async def server_stats(self, server_id, *, day_start, week_start):
        return await self._call(lambda db: Usage(db).server_stats(
            server_id, day_start=day_start, week_start=week_start))

    # -- workers ------------------------------------------------------------------

    async def live_workers(self, *, within_s):
        return await self._call(lambda db: WorkerRegistry(db).live(within_s=within_s))

    async def worker_seen(self, worker_id, models=None, info=None):
        await self._call(lambda db: WorkerRegistry(db).seen(worker_id, models=models, info=info))

    async def workers(self, *, within_s):
        return await self._call(lambda db: WorkerRegistry(db).listing(within_s=within_s))

    async def status_counts(self):
        return await self._call(lambda db: Usage(db).status_counts())

    async def recent_run_seconds(self, *, since, limit=50):
        return await self._call(lambda db: Usage(db).recent_run_seconds(since=since, limit=limit))

    async def loaded_models(self, *, within_s):
        return await self._call(lambda db: WorkerRegistry(db).loaded_models(within_s=within_s))

    async def worker_gone(self, worker_id):
        await self._call(lambda db: WorkerRegistry(db).gone(worker_id))

    async def claim(self, worker_id, *, lease_s, max_jobs=1, max_images=None, models=None):
        refs = None if models is None else list(models)
        jobs = await self._call(lambda db: JobStore(db).claim(
            worker_id, lease_s=lease_s, max_jobs=max_jobs, max_images=max_images, models=refs))
        for job in jobs:
            log.info("job %d running on %s (attempt %d)", job.id, worker_id, job.attempts)
            self.publish(JobEvent(job.id, "running"))
        return jobs

    async def heartbeat(self, job, *, lease_s, step, total):
        return await self._call(lambda db: JobStore(db).heartbeat(
            job.id, job.claim_token, lease_s=lease_s, step=step, total=total))

    async def complete(self, job, images, *, model_revision, run_seconds, params_update=None):
        ok = await self._call(lambda db: JobStore(db).complete(
            job.id, job.claim_token, images, model_revision=model_revision,
            run_seconds=run_seconds, params_update=params_update))
        if ok:
            log.info("job %d succeeded: %d image(s) in %.2fs", job.id, len(images), run_seconds)
            self.publish(JobEvent(job.id, "succeeded"))
        else:
            log.warning("job %d finished but its claim had been taken over; result dropped", job.id)
        return ok

    async def finish_unsuccessfully(self, job, status, error):
        ok = await self._call(lambda db: JobStore(db).finish_unsuccessfully(
            job.id, job.claim_token, status, error))
        if ok:
            log.info("job %d %s: %s", job.id, status.value, error)
            self.publish(JobEvent(job.id, status.value, error=error))
        return ok

    async def requeue(self, job):
        ok = await self._call(lambda db: JobStore(db).requeue(job.id, job.claim_token))
        if ok:
            log.info("job %d put back on the queue", job.id)
            self.publish(JobEvent(job.id, "queued"))
        return ok

    async def requeue_abandoned(self, *, max_attempts, held_tokens=(), leases_only=False):
        held = list(held_tokens)
        touched = await self._call(lambda db: JobStore(db).requeue_abandoned(
            max_attempts=max_attempts, give_up=gave_up_after, held_tokens=held,
            leases_only=leases_only))
        for job_id in touched:
            job = await self.get(job_id)
            log.warning("job %d was abandoned by its worker; now %s", job_id, job.status.value)
            self.publish(JobEvent(job_id, job.status.value, error=job.error))
        if touched:
            self._work.set()
        return touched
