"""Batching across users against one job at a time, measured in one run.

8 members each submit 4 single-image /draw jobs at once (32 jobs, 32 images, each
its own prompt and seed) to artbot's queue; one worker on the tiny random-weight
SD pipeline (generators/diffusion/tiny.py) runs them all, on this CPU. The sides:

- one at a time: `max_batch_images = 1`, a pipeline call a job (the worker before
  batching);
- batched, exact: `max_batch_images = 8`, every image byte-identical to its job
  run alone (`exact_batches = true`, the default);
- batched, fused: `max_batch_images = 8`, `exact_batches = false`.

Each round runs the three sides one after another on one loaded worker and a fresh
data directory each, so machine noise hits them alike; the ratios are of the
medians over rounds. Reported: images per second (first submit to last job done)
and the p50/p95 time to result (a job's submit to its completion).

    .venv/bin/python benchmarks/bench_batching.py [--rounds 3] [--users 8] [--jobs 4] [--steps 20]

Prints a Markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from artbot.config import Settings  # noqa: E402
from benchmarks.bench_engine import machine  # noqa: E402
from generators.diffusion.tiny import build_tiny_pipeline  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from worker.policy import Requester  # noqa: E402
from worker.queue import LocalJobQueue  # noqa: E402
from worker.requests import build_draw  # noqa: E402
from worker.runner import Worker  # noqa: E402

SIDES = {  # name -> (max_batch_images, exact_batches)
    "one at a time": (1, True),
    "batched, exact": (8, True),
    "batched, fused": (8, False),
}
SUBJECTS = ["fox", "house", "boat", "apple", "castle", "cat", "tree", "moon"]


async def one_side(settings: Settings, generator, model: str, users: int, jobs: int,
                   steps: int, size: int) -> dict:
    """Submit users x jobs at once, run them to the end; the side's figures."""
    async with LocalJobQueue(settings.db_path) as queue:
        worker = Worker(queue, ImageStore(settings.image_dir), settings,
                        loader=lambda *args, **kw: generator, heartbeat_s=0.5, idle_poll_s=0.05)
        submitted: list[int] = []
        started = time.perf_counter()
        for j in range(jobs):
            for u in range(users):
                spec = build_draw(settings, prompt=f"a {SUBJECTS[u % len(SUBJECTS)]}, take {j}",
                                  seed=1000 * u + j, size=f"{size}x{size}", steps=steps,
                                  model=model)
                job = await queue.submit(spec, requester=Requester(f"user{u}", "discord"),
                                         settings=settings)
                submitted.append(job.id)
        calls_before = generator.calls
        await worker.run(burst=True)
        elapsed = time.perf_counter() - started
        latencies = []
        for job_id in submitted:
            job = await queue.get(job_id)
            assert job.status.value == "succeeded", job.error
            latencies.append(job.finished_at - job.created_at)
    latencies.sort()
    return {
        "images_per_s": len(submitted) / elapsed,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))],
        "calls": generator.calls - calls_before,
    }


class CountingGenerator:
    """The loaded diffusion generator, with its pipeline calls counted."""

    def __init__(self, generator):
        self.generator = generator
        self.calls = 0
        pipe = generator.pipe
        own = type(pipe).__call__
        counter = self

        def call(self, *args, **kwargs):
            counter.calls += 1
            return own(self, *args, **kwargs)

        call.__wrapped__ = own
        pipe.__class__ = type(type(pipe).__name__, (type(pipe),), {"__call__": call})

    def __getattr__(self, name):
        return getattr(self.generator, name)

    def __setattr__(self, name, value):
        if name in ("generator", "calls"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.generator, name, value)


async def main(args) -> None:
    from generators.diffusion.generator import DiffusionGenerator
    import torch

    root = Path(tempfile.mkdtemp(prefix="artbot-bench-batching-"))
    model = build_tiny_pipeline(root / "tiny-sd")
    generator = CountingGenerator(DiffusionGenerator.load(str(model), torch.device("cpu"),
                                                          torch.float32))
    base = Settings(data_dir=root / "warm", device="cpu", max_queued_per_user=10_000)
    await one_side(base, generator, str(model), 2, 1, args.steps, args.size)  # warm up
    figures: dict[str, list[dict]] = {name: [] for name in SIDES}
    for r in range(args.rounds):
        for name, (batch, exact) in SIDES.items():
            settings = dataclasses.replace(base, data_dir=root / f"r{r}-{batch}-{exact}",
                                           max_batch_images=batch, exact_batches=exact)
            figures[name].append(await one_side(settings, generator, str(model), args.users,
                                                args.jobs, args.steps, args.size))
            f = figures[name][-1]
            print(f"round {r + 1} {name}: {f['images_per_s']:.2f} images/s, p50 {f['p50']:.2f} s,"
                  f" p95 {f['p95']:.2f} s, {f['calls']} pipeline calls", file=sys.stderr)

    def med(name, key):
        return statistics.median(f[key] for f in figures[name])

    n = args.users * args.jobs
    print(f"Machine: {machine()}. Tiny SD pipeline, {args.size}x{args.size}, {args.steps} "
          f"steps, {args.users} users x {args.jobs} jobs = {n} images; medians of "
          f"{args.rounds} rounds.\n")
    print("| side | images/s | p50 time to result | p95 time to result | pipeline calls |")
    print("|---|---|---|---|---|")
    for name in SIDES:
        print(f"| {name} | {med(name, 'images_per_s'):.2f} | {med(name, 'p50'):.2f} s | "
              f"{med(name, 'p95'):.2f} s | {med(name, 'calls'):.0f} |")
    alone = med("one at a time", "images_per_s")
    for name in ("batched, exact", "batched, fused"):
        print(f"| **{name} / one at a time, images/s** | **{med(name, 'images_per_s') / alone:.2f}x**"
              f" | | | |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=64)
    asyncio.run(main(parser.parse_args()))
