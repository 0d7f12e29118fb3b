"""history, jobs and cancel: what the queue holds, read through the queue interface.

What the jobs table holds (prompts, model names, errors, user names) is printed
through `cli.terminal.safe`: a row written before prompts were cleaned cannot
drive the terminal."""

from __future__ import annotations

import datetime as dt
import time

from artbot.config import Settings
from artbot.errors import InvalidRequest
from cli.connect import run_on_queue
from cli.terminal import safe
from storage.jobs import JobStatus

# SQLite's largest integer: no job id is larger (a larger one cannot even be looked up).
LARGEST_JOB_ID = 2**63 - 1


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def clip(text: str, width: int) -> str:
    """One line of at most `width` characters, safe to print."""
    text = safe(" ".join(str(text).split()))
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_history(settings: Settings, args) -> int:
    if getattr(args, "export", None):
        from cli.privacy import cmd_export  # --export FILE: every job, as a file

        return cmd_export(settings, args)
    if args.limit < 1:
        raise InvalidRequest("--limit must be at least 1.")
    user = None
    if getattr(args, "user", None):
        from cli.privacy import parse_member

        user = parse_member(args.user)
    jobs = run_on_queue(settings, lambda queue: queue.list_jobs(limit=args.limit, user_id=user))
    if not jobs:
        print("No jobs yet. Try: artbot draw \"a red fox\"")
        return 0
    print(f"{'ID':>5}  {'TIME':19}  {'STATUS':9}  {'KIND':5}  {'MODEL':24}  {'SEEDS':22}  PROMPT")
    for job in jobs:
        seeds = ",".join(str(s) for s in job.seeds)
        prompt = job.params.get("prompt", "")
        if job.kind == "vary" and not prompt:
            prompt = "(variation)"
        print(
            f"{job.id:>5}  {when(job.created_at):19}  {job.status.value:9}  {job.kind:5}  "
            f"{clip(job.model, 24):24}  {clip(seeds, 22):22}  {clip(prompt, 60)}"
        )
        if job.status is JobStatus.FAILED and job.error:
            print(f"{'':>7}error: {clip(job.error, 100)}")
    return 0


def cmd_jobs(settings: Settings, args) -> int:
    async def read(queue):
        running = await queue.list_jobs(statuses=[JobStatus.RUNNING], limit=100,
                                        newest_first=False)
        queued = await queue.list_jobs(statuses=[JobStatus.QUEUED], limit=1000,
                                       newest_first=False)
        return running, queued, await queue.positions()

    running, queued, positions = run_on_queue(settings, read)
    if not running and not queued:
        print("Nothing queued or running.")
        return 0
    for job in running:
        progress = (
            f"step {job.progress_step} of {job.progress_total}" if job.progress_total else "starting"
        )
        since = time.time() - (job.started_at or time.time())
        print(f"running  job {job.id:>5}  {progress:18}  {since:6.1f}s  {clip(job.user_id, 40)}  "
              f"{clip(job.params.get('prompt', ''), 50)}")
    for job in sorted(queued, key=lambda j: positions.get(j.id, 0)):
        print(f"queued   job {job.id:>5}  position {positions.get(job.id, '?'):<9}  "
              f"{'':7}  {clip(job.user_id, 40)}  {clip(job.params.get('prompt', ''), 50)}")
    return 0


def cmd_cancel(settings: Settings, args) -> int:
    if args.job_id > LARGEST_JOB_ID:
        raise InvalidRequest(f"There is no job {args.job_id}.")
    status = run_on_queue(settings, lambda queue: queue.cancel(args.job_id))
    if status is None:
        raise InvalidRequest(f"There is no job {args.job_id}.")
    if status is JobStatus.RUNNING:
        print(f"job {args.job_id} is running; it will stop at its next step")
    elif status is JobStatus.CANCELED:
        print(f"job {args.job_id} canceled")
    else:
        print(f"job {args.job_id} had already finished ({status.value})")
    return 0
