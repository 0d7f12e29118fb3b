"""The worker: owns the device, keeps models loaded, runs jobs in batches.

    worker = Worker(queue, ImageStore(settings.image_dir), settings)
    await worker.run()              # until stop() is called
    await worker.run(burst=True)    # drain the queue, then return (CLI, tests)

Life of a job here: claim it, with the jobs after it in the fair order that can
share its generator call (the same batch key, up to `max_batch_images` images)
→ load their model, or reuse the loaded one → run the generator on the device
thread, one call for the batch, reporting each job's progress (step k of n, a
preview of the image forming) and checking each job's cancel and time limit at
every step → store the images in the content-addressed store → mark each job
succeeded, failed or canceled, in one transaction that only the claim holder
can make. If the process dies instead, the job stays `running` under a dead
worker id; the next worker to start (or any worker, once the lease runs out)
puts it back on the queue, so every job finishes exactly once.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import io
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from artbot.config import Settings
from artbot.errors import StorageFault, UserError
from generators.base import GenerationRequest, GenerationResult, Generator, Task
from storage.faults import can_write
from storage.images import ImageStore, StoredImage
from storage.jobs import Job, JobStatus, this_worker_id
from worker.loras import lora_path
from worker.provenance import c2pa_signature, png_marks
from worker.queue import JobEvent, WorkerQueue

log = logging.getLogger(__name__)

# How often a running worker says it is alive (`JobQueue.worker_seen`), in seconds.
SEEN_EVERY_S = 2.0
# At most one preview of the image forming per job this often, in seconds: Discord
# shows at most one edit per 1.5 s of a message (bot.delivery.EDIT_INTERVAL).
PREVIEW_EVERY_S = 1.5
# Previews are JPEGs no larger than this on their longer side, in pixels.
PREVIEW_SIDE = 256

# After a storage fault (disk full, read-only, database locked) the worker waits before
# its next claim: this long at first, doubling up to STORAGE_PAUSE_MAX_S, so that a full
# disk does not turn every queued job into a failure in seconds.
STORAGE_PAUSE_S = 2.0
STORAGE_PAUSE_MAX_S = 60.0

# (family, model, device, dtype) -> Generator
GeneratorLoader = Callable[[str, str, Any, Any], Generator]


class JobCanceled(Exception):
    """Raised inside the generator's progress callback to stop a call whose jobs were
    all canceled or ran out of time."""


@dataclass
class _Running:
    job: Job
    deadline: float
    cancel: threading.Event = field(default_factory=threading.Event)
    step: int | None = None
    total: int | None = None
    last_preview: float = 0.0  # time.monotonic() of the last preview shown
    # Canceled or out of time while its batch runs on: its images will be dropped, and
    # `finishing` (on the event loop) records why.
    dropped: bool = False
    dropped_as: JobStatus | None = None
    finishing: concurrent.futures.Future | None = None


def _default_loader(family: str, model: str, device, dtype, **options) -> Generator:
    from generators.registry import load_generator

    return load_generator(family, model, device, dtype, **options)


class Worker:
    def __init__(
        self,
        queue: WorkerQueue,
        images: ImageStore,
        settings: Settings,
        *,
        loader: GeneratorLoader | None = None,
        worker_id: str | None = None,
        heartbeat_s: float = 0.5,
        idle_poll_s: float = 1.0,
    ):
        self.queue = queue
        self.images = images
        self.settings = settings
        self.loader = loader or _default_loader
        self.worker_id = worker_id or this_worker_id()
        self.heartbeat_s = heartbeat_s
        self.idle_poll_s = idle_poll_s
        # One thread owns the device: model loading and generation run there, in order.
        self._device_thread = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="artbot-device"
        )
        # Loaded models, least recently used first, and the bytes each one's weights take.
        self._models: collections.OrderedDict[tuple[str, str], Generator] = collections.OrderedDict()
        self._model_bytes: dict[tuple[str, str], int] = {}
        self._running: dict[int, _Running] = {}
        # Most images one generator call makes: the operator's max_batch_images, lowered
        # for the rest of this worker's life when the device runs out of memory.
        self.batch_images = max(1, settings.max_batch_images)
        self._stopping = asyncio.Event()
        self._burst = False
        # Seconds to wait before the next claim after a storage fault; 0 while storage works.
        self._storage_pause = 0.0
        self._device = None
        self._dtype = None
        self.jobs_done = 0
        self.started_at = time.time()
        # Called as listener(job, status, run_seconds) when each job this worker ran
        # ends here (its metrics: worker.health).
        self.finished_listeners: list[Callable[[Job, JobStatus, float], None]] = []

    # -- device and models ------------------------------------------------------

    def _device_and_dtype(self):
        if self._device is None:
            from generators.device import pick_device, pick_dtype

            self._device = pick_device(self.settings.device)
            self._dtype = pick_dtype(self.settings.dtype, self._device)
            log.info("worker %s uses %s (%s)", self.worker_id, self._device, self._dtype)
        return self._device, self._dtype

    def memory_budget(self) -> int:
        """Bytes of model weights this worker keeps loaded: the operator's
        model_memory_gb, else 90% of the GPU's memory on CUDA, half the RAM elsewhere."""
        if self.settings.model_memory_gb > 0:
            return int(self.settings.model_memory_gb * 1e9)
        device, _ = self._device_and_dtype()
        if device.type == "cuda":
            import torch

            return int(torch.cuda.get_device_properties(device).total_memory * 0.9)
        import psutil

        return int(psutil.virtual_memory().total * 0.5)

    def _generator_for(self, family: str, model: str) -> Generator:
        """The loaded generator for (family, model), loading it if needed (device thread).

        Models stay loaded while their weights fit the memory budget, least recently
        used out first: room is made before loading, from what the model's files say it
        needs, and again afterwards, from what it really takes."""
        key = (family, model)
        gen = self._models.get(key)
        if gen is not None:
            self._models.move_to_end(key)
            return gen
        device, dtype = self._device_and_dtype()
        budget = self.memory_budget()
        from worker.catalogue import parameter_count

        params = parameter_count(model) if family in ("diffusion",) else None
        expected = (params or 0) * getattr(dtype, "itemsize", 4)  # before it is loaded
        self._make_room(budget - expected, keep=None, why=f"to load {model}")
        while len(self._models) >= max(1, self.settings.max_loaded_models):
            self._unload_oldest(f"to load {model} (max_loaded_models)")
        started = time.monotonic()
        entry = self.settings.model_entry(model) if family == "diffusion" else None
        options = {k: v for k, v in (("config", entry and entry.config),
                                     ("arch", entry and entry.arch),
                                     ("preview_vae", entry and entry.preview_vae),
                                     ("speed", entry and entry.speed_switches(
                                         self.settings.exact_batches))) if v}
        if family == "diffusion" and self.settings.allow_cpu_offload:
            options["allow_offload"] = True
        gen = self.loader(family, model, device, dtype, **options)
        gen.exact = self.settings.exact_batches
        self._models[key] = gen
        self._model_bytes[key] = gen.memory_bytes()
        log.info("loaded %s model %s in %.1fs (%.2f GB of weights; budget %.2f GB)", family,
                 model, time.monotonic() - started, self._model_bytes[key] / 1e9, budget / 1e9)
        self._make_room(budget, keep=key, why=f"after loading {model}")
        return gen

    def _make_room(self, budget: int, *, keep, why: str) -> None:
        """Unload the least recently used models until the loaded ones fit `budget`."""
        while sum(self._model_bytes.get(k, 0) for k in self._models) > budget and \
                any(k != keep for k in self._models):
            self._unload_oldest(why, keep=keep)

    def _unload_oldest(self, why: str, keep=None) -> None:
        old_key = next(k for k in self._models if k != keep)
        self._models.pop(old_key)
        freed = self._model_bytes.pop(old_key, 0)
        log.info("unloaded model %s (%.2f GB) %s", old_key[1], freed / 1e9, why)
        self._free_device_memory()

    def _free_device_memory(self) -> None:
        from generators.device import free_memory

        free_memory(self._device)

    async def warm_up(self, family: str, model: str) -> bool:
        """Load a model before any job asks for it. A failure is logged, not raised."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._device_thread, self._generator_for, family, model)
            return True
        except UserError as exc:
            log.warning("could not load the default model at start: %s", exc.message)
        except Exception:  # noqa: BLE001
            log.exception("could not load the default model %s at start", model)
        return False

    # -- the loop -------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop after the current job (see also `shutdown`)."""
        self._stopping.set()

    async def run(self, *, burst: bool = False) -> int:
        """Run jobs until `stop()` (or, with burst, until the queue is empty). Returns jobs run.

        A storage fault (`StorageFault`: disk full, read-only, database locked) ends a
        burst run with that fault; a long-running worker says it once, pauses and tries
        again, and its running jobs go back on the queue when their results cannot be
        recorded (`_settle`)."""
        self._burst = burst
        done = 0
        await self.queue.requeue_abandoned(max_attempts=self.settings.max_attempts)
        last_sweep = time.monotonic()
        # Front doors (the CLI) look there to see whether anyone will run what they queue.
        await self.queue.worker_seen(self.worker_id, self.loaded_models(), self.describe())
        alive = asyncio.create_task(self._say_alive())
        try:
            while not self._stopping.is_set():
                if self._storage_pause:
                    await self._pause_for_storage()
                    continue
                try:
                    jobs = await self.queue.claim(self.worker_id, lease_s=self.settings.lease_s,
                                                  max_jobs=self.batch_images,
                                                  max_images=self.batch_images)
                except StorageFault as fault:
                    if burst:
                        raise
                    self._storage_fault(fault)
                    continue
                if not jobs:
                    if burst:
                        break
                    await self.queue.wait_for_work(self.idle_poll_s)
                    if time.monotonic() - last_sweep > self.settings.lease_s / 2:
                        await self.queue.requeue_abandoned(
                            max_attempts=self.settings.max_attempts,
                            held_tokens=[r.job.claim_token for r in self._running.values()],
                        )
                        last_sweep = time.monotonic()
                    continue
                try:
                    await self.run_jobs(jobs)
                except StorageFault as fault:
                    if burst:
                        raise
                    # Jobs whose end could not be recorded keep their lease until it runs
                    # out; this worker's sweep (or the next one's) puts them back.
                    self._storage_fault(fault)
                    continue
                done += len(jobs)
                self.jobs_done += len(jobs)
        finally:
            alive.cancel()
            try:
                await self.queue.worker_gone(self.worker_id)
            except StorageFault as fault:  # the fault already being raised says it
                log.warning("worker %s could not sign off: %s", self.worker_id, fault.message)
        return done

    def _storage_fault(self, fault: StorageFault) -> None:
        """Note a storage fault: said once per streak (not once a second), then a pause."""
        if not self._storage_pause:
            log.error("storage fault, jobs paused: %s", fault.message)
        self._storage_pause = min(STORAGE_PAUSE_MAX_S,
                                  max(STORAGE_PAUSE_S, self._storage_pause * 2))

    async def _pause_for_storage(self) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=self._storage_pause)
        except asyncio.TimeoutError:
            pass
        try:
            await self.queue.worker_seen(self.worker_id, self.loaded_models(), self.describe())
        except StorageFault:
            self._storage_pause = min(STORAGE_PAUSE_MAX_S, self._storage_pause * 2)
            return
        if not await asyncio.to_thread(can_write, self.images.root):
            self._storage_pause = min(STORAGE_PAUSE_MAX_S, self._storage_pause * 2)
            return
        log.warning("storage answers again; jobs resume")
        self._storage_pause = 0.0

    def loaded_models(self) -> list[str]:
        """The model references this worker holds in memory (for `artbot models`)."""
        return [model for _family, model in self._models]

    def describe(self) -> dict[str, Any]:
        """What this worker says of itself to the fleet (`artbot workers`, `/stats`,
        /metrics): where it runs, its device and memory, how many images it takes in one
        call, jobs done and the jobs it runs now. The device is named once it is chosen
        (at the first model load), so that describing never waits for torch to import."""
        info: dict[str, Any] = {
            "host": socket.gethostname(), "pid": os.getpid(), "started_at": self.started_at,
            "capacity": self.batch_images, "jobs_done": self.jobs_done,
            "current": sorted(self._running), "loaded": self.loaded_models(),
        }
        if self._device is not None:
            from generators.device import memory_report

            info.update(device=str(self._device), dtype=str(self._dtype).replace("torch.", ""),
                        **memory_report(self._device))
        return info

    async def _say_alive(self) -> None:
        """Renew this worker's entry in the queue's list of workers, busy or idle."""
        while True:
            await asyncio.sleep(SEEN_EVERY_S)
            try:
                await self.queue.worker_seen(self.worker_id, self.loaded_models(),
                                             self.describe())
            except Exception:  # noqa: BLE001 - a missed beat only makes the CLI run jobs itself
                log.warning("worker %s could not renew its entry", self.worker_id, exc_info=True)

    async def shutdown(self) -> None:
        """Stop: jobs still running are put back on the queue for the next start."""
        self.stop()
        for running in list(self._running.values()):
            running.cancel.set()
            await self.queue.requeue(running.job)
        self._device_thread.shutdown(wait=False, cancel_futures=True)

    def cancel_local(self, job_id: int) -> bool:
        """Stop a job running here at its next step (the database flag does the same, slower)."""
        running = self._running.get(job_id)
        if running is None:
            return False
        running.cancel.set()
        return True

    # -- jobs -------------------------------------------------------------------

    async def run_job(self, job: Job) -> JobStatus:
        return (await self.run_jobs([job]))[0]

    async def run_jobs(self, jobs: list[Job]) -> list[JobStatus]:
        """Run jobs that share a batch key (one claim) as one generator call.

        Each job keeps its own life: its heartbeat and lease, its progress events and
        previews, its cancel and its time limit (a job canceled or out of time while
        the others run is finished at once and its images are dropped when the call
        ends), and its own completion. A failure of the batch is retried job by job,
        so it fails only the jobs that fail alone. Returns each job's status."""
        loop = asyncio.get_running_loop()
        runs = [_Running(job=job, deadline=time.monotonic() + self.settings.job_timeout_s)
                for job in jobs]
        for running in runs:
            self._running[running.job.id] = running
        beats = [asyncio.create_task(self._heartbeat(running)) for running in runs]
        started = time.monotonic()
        statuses: dict[int, JobStatus] = {}
        try:
            requests: list[GenerationRequest | None] = []
            for running in runs:
                try:
                    requests.append(self._request_for(running.job))
                except Exception as exc:  # noqa: BLE001 - this job cannot start; the rest can
                    requests.append(None)
                    statuses[running.job.id] = await self._fail(running.job, exc)
            live = [(r, q) for r, q in zip(runs, requests) if q is not None]
            if live:
                outcomes, revision = await loop.run_in_executor(
                    self._device_thread, self._generate, [r for r, _ in live],
                    [q for _, q in live], self._progress_for([r for r, _ in live], loop))
                for running, _ in live:
                    statuses[running.job.id] = await self._settle(
                        running, outcomes.get(running.job.id), revision,
                        time.monotonic() - started)
        except StorageFault:
            raise  # results that could not be recorded, in a burst run: the caller says it
        except Exception as exc:  # noqa: BLE001 - the model would not load: every job fails
            for running in runs:
                if running.job.id not in statuses:
                    statuses[running.job.id] = await self._settle(
                        running, exc, None, time.monotonic() - started)
        finally:
            for beat in beats:
                beat.cancel()
            for running in runs:
                self._running.pop(running.job.id, None)
        elapsed = time.monotonic() - started
        for job in jobs:
            for listener in self.finished_listeners:
                try:
                    listener(job, statuses[job.id], elapsed)
                except Exception:  # noqa: BLE001 - a metric must not stop the worker
                    log.warning("a finished-job listener failed", exc_info=True)
        return [statuses[job.id] for job in jobs]

    def _progress_for(self, runs: list[_Running], loop):
        """The batch's progress callback (device thread): every job of the call gets
        its step and, at most every PREVIEW_EVERY_S, a preview; a job canceled or past
        its time limit is dropped from the batch and finished at once. Raises
        JobCanceled when every job of the current call is dropped, to stop it."""
        def drop(running: _Running, status: JobStatus, error: str) -> None:
            running.dropped, running.dropped_as = True, status
            if self._stopping.is_set():
                return  # shutdown put it back on the queue
            running.finishing = asyncio.run_coroutine_threadsafe(
                self.queue.finish_unsuccessfully(running.job, status, error), loop)

        def progress(step: int, total: int, preview=None, requests=None) -> None:
            now = time.monotonic()
            for running in runs:
                if running.dropped:
                    continue
                if running.cancel.is_set():
                    drop(running, JobStatus.CANCELED, "Canceled.")
                elif now > running.deadline:
                    limit = int(self.settings.job_timeout_s)
                    drop(running, JobStatus.FAILED,
                         f"Stopped: it ran longer than the {limit} s time limit.")
            in_call = runs if requests is None else [runs[i] for i in requests]
            if all(running.dropped for running in in_call):
                raise JobCanceled()
            index = 0  # of the running job's first image, in this call
            for running in in_call:
                if not running.dropped:
                    running.step, running.total = step, total
                    event = JobEvent(running.job.id, "progress", step=step, total=total,
                                     preview=self._preview_of(running, preview, index, step, total))
                    loop.call_soon_threadsafe(self.queue.publish, event)
                index += len(running.job.seeds)

        return progress

    async def _conclude(self, running: _Running, outcome, revision: str | None,
                        run_seconds: float) -> JobStatus:
        """Record how one job of a batch ended: its images, or why it has none."""
        job = running.job
        if running.dropped or (running.cancel.is_set() and self._stopping.is_set()):
            if running.finishing is not None:
                finished = await asyncio.wrap_future(running.finishing)
                # Not finished by us: the claim had been taken over, and the job is the
                # new holder's (a remote worker's queue cannot read the job to say more).
                return running.dropped_as if finished else JobStatus.RUNNING
            return JobStatus.QUEUED  # shutdown put it back; its result is dropped
        if isinstance(outcome, tuple):
            result, stored = outcome
            await self.queue.complete(job, list(zip(result.seeds or job.seeds, stored)),
                                      model_revision=revision, run_seconds=run_seconds,
                                      params_update=_with_job_notes(job, result.params) or None)
            return JobStatus.SUCCEEDED
        return await self._fail(job, outcome)

    async def _settle(self, running: _Running, outcome, revision: str | None,
                      run_seconds: float) -> JobStatus:
        """`_conclude`, and when the database cannot take the outcome (full, read-only,
        locked), the job goes back on the queue instead of staying `running`: at once if
        that write goes through, else after pauses until it does. A burst run (the CLI)
        gives up at the first fault and raises it; its job's lease then runs out and the
        next worker puts it back."""
        try:
            return await self._conclude(running, outcome, revision, run_seconds)
        except StorageFault as fault:
            log.error("job %d: its outcome could not be recorded: %s", running.job.id,
                      fault.message)
            self._storage_fault(fault)
            while True:
                try:
                    await self.queue.requeue(running.job)
                    log.warning("job %d is back on the queue", running.job.id)
                    return JobStatus.QUEUED
                except StorageFault:
                    if self._burst or self._stopping.is_set():
                        raise fault from None
                    await asyncio.sleep(self._storage_pause)
                    self._storage_fault(fault)

    async def _fail(self, job: Job, exc: BaseException | None) -> JobStatus:
        if isinstance(exc, StorageFault):
            # Its images could not be written (disk full, read-only). The member reads
            # the short reason; the operator's log has the whole fault.
            log.error("job %d: %s", job.id, exc.message)
            self._storage_fault(exc)
            message = (f"The result could not be saved: {exc.reason}. Nothing else was lost; "
                       f"run it again once the operator has fixed that.")
        elif isinstance(exc, UserError):
            message = exc.message
        else:
            if exc is not None:
                log.error("job %d failed with an internal error", job.id,
                          exc_info=(type(exc), exc, exc.__traceback__))
            message = (f"Something went wrong on our side (job {job.id}); the operator's "
                       f"log has the details.")
        await self.queue.finish_unsuccessfully(job, JobStatus.FAILED, message)
        return JobStatus.FAILED

    async def _heartbeat(self, running: _Running) -> None:
        """Renew the lease, save progress, and pick up cancel requests from the database."""
        try:
            while True:
                await asyncio.sleep(self.heartbeat_s)
                ours, cancel = await self.queue.heartbeat(
                    running.job, lease_s=self.settings.lease_s, step=running.step, total=running.total
                )
                if cancel or not ours:
                    running.cancel.set()
        except asyncio.CancelledError:
            pass

    def _preview_of(self, running: _Running, preview, index: int, step: int,
                    total: int) -> bytes | None:
        """A small JPEG of image `index` of the call as it stands, if the generator offers
        one, the job has not had one for PREVIEW_EVERY_S, and it is not the last step
        (the result itself follows). Device thread; a failed preview is logged, not raised."""
        now = time.monotonic()
        if preview is None or step >= total or now - running.last_preview < PREVIEW_EVERY_S:
            return None
        running.last_preview = now
        try:
            image = preview(index).convert("RGB")
            image.thumbnail((PREVIEW_SIDE, PREVIEW_SIDE))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=80)
            return out.getvalue()
        except Exception:  # noqa: BLE001 - a preview is a nicety; the job goes on
            log.warning("job %d: could not make a preview", running.job.id, exc_info=True)
            return None

    def _request_for(self, job: Job) -> GenerationRequest:
        p = job.params
        init = None
        if p.get("init_image"):
            init = self.images.open(str(self.images.by_sha(p["init_image"]).relative_to(self.images.root)))
        style = None
        if p.get("style_image"):
            style = self.images.open(str(self.images.by_sha(p["style_image"]).relative_to(self.images.root)))
        blended = [self.images.open(str(self.images.by_sha(sha).relative_to(self.images.root)))
                   for sha in p.get("images", [])]
        return GenerationRequest(
            task=Task(job.kind),
            seeds=list(job.seeds),
            prompt=p.get("prompt", ""),
            negative_prompt=p.get("negative_prompt", ""),
            width=int(p.get("width", 512)),
            height=int(p.get("height", 512)),
            steps=int(p.get("steps", 30)),
            guidance=float(p.get("guidance", 7.5)),
            init_image=init,
            strength=float(p.get("strength", 0.6)),
            style_image=style,
            images=blended,
            sampler=p.get("sampler"),
            loras=[(x["name"], str(lora_path(self.settings, x["name"])), float(x["weight"]))
                   for x in p.get("loras", [])],
            clip_skip=p.get("clip_skip"),
            options=dict(p.get("options", {})),
        )

    def _generate(self, runs: list[_Running], requests: list[GenerationRequest], progress):
        """Device thread: load the model, generate every job's images in as few calls
        as it can, and write the PNGs of the jobs still wanted to the store.

        Returns ({job id: (result, stored images) or the exception that job failed
        with}, the model's revision). A job dropped on the way has no entry."""
        job = runs[0].job
        generator = self._generator_for(job.family, job.model)
        progress(0, requests[0].steps)
        outcomes: dict[int, Any] = {}
        todo = list(range(len(runs)))
        while todo:
            todo = [i for i in todo if not runs[i].dropped]
            if not todo:
                break
            try:
                results = self._within_memory(
                    [runs[i].job for i in todo], generator, [requests[i] for i in todo],
                    _mapped(progress, todo))
            except JobCanceled:
                continue  # every job of one call was dropped; the rest go again
            except Exception as exc:  # noqa: BLE001 - each job is tried alone below
                if len(todo) == 1:
                    outcomes[runs[todo[0]].job.id] = exc
                    break
                log.warning("a batch of %d jobs failed (%s); running them one by one",
                            len(todo), exc)
                for i in todo:
                    try:
                        (outcomes[runs[i].job.id],) = self._within_memory(
                            [runs[i].job], generator, [requests[i]], _mapped(progress, [i]))
                    except JobCanceled:
                        pass
                    except Exception as alone:  # noqa: BLE001 - recorded for that job
                        outcomes[runs[i].job.id] = alone
                break
            outcomes.update((runs[i].job.id, result) for i, result in zip(todo, results))
            break
        for running, request in zip(runs, requests):
            result = outcomes.get(running.job.id)
            if running.dropped:
                outcomes.pop(running.job.id, None)
            elif isinstance(result, GenerationResult):
                try:
                    if running.job.kind == "draw" and request.style_image is not None:
                        result = self._restyle(running.job, request, result)
                    # The PNGs name the model's revision, which the job learns only
                    # when it completes.
                    known = dataclasses.replace(running.job,
                                                model_revision=generator.model_revision)
                    outcomes[running.job.id] = (result, self._store(known, result))
                except Exception as exc:  # noqa: BLE001 - recorded for that job
                    outcomes[running.job.id] = exc
        return outcomes, generator.model_revision

    def _restyle(self, job: Job, request: GenerationRequest,
                 result: GenerationResult) -> GenerationResult:
        """A draw with a style reference: each drawn image restyled by the style family
        (AdaIN with the operator's decoder, else Gatys), and the job's notes say which.
        (Device thread; the drawing model stays loaded unless the memory budget says no.)"""
        options = request.options
        method = options.get("style_method", "gatys")
        styler = self._generator_for("style", self.settings.vgg19_weights or "vgg19")
        images = []
        for image in result.images:
            styled = styler.generate(GenerationRequest(
                task=Task.STYLIZE, seeds=[0], width=image.width, height=image.height,
                init_image=image, style_image=request.style_image,
                steps=int(options.get("style_steps", 60)),
                strength=float(options.get("style_strength", 1.0)),
                options={"method": method, **({"decoder": options["decoder"]}
                                              if options.get("decoder") else {})}))
            images.append(styled.images[0])
        notes = list(result.params.get("notes", []))
        notes.append(f"Restyled after drawing by {'AdaIN' if method == 'adain' else 'Gatys'} "
                     f"style transfer from the style image.")
        if styled.params.get("note"):
            notes.append(styled.params["note"])
        return GenerationResult(images=images, seeds=result.seeds,
                                params={**result.params, "notes": notes, "style_method": method})

    def _store(self, job: Job, result: GenerationResult) -> list[StoredImage]:
        if job.kind == "describe":  # its result is words, in its params
            if result.images:
                raise RuntimeError("a describe job returned images")
            return []
        if len(result.images) != len(result.seeds) or len(result.seeds) != len(job.seeds):
            raise RuntimeError(f"generator returned {len(result.images)} images and "
                               f"{len(result.seeds)} seeds for {len(job.seeds)}")
        sign = c2pa_signature(self.settings, job)  # None unless the operator signs (C2PA)
        return [self.images.put_image(image, text=_png_text(job, seed), sign=sign)
                for seed, image in zip(result.seeds, result.images)]

    def _within_memory(self, jobs: list[Job], generator: Generator,
                       requests: list[GenerationRequest], progress) -> list[GenerationResult]:
        """Generate the requests (one result each); when the device runs out of memory,
        free what it can and retry in smaller calls (half the images each time, down
        to one at a time, and this worker's batches stay that small from then on),
        then in the family's low-memory mode if the operator allows it. Each image
        keeps its own seed, so the images are those of one call; the jobs' notes
        say what happened."""
        size, low_memory = sum(r.count for r in requests), None
        while True:
            try:
                parts = []
                for chunk in _chunks(requests, size):
                    indices = [i for i, _ in chunk]
                    parts.append((indices, generator.generate_many(
                        [sub for _, sub in chunk], _mapped(progress, indices))))
                break
            except Exception as exc:  # noqa: BLE001 - only running out of memory is retried
                from generators.device import free_memory, is_out_of_memory

                if not is_out_of_memory(exc):
                    raise
                free_memory(self._device)
                ids = ", ".join(str(job.id) for job in jobs)
                if size > 1:
                    size = max(1, size // 2)
                    self.batch_images = min(self.batch_images, size)
                    log.warning("job %s ran out of memory; retrying %d image(s) per call "
                                "(and batches of %d from now on)", ids, size, self.batch_images)
                    continue
                low_memory = generator.use_less_memory() if low_memory is None else None
                if low_memory is None:
                    raise UserError("The device ran out of memory even for one image at a "
                                    "time; try a smaller size.") from None
                log.warning("job %s ran out of memory one image at a time; now %s", ids,
                            low_memory)
        pieces: list[list[GenerationResult]] = [[] for _ in requests]
        for indices, results in parts:
            for i, result in zip(indices, results):
                pieces[i].append(result)
        merged = []
        for request, results in zip(requests, pieces):
            if len(results) == 1 and low_memory is None:
                merged.append(results[0])
                continue
            result = GenerationResult(images=[im for part in results for im in part.images],
                                      seeds=[seed for part in results for seed in part.seeds],
                                      params=dict(results[0].params))
            notes = list(result.params.get("notes", []))
            if size < request.count:
                notes.append(f"The device ran out of memory, so the images were made {size} "
                             f"at a time.")
            if low_memory:
                notes.append(f"The device ran out of memory, so {low_memory}.")
            result.params["notes"] = notes
            merged.append(result)
        return merged


def _chunks(requests: list[GenerationRequest], size: int):
    """The requests' images in calls of at most `size` images, in order: each call a
    list of (request index, the request for those of its seeds)."""
    chunks, chunk, room = [], [], size
    for index, request in enumerate(requests):
        seeds = list(request.seeds)
        while seeds:
            take, seeds = seeds[:room], seeds[room:]
            chunk.append((index, dataclasses.replace(request, seeds=take)))
            room -= len(take)
            if room == 0:
                chunks.append(chunk)
                chunk, room = [], size
    if chunk:
        chunks.append(chunk)
    return chunks


def _mapped(progress, indices: list[int]):
    """A progress callback for a call over some of the requests: the call's request
    indices (or all of its requests) become the caller's."""
    def mapped(step, total, preview=None, requests=None):
        inner = range(len(indices)) if requests is None else requests
        progress(step, total, preview, requests=[indices[i] for i in inner])

    return mapped


def _with_job_notes(job: Job, params: dict) -> dict:
    """A result's parameters, its notes after those the job was queued with (how its
    input images were read, how a stylize content image was scaled): the result's
    parameters replace the job's, and the job's own notes would be lost."""
    queued = [n for n in job.params.get("notes", []) if n not in params.get("notes", [])]
    if not queued or "notes" not in params:
        return params
    return {**params, "notes": [*queued, *params["notes"]]}


def _png_text(job: Job, seed: int) -> dict[str, str]:
    """Text chunks written into each PNG, so a file alone says how it was made and
    that an AI made it (`job.model_revision`: the loaded model's)."""
    p = job.params
    # A1111 writes the LoRAs into the prompt; so does this, so the text can be pasted back.
    tags = "".join(f" <lora:{x['name']}:{x['weight']:g}>" for x in p.get("loras", []))
    parts = [
        (p.get("prompt", "") + tags).strip(),
        f"Negative prompt: {p['negative_prompt']}" if p.get("negative_prompt") else "",
        f"Steps: {p.get('steps')}, Guidance: {p.get('guidance')}, Seed: {seed}, "
        f"Size: {p.get('width')}x{p.get('height')}, Model: {job.model}, "
        f"Generator: {job.family}, Task: {job.kind}"
        + (f", Strength: {p['strength']}" if "strength" in p else "")
        + (f", Sampler: {p['sampler']}" if p.get("sampler") else "")
        + (f", Clip skip: {p['clip_skip']}" if p.get("clip_skip") else ""),
    ]
    # Beside them, the XMP that says an AI made the image, with which model and revision.
    return {"parameters": "\n".join(x for x in parts if x), "Software": "artbot",
            **png_marks(job)}
