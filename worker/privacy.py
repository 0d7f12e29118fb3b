"""Members own their data: forgetting a member, a server's retention, and a member's
history as a file. The front doors (`bot.privacy`, `cli.privacy`) call these; the
rows and files are deleted by `storage.privacy` through the queue.

- `forget` stops the member's queued and running jobs first (a worker must not
  store a result after its job's row is gone), then deletes what is theirs;
- `keep_expiring` deletes, once at start and then every `RETENTION_EVERY_S`, the
  finished jobs older than their server's `retention` setting (days; 0 keeps them);
- `export_json` / `export_csv` write a member's prompts, seeds and parameters.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import logging
import time
from typing import Any

from artbot.errors import StorageFault
from storage.images import ImageStore
from storage.jobs import ImageRecord, Job, JobStatus
from storage.privacy import Erased
from worker.queue import JobQueue

log = logging.getLogger(__name__)

# How long `forget` waits for the member's running jobs to stop (each worker sees the
# cancel at its next heartbeat or step) before deleting them anyway.
STOP_WAIT_S = 30.0
# How often a process that serves the queue applies the servers' retention.
RETENTION_EVERY_S = 3600.0


async def forget(queue: JobQueue, images: ImageStore, user_id: str, server_id: str | None, *,
                 wait_s: float = STOP_WAIT_S, poll_s: float = 0.2) -> Erased:
    """Delete a member's jobs, images and message links in one server (or every server:
    None). Their queued jobs are canceled and their running ones asked to stop first;
    a running job whose worker is still alive (its lease runs) is waited for up to
    `wait_s` seconds."""
    unfinished = await queue.list_jobs(user_id=user_id, server_id=server_id,
                                       statuses=[JobStatus.QUEUED, JobStatus.RUNNING],
                                       limit=100_000)
    for job in unfinished:
        await queue.cancel(job.id)
    deadline = time.monotonic() + wait_s
    while unfinished:
        running = [j for j in await queue.list_jobs(user_id=user_id, server_id=server_id,
                                                   statuses=[JobStatus.RUNNING], limit=1000)
                   if j.lease_until is not None and j.lease_until > time.time()]
        if not running:
            break
        if time.monotonic() > deadline:
            log.warning("forget %s: job(s) %s still running after %.0f s; deleted anyway (a "
                        "result stored later is an orphan for `artbot doctor --repair`)",
                        user_id, ", ".join(str(j.id) for j in running), wait_s)
            break
        await asyncio.sleep(poll_s)
    return await queue.erase_member(user_id, server_id, images=images)


async def expire(queue: JobQueue, images: ImageStore, now: float | None = None) -> Erased:
    """Apply every server's retention once: delete its finished jobs older than it keeps."""
    return await queue.erase_expired(images=images, now=now)


async def keep_expiring(queue: JobQueue, images: ImageStore, *,
                        every_s: float = RETENTION_EVERY_S) -> None:
    """Apply the servers' retention now and then every `every_s` seconds, until canceled.
    A failure is logged and tried again next time; it never stops the process."""
    while True:
        try:
            await expire(queue, images)
        except StorageFault as fault:
            log.error("retention could not delete old results: %s", fault.message)
        except Exception:  # noqa: BLE001 - the bot and the worker go on regardless
            log.exception("retention could not delete old results")
        await asyncio.sleep(every_s)


# -- a member's history as a file -----------------------------------------------------


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def record_of(job: Job, images: list[ImageRecord]) -> dict[str, Any]:
    """One job as its owner may take it away: what was asked, with what, and the result."""
    return {
        "job": job.id,
        "created_at": _iso(job.created_at),
        "server": job.server_id,
        "channel": job.channel_id,
        "kind": job.kind,
        "status": job.status.value,
        "generator": job.family,
        "model": job.model,
        "model_revision": job.model_revision,
        "prompt": job.params.get("prompt"),
        "negative_prompt": job.params.get("negative_prompt"),
        "seeds": job.seeds,
        "parent_job": job.parent_id,
        "parameters": job.params,
        "images": [{"index": i.idx + 1, "seed": i.seed, "width": i.width, "height": i.height,
                    "sha256": i.sha256} for i in images],
        "error": job.error,
    }


def export_json(records: list[tuple[Job, list[ImageRecord]]]) -> bytes:
    """The records as a JSON document: {"exported_at": ..., "jobs": [...]}."""
    doc = {"exported_at": _iso(time.time()), "jobs": [record_of(j, i) for j, i in records]}
    return json.dumps(doc, ensure_ascii=False, indent=2).encode("utf-8")


CSV_COLUMNS = ("job", "created_at", "server", "kind", "status", "model", "prompt",
               "negative_prompt", "seeds", "width", "height", "steps", "guidance", "sampler",
               "parent_job", "parameters")


def export_csv(records: list[tuple[Job, list[ImageRecord]]]) -> bytes:
    """The records as CSV, one row a job; `parameters` holds all of them as JSON."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for job, images in records:
        rec, p = record_of(job, images), job.params
        writer.writerow([
            rec["job"], rec["created_at"], rec["server"] or "", rec["kind"], rec["status"],
            rec["model"], rec["prompt"] or "", rec["negative_prompt"] or "",
            " ".join(map(str, job.seeds)), p.get("width", ""), p.get("height", ""),
            p.get("steps", ""), p.get("guidance", ""), p.get("sampler") or "",
            rec["parent_job"] or "", json.dumps(p, ensure_ascii=False, sort_keys=True),
        ])
    return out.getvalue().encode("utf-8-sig")  # with a BOM, so spreadsheets read UTF-8
