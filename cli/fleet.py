"""`artbot workers`: the workers that served this data directory in the last hour,
local and remote, read through the queue interface."""

from __future__ import annotations

import time

from artbot.config import Settings
from cli.connect import run_on_queue
from cli.terminal import safe
from worker.fleet import LISTED_WITHIN_S, WorkerSummary, summarize_worker

HEADER = ("ID", "WHERE", "STATE", "DEVICE", "MEMORY", "JOBS", "CURRENT", "SEEN", "MODELS")


def worker_row(w: WorkerSummary) -> tuple[str, ...]:
    """One worker's columns, as `HEADER` names them."""
    # A remote worker names itself and its models: printed safely (cli.terminal).
    return tuple(safe(cell) for cell in (
        w.id, w.where, "alive" if w.alive else "gone", w.device_text, w.memory_text,
        str(w.jobs_done), ",".join(map(str, w.current)) or "-", w.seen_text,
        ", ".join(w.models) or "-"))


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Columns padded to their widest cell; the last (models) runs free."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER) - 1)]
    return ["  ".join([cell.ljust(width) for cell, width in zip(r, widths)] + [r[-1]]).rstrip()
            for r in rows]


def cmd_workers(settings: Settings, args) -> int:
    rows = run_on_queue(settings, lambda queue: queue.workers(within_s=LISTED_WITHIN_S))
    if not rows:
        print("no workers have served this data directory in the last hour")
        return 0
    now = time.time()
    workers = [summarize_worker(row, now) for row in rows]
    for line in table([HEADER] + [worker_row(w) for w in workers]):
        print(line)
    return 0
