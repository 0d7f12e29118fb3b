"""Remote GPU workers through Redis: the wire, and the worker's end of it.

    artbot worker --connect redis://10.0.0.1:6379      # on the GPU machine

The bot's machine keeps the truth: the SQLite jobs table with its fair order,
quotas, leases and claim tokens. Its dispatcher (`worker.dispatcher`) claims
jobs there on a remote worker's behalf, exactly as a local worker claims them,
and hands them over through Redis; the worker runs them with the same
`worker.runner.Worker` a local one uses, and sends back progress, previews, the
PNGs and failures. The bot writes the images into its store and completes the
job with the claim token, so the answer of a worker that was presumed dead (its
lease ran out and the job was given to another) is rejected. Redis holds only
messages in flight: flushing it loses no job, because every job handed over is
still `running` in SQLite under a lease, and goes back on the queue when the
lease runs out.

Keys (all under `artbot:`), and who writes them:

    artbot:worker:<id>     string, expires  the worker: who it is, its device and memory,
                                            the models it serves and has loaded, jobs done,
                                            what it runs now. Renewed every SEEN_EVERY_S;
                                            a worker whose key expired is gone.
    artbot:jobs:<id>       stream           dispatcher -> worker: batches of jobs (one
                                            generator call each) with their input images.
                                            The worker reads it in the consumer group
                                            "worker".
    artbot:control:<id>    stream           dispatcher -> worker: cancel a job; the answer
                                            to a result (accepted or rejected).
    artbot:results         stream           workers -> dispatcher: heartbeats, progress
                                            (with previews), results, failures. The
                                            dispatcher reads it in the consumer group
                                            "dispatcher" and acknowledges each entry
                                            once it is written to SQLite.

A worker therefore needs only its own three keys and write access to the
results stream (`docs/remote-workers.md` has the ACL): it sees the parameters,
seeds and input images of its own jobs, and nothing of the Discord token, the
bot's settings, users or servers. Every message is a Redis hash of a JSON
`meta` field and binary fields for images.

Lost connections are retried with backoff (0.5 s doubling to 10 s) on both
ends; a worker keeps generating while Redis is away and delivers its result
when it is back, or the job runs again elsewhere once its lease has run out.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from artbot.config import Settings, masked_url
from storage.images import ImageStore, StoredImage
from storage.jobs import Job, JobStatus
from worker.queue import JobEvent, WorkerQueue
from worker.requests import input_images

log = logging.getLogger(__name__)

PREFIX = "artbot:"
RESULTS = PREFIX + "results"
WORKER_GROUP = "worker"  # the consumer group a worker reads its jobs stream in
DISPATCH_GROUP = "dispatcher"  # the consumer group the bot reads the results stream in
# A worker's key expires this long after its last renewal (it renews every 2 s).
WORKER_TTL_S = 8
# Longest a blocking stream read waits before it looks around (milliseconds).
BLOCK_MS = 2000
# Streams are trimmed (approximately) to this many entries.
RESULTS_MAXLEN = 10_000
JOBS_MAXLEN = 100
# A result (done, failed, requeue) is sent again if no answer came within this long.
ANSWER_WAIT_S = 10.0
# Backoff between reconnection attempts, in seconds.
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 10.0

# What a lost connection looks like, to both ends.
CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def worker_key(worker_id: str) -> str:
    return f"{PREFIX}worker:{worker_id}"


def jobs_stream(worker_id: str) -> str:
    return f"{PREFIX}jobs:{worker_id}"


def control_stream(worker_id: str) -> str:
    return f"{PREFIX}control:{worker_id}"


def new_worker_id() -> str:
    """host/pid/random: unique per process, and never read as host:pid by the local
    sweep (`storage.workers.worker_gone`), which judges only processes on its own host."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def check_worker_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 100 or any(c.isspace() or c in ":*?[]" for c in name):
        raise ValueError(f"{name!r} cannot name a worker: use letters, digits, '-', '_', '/' "
                         f"or '.', at most 100 characters")
    return name


def connect(url: str, password: str | None = None) -> aioredis.Redis:
    """A client for `url` (redis:// or rediss://). `password` (ARTBOT_REDIS_PASSWORD) is
    used when the URL has none. Connections are made when first needed."""
    return aioredis.Redis.from_url(
        url, password=password or None, decode_responses=False, socket_connect_timeout=5,
        socket_timeout=BLOCK_MS / 1000 + 10, socket_keepalive=True, health_check_interval=15)


def encode(meta: dict[str, Any], files: dict[str, bytes] | None = None) -> dict[bytes, bytes]:
    """A stream entry: the JSON `meta` field and binary fields (images)."""
    fields = {b"meta": json.dumps(meta, separators=(",", ":")).encode()}
    for name, data in (files or {}).items():
        fields[name.encode()] = data
    return fields


def decode(fields: dict[bytes, bytes]) -> tuple[dict[str, Any], dict[str, bytes]]:
    meta = json.loads(fields[b"meta"])
    if not isinstance(meta, dict):
        raise ValueError("meta is not an object")
    return meta, {k.decode(): v for k, v in fields.items() if k != b"meta"}


async def ensure_group(client: aioredis.Redis, stream: str, group: str) -> None:
    """Create the consumer group (and the stream) if missing: at the start, and again
    after Redis restarted or was flushed. It starts at the stream's beginning, so
    entries written before it existed (a worker's result sent while the bot
    reconnected) are still read."""
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def ping(client: aioredis.Redis) -> str:
    """"ok" when Redis answers within 2 s, else why not (for /healthz)."""
    try:
        await asyncio.wait_for(client.ping(), 2)
        return "ok"
    except (asyncio.TimeoutError, *CONNECTION_ERRORS, ResponseError) as exc:
        return f"unreachable ({type(exc).__name__})"


async def shut(client: aioredis.Redis, tasks: Iterable[asyncio.Task], what: str) -> None:
    """Stop the tasks (waiting at most 5 s for them) and close the client."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if tasks:
        _, stuck = await asyncio.wait(tasks, timeout=5)
        for task in stuck:
            log.warning("%s: %s did not stop: %s", what, task.get_name(), task.get_stack())
    try:
        await client.aclose()
    except CONNECTION_ERRORS:
        pass


class Backoff:
    """Waits between reconnection attempts: 0.5 s, doubling to 10 s; reset on success.
    Logs the first failure of a run of them, and the recovery."""

    def __init__(self, what: str):
        self.what = what
        self.delay = BACKOFF_FIRST_S
        self.failing = False

    async def failed(self, exc: BaseException) -> None:
        if not self.failing:
            log.warning("%s: lost the connection to Redis (%s); retrying with backoff",
                        self.what, type(exc).__name__)
            self.failing = True
        await asyncio.sleep(self.delay)
        self.delay = min(self.delay * 2, BACKOFF_MAX_S)

    def succeeded(self) -> None:
        if self.failing:
            log.info("%s: connected to Redis again", self.what)
        self.failing = False
        self.delay = BACKOFF_FIRST_S


def served_models(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """The model names a remote worker announces: the ones given (`--models`), else
    every name in its own catalogue, the bundled models and its default model."""
    if names:
        return sorted({n.strip() for n in names if n.strip()})
    from generators.bundled import available

    return sorted(set(settings.models) | set(available()) |
                  {settings.model_name(settings.default_model)})


class RedisWorkerQueue(WorkerQueue):
    """The queue as a remote worker sees it: batches handed over by the dispatcher,
    and results sent back, all through Redis.

    `claim` returns the next batch that arrived (its input images already written to
    this worker's scratch store); `heartbeat`, `publish` (progress and previews),
    `complete`, `finish_unsuccessfully` and `requeue` become messages on the results
    stream. A result waits for the dispatcher's answer, which says whether the job's
    claim was still this worker's: that is how a late result is known to be rejected.
    """

    def __init__(self, url: str, *, worker_id: str, images: ImageStore, settings: Settings,
                 serves: list[str], password: str | None = None):
        self.url = url
        self.worker_id = worker_id
        self.images = images
        self.settings = settings
        self.serves = serves
        self.redis = connect(url, password)
        self._batches: asyncio.Queue[list[Job]] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._answers: dict[str, asyncio.Future] = {}
        self._canceled: set[str] = set()  # claim tokens the dispatcher said to stop
        self._tokens: dict[int, str] = {}  # job id -> claim token, of jobs received
        self._inputs: dict[int, list[Path]] = {}  # job id -> its input files in scratch
        self._scratch: set[Path] = set()  # files of finished jobs, removed at the next claim
        self._tasks: list[asyncio.Task] = []
        self._sends: set[asyncio.Task] = set()
        self.connected = False
        # Called with a job id when the dispatcher cancels it (Worker.cancel_local), so a
        # cancel stops the job at its next step rather than at its next heartbeat.
        self.on_cancel: Callable[[int], Any] | None = None

    async def open(self) -> "RedisWorkerQueue":
        log.info("worker %s: connecting to %s", self.worker_id, masked_url(self.url))
        self._tasks = [asyncio.create_task(self._read_jobs(), name="artbot-remote-jobs"),
                       asyncio.create_task(self._read_control(), name="artbot-remote-control")]
        return self

    async def close(self) -> None:
        await shut(self.redis, self._tasks + list(self._sends), f"worker {self.worker_id}")

    async def check(self) -> dict[str, Any]:
        """For /healthz: whether Redis answers now."""
        state = await ping(self.redis)
        return {"ok": state == "ok", "redis": state}

    # -- receiving ----------------------------------------------------------------

    async def _read_jobs(self) -> None:
        stream = jobs_stream(self.worker_id)
        backoff = Backoff(f"worker {self.worker_id}")
        while True:
            try:
                await ensure_group(self.redis, stream, WORKER_GROUP)
                while True:
                    reply = await self.redis.xreadgroup(
                        WORKER_GROUP, self.worker_id, {stream: ">"}, count=1, block=BLOCK_MS)
                    self.connected = True
                    backoff.succeeded()
                    for _name, entries in reply or []:
                        for entry_id, fields in entries:
                            await self._receive(fields)
                            await self.redis.xack(stream, WORKER_GROUP, entry_id)
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):  # Redis lost the group: make it again
                    log.warning("worker %s: Redis said %s", self.worker_id, exc)
                    await asyncio.sleep(BACKOFF_FIRST_S)
            except CONNECTION_ERRORS as exc:
                self.connected = False
                await backoff.failed(exc)

    async def _receive(self, fields: dict[bytes, bytes]) -> None:
        """A batch from the dispatcher: its input images into the scratch store, its jobs
        on the list `claim` takes from. An entry that cannot be read is logged and
        dropped (its jobs' leases run out on the bot's side)."""
        try:
            meta, files = decode(fields)
            jobs = []
            for spec in meta["jobs"]:
                job = Job(
                    id=int(spec["id"]), user_id="", server_id=None, channel_id=None,
                    source="remote", kind=spec["kind"], family=spec["family"],
                    model=self.settings.resolve_model(spec["model"]), model_revision=None,
                    params=dict(spec["params"]), seeds=[int(s) for s in spec["seeds"]],
                    batch_key="", status=JobStatus.RUNNING, attempts=int(spec["attempts"]),
                    claim_token=str(spec["token"]), worker_id=self.worker_id, lease_until=None,
                    cancel_requested=False, progress_step=None, progress_total=None, error=None,
                    created_at=0.0, started_at=time.time(), finished_at=None, run_seconds=None,
                    parent_id=None, message_id=None)
                inputs = []
                for sha in input_images(job.params):
                    if sha:
                        data = files[f"in:{sha}"]
                        if hashlib.sha256(data).hexdigest() != sha:
                            raise ValueError(f"input image of job {job.id} does not match its sha256")
                        _, path = await asyncio.to_thread(self.images.put_bytes, data)
                        inputs.append(path)
                self._tokens[job.id] = job.claim_token
                self._inputs[job.id] = inputs
                jobs.append(job)
        except (KeyError, TypeError, ValueError) as exc:
            log.error("worker %s: dropped a batch it could not read (%s)", self.worker_id, exc)
            return
        log.info("worker %s: received job(s) %s", self.worker_id,
                 ", ".join(str(job.id) for job in jobs))
        await self._batches.put(jobs)
        self._arrived.set()

    async def _read_control(self) -> None:
        stream = control_stream(self.worker_id)
        last = "0-0"
        backoff = Backoff(f"worker {self.worker_id} (control)")
        while True:
            try:
                reply = await self.redis.xread({stream: last}, count=100, block=BLOCK_MS)
                backoff.succeeded()
                for _name, entries in reply or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        self._control(fields)
            except asyncio.CancelledError:
                raise
            except CONNECTION_ERRORS as exc:
                last = "0-0"  # a restarted Redis numbers its entries afresh
                await backoff.failed(exc)
            except ResponseError as exc:
                log.warning("worker %s: Redis said %s", self.worker_id, exc)
                await asyncio.sleep(BACKOFF_FIRST_S)

    def _control(self, fields: dict[bytes, bytes]) -> None:
        try:
            meta, _ = decode(fields)
        except (KeyError, ValueError):
            return
        if meta.get("type") == "cancel":
            token = str(meta.get("token"))
            job_id = int(meta.get("job", 0))
            if self._tokens.get(job_id) == token and token not in self._canceled:
                self._canceled.add(token)
                log.info("worker %s: job %d is to stop (%s)", self.worker_id, job_id,
                         meta.get("why", "canceled"))
                if self.on_cancel is not None:
                    self.on_cancel(job_id)
        elif meta.get("type") == "answer":
            future = self._answers.get(str(meta.get("ref")))
            if future is not None and not future.done():
                future.set_result(bool(meta.get("ok")))

    # -- the worker's side of the queue ----------------------------------------------

    def publish(self, event: JobEvent) -> None:
        if event.kind != "progress" or event.job_id not in self._tokens:
            return
        files = {"preview": event.preview} if event.preview else None
        self._send_soon(self._message("progress", event.job_id, step=event.step,
                                      total=event.total), files)

    async def wait_for_work(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except asyncio.TimeoutError:
            pass
        if self._batches.empty():
            self._arrived.clear()

    async def worker_seen(self, worker_id, models=None, info=None) -> None:
        about = dict(info or {})
        about.update(id=self.worker_id, remote=True, serves=self.serves, seen_at=time.time(),
                     loaded_names=sorted({self.settings.model_name(m) for m in models or []}))
        try:
            await self.redis.set(worker_key(self.worker_id), json.dumps(about), ex=WORKER_TTL_S)
        except CONNECTION_ERRORS:
            # Not there yet (or gone): the worker starts anyway and says so every 2 s,
            # while its readers reconnect with backoff.
            self.connected = False
            log.warning("worker %s: Redis does not answer at %s yet; retrying",
                        self.worker_id, masked_url(self.url))
            return
        self.connected = True

    async def worker_gone(self, worker_id) -> None:
        try:
            await self.redis.delete(worker_key(self.worker_id))
            await self._xadd(self._message("gone", None))
        except CONNECTION_ERRORS:
            pass

    async def claim(self, worker_id, *, lease_s, max_jobs=1, max_images=None, models=None):
        """The next batch the dispatcher handed over, or [] (never waits). The scratch
        files of the jobs finished before are removed first."""
        waiting = {path for batch in list(self._batches._queue) for job in batch  # noqa: SLF001
                   for path in self._inputs.get(job.id, [])}
        for path in self._scratch - waiting:
            path.unlink(missing_ok=True)
        self._scratch &= waiting
        try:
            jobs = self._batches.get_nowait()
        except asyncio.QueueEmpty:
            return []
        return jobs

    async def heartbeat(self, job, *, lease_s, step, total):
        """Tell the dispatcher the job is alive (it renews the lease in SQLite). While
        Redis is away the job goes on: its result is delivered when Redis is back, or
        rejected if the lease ran out and the job was given to another worker."""
        self._send_soon(self._message("beat", job.id, step=step, total=total))
        return True, job.claim_token in self._canceled

    async def complete(self, job, images: Sequence[tuple[int, StoredImage]], *, model_revision,
                       run_seconds, params_update=None) -> bool:
        files, shas = {}, []
        for i, (_seed, image) in enumerate(images):
            path = self.images.root / image.path
            files[f"img:{i}"] = await asyncio.to_thread(path.read_bytes)
            shas.append(image.sha256)
            self._scratch.add(path)
        self._finished(job)
        return await self._deliver(self._message(
            "done", job.id, seeds=[seed for seed, _ in images], shas=shas,
            revision=model_revision, run_seconds=run_seconds, params_update=params_update or {}),
            files)

    async def finish_unsuccessfully(self, job, status, error) -> bool:
        self._finished(job)
        return await self._deliver(self._message("failed", job.id, status=status.value,
                                                 error=error))

    async def requeue(self, job) -> bool:
        """A worker that stops hands its running job back at once (the bot puts it
        back on the queue) instead of leaving it to its lease."""
        self._finished(job)
        return await self._deliver(self._message("requeue", job.id), deadline_s=3.0)

    async def requeue_abandoned(self, *, max_attempts, held_tokens=(), leases_only=False):
        return []  # the bot's dispatcher judges abandoned jobs, in SQLite

    # -- sending ----------------------------------------------------------------------

    def _finished(self, job: Job) -> None:
        self._scratch.update(self._inputs.pop(job.id, []))

    def _message(self, kind: str, job_id: int | None, **fields) -> dict[str, Any]:
        meta = {"type": kind, "worker": self.worker_id, **fields}
        if job_id is not None:
            meta.update(job=job_id, token=self._tokens.get(job_id))
        return meta

    async def _xadd(self, meta: dict[str, Any], files: dict[str, bytes] | None = None) -> None:
        await self.redis.xadd(RESULTS, encode(meta, files), maxlen=RESULTS_MAXLEN,
                              approximate=True)

    def _send_soon(self, meta: dict[str, Any], files: dict[str, bytes] | None = None) -> None:
        """Send without waiting (heartbeats, progress); dropped if Redis is away."""
        async def send() -> None:
            try:
                await self._xadd(meta, files)
            except CONNECTION_ERRORS:
                pass

        task = asyncio.get_running_loop().create_task(send())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _deliver(self, meta: dict[str, Any], files: dict[str, bytes] | None = None, *,
                       deadline_s: float | None = None) -> bool:
        """Send a result until the dispatcher answers (sent again every ANSWER_WAIT_S, and
        through lost connections, for as long as the job's lease could still hold it);
        the answer says whether it was accepted."""
        ref = meta["ref"] = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self._answers[ref] = future
        give_up = time.monotonic() + (deadline_s or max(60.0, 2 * self.settings.lease_s))
        backoff = Backoff(f"worker {self.worker_id} (results)")
        try:
            while time.monotonic() < give_up:
                try:
                    await self._xadd(meta, files)
                    backoff.succeeded()
                except CONNECTION_ERRORS as exc:
                    await backoff.failed(exc)
                    continue
                try:
                    ok = await asyncio.wait_for(asyncio.shield(future),
                                                min(ANSWER_WAIT_S, give_up - time.monotonic()))
                except asyncio.TimeoutError:
                    continue
                if not ok:
                    log.warning("worker %s: the bot rejected the %s of job %s: its claim had "
                                "passed to another worker", self.worker_id, meta["type"],
                                meta.get("job"))
                return ok
            log.warning("worker %s: no answer about job %s; the bot will run it again when "
                        "its lease runs out", self.worker_id, meta.get("job"))
            return False
        finally:
            self._answers.pop(ref, None)


async def serve_remote(settings: Settings, url: str, *, name: str | None = None,
                       serves: Iterable[str] | None = None, loader=None,
                       warm_up: bool = True, started: Callable[[Any, Any], Awaitable[None]]
                       | None = None, stop: asyncio.Event | None = None) -> int:
    """`artbot worker --connect URL`: serve the bot's queue through Redis until `stop`
    is set (SIGTERM, Ctrl-C). A job running then goes back to the bot's queue at once.
    Returns the number of jobs run. `started(worker, queue)` is awaited once both
    exist (the command starts its health port there)."""
    from worker.runner import Worker

    worker_id = check_worker_name(name) if name else new_worker_id()
    scratch = ImageStore(Path(settings.data_dir) / "remote-scratch")
    queue = RedisWorkerQueue(url, worker_id=worker_id, images=scratch, settings=settings,
                             serves=served_models(settings, serves),
                             password=settings.redis_password)
    await queue.open()
    worker = Worker(queue, scratch, settings, loader=loader, worker_id=worker_id)
    queue.on_cancel = worker.cancel_local
    stop = stop or asyncio.Event()
    try:
        if started is not None:
            await started(worker, queue)
        log.info("worker %s serves %s", worker_id, ", ".join(queue.serves))
        if warm_up:
            default = settings.model_name(settings.default_model)
            if default in queue.serves:
                from generators.bundled import family_of

                model = settings.resolve_model(settings.default_model)
                asyncio.create_task(worker.warm_up(family_of(model), model))
        running = asyncio.create_task(worker.run())
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({running, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await worker.shutdown()  # hands the running job back
            await asyncio.wait({running}, timeout=10)
        stopper.cancel()
        return running.result() if running.done() and not running.cancelled() else worker.jobs_done
    finally:
        await queue.close()
