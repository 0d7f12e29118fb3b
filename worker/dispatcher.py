"""The bot's end of the wire to remote GPU workers (`worker.remote`).

    dispatcher = Dispatcher(queue, images, settings, url="redis://10.0.0.1:6379")
    await dispatcher.run()          # until close(): `artbot run` with ARTBOT_REDIS_URL

It runs beside the bot on the machine that holds the SQLite database, and
does for each remote worker what a local worker does for itself:

1. **Sees the fleet.** Every live worker has a key in Redis that says what it
   serves, what it has loaded and how many images it takes in one call; the
   dispatcher reads them every FLEET_EVERY_S and writes each into the SQLite
   `workers` table (with `"remote": true`), so `artbot workers`, `/stats`,
   `/queue` and the CLI see remote workers as they see local ones.
2. **Claims in the fair order, on a worker's behalf.** For each idle worker, the
   fair order's run of jobs (one generator call) among the models that worker
   has, under a lease and a claim token, exactly as `JobStore.claim` gives a
   local worker. Workers that already hold the next job's model loaded are
   offered it first; a worker never gets a job whose model it lacks.
3. **Hands the batch over** with its input images, on the worker's jobs stream.
   If that fails (Redis away), the jobs go straight back on the queue.
4. **Follows the results stream.** Heartbeats renew the lease; progress and
   previews become the job's events, which `bot.delivery` shows; a cancel (or
   a claim that is no longer the worker's) is sent back at once. A result's
   PNGs are checked (their sha256, that they are PNGs) and written to the image
   store, then the job is completed with the claim token, so a late result of
   a worker presumed dead is rejected. Each entry is acknowledged only after
   SQLite has it; entries not acknowledged are read again after a restart.
5. **Sweeps leases.** A job whose worker vanished (killed, cut off, Redis lost)
   goes back on the queue when its lease runs out.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import io
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from artbot.config import Settings, masked_url
from artbot.errors import StorageFault
from storage.images import ImageStore, StoredImage
from storage.jobs import Job, JobStatus
from worker.queue import JobEvent, JobQueue
from worker.requests import input_images
from worker.remote import (BLOCK_MS, CONNECTION_ERRORS, DISPATCH_GROUP, JOBS_MAXLEN, RESULTS,
                           PREFIX, Backoff, connect, ping, shut, control_stream, decode, encode,
                           ensure_group, jobs_stream, worker_key)

log = logging.getLogger(__name__)

# How often the fleet is read from Redis (and written to SQLite), in seconds.
FLEET_EVERY_S = 1.0
# A job's lease is renewed in SQLite at most this often per job, in seconds.
RENEW_EVERY_S = 0.5
# Longest an error text from a worker may be.
MAX_ERROR_CHARS = 1000
# Answers remembered, so a result sent twice (no answer reached the worker) gets the
# answer the first got.
ANSWERS_KEPT = 2000


@dataclass
class _Ticket:
    """A job as the worker holds it: its id and claim token (what the queue's
    heartbeat, complete and finish calls check)."""

    id: int
    claim_token: str


@dataclass
class _Handover:
    worker_id: str
    jobs: dict[int, str]  # job id -> claim token
    sent_at: float = field(default_factory=time.time)


class Dispatcher:
    def __init__(self, queue: JobQueue, images: ImageStore, settings: Settings, *,
                 url: str, password: str | None = None, tick_s: float = 0.2):
        self.queue = queue
        self.images = images
        self.settings = settings
        self.url = url
        self.redis = connect(url, password if password is not None else settings.redis_password)
        self.tick_s = tick_s
        self.fleet: dict[str, dict[str, Any]] = {}  # worker id -> what its key says
        self._handovers: dict[str, _Handover] = {}  # worker id -> the batch it runs
        self._served: set[str] = set()  # workers this dispatcher has handed jobs to
        self._renewed: dict[int, float] = {}  # job id -> when its lease was last renewed
        self._stopped: set[str] = set()  # claim tokens told to stop
        self._answers: collections.OrderedDict[str, bool] = collections.OrderedDict()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.connected = False
        # Counts since start, for logs, /metrics and tests.
        self.handed_over = 0
        self.completed = 0
        self.rejected = 0

    # -- life ---------------------------------------------------------------------

    async def start(self) -> "Dispatcher":
        log.info("dispatcher: handing jobs to remote workers through %s", masked_url(self.url))
        self.queue.cancel_listeners.append(self._canceled)
        self._tasks = [asyncio.create_task(self._loop(self._read_results), name="artbot-results"),
                       asyncio.create_task(self._loop(self._watch_fleet), name="artbot-fleet"),
                       asyncio.create_task(self._loop(self._dispatch), name="artbot-dispatch"),
                       asyncio.create_task(self._loop(self._sweep), name="artbot-sweep")]
        return self

    async def run(self) -> None:
        """Start, then wait until closed."""
        await self.start()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        if self._canceled in self.queue.cancel_listeners:
            self.queue.cancel_listeners.remove(self._canceled)
        await shut(self.redis, self._tasks, "dispatcher")

    async def check(self) -> dict[str, Any]:
        """For /healthz: whether Redis answers (the bot goes on without it)."""
        state = await ping(self.redis)
        return {"redis": state, "remote_workers": len(self.fleet) if state == "ok" else 0}

    async def _loop(self, step) -> None:
        """Run `step` again and again; a lost connection waits with backoff, and any
        other error is logged and retried, so the bot never loses its dispatcher."""
        backoff = Backoff(f"dispatcher ({step.__name__.strip('_')})")
        while True:
            try:
                await step()
                backoff.succeeded()
                self.connected = True
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                self.connected = False
                await backoff.failed(exc)
            except StorageFault as fault:
                # The disk or the database failed (full, read-only, locked): results stay
                # unacknowledged in Redis, so workers resend them once storage answers.
                log.error("dispatcher: %s: %s", step.__name__.strip("_"), fault.message)
                await asyncio.sleep(5.0)
            except Exception:  # noqa: BLE001 - logged; the dispatcher keeps serving
                log.exception("dispatcher: %s failed; going on", step.__name__)
                await asyncio.sleep(1.0)

    # -- the fleet --------------------------------------------------------------------

    async def _watch_fleet(self) -> None:
        keys = [key async for key in self.redis.scan_iter(match=worker_key("*"), count=100)]
        values = await self.redis.mget(keys) if keys else []
        fleet = {}
        for key, value in zip(keys, values):
            try:
                info = json.loads(value)
                worker_id = str(info["id"])
            except (TypeError, ValueError, KeyError):
                continue
            if key.decode() == worker_key(worker_id):
                fleet[worker_id] = info
        for worker_id in set(self.fleet) - set(fleet):
            log.warning("dispatcher: worker %s is gone (its key expired)", worker_id)
            self._handovers.pop(worker_id, None)  # its jobs go back when their leases run out
            await self.redis.delete(jobs_stream(worker_id), control_stream(worker_id))
        for worker_id in set(fleet) - set(self.fleet):
            info = fleet[worker_id]
            log.info("dispatcher: worker %s joined: %s, serves %s", worker_id,
                     info.get("device_name") or info.get("device") or "device not chosen yet",
                     ", ".join(info.get("serves", [])))
            self._wake.set()
        self.fleet = fleet
        for worker_id, info in fleet.items():
            loaded = [self.settings.resolve_model(n) for n in info.get("loaded_names", [])]
            await self.queue.worker_seen(worker_id, loaded, info)
        await asyncio.sleep(FLEET_EVERY_S)

    def _references(self, info: dict[str, Any]) -> set[str]:
        """The model references (as jobs store them) of the names a worker serves."""
        names = info.get("serves", [])
        return set(names) | {self.settings.resolve_model(n) for n in names}

    # -- handing jobs over ----------------------------------------------------------------

    async def _dispatch(self) -> None:
        try:
            await asyncio.wait_for(self._wake.wait(), self.tick_s)
        except asyncio.TimeoutError:
            pass
        self._wake.clear()
        # A worker is busy while a batch handed to it has not ended; one this dispatcher
        # has handed nothing yet is busy while its key says it runs jobs (handed over
        # before a restart).
        idle = [w for w, info in self.fleet.items() if w not in self._handovers
                and (w in self._served or not info.get("current"))]
        if not idle:
            return
        head = await self._next_model(set().union(*(self._references(self.fleet[w])
                                                      for w in idle)))
        if head is None:
            return
        # Offer the next job that an idle worker can run to the workers that hold its
        # model loaded, then to those that have it.
        idle.sort(key=lambda w: (head not in {self.settings.resolve_model(n) for n in
                                              self.fleet[w].get("loaded_names", [])},
                                 head not in self._references(self.fleet[w]), w))
        for worker_id in idle:
            info = self.fleet[worker_id]
            capacity = max(1, int(info.get("capacity") or 1))
            jobs = await self.queue.claim(worker_id, lease_s=self.settings.lease_s,
                                          max_jobs=capacity, max_images=capacity,
                                          models=sorted(self._references(info)))
            if jobs:
                await self._hand_over(worker_id, jobs)

    async def _next_model(self, servable: set[str]) -> str | None:
        """The model of the first job in the fair order that one of `servable` (model
        references) can run, or None when no such job waits."""
        positions = await self.queue.positions()
        if not positions:
            return None
        queued = await self.queue.list_jobs(statuses=[JobStatus.QUEUED], limit=500,
                                            newest_first=False)
        runnable = [j for j in queued if j.id in positions and j.model in servable]
        return min(runnable, key=lambda j: positions[j.id]).model if runnable else None

    async def _hand_over(self, worker_id: str, jobs: list[Job]) -> None:
        """Send one batch, with its input images, to the worker's jobs stream. Only
        what the jobs need travels: never who asked, from which server, or a token
        of Discord's."""
        files: dict[str, bytes] = {}
        specs = []
        for job in jobs:
            for sha in input_images(job.params):
                if sha and f"in:{sha}" not in files:
                    files[f"in:{sha}"] = await asyncio.to_thread(
                        self.images.by_sha(sha).read_bytes)
            specs.append({"id": job.id, "token": job.claim_token, "kind": job.kind,
                          "family": job.family, "model": self.settings.model_name(job.model),
                          "params": job.params, "seeds": job.seeds, "attempts": job.attempts})
        try:
            await self.redis.xadd(jobs_stream(worker_id), encode({"jobs": specs}, files),
                                  maxlen=JOBS_MAXLEN, approximate=True)
        except BaseException:
            # The worker never got them: straight back on the queue, in their places.
            for job in jobs:
                await self.queue.requeue(job)
            raise
        self._handovers[worker_id] = _Handover(worker_id, {j.id: j.claim_token for j in jobs})
        self._served.add(worker_id)
        self.handed_over += len(jobs)
        log.info("dispatcher: job(s) %s handed to %s", ", ".join(str(j.id) for j in jobs),
                 worker_id)

    def _canceled(self, job_id: int) -> None:
        """The queue's cancel listener: a running job of a remote worker was canceled."""
        for handover in self._handovers.values():
            token = handover.jobs.get(job_id)
            if token is not None:
                asyncio.get_running_loop().create_task(
                    self._stop(handover.worker_id, job_id, token, "canceled"))

    async def _stop(self, worker_id: str, job_id: int, token: str, why: str) -> None:
        if token in self._stopped:
            return
        self._stopped.add(token)
        try:
            await self.redis.xadd(control_stream(worker_id), encode(
                {"type": "cancel", "job": job_id, "token": token, "why": why}),
                maxlen=JOBS_MAXLEN, approximate=True)
        except CONNECTION_ERRORS:
            self._stopped.discard(token)  # the next heartbeat tries again

    def _settled(self, worker_id: str, job_id: int) -> None:
        """A job of a handover has ended; the worker is idle when all of its have."""
        handover = self._handovers.get(worker_id)
        if handover is not None:
            handover.jobs.pop(job_id, None)
            if not handover.jobs:
                self._handovers.pop(worker_id, None)
                self._wake.set()
        self._renewed.pop(job_id, None)

    # -- results --------------------------------------------------------------------------

    async def _read_results(self) -> None:
        await ensure_group(self.redis, RESULTS, DISPATCH_GROUP)
        # First what this consumer read but had not acknowledged (a restart), then new entries.
        for start in ("0", ">"):
            while True:
                reply = await self.redis.xreadgroup(DISPATCH_GROUP, "bot", {RESULTS: start},
                                                    count=50, block=BLOCK_MS)
                self.connected = True
                entries = [e for _name, batch in reply or [] for e in batch]
                for entry_id, fields in entries:
                    await self._handle(fields)
                    await self.redis.xack(RESULTS, DISPATCH_GROUP, entry_id)
                    await self.redis.xdel(RESULTS, entry_id)
                if start == "0" and not entries:
                    break

    async def _handle(self, fields: dict[bytes, bytes]) -> None:
        try:
            meta, files = decode(fields)
            kind, worker_id = meta["type"], str(meta["worker"])
            job_id = int(meta["job"]) if meta.get("job") is not None else None
            token = str(meta.get("token"))
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("dispatcher: ignored an entry it could not read (%s)", exc)
            return
        if kind == "gone":
            log.info("dispatcher: worker %s stopped", worker_id)
            self.fleet.pop(worker_id, None)
            self._handovers.pop(worker_id, None)
            return
        if job_id is None:
            return
        ticket = _Ticket(job_id, token)
        if kind in ("beat", "progress"):
            await self._alive(worker_id, ticket, meta, files.get("preview"))
            return
        ref = str(meta.get("ref"))
        if ref in self._answers:  # sent again because our answer did not arrive
            await self._answer(worker_id, ticket, ref, self._answers[ref])
            return
        if kind == "done":
            ok = await self._complete(worker_id, ticket, meta, files)
        elif kind == "failed":
            status = JobStatus.CANCELED if meta.get("status") == "canceled" else JobStatus.FAILED
            error = str(meta.get("error") or "The worker gave no reason.")[:MAX_ERROR_CHARS]
            ok = await self.queue.finish_unsuccessfully(ticket, status, error)
        elif kind == "requeue":
            ok = await self.queue.requeue(ticket)
            if ok:
                self._wake.set()
        else:
            return
        if not ok:
            self.rejected += 1
            log.warning("dispatcher: rejected the %s of job %d from %s: the job is no longer "
                        "that worker's (its lease ran out and it went back on the queue)",
                        kind, job_id, worker_id)
        self._settled(worker_id, job_id)
        self._answers[ref] = ok
        while len(self._answers) > ANSWERS_KEPT:
            self._answers.popitem(last=False)
        await self._answer(worker_id, ticket, ref, ok)

    async def _alive(self, worker_id: str, ticket: _Ticket, meta: dict[str, Any],
                     preview: bytes | None) -> None:
        """A heartbeat or a step: renew the lease (at most every RENEW_EVERY_S), pass the
        progress on to whoever follows the job, and stop a job that is canceled or no
        longer this worker's."""
        step, total = meta.get("step"), meta.get("total")
        now = time.monotonic()
        if meta["type"] == "beat" or now - self._renewed.get(ticket.id, 0.0) >= RENEW_EVERY_S:
            self._renewed[ticket.id] = now
            ours, cancel = await self.queue.heartbeat(ticket, lease_s=self.settings.lease_s,
                                                      step=step, total=total)
            if not ours or cancel:
                await self._stop(worker_id, ticket.id, ticket.claim_token,
                                 "canceled" if ours else "its claim passed to another worker")
                return
        if meta["type"] == "progress" and ticket.claim_token not in self._stopped:
            self.queue.publish(JobEvent(ticket.id, "progress", step=step, total=total,
                                        preview=preview))

    async def _complete(self, worker_id: str, ticket: _Ticket, meta: dict[str, Any],
                        files: dict[str, bytes]) -> bool:
        """Check and store a result's PNGs, then complete the job with its claim token."""
        job = await self.queue.get(ticket.id)
        if job is None or job.status is not JobStatus.RUNNING or job.claim_token != ticket.claim_token:
            return False  # late: don't even write its images
        seeds, shas = list(meta.get("seeds", [])), list(meta.get("shas", []))
        expected = 0 if job.kind == "describe" else len(job.seeds)  # its result is words
        if len(seeds) != expected or len(shas) != len(seeds):
            error = (f"The worker {worker_id} returned {len(shas)} image(s) for "
                     f"{len(job.seeds)}.")
            return await self.queue.finish_unsuccessfully(ticket, JobStatus.FAILED, error)
        try:
            stored = [await asyncio.to_thread(self._store, files[f"img:{i}"], sha)
                      for i, sha in enumerate(shas)]
        except (KeyError, ValueError) as exc:
            log.error("dispatcher: job %d: the result of %s is not usable: %s", ticket.id,
                      worker_id, exc)
            return await self.queue.finish_unsuccessfully(
                ticket, JobStatus.FAILED, f"The worker's result could not be used ({exc}).")
        ok = await self.queue.complete(
            ticket, list(zip([int(s) for s in seeds], stored)),
            model_revision=meta.get("revision"), run_seconds=float(meta.get("run_seconds") or 0),
            params_update=meta.get("params_update") or None)
        if ok:
            self.completed += 1
        return ok

    def _store(self, data: bytes, sha: str) -> StoredImage:
        """A PNG from a worker into the image store, if it is what it says it is."""
        from PIL import Image

        if hashlib.sha256(data).hexdigest() != sha:
            raise ValueError("an image's bytes do not match its sha256")
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.format != "PNG":
                    raise ValueError("an image is not a PNG")
                width, height = image.size
        except OSError:
            raise ValueError("an image cannot be read") from None
        digest, path = self.images.put_bytes(data)
        return StoredImage(sha256=digest, path=str(path.relative_to(self.images.root)),
                           width=width, height=height)

    async def _answer(self, worker_id: str, ticket: _Ticket, ref: str, ok: bool) -> None:
        await self.redis.xadd(control_stream(worker_id), encode(
            {"type": "answer", "ref": ref, "job": ticket.id, "ok": ok}),
            maxlen=JOBS_MAXLEN, approximate=True)

    # -- leases -------------------------------------------------------------------------

    async def _sweep(self) -> None:
        """Jobs whose lease ran out go back on the queue (or fail after max_attempts);
        handovers whose jobs were settled some other way are forgotten."""
        await asyncio.sleep(max(0.5, min(5.0, self.settings.lease_s / 4)))
        touched = await self.queue.requeue_abandoned(max_attempts=self.settings.max_attempts,
                                                     leases_only=True)
        if touched:
            self._wake.set()
        for worker_id, handover in list(self._handovers.items()):
            for job_id, token in list(handover.jobs.items()):
                job = await self.queue.get(job_id)
                if job is None or job.status is not JobStatus.RUNNING or job.claim_token != token:
                    self._settled(worker_id, job_id)


__all__ = ["Dispatcher", "PREFIX"]
