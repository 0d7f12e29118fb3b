"""The fleet as people see it: how long a queued job will wait, and what each worker
is doing.

Plain functions of what the queue reports (`JobQueue.workers`,
`JobQueue.recent_run_seconds`, `JobQueue.positions`); no Discord, no torch.
`artbot workers` (cli.fleet), /stats and /queue (bot.admin, bot.history) show them.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

# `artbot workers` lists the workers seen in the last hour, live or not.
LISTED_WITHIN_S = 3600.0
# /queue judges the fleet's speed by the jobs that succeeded in the last hour.
SPEED_FROM_LAST_S = 3600.0


# -- waiting ----------------------------------------------------------------------


def typical_run_seconds(recent_run_seconds: Sequence[float]) -> float | None:
    """The fleet's time per job: the median of recent generation times (one slow job,
    a model loading, does not move it), or None with none to judge by."""
    times = [s for s in recent_run_seconds if s is not None and s >= 0]
    return statistics.median(times) if times else None


def estimate_wait(position: int, recent_run_seconds: Sequence[float], workers_alive: int,
                  running: int = 0) -> float | None:
    """Seconds until the job at queue `position` (1 = next) starts.

    `workers_alive` workers take jobs in parallel, each one job at a time, and each
    job takes the median of `recent_run_seconds`; the `running` jobs are counted as
    half done. A job that a free worker takes at once waits 0 s. None when there is
    no recent job to judge by, or no live worker to take it (it waits until one
    comes, which nobody can tell)."""
    per_job = typical_run_seconds(recent_run_seconds)
    if per_job is None or workers_alive < 1:
        return None
    position = max(1, position)
    running = max(0, running)
    if position <= workers_alive - running:
        return 0.0
    work_ahead = 0.5 * running + (position - 1)  # in jobs
    return work_ahead * per_job / workers_alive


def rough_duration(seconds: float) -> tuple[str, int]:
    """A wait as a member reads it: ("under_minute", 0), ("minutes", n) up to 90
    minutes, else ("hours", n); bot.i18n words them (`wait_<unit>`)."""
    if seconds < 60:
        return "under_minute", 0
    if seconds < 90 * 60:
        return "minutes", max(1, round(seconds / 60))
    return "hours", max(2, round(seconds / 3600))


def format_duration(seconds: float) -> str:
    """`rough_duration` in English: "under a minute", "about 2 min", "about 3 h"."""
    unit, n = rough_duration(seconds)
    if unit == "under_minute":
        return "under a minute"
    return f"about {n} min" if unit == "minutes" else f"about {n} h"


def ago(seconds: float) -> str:
    """How long ago something was, in short: "3 s ago", "5 min ago", "2 h ago"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    return f"{int(seconds // 3600)} h ago"


# -- workers ----------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSummary:
    """One worker as `artbot workers` and /stats show it."""

    id: str
    remote: bool             # on another machine, through Redis (else: beside the database)
    alive: bool              # seen within storage.workers.LIVE_WITHIN_S, its process there
    device: str | None       # "cuda:0", "cpu"; None until its first model load chose one
    device_name: str | None  # "NVIDIA H200", "cpu"
    memory_used: int | None  # bytes: GPU memory on CUDA, the process's RSS on a CPU
    memory_total: int | None
    models: list[str]        # loaded, short names
    jobs_done: int
    current: list[int]       # job ids it runs now
    seen_at: float
    seen_s_ago: float

    @property
    def where(self) -> str:
        return "remote" if self.remote else "local"

    @property
    def device_text(self) -> str:
        """"cuda:0 NVIDIA H200", "cpu", or "-" before a device is chosen."""
        if not self.device:
            return "-"
        if self.device_name and self.device_name != self.device:
            return f"{self.device} {self.device_name}"
        return self.device

    @property
    def memory_text(self) -> str:
        """"12.3/150.0 GB" (used/total), or "-" when the worker has not said."""
        if self.memory_used is None or not self.memory_total:
            return "-"
        return f"{self.memory_used / 1e9:.1f}/{self.memory_total / 1e9:.1f} GB"

    @property
    def seen_text(self) -> str:
        return ago(self.seen_s_ago)


def short_model(model: str) -> str:
    """A folder or file path shows as its last part; hub ids and names as they are."""
    if model.startswith(("/", ".", "~")) or "\\" in model:
        return Path(model).name or model
    return model


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def summarize_worker(row: dict[str, Any], now: float | None = None) -> WorkerSummary:
    """A row of `JobQueue.workers` (`storage.workers.WorkerRegistry.listing`) as the
    fields shown. What a worker says of itself (`info`) may lack any key: an older or
    remote worker, or one whose device is not chosen yet."""
    now = time.time() if now is None else now
    info = row.get("info") or {}
    models = row.get("models") or info.get("loaded") or []
    current = [job for job in (_int_or_none(j) for j in info.get("current") or []) if job is not None]
    return WorkerSummary(
        id=str(row["id"]), remote=bool(info.get("remote")), alive=bool(row.get("alive")),
        device=info.get("device"), device_name=info.get("device_name"),
        memory_used=_int_or_none(info.get("memory_used")),
        memory_total=_int_or_none(info.get("memory_total")),
        models=[short_model(str(m)) for m in models],
        jobs_done=_int_or_none(info.get("jobs_done")) or 0, current=current,
        seen_at=float(row["seen_at"]), seen_s_ago=max(0.0, now - float(row["seen_at"])))
