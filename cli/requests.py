"""draw, vary and stylize from the shell, on the same path the bot uses.

Each command checks every option and input first (nothing is stored or queued
for a bad one), then submits the request through the queue and its gate, and
waits for the job: when a worker already serves this data directory (a
running `artbot run` or `artbot worker`), that worker runs it and the model
stays loaded there; otherwise a worker in this process runs it and exits. The
images are then copied to `--out`.

With `--server GUILD` the job is queued for that Discord server: its rules,
quota and history apply, exactly as for a member there.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import sys
from pathlib import Path

from artbot.config import Settings
from artbot.errors import InvalidRequest
from cli.connect import run_on_queue
from cli.listing import LARGEST_JOB_ID
from cli.terminal import safe
from storage.images import ImageLost, ImageStore, content_address, encode_png
from storage.jobs import JobStatus
from worker.loras import parse_lora
from worker.policy import Requester
from worker.queue import JobEvent, JobQueue, LocalJobQueue
from worker.image_files import read_input_image
from worker.requests import (JobSpec, build_blend, build_describe, build_draw, build_outpaint,
                             build_stylize, build_upscale, build_vary, file_parent)

# A worker seen this recently (seconds) serves the data directory: the CLI leaves the job to it.
SERVED_WITHIN_S = 6.0
# After Ctrl-C, how long to wait for this process's worker to stop the job (seconds).
CANCEL_WAIT_S = 30.0


def local_user() -> str:
    """Who runs the CLI, as the jobs table and the audit name them."""
    try:
        name = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        name = "unknown"
    return f"local:{name}"


def output_paths(out: str | None, job_id: int, count: int) -> list[Path]:
    if out is None:
        base = Path(f"artbot-{job_id}.png")
    else:
        base = Path(out)
        if base.suffix.lower() != ".png":
            base = base.with_name(base.name + ".png") if not base.suffix else base.with_suffix(".png")
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{i + 1}{base.suffix}") for i in range(count)]


def check_out(out: str | None) -> None:
    if out is None:
        return
    parent = Path(out).expanduser().resolve().parent
    if not parent.is_dir():
        raise InvalidRequest(f"Cannot write {out}: folder {parent} does not exist.")


class InputImage:
    """An image given on the command line, read and checked, not yet stored.

    Its PNG bytes and their content address are known up front, so a request
    can be built (and refused) before anything is written to the store. `notes`
    say what the user should know of how it was read (an animation's first frame
    taken); they become the job's notes, printed with its result.
    """

    def __init__(self, path_text: str, what: str):
        path = Path(path_text).expanduser()
        if not path.is_file():
            raise InvalidRequest(f"{what} {path_text} does not exist or is not a file.")
        self.notes: list[str] = []
        image = read_input_image(path.read_bytes(), name=str(path_text), notes=self.notes)
        self.size = image.size
        self.png = encode_png(image)
        self.sha256 = content_address(self.png)

    def store(self, images: ImageStore) -> None:
        images.put_bytes(self.png)


# -- submitting and waiting ------------------------------------------------------------


class _Progress:
    """A progress bar on stderr for 'step k of n' (none when stderr is not a terminal)."""

    def __init__(self, job_id: int):
        self.job_id = job_id
        self.bar = None

    def show(self, event: JobEvent) -> None:
        if event.kind != "progress" or not event.total:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, unit="step", desc=f"job {self.job_id}",
                            file=sys.stderr, disable=None, leave=False)
        self.bar.total = event.total
        self.bar.n = event.step
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


async def _follow(queue: JobQueue, job_id: int, progress: _Progress) -> None:
    async for event in queue.watch(job_id):
        progress.show(event)


async def submit_and_wait(queue: JobQueue, settings: Settings, spec: JobSpec, *,
                          server: str | None, state: dict) -> int:
    """Queue `spec`, let a worker run it, and return the finished job's id.

    A worker that serves the data directory runs the job; while waiting, the
    CLI checks every `SERVED_WITHIN_S` seconds that one still does, and runs
    the job itself once none is left (a stopped `artbot worker` never leaves
    it waiting for ever).
    """
    job = await queue.submit(
        spec,
        requester=Requester(user_id=local_user(), source="cli", server_id=server),
        settings=settings,
    )
    state["job_id"] = job.id
    position = (await queue.positions()).get(job.id)
    print(f"job {job.id} queued" + (f" (position {position})" if position else ""), file=sys.stderr)

    def start_worker():
        from worker.runner import Worker  # torch loads only when this process draws

        here = Worker(queue, ImageStore(settings.image_dir), settings)
        return here, asyncio.create_task(here.run(burst=True))

    def say_once(text: str) -> None:
        if text not in said:
            said.add(text)
            print(f"job {job.id}: {text}", file=sys.stderr)

    said: set[str] = set()
    served_by = await queue.live_workers(within_s=SERVED_WITHIN_S)
    worker = worker_task = None
    if served_by:
        say_once(f"the worker {served_by[0]} serves this data directory; waiting")
    else:
        worker, worker_task = start_worker()
    progress = _Progress(job.id)
    watcher = asyncio.create_task(_follow(queue, job.id, progress))
    try:
        while not watcher.done():
            waits = {watcher} if worker_task is None else {watcher, worker_task}
            done, _ = await asyncio.wait(waits, timeout=SERVED_WITHIN_S,
                                         return_when=asyncio.FIRST_COMPLETED)
            if watcher in done:
                break
            if worker_task in done:
                worker_task.result()  # re-raise a crash of the worker itself
                # The queue ran dry here before this job finished: another process runs it.
                say_once("running in another artbot process; waiting")
                worker = worker_task = None
            elif worker_task is None and not await queue.live_workers(within_s=SERVED_WITHIN_S):
                say_once("no worker serves this data directory any more; running it here")
                worker, worker_task = start_worker()
        await watcher
    except asyncio.CancelledError:
        # Ctrl-C (asyncio.run cancels this task): cancel the job itself, so that it is
        # not left to finish unseen. The worker here stops it at its next step; a
        # worker elsewhere sees the request at its next heartbeat.
        await queue.cancel(job.id)
        if worker is not None and worker.cancel_local(job.id):
            # Before the worker is stopped below, which would put the job back instead.
            # The watcher ends with the job's final event.
            await asyncio.wait({watcher}, timeout=CANCEL_WAIT_S)
        raise
    finally:
        progress.close()
        watcher.cancel()
        if worker is not None:
            worker.stop()
            await worker_task
    return job.id


async def save_result(queue: JobQueue, settings: Settings, job_id: int, out: str | None) -> int:
    """Copy a finished job's images to `out`; the exit status for the job."""
    job = await queue.get(job_id)
    if job.status is not JobStatus.SUCCEEDED:
        print(f"error: job {job.id} {job.status.value}: {safe(job.error)}", file=sys.stderr)
        return 1
    if job.kind == "describe":  # its result is prompts, not images
        for i, prompt in enumerate(job.params.get("prompts", []), 1):
            print(f"{i}. {safe(prompt)}")
        for note in job.params.get("notes", []):
            print(f"note: {safe(note)}", file=sys.stderr)
        print(f"job {job.id} described by {safe(job.params.get('described_by') or job.model)}; draw one "
              f"with: artbot draw \"PROMPT\"", file=sys.stderr)
        return 0
    images = await queue.images(job.id)
    root = Path(settings.image_dir)
    for record, path in zip(images, output_paths(out, job.id, len(images))):
        path = path.expanduser()
        if not (root / record.path).is_file():
            raise ImageLost(record.path)
        shutil.copyfile(root / record.path, path)
        print(f"{path}  seed {record.seed}  {record.width}x{record.height}")
    print(f"job {job.id} done in {job.run_seconds:.1f}s with {safe(job.model)}", file=sys.stderr)
    for note in job.params.get("notes", []):
        print(f"note: {safe(note)}", file=sys.stderr)
    note = job.params.get("note")
    if note:
        print(f"note: {safe(note)}", file=sys.stderr)
    return 0


async def _run(settings: Settings, spec: JobSpec, inputs: list[InputImage], out: str | None,
               server: str | None, state: dict) -> int:
    images = ImageStore(settings.image_dir)
    for image in inputs:  # only now: the request has passed every check
        image.store(images)
    notes = [note for image in inputs for note in image.notes]
    if notes:
        spec.params["notes"] = [*notes, *spec.params.get("notes", [])]
    async with LocalJobQueue(settings.db_path) as queue:
        job_id = await submit_and_wait(queue, settings, spec, server=server, state=state)
        return await save_result(queue, settings, job_id, out)


def run_request(settings: Settings, spec: JobSpec, out: str | None, *, server: str | None,
                inputs: list[InputImage] = ()) -> int:
    """Run one request to the end; Ctrl-C cancels its job (exit status 130)."""
    state: dict = {}
    try:
        return asyncio.run(_run(settings, spec, list(inputs), out, server, state))
    except KeyboardInterrupt:
        if "job_id" in state:
            job_id = state["job_id"]
            status = run_on_queue(settings, lambda queue: queue.cancel(job_id))
            if status is JobStatus.CANCELED:
                print(f"\ninterrupted: job {job_id} canceled", file=sys.stderr)
            elif status is JobStatus.RUNNING:
                print(f"\ninterrupted: job {job_id} will stop at its next step", file=sys.stderr)
            else:
                print(f"\ninterrupted: job {job_id} had already {status.value}", file=sys.stderr)
        return 130


def settings_for_server(settings: Settings, server: str | None) -> Settings:
    """The settings a request is built with: with --server, that server's defaults and limits."""
    if not server:
        return settings
    if not server.isdigit():
        raise InvalidRequest(f"--server takes a Discord server id (digits), not {server!r}.")

    return run_on_queue(settings, lambda queue: queue.rules(settings, server)).apply(settings)


# -- the commands ---------------------------------------------------------------------


def cmd_draw(settings: Settings, args) -> int:
    check_out(args.out)
    here = settings_for_server(settings, args.server)
    style = InputImage(args.style, "Style image") if args.style else None
    spec = build_draw(
        here,
        prompt=args.prompt,
        negative_prompt=args.negative or "",
        model=args.model,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        size=args.size,
        count=args.count,
        sampler=args.sampler,
        loras=[parse_lora(x) for x in args.lora or []],
        style_sha=style.sha256 if style else None,
        style_method=args.style_method,
    )
    return run_request(settings, spec, args.out, server=args.server,
                       inputs=[style] if style else [])


def cmd_vary(settings: Settings, args) -> int:
    check_out(args.out)
    here = settings_for_server(settings, args.server)
    image = InputImage(args.image, "Image")
    spec = build_vary(
        here,
        init_image_sha=image.sha256,
        init_size=image.size,
        prompt=args.prompt or "",
        negative_prompt=args.negative or "",
        model=args.model,
        strength=args.strength,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        count=args.count,
        sampler=args.sampler,
        loras=[parse_lora(x) for x in args.lora or []],
    )
    return run_request(settings, spec, args.out, server=args.server, inputs=[image])


def cmd_stylize(settings: Settings, args) -> int:
    check_out(args.out)
    here = settings_for_server(settings, args.server)
    given = [x for x in (args.style, args.preset, args.prompt) if x]
    if len(given) != 1:
        raise InvalidRequest("Give exactly one of --style IMAGE, --preset NAME or --prompt TEXT.")
    content = InputImage(args.content, "Content image")
    inputs = [content]
    style_sha = None
    if args.style:
        style = InputImage(args.style, "Style image")
        inputs.append(style)
        style_sha = style.sha256
    elif args.preset:
        preset = run_on_queue(settings, lambda queue: queue.preset(args.server, args.preset))
        if preset is None:
            raise InvalidRequest(f"There is no preset {args.preset!r}; see: artbot preset list")
        style_sha = preset.image_sha
    spec = build_stylize(here, content_sha=content.sha256, content_size=content.size,
                         style_sha=style_sha, prompt=args.prompt, method=args.method,
                         size=args.size, steps=args.steps, strength=args.strength, seed=args.seed,
                         keep_colors=args.keep_colors, model=args.model, preset=args.preset)
    return run_request(settings, spec, args.out, server=args.server, inputs=inputs)


# -- image tools: upscale, zoom and pan, blend, describe --------------------------------------


def _source_image(settings: Settings, here: Settings, text: str, *, model: str | None,
                  pick: int | None):
    """What a tool acts on, from the shell: a job id (the image `pick` of that finished
    job, its model and prompt), or an image file (with --model, or the default model).
    Returns (parent job, image sha, image size, image seed, input images to store)."""
    if text.isascii() and text.isdigit() and not Path(text).exists():
        job_id = int(text)
        if job_id > LARGEST_JOB_ID:
            raise InvalidRequest(f"There is no job {job_id} (see: artbot history).")
        job = run_on_queue(settings, lambda queue: queue.get(job_id))
        if job is None:
            raise InvalidRequest(f"There is no job {job_id} (see: artbot history).")
        images = run_on_queue(settings, lambda queue: queue.images(job_id))
        if not images:
            raise InvalidRequest(f"Job {job_id} has no images ({job.status.value}).")
        index = (pick or 1) - 1
        if not 0 <= index < len(images):
            raise InvalidRequest(f"Job {job_id} has {len(images)} image(s); --image takes "
                                 f"1..{len(images)}.")
        record = images[index]
        ImageStore(settings.image_dir).by_sha(record.sha256)  # ImageLost: said before queueing
        return job, record.sha256, (record.width, record.height), record.seed, []
    image = InputImage(text, "Image")
    return file_parent(here, model), image.sha256, image.size, None, [image]


def cmd_upscale(settings: Settings, args) -> int:
    check_out(args.out)
    here = settings_for_server(settings, args.server)
    job, sha, size, seed, inputs = _source_image(settings, here, args.source, model=args.model,
                                                 pick=args.image)
    spec = build_upscale(here, job, sha, size, scale=args.scale, image_seed=seed)
    return run_request(settings, spec, args.out, server=args.server, inputs=inputs)


def cmd_outpaint(settings: Settings, args) -> int:
    check_out(args.out)
    here = settings_for_server(settings, args.server)
    job, sha, size, seed, inputs = _source_image(settings, here, args.source, model=args.model,
                                                 pick=args.image)
    spec = build_outpaint(here, job, sha, size, zoom=getattr(args, "by", None),
                          pan=getattr(args, "direction", None), image_seed=seed)
    return run_request(settings, spec, args.out, server=args.server, inputs=inputs)


def cmd_blend(settings: Settings, args) -> int:
    check_out(args.out)
    here = settings_for_server(settings, args.server)
    if not 2 <= len(args.images) <= 5:
        raise InvalidRequest(f"Blend 2 to 5 images, not {len(args.images)}.")
    inputs = [InputImage(path, f"Image {i + 1}") for i, path in enumerate(args.images)]
    spec = build_blend(here, image_shas=[x.sha256 for x in inputs],
                       sizes=[x.size for x in inputs], prompt=args.prompt or "",
                       model=args.model, seed=args.seed, size=args.size)
    return run_request(settings, spec, args.out, server=args.server, inputs=inputs)


def cmd_describe(settings: Settings, args) -> int:
    here = settings_for_server(settings, args.server)
    job, sha, size, _seed, inputs = _source_image(settings, here, args.source, model=None,
                                                  pick=args.image)
    spec = build_describe(here, image_sha=sha, image_size=size, parent_id=job.id)
    return run_request(settings, spec, None, server=args.server, inputs=inputs)
