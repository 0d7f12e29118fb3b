"""Engine benchmarks, measured in one run on this machine.

1. Engine overhead: the time of a job through artbot (submit → fair claim →
   generate with the loaded model → PNGs into the store → complete) over the
   time of the same plain diffusers call, on the tiny random-weight pipeline.
   Runs alternate (plain, engine, plain, engine...) so that machine noise hits
   both alike; the ratio of medians is reported.
2. Queue throughput: jobs per second through the same queue and worker with a
   generator that does no work (one 8x8 image per job).

    .venv/bin/python benchmarks/bench_engine.py [--rounds N] [--jobs N] [--size 64] [--steps 20]

Prints a Markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from artbot.config import Settings  # noqa: E402
from generators.base import GenerationResult, Generator  # noqa: E402
from generators.diffusion.tiny import build_tiny_pipeline  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from worker.policy import Requester  # noqa: E402
from worker.queue import LocalJobQueue  # noqa: E402
from worker.requests import build_draw  # noqa: E402
from worker.runner import Worker  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} torch threads")


class NoWork(Generator):
    family = "nowork"
    image = Image.new("RGB", (8, 8), (10, 20, 30))

    def draw(self, request, progress):
        return GenerationResult(images=[self.image] * request.count, seeds=list(request.seeds))


async def engine_overhead(model_dir: Path, data: Path, rounds: int, size: int, steps: int):
    settings = Settings(data_dir=data / "engine", device="cpu", max_queued_per_user=10_000)
    queue = await LocalJobQueue(settings.db_path).open()
    worker = Worker(queue, ImageStore(settings.image_dir), settings)
    spec_args = dict(prompt="a red fox", model=str(model_dir), size=f"{size}x{size}", steps=steps)

    # Warm up: load the model into the worker, and get the same pipeline for plain calls.
    job = await queue.submit(build_draw(settings, seed=0, **spec_args),
                             requester=Requester("bench", "cli"), settings=settings)
    await worker.run(burst=True)
    pipe = worker._models[("diffusion", str(model_dir))].pipe

    def plain(seed: int):
        with torch.inference_mode():
            return pipe(prompt=["a red fox"], width=size, height=size, num_inference_steps=steps,
                        guidance_scale=7.5,
                        generator=[torch.Generator("cpu").manual_seed(seed)]).images

    plain(0)
    plain_t, engine_t = [], []
    for i in range(rounds):
        t = time.perf_counter()
        plain(i + 1)
        plain_t.append(time.perf_counter() - t)

        t = time.perf_counter()
        job = await queue.submit(build_draw(settings, seed=i + 1, **spec_args),
                                 requester=Requester("bench", "cli"), settings=settings)
        await worker.run(burst=True)
        engine_t.append(time.perf_counter() - t)
        assert (await queue.get(job.id)).status.value == "succeeded"
    await queue.close()
    return statistics.median(plain_t), statistics.median(engine_t)


async def throughput(data: Path, n_jobs: int):
    settings = Settings(data_dir=data / "queue", device="cpu", max_queued_per_user=n_jobs + 1)
    queue = await LocalJobQueue(settings.db_path).open()
    gen = NoWork()
    worker = Worker(queue, ImageStore(settings.image_dir), settings,
                    loader=lambda family, model, device, dtype: gen)
    spec = build_draw(settings, prompt="nothing", model="nowork", size="8x8", steps=1, seed=1)
    spec.family = "nowork"
    users = [f"user{i}" for i in range(10)]
    t0 = time.perf_counter()
    for i in range(n_jobs):
        await queue.submit(spec,
                           requester=Requester(users[i % len(users)], "cli"), settings=settings)
    t1 = time.perf_counter()
    ran = await worker.run(burst=True)
    t2 = time.perf_counter()
    assert ran == n_jobs
    await queue.close()
    return n_jobs / (t1 - t0), n_jobs / (t2 - t1), n_jobs / (t2 - t0)


async def gate_cost(data: Path, n_jobs: int, block: int = 100):
    """Submit rate without server rules and with every rule on, alternating blocks of
    `block` jobs of each in one run: (plain jobs/s, ruled jobs/s)."""
    settings = Settings(data_dir=data / "gate", device="cpu", max_queued_per_user=n_jobs + 1)
    queue = await LocalJobQueue(settings.db_path).open()
    guild = "100000000000000001"
    rules = {"daily_quota": "500000", "max_queued": "1000", "cooldown": "0",
             "role_quotas": "200000000000000001=1000000", "allowed_families": "diffusion",
             "channels": "300000000000000001, 300000000000000002", "spoiler": "on",
             "blocklist": ", ".join([f"word{i}" for i in range(180)] + [f"stem{i}*" for i in range(10)]
                                    + [f"/re{i}[a-z]+x/" for i in range(10)])}
    for key, value in rules.items():
        await queue.change_setting(settings, guild, key, value, actor="bench", via="cli")
    spec = build_draw(settings, prompt="a red fox in the snow, oil painting", model="nowork",
                      size="8x8", steps=1, seed=1)
    plain_t = ruled_t = 0.0
    for b in range(n_jobs // (2 * block)):
        for ruled in (False, True):
            t = time.perf_counter()
            for i in range(block):
                user = f"user{i % 10}"
                requester = (Requester(user, "discord", server_id=guild, channel_id="300000000000000001",
                                       role_ids=("200000000000000001",)) if ruled
                             else Requester(user, "cli"))
                await queue.submit(spec, requester=requester, settings=settings)
            if ruled:
                ruled_t += time.perf_counter() - t
            else:
                plain_t += time.perf_counter() - t
    await queue.close()
    per_side = n_jobs // (2 * block) * block
    return per_side / plain_t, per_side / ruled_t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--jobs", type=int, default=2000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_tiny_pipeline(tmp / "tiny-sd")
        plain_s, engine_s = asyncio.run(engine_overhead(model, tmp, args.rounds, args.size, args.steps))
        submit_rate, run_rate, overall = asyncio.run(throughput(tmp, args.jobs))
        plain_rate, ruled_rate = asyncio.run(gate_cost(tmp, args.jobs))
    print(f"Machine: {machine()}\n")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| plain diffusers call, tiny model, {args.size}x{args.size}, {args.steps} steps "
          f"(median of {args.rounds}) | {plain_s * 1000:.1f} ms | |")
    print(f"| same job through artbot's queue, worker and store (median of {args.rounds}) "
          f"| {engine_s * 1000:.1f} ms | |")
    print(f"| **engine time per job / plain call** | **{engine_s / plain_s:.3f}** | ≤ 1.05 |")
    print(f"| submit rate ({args.jobs} jobs, 10 users) | {submit_rate:.0f} jobs/s | |")
    print(f"| worker rate, no-work generator | {run_rate:.0f} jobs/s | |")
    print(f"| **queue throughput, submit to done** | **{overall:.0f} jobs/s** | ≥ 500 |")
    print(f"| submit rate, no server rules ({args.jobs // 2} jobs, blocks of 100 alternating) "
          f"| {plain_rate:.0f} jobs/s | |")
    print(f"| submit rate, every rule on (quota, tiers, channels, 200-entry blocklist...) "
          f"| {ruled_rate:.0f} jobs/s | |")
    print(f"| **gate: ruled / plain submit rate** | **{ruled_rate / plain_rate:.3f}** | |")


if __name__ == "__main__":
    main()
