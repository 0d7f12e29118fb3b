"""The queue transport: an interface, and the in-process SQLite implementation.

`JobQueue` is what the bot, the CLI and the worker talk to. `LocalJobQueue`
keeps everything in the SQLite database (via `storage.jobs.JobStore`) and
delivers live events (queued, running, step k of n, finished) to subscribers
in the same process. A Redis-backed queue for remote GPU workers will
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
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterable, Sequence, TypeVar

from artbot.config import Settings
from storage.db import open_db
from storage.images import StoredImage
from storage.jobs import ImageRecord, Job, JobStatus, JobStore
from worker.jobs import JobSpec
from worker.policy import Policy, Requester, gate

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class JobEvent:
    """A change in a job's life, delivered to subscribers."""

    job_id: int
    # 'queued', 'running', 'progress', or a final status: 'succeeded', 'failed', 'canceled'.
    kind: str
    step: int | None = None
    total: int | None = None
    error: str | None = None

    @property
    def final(self) -> bool:
        return self.kind in ("succeeded", "failed", "canceled")


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


class JobQueue(abc.ABC):
    """The transport between front doors (bot, CLI) and workers."""

    def __init__(self) -> None:
        self._subs: dict[int | None, set[Subscription]] = {}
        self._work = asyncio.Event()

    # -- events -------------------------------------------------------------

    def subscribe(self, job_id: int | None = None) -> Subscription:
        """Events of one job, or of every job when `job_id` is None."""
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

    # -- the transport --------------------------------------------------------

    @abc.abstractmethod
    async def submit(self, spec: JobSpec, *, requester: Requester, settings: Settings,
                     interaction_token: str | None = None, interaction_at: float | None = None,
                     locale: str | None = None) -> Job:
        """Queue `spec` for `requester`, if the server's rules admit it.

        Implementations must run `worker.policy.admit` inside the transaction
        that records the job: it is the one gate every request passes.
        """

    @abc.abstractmethod
    async def claim(self, worker_id: str, *, lease_s: float, max_jobs: int = 1) -> list[Job]: ...

    @abc.abstractmethod
    async def heartbeat(self, job: Job, *, lease_s: float, step: int | None,
                        total: int | None) -> tuple[bool, bool]: ...

    @abc.abstractmethod
    async def complete(self, job: Job, images: Sequence[tuple[int, StoredImage]], *,
                       model_revision: str | None, run_seconds: float,
                       params_update: dict[str, Any] | None = None) -> bool: ...

    @abc.abstractmethod
    async def finish_unsuccessfully(self, job: Job, status: JobStatus, error: str) -> bool: ...

    @abc.abstractmethod
    async def requeue(self, job: Job) -> bool: ...

    @abc.abstractmethod
    async def requeue_abandoned(self, *, max_attempts: int,
                                held_tokens: Iterable[str] = ()) -> list[int]: ...

    @abc.abstractmethod
    async def cancel(self, job_id: int) -> JobStatus | None: ...

    @abc.abstractmethod
    async def get(self, job_id: int) -> Job | None: ...

    @abc.abstractmethod
    async def images(self, job_id: int) -> list[ImageRecord]: ...

    @abc.abstractmethod
    async def positions(self) -> dict[int, int]: ...

    @abc.abstractmethod
    async def list_jobs(self, **filters) -> list[Job]: ...

    async def close(self) -> None:
        pass


class LocalJobQueue(JobQueue):
    """The default transport: the SQLite jobs table, events within this process."""

    def __init__(self, db_path) -> None:
        super().__init__()
        self.db_path = db_path
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="artbot-db"
        )
        self._store: JobStore | None = None

    def _store_in_thread(self) -> JobStore:
        if self._store is None:
            self._store = JobStore(open_db(self.db_path))
        return self._store

    async def _call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        def run() -> T:
            return fn(self._store_in_thread(), *args, **kwargs)

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    async def open(self) -> "LocalJobQueue":
        await self._call(lambda store: None)  # open and migrate now, not on first use
        return self

    async def close(self) -> None:
        def shut(store: JobStore) -> None:
            store.conn.close()
            self._store = None

        if self._store is not None:
            await self._call(shut)
        self._executor.shutdown(wait=True)

    async def submit(self, spec, *, requester, settings, interaction_token=None,
                     interaction_at=None, locale=None) -> Job:
        job = await self._call(
            JobStore.submit,
            user_id=requester.user_id,
            kind=spec.kind,
            generator=spec.generator,
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
        log.info("job %d queued: %s %s by %s", job.id, job.kind, job.model, requester.user_id)
        self._work.set()
        self.publish(JobEvent(job.id, "queued"))
        return job

    async def claim(self, worker_id, *, lease_s, max_jobs=1):
        jobs = await self._call(JobStore.claim, worker_id, lease_s=lease_s, max_jobs=max_jobs)
        for job in jobs:
            log.info("job %d running on %s (attempt %d)", job.id, worker_id, job.attempts)
            self.publish(JobEvent(job.id, "running"))
        return jobs

    async def heartbeat(self, job, *, lease_s, step, total):
        return await self._call(
            JobStore.heartbeat, job.id, job.claim_token, lease_s=lease_s, step=step, total=total
        )

    async def complete(self, job, images, *, model_revision, run_seconds, params_update=None):
        ok = await self._call(
            JobStore.complete,
            job.id,
            job.claim_token,
            images,
            model_revision=model_revision,
            run_seconds=run_seconds,
            params_update=params_update,
        )
        if ok:
            log.info("job %d succeeded: %d image(s) in %.2fs", job.id, len(images), run_seconds)
            self.publish(JobEvent(job.id, "succeeded"))
        else:
            log.warning("job %d finished but its claim had been taken over; result dropped", job.id)
        return ok

    async def finish_unsuccessfully(self, job, status, error):
        ok = await self._call(JobStore.finish_unsuccessfully, job.id, job.claim_token, status, error)
        if ok:
            log.info("job %d %s: %s", job.id, status.value, error)
            self.publish(JobEvent(job.id, status.value, error=error))
        return ok

    async def requeue(self, job):
        ok = await self._call(JobStore.requeue, job.id, job.claim_token)
        if ok:
            log.info("job %d put back on the queue", job.id)
            self.publish(JobEvent(job.id, "queued"))
        return ok

    async def requeue_abandoned(self, *, max_attempts, held_tokens=()):
        touched = await self._call(
            JobStore.requeue_abandoned, max_attempts=max_attempts, held_tokens=list(held_tokens)
        )
        for job_id in touched:
            job = await self.get(job_id)
            log.warning("job %d was abandoned by its worker; now %s", job_id, job.status.value)
            self.publish(JobEvent(job_id, job.status.value, error=job.error))
        if touched:
            self._work.set()
        return touched

    async def cancel(self, job_id):
        status = await self._call(JobStore.cancel, job_id)
        if status is JobStatus.CANCELED:
            log.info("job %d canceled before it started", job_id)
            self.publish(JobEvent(job_id, "canceled", error="Canceled before it started."))
        return status

    async def get(self, job_id):
        return await self._call(JobStore.get, job_id)

    async def images(self, job_id):
        return await self._call(JobStore.images, job_id)

    async def positions(self):
        return await self._call(JobStore.positions)

    async def list_jobs(self, **filters):
        return await self._call(lambda store: store.list_jobs(**filters))

    async def policy(self, settings: Settings, server_id: str | None,
                     channel_id: str | None = None) -> Policy:
        """The rules of a server (and channel), as stored now."""
        return await self._call(lambda store: Policy.load(store.settings, settings, server_id,
                                                          channel_id))

    async def run(self, fn: Callable[[JobStore], T]) -> T:
        """Run `fn(store)` on the database thread (for queries not wrapped above)."""
        return await self._call(fn)
