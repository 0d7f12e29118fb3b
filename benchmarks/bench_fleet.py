"""Throughput of remote workers: three against one, measured in one run.

A real redis-server (started here, on a free port), the bot's SQLite queue with
its dispatcher in this process, and N remote worker processes
(`python -m tests.worker.paint ... --connect URL`, the same `worker.remote` code
`artbot worker --connect` runs) whose generator sleeps a fixed time per step, so
the figure is the fleet's, not this CPU's. Each worker takes one single-image job
at a time (`max_batch_images = 1`); every job is a different member's.

For each side (1 worker, then 3): start the workers, give each a warm-up job (the
first job of a process imports torch to pick its device), then submit `--jobs`
jobs at once and time the first submit to the last job done. Reported: jobs per
second of each side and their ratio; each round runs both sides on fresh data
directories, and the ratio is the median over rounds.

    .venv/bin/python benchmarks/bench_fleet.py [--rounds 3] [--jobs 30] [--steps 10] [--step-s 0.1]

Prints a Markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from artbot.config import Settings  # noqa: E402
from benchmarks.bench_engine import machine  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from storage.jobs import JobStatus  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402
from worker.dispatcher import Dispatcher  # noqa: E402
from worker.policy import Requester  # noqa: E402
from worker.queue import LocalJobQueue  # noqa: E402
from worker.requests import build_draw  # noqa: E402


def paint_spec(settings: Settings, prompt: str, steps: int, seed: int):
    spec = build_draw(settings, prompt=prompt, steps=steps, count=1, seed=seed,
                      size="16x16", model="paint-model")
    spec.family = "paint"  # tests/worker/paint.py's generator
    return spec


async def _all_done(queue, jobs, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = [await queue.get(j.id) for j in jobs]
        if all(j.status.finished for j in current):
            failed = [j for j in current if j.status is not JobStatus.SUCCEEDED]
            if failed:
                raise RuntimeError(f"{len(failed)} job(s) did not succeed: {failed[0].error}")
            return
        await asyncio.sleep(0.02)
    raise TimeoutError("the jobs did not finish in time")


async def measure(root: Path, redis_url: str, *, workers: int, jobs: int, steps: int,
                  step_s: float) -> float:
    """Seconds from submitting `jobs` jobs to the last one done, on `workers` warm
    remote workers."""
    settings = Settings(data_dir=root / "bot", device="cpu", max_queued_per_user=1000,
                        lease_s=30.0)
    queue = await LocalJobQueue(settings.db_path).open()
    dispatcher = await Dispatcher(queue, ImageStore(settings.image_dir), settings,
                                  url=redis_url, tick_s=0.05).start()
    env = {**os.environ, "ARTBOT_MAX_BATCH_IMAGES": "1", "ARTBOT_LEASE_S": "30"}
    procs = []
    try:
        for i in range(workers):
            log = open(root / f"worker-{i}.log", "wb")
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.worker.paint", str(root / f"worker-{i}"),
                 str(step_s), "--connect", redis_url, "--name", f"w{i}"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 60
        while len(dispatcher.fleet) < workers:
            if time.monotonic() > deadline:
                raise TimeoutError("the workers did not join")
            await asyncio.sleep(0.05)
        warm = [await queue.submit(paint_spec(settings, f"warm{i}", 1, i),
                                   requester=Requester(f"warm{i}", "cli"), settings=settings)
                for i in range(workers)]
        await _all_done(queue, warm, 120)
        started = time.monotonic()
        batch = [await queue.submit(paint_spec(settings, f"job{i}", steps, 100 + i),
                                    requester=Requester(f"member{i}", "cli"), settings=settings)
                 for i in range(jobs)]
        await _all_done(queue, batch, 600)
        return time.monotonic() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        await dispatcher.close()
        await queue.close()


async def compare(root: Path, *, jobs: int, steps: int, step_s: float, rounds: int = 1,
                  fleet: int = 3) -> dict:
    """Both sides, `rounds` times, on one redis-server: {one, many, ratio} (medians)."""
    redis = RedisServer(root / "redis").start()
    try:
        ones, manys, ratios = [], [], []
        for r in range(rounds):
            one = await measure(root / f"r{r}-one", redis.url, workers=1, jobs=jobs,
                                steps=steps, step_s=step_s)
            many = await measure(root / f"r{r}-many", redis.url, workers=fleet, jobs=jobs,
                                 steps=steps, step_s=step_s)
            ones.append(one)
            manys.append(many)
            ratios.append(one / many)
        return {"one": statistics.median(ones), "many": statistics.median(manys),
                "ratio": statistics.median(ratios), "ratios": ratios}
    finally:
        redis.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--step-s", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = asyncio.run(compare(Path(tmp), jobs=args.jobs, steps=args.steps,
                                  step_s=args.step_s, rounds=args.rounds))
    ideal = args.jobs * args.steps * args.step_s
    print(f"Machine: {machine()}; {args.jobs} jobs of {args.steps} steps x {args.step_s} s "
          f"({ideal:.0f} s of sleeping in all); median of {args.rounds} rounds\n")
    print("| workers | seconds | jobs/s | against one |")
    print("|---|---|---|---|")
    print(f"| 1 | {out['one']:.2f} | {args.jobs / out['one']:.2f} | 1.00x |")
    print(f"| 3 | {out['many']:.2f} | {args.jobs / out['many']:.2f} | {out['ratio']:.2f}x |")
    print(f"\nratios per round: {', '.join(f'{r:.2f}' for r in out['ratios'])}")


if __name__ == "__main__":
    main()
