"""The optional HTTP port of the bot and of each worker: `GET /healthz` and
Prometheus `GET /metrics` (`settings.metrics_port`; 0: none).

    server, metrics = await serve_queue_health(queue, "127.0.0.1", 9100)   # the bot
    server = await serve_worker_health(worker, "127.0.0.1", 9101)          # a worker
    ...
    await server.close()    # closes its metrics too

`HealthServer` is the aiohttp app; what it reports comes from one metrics
object, which has a `CollectorRegistry` of its own (never prometheus_client's
global one, so several servers live in one process), an async `refresh()` that
reads what /metrics shows before it is rendered (the database through the
queue's own thread: nothing blocks the event loop on SQLite), an async
`health()` whose dict says `"ok"`, and `close()`.

`QueueMetrics` (the bot, or whatever process holds the queue) reports:

- `artbot_queue_jobs{status}` (gauge): jobs queued and running now;
- `artbot_jobs_total{status}` (counter): jobs that succeeded, failed or were
  canceled, ever: counted in the database, so it survives restarts;
- `artbot_time_to_result_seconds` (histogram): from submission to result, of
  the jobs that succeeded while this process watched;
- `artbot_generation_seconds{model}` (histogram): their generation time
  (the job's `run_seconds`);
- `artbot_workers_alive{kind}` (gauge; kind local or remote: a worker whose
  info says `"remote": true` is remote);
- `artbot_worker_memory_used_bytes{worker}`, `artbot_worker_memory_total_bytes{worker}`
  (gauges): each live worker's memory, as it reports it (GPU memory on CUDA).

Healthy (200) while the database answers; 503 with the reason otherwise.

`WorkerMetrics` (one worker process) reports:

- `artbot_worker_jobs_total{outcome}` (counter): the jobs it ran, by outcome;
- `artbot_worker_generation_seconds{model}` (histogram): the generator time of
  the jobs it ran that succeeded (the batch's time, for a batched call);
- `artbot_worker_running_jobs`, `artbot_worker_memory_used_bytes`,
  `artbot_worker_memory_total_bytes` (gauges; memory once the device is chosen);
- `artbot_worker_info{worker,host,pid,device,device_name,dtype}` (always 1).

Healthy while its loop has not been told to stop, and while the optional
`extra` check (for example the worker's Redis connection) says `"ok": true`.

This module imports neither discord nor torch.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterable, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from artbot.errors import UserError
from storage.jobs import Job, JobStatus
from storage.workers import LIVE_WITHIN_S
from worker.queue import JobQueue

if TYPE_CHECKING:
    from worker.runner import Worker

log = logging.getLogger(__name__)

# An async check whose dict has "ok": bool, and whatever else explains it.
Check = Callable[[], Awaitable[dict[str, Any]]]

# Histogram buckets, in seconds: a generation takes from a fraction of a second
# (a small model on a GPU) to minutes (a large one on a CPU); a result also waits
# its turn in the queue.
GENERATION_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))
RESULT_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, float("inf"))
# How long /healthz waits for the database (or an extra check) before calling it unhealthy.
CHECK_TIMEOUT_S = 5.0
# How many finished jobs QueueMetrics remembers, so a result seen twice is counted once.
REMEMBERED_RESULTS = 1000

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELED)


class Metrics(Protocol):
    """What a HealthServer serves: its registry, read after `refresh()`, and its health."""

    registry: CollectorRegistry

    async def refresh(self) -> None: ...

    async def health(self) -> dict[str, Any]: ...

    async def close(self) -> None: ...


class _Snapshot(Collector):
    """A collector that yields the metric families last made by `make` (set by refresh)."""

    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)

    def describe(self) -> Iterable[Metric]:
        return []  # the names change with the fleet; nothing to check at registration


class HealthServer:
    """`GET /healthz` (JSON; 200 healthy, 503 not) and `GET /metrics` (Prometheus's text
    format) for one metrics object, on one port."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.registry = metrics.registry
        self.app = web.Application()
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/metrics", self._metrics)
        self._runner: web.AppRunner | None = None
        self.host: str | None = None
        self.port: int | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on host:port (port 0: a free one). Returns the bound port."""
        runner = web.AppRunner(self.app, access_log=None)  # no log line per scrape
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.host = host
        self.port = int(runner.addresses[0][1])
        return self.port

    async def close(self) -> None:
        """Stop listening and close the metrics (their subscriptions and listeners)."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.metrics.close()

    async def _healthz(self, request: web.Request) -> web.Response:
        report = await checked(self.metrics.health)
        return web.json_response(report, status=200 if report["ok"] else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(self.metrics.refresh(), CHECK_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - a failed scrape, said in its answer
            log.warning("could not read the metrics: %s", exc)
            return web.Response(status=503, text=f"metrics unavailable: {describe_error(exc)}\n")
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_S:g}s"
    if isinstance(exc, UserError):  # a storage fault, already in words
        return exc.message
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


async def checked(check: Check) -> dict[str, Any]:
    """`check()`'s report, or {"ok": False, "reason": ...} when it fails or hangs."""
    try:
        report = dict(await asyncio.wait_for(check(), CHECK_TIMEOUT_S))
    except Exception as exc:  # noqa: BLE001 - unhealthy, and the reason is the answer
        return {"ok": False, "reason": describe_error(exc)}
    report["ok"] = bool(report.get("ok"))
    return report


# -- the queue's side (the bot) ------------------------------------------------------


class QueueMetrics:
    """The queue, the jobs and the fleet, from one `JobQueue` (see the module's docstring).

    `start()` subscribes to every job's events (to time the results this process
    sees); the counts are read from the database at each `refresh()`."""

    def __init__(self, queue: JobQueue, registry: CollectorRegistry | None = None, *,
                 dispatcher: Any = None):
        self.queue = queue
        # A worker.dispatcher.Dispatcher, when remote workers are served: its counts of
        # jobs handed over and results accepted or rejected, and whether Redis answers.
        self.dispatcher = dispatcher
        self.registry = registry if registry is not None else CollectorRegistry()
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        self.time_to_result = Histogram(
            "artbot_time_to_result_seconds",
            "Seconds from a job's submission to its result, of jobs that succeeded.",
            buckets=RESULT_BUCKETS, registry=self.registry)
        self.generation = Histogram(
            "artbot_generation_seconds", "Generation time of jobs that succeeded, by model.",
            ["model"], buckets=GENERATION_BUCKETS, registry=self.registry)
        self._task: asyncio.Task | None = None
        self._seen: collections.deque[int] = collections.deque(maxlen=REMEMBERED_RESULTS)

    def start(self) -> None:
        """Watch every job's events from now on (call inside the event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._watch(self.queue.subscribe()),
                                             name="artbot-queue-metrics")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _watch(self, events) -> None:
        with events:
            async for event in events:
                if event.kind != JobStatus.SUCCEEDED.value or event.job_id in self._seen:
                    continue
                self._seen.append(event.job_id)
                try:
                    job = await self.queue.get(event.job_id)
                except Exception:  # noqa: BLE001 - one missed observation, not a dead metric
                    log.warning("metrics: could not read job %d", event.job_id, exc_info=True)
                    continue
                if job is not None:
                    self.observe(job)

    def observe(self, job: Job) -> None:
        """Count a job that succeeded in the result histograms."""
        if job.finished_at is not None:
            self.time_to_result.observe(max(0.0, job.finished_at - job.created_at))
        if job.run_seconds is not None:
            self.generation.labels(model=job.model).observe(job.run_seconds)

    async def refresh(self) -> None:
        counts = await self.queue.status_counts()
        workers = await self.queue.workers(within_s=LIVE_WITHIN_S)
        families = queue_families(counts, workers)
        if self.dispatcher is not None:
            families += dispatcher_families(self.dispatcher)
        self._snapshot.families = families

    async def health(self) -> dict[str, Any]:
        try:
            counts = await self.queue.status_counts()
        except Exception as exc:  # noqa: BLE001 - the reason is the answer
            return {"ok": False, "reason": f"the database does not answer: {describe_error(exc)}"}
        report = {"ok": True, "database": "ok",
                  **{status.value: counts.get(status.value, 0) for status in ACTIVE}}
        if self.dispatcher is not None:
            # Said, but not unhealthy: without Redis the bot still answers Discord and a
            # local worker still runs jobs; remote workers' jobs wait for their leases.
            report.update(await checked(self.dispatcher.check))
            report.pop("ok", None)
            report["ok"] = True
        return report


def dispatcher_families(dispatcher: Any) -> list[Metric]:
    """The dispatcher's counts since it started: jobs handed to remote workers, results
    accepted, and results rejected because their claim had passed to another worker."""
    handed = CounterMetricFamily("artbot_remote_jobs_handed_over",
                                 "Jobs handed to remote workers since the bot started.")
    handed.add_metric([], dispatcher.handed_over)
    results = CounterMetricFamily("artbot_remote_results",
                                  "Results of remote workers since the bot started, by outcome "
                                  "(rejected: late, the job's claim had passed to another worker).",
                                  labels=["outcome"])
    results.add_metric(["accepted"], dispatcher.completed)
    results.add_metric(["rejected"], dispatcher.rejected)
    return [handed, results]


def queue_families(counts: dict[str, int], workers: list[dict[str, Any]]) -> list[Metric]:
    """The gauges and counters of the queue and the fleet, from `status_counts()` and
    `workers()` rows."""
    queued = GaugeMetricFamily("artbot_queue_jobs", "Jobs in the queue now, by status.",
                               labels=["status"])
    for status in ACTIVE:
        queued.add_metric([status.value], counts.get(status.value, 0))
    finished = CounterMetricFamily("artbot_jobs", "Jobs finished, by outcome (all time).",
                                   labels=["status"])
    for status in FINISHED:
        finished.add_metric([status.value], counts.get(status.value, 0))
    live = [row for row in workers if row.get("alive")]
    alive = GaugeMetricFamily("artbot_workers_alive", "Workers serving the queue now.",
                              labels=["kind"])
    for kind in ("local", "remote"):
        alive.add_metric([kind], sum(1 for row in live if worker_kind(row) == kind))
    used = GaugeMetricFamily("artbot_worker_memory_used_bytes",
                             "Memory each live worker uses (GPU memory on CUDA).",
                             labels=["worker"])
    total = GaugeMetricFamily("artbot_worker_memory_total_bytes",
                              "Memory each live worker's device has (GPU memory on CUDA).",
                              labels=["worker"])
    for row in live:
        info = row.get("info") or {}
        if info.get("memory_used") is not None:
            used.add_metric([row["id"]], info["memory_used"])
        if info.get("memory_total") is not None:
            total.add_metric([row["id"]], info["memory_total"])
    return [queued, finished, alive, used, total]


def worker_kind(row: dict[str, Any]) -> str:
    return "remote" if (row.get("info") or {}).get("remote") is True else "local"


async def serve_queue_health(queue: JobQueue, host: str, port: int, *,
                             dispatcher: Any = None) -> tuple[HealthServer, QueueMetrics]:
    """The bot's /healthz and /metrics, listening (port 0: a free one; `server.port`
    says which), with the remote workers' dispatcher's counts if one is given. The
    caller closes the server, which closes the metrics."""
    metrics = QueueMetrics(queue, dispatcher=dispatcher)
    metrics.start()
    server = HealthServer(metrics)
    try:
        await server.start(host, port)
    except BaseException:
        await metrics.close()
        raise
    return server, metrics


# -- a worker's side -----------------------------------------------------------------


class WorkerMetrics:
    """One worker process's jobs, device and memory (see the module's docstring)."""

    def __init__(self, worker: "Worker", registry: CollectorRegistry | None = None, *,
                 extra: Check | None = None):
        self.worker = worker
        self.extra = extra
        self.registry = registry if registry is not None else CollectorRegistry()
        self.jobs = Counter("artbot_worker_jobs", "Jobs this worker ran, by outcome.",
                            ["outcome"], registry=self.registry)
        for status in FINISHED:
            self.jobs.labels(outcome=status.value)
        self.generation = Histogram(
            "artbot_worker_generation_seconds",
            "Generator time of the jobs this worker ran that succeeded, by model.",
            ["model"], buckets=GENERATION_BUCKETS, registry=self.registry)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)
        worker.finished_listeners.append(self.finished)

    def finished(self, job: Job, status: JobStatus, run_seconds: float) -> None:
        """The worker's listener: called as each job it ran ends."""
        self.jobs.labels(outcome=status.value).inc()
        if status is JobStatus.SUCCEEDED:
            self.generation.labels(model=job.model).observe(run_seconds)

    async def refresh(self) -> None:
        self._snapshot.families = worker_families(self.worker.worker_id, self.worker.describe())

    async def health(self) -> dict[str, Any]:
        report: dict[str, Any] = {"worker": self.worker.worker_id}
        # The loop's own flag: set by stop() and shutdown(), when the loop ends.
        if self.worker._stopping.is_set():
            return {**report, "ok": False, "reason": "the worker is stopping"}
        report["ok"] = True
        if self.extra is not None:
            extra = await checked(self.extra)
            report["extra"] = extra
            if not extra["ok"]:
                report.update(ok=False, reason=extra.get("reason") or "the extra check failed")
        return report

    async def close(self) -> None:
        if self.finished in self.worker.finished_listeners:
            self.worker.finished_listeners.remove(self.finished)


def worker_families(worker_id: str, info: dict[str, Any]) -> list[Metric]:
    """The gauges of one worker, from `Worker.describe()`."""
    running = GaugeMetricFamily("artbot_worker_running_jobs", "Jobs this worker runs now.",
                                value=len(info.get("current") or ()))
    families: list[Metric] = [running]
    if info.get("memory_used") is not None:
        families.append(GaugeMetricFamily(
            "artbot_worker_memory_used_bytes",
            "Memory this worker uses (GPU memory allocated on CUDA, resident memory elsewhere).",
            value=info["memory_used"]))
    if info.get("memory_total") is not None:
        families.append(GaugeMetricFamily(
            "artbot_worker_memory_total_bytes",
            "Memory of this worker's device (the GPU's on CUDA, the machine's RAM elsewhere).",
            value=info["memory_total"]))
    labels = {"worker": worker_id, "host": str(info.get("host", "")),
              "pid": str(info.get("pid", "")), "device": str(info.get("device", "")),
              "device_name": str(info.get("device_name", "")), "dtype": str(info.get("dtype", ""))}
    about = GaugeMetricFamily("artbot_worker_info",
                              "This worker: where it runs and on what device (always 1).",
                              labels=list(labels))
    about.add_metric(list(labels.values()), 1)
    families.append(about)
    return families


async def serve_worker_health(worker: "Worker", host: str, port: int,
                              extra: Check | None = None) -> HealthServer:
    """A worker's /healthz and /metrics, listening (port 0: a free one; `server.port`
    says which). `extra`, if given, is one more async check (its dict has "ok": bool)
    that can make the worker unhealthy. The caller closes the server."""
    server = HealthServer(WorkerMetrics(worker, extra=extra))
    try:
        await server.start(host, port)
    except BaseException:
        await server.metrics.close()
        raise
    return server
