"""artbot against a naive loop of plain diffusers calls, on models that need no download.

The models are random-weight pipelines with the real SD 1.5, SDXL and SD-Turbo
architectures (benchmarks/real_shapes.py: the configs' shapes, random weights),
saved to a temporary folder, so artbot loads them through its own loading code
as it loads an operator's model. Per model, every side gets the same burst of
jobs: `--users` members each submit `--jobs` one-image jobs at once, each job its
own prompt and seed. The sides, taking turns round after round:

- naive: plain `pipe(prompt, num_inference_steps=..., generator=...)` calls in
  fp16 on CUDA (fp32 on a CPU), one job at a time in arrival order;
- artbot: the jobs submitted to a LocalJobQueue on a temporary data directory and
  run by a Worker (worker/runner.py) with `max_batch_images` 4 or 8 (`--batches`)
  and `exact_batches` on or off (`--exact`), the images stored as PNGs.

Reported per side: images per second (the burst's start to its last image),
p50 and p95 time to result (the burst's start, when every user pressed enter, to
the job's images: stored and recorded for artbot, returned for naive; medians
over rounds), the FLOPs of one image (counted with torch.utils.flop_counter on
the naive pipeline: text encoders, every denoising step with its guidance rows,
the VAE decode; attention counted through the math kernel, whose FLOPs the fused
kernels share), the FLOP rate that gives and its fraction of the device's dense
bf16 peak (PEAK_BF16_TFLOPS; "n/a" for a CPU or an unknown device), and how many
of artbot's images are byte-identical to naive's for the same prompt and seed.

    .venv/bin/python benchmarks/bench_gpu.py                      # GPU: real widths, native sizes
    .venv/bin/python benchmarks/bench_gpu.py --archs sdxl --steps 20 --rounds 2
    .venv/bin/python benchmarks/bench_gpu.py --smoke              # CPU correctness run, < 1 min

Prints a Markdown table to paste into docs/benchmarks.md; `--json PATH` also
writes the figures (tests/test_bench_gpu.py reads them).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from artbot.config import Settings  # noqa: E402
from benchmarks.bench_engine import machine  # noqa: E402
from benchmarks.real_shapes import ARCHES, build_pipeline, meta_pipeline  # noqa: E402
from storage.images import ImageStore  # noqa: E402
from worker.policy import Requester  # noqa: E402
from worker.queue import LocalJobQueue  # noqa: E402
from worker.requests import build_draw  # noqa: E402
from worker.runner import Worker  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity), by the name CUDA gives the device;
# the first match wins. fp16 has the same dense peak on these.
PEAK_BF16_TFLOPS = [
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", None),  # not in this table: report n/a rather than the SXM figure
    ("H100", 989.0),  # SXM ("NVIDIA H100 80GB HBM3")
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
    ("RTX 4090", 165.0),  # GeForce: bf16 with fp32 accumulation
]
SUBJECTS = ["a red fox", "a lighthouse at dusk", "a bowl of ramen", "a castle in the clouds",
            "an old sailing ship", "a cat in a hat", "a neon city street", "a mountain lake"]


@dataclasses.dataclass(frozen=True)
class Job:
    user: int
    prompt: str
    seed: int


@dataclasses.dataclass(frozen=True)
class Run:
    """One benchmark run's shape, the same for every side."""

    width: int
    height: int
    steps: int
    guidance: float
    jobs: tuple[Job, ...]


def burst(users: int, jobs: int) -> tuple[Job, ...]:
    """Every user's jobs, in the order they reach the queue: each user's first, then
    each user's second..."""
    return tuple(Job(u, f"{SUBJECTS[u % len(SUBJECTS)]}, by user {u}, take {j}", 1000 * u + j)
                 for j in range(jobs) for u in range(users))


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


# -- the naive side -------------------------------------------------------------------

def load_plain(folder: Path, device: torch.device, dtype: torch.dtype):
    """The pipeline as a plain diffusers user loads it."""
    from diffusers import AutoPipelineForText2Image
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.disable_progress_bar()
    pipe = AutoPipelineForText2Image.from_pretrained(str(folder), torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def plain_call(pipe, run: Run, job: Job, steps: int | None = None):
    return pipe(job.prompt, num_inference_steps=steps or run.steps, guidance_scale=run.guidance,
                width=run.width, height=run.height,
                generator=torch.Generator("cpu").manual_seed(job.seed)).images[0]


def run_naive(pipe, run: Run) -> dict:
    """Every job of the burst, one plain call after another, in arrival order."""
    done, images = [], []
    started = time.perf_counter()
    with torch.inference_mode():
        for job in run.jobs:
            images.append(plain_call(pipe, run, job))
            done.append(time.perf_counter() - started)
    return {"elapsed": done[-1], "latencies": done, "images": images, "calls": len(run.jobs)}


def flops_per_image(pipe, run: Run) -> float:
    """FLOPs of one image: a call of one step counts the text encoders, one denoising
    step (with its guidance rows) and the VAE decode; a call of two steps, one step
    more. Attention through the math kernel, which the flop counter can see into."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    job = run.jobs[0]
    counted = []
    for steps in ((1, 2) if run.steps > 1 else (1,)):
        with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH), \
                FlopCounterMode(display=False) as counter:
            plain_call(pipe, run, job, steps=steps)
        counted.append(counter.get_total_flops())
    per_step = counted[1] - counted[0] if len(counted) == 2 else 0
    return float(counted[0] + (run.steps - 1) * per_step)


def meta_flops(arch: str, scale: float, size: int, steps: int, guidance: float) -> dict:
    """The same count from the networks alone, built on the meta device (no memory, no
    arithmetic, so any size counts in seconds on a CPU): one denoising step (a UNet
    call with its guidance rows), the VAE decode, the text encoders (once a prompt,
    and again for the empty negative prompt with guidance, unless the pipeline makes
    that zeros, as SDXL's does), and their sum for one image: as many UNet calls as
    the scheduler has timesteps for `steps` (PNDM, SD 1.5's own, has one more)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    pipe = meta_pipeline(arch, scale)
    rows = 2 if guidance > 1 else 1
    prompts = 1 if getattr(pipe.config, "force_zeros_for_empty_prompt", False) else rows
    pipe.scheduler.set_timesteps(steps)
    calls = len(pipe.scheduler.timesteps)
    unet = pipe.unet
    with torch.device("meta"), torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        latents = torch.randn(rows, 4, size // 8, size // 8)
        context = torch.randn(rows, 77, unet.config.cross_attention_dim)
        extra = {}
        if unet.config.addition_embed_type == "text_time":
            pooled = pipe.text_encoder_2.config.projection_dim
            extra["added_cond_kwargs"] = {"text_embeds": torch.randn(rows, pooled),
                                          "time_ids": torch.randn(rows, 6)}
        counts = {}
        for part, call in (
                ("step", lambda: unet(latents, torch.tensor(500), encoder_hidden_states=context,
                                      **extra)),
                ("vae", lambda: pipe.vae.decode(latents[:1])),
                ("text", lambda: [encoder(torch.zeros(prompts, 77, dtype=torch.long))
                                  for encoder in (pipe.text_encoder,
                                                  getattr(pipe, "text_encoder_2", None))
                                  if encoder is not None])):
            with FlopCounterMode(display=False) as counter:
                call()
            counts[part] = float(counter.get_total_flops())
    counts["unet_calls"] = calls
    counts["image"] = calls * counts["step"] + counts["vae"] + counts["text"]
    return counts


# -- the artbot side ------------------------------------------------------------------

async def run_artbot(settings: Settings, generator, folder: Path, run: Run) -> dict:
    """The burst through artbot's queue and a worker holding the loaded model."""
    async with LocalJobQueue(settings.db_path) as queue:
        calls = []
        worker = Worker(queue, ImageStore(settings.image_dir), settings,
                        loader=lambda *args, **options: generator, heartbeat_s=0.5,
                        idle_poll_s=0.05)
        counting(generator, calls)
        started_wall, started = time.time(), time.perf_counter()
        ids = []
        for job in run.jobs:
            spec = build_draw(settings, prompt=job.prompt, model=str(folder), seed=job.seed,
                              size=f"{run.width}x{run.height}", steps=run.steps,
                              guidance=run.guidance)
            submitted = await queue.submit(spec, requester=Requester(f"user{job.user}", "discord"),
                                           settings=settings)
            ids.append(submitted.id)
        await worker.run(burst=True)
        elapsed = time.perf_counter() - started
        latencies, images = [], []
        store = ImageStore(settings.image_dir)
        for job_id in ids:
            job = await queue.get(job_id)
            if job.status.value != "succeeded":
                raise RuntimeError(f"artbot job {job_id} {job.status.value}: {job.error}")
            latencies.append(job.finished_at - started_wall)
            (record,) = await queue.images(job_id)
            images.append(store.open(record.path).convert("RGB"))
    return {"elapsed": elapsed, "latencies": latencies, "images": images, "calls": len(calls)}


def counting(generator, calls: list) -> None:
    """Count the pipeline calls the generator makes (once per generator)."""
    pipe = generator.pipe
    if getattr(type(pipe), "_bench_counts", None) is not None:
        type(pipe)._bench_counts = calls
        return
    own = type(pipe).__call__

    @functools.wraps(own)  # the generator reads the call's parameters from its signature
    def call(self, *args, **kwargs):
        type(self)._bench_counts.append(len(kwargs.get("generator") or [0]))
        return own(self, *args, **kwargs)

    pipe.__class__ = type(type(pipe).__name__, (type(pipe),),
                          {"__call__": call, "_bench_counts": calls})


# -- one model ------------------------------------------------------------------------

def sides(batches: list[int], exact: list[bool]) -> dict[str, tuple[int, bool] | None]:
    out: dict[str, tuple[int, bool] | None] = {"naive diffusers loop": None}
    for b in batches:
        for e in exact:
            out[f"artbot, batches of {b}, exact {'on' if e else 'off'}"] = (b, e)
    return out


def same_images(images: list, reference: list) -> tuple[int, int]:
    """(how many are byte-identical to the reference, the largest pixel difference)."""
    same, worst = 0, 0
    for a, b in zip(images, reference):
        pa, pb = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
        same += int(pa.shape == pb.shape and (pa == pb).all())
        worst = max(worst, int(np.abs(pa - pb).max()) if pa.shape == pb.shape else 255)
    return same, worst


async def bench_model(arch: str, args, device: torch.device, root: Path) -> dict:
    from generators.registry import load_generator

    spec = ARCHES[arch]
    size = args.size or spec.size
    steps = args.steps or (min(spec.steps, 2) if args.smoke else spec.steps)
    run = Run(size, size, steps, spec.guidance, burst(args.users, args.jobs))
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    started = time.perf_counter()
    folder = build_pipeline(arch, root / arch, scale=args.scale, device=device, dtype=dtype)
    built = time.perf_counter() - started
    plain = load_plain(folder, device, dtype)
    generator = load_generator("diffusion", str(folder), device, dtype)  # the worker's loader
    base = Settings(data_dir=root / "data", device=str(device), max_queued_per_user=10_000,
                    max_steps=max(150, steps), max_size=max(1536, size))
    flops = flops_per_image(plain, run)
    table = sides(args.batches, args.exact)
    # Warm up every side (kernels chosen, memory pooled) on a burst of two jobs.
    warm = dataclasses.replace(run, jobs=run.jobs[:2])
    run_naive(plain, warm)
    for name, side in table.items():
        if side is not None:
            settings = dataclasses.replace(base, data_dir=root / f"{arch}-warm-{side[0]}-{side[1]}",
                                           max_batch_images=side[0], exact_batches=side[1])
            await run_artbot(settings, generator, folder, warm)
    figures: dict[str, list[dict]] = {name: [] for name in table}
    for r in range(args.rounds):
        order = list(table) if r % 2 == 0 else list(reversed(table))
        for name in order:
            side = table[name]
            if side is None:
                result = run_naive(plain, run)
            else:
                settings = dataclasses.replace(
                    base, data_dir=root / f"{arch}-r{r}-{side[0]}-{side[1]}",
                    max_batch_images=side[0], exact_batches=side[1])
                result = await run_artbot(settings, generator, folder, run)
            figures[name].append(result)
            print(f"{arch} round {r + 1} {name}: {len(run.jobs) / result['elapsed']:.2f} images/s,"
                  f" {result['calls']} pipeline calls", file=sys.stderr)
    peak = peak_tflops(device)
    out = {"arch": arch, "scale": args.scale, "size": size, "steps": steps,
           "guidance": spec.guidance, "jobs": len(run.jobs), "images_per_job": 1,
           "build_s": built, "flops_per_image": flops,
           "flops_per_image_meta": meta_flops(arch, args.scale, size, steps,
                                              spec.guidance)["image"],
           "device": device_name(device),
           "peak_bf16_tflops": peak, "sides": {}}
    naive_images = figures["naive diffusers loop"]
    for name, results in figures.items():
        rate = statistics.median(len(run.jobs) / r["elapsed"] for r in results)
        achieved = rate * flops / 1e12
        same = [same_images(r["images"], n["images"]) for r, n in zip(results, naive_images)]
        out["sides"][name] = {
            "images": sum(len(r["images"]) for r in results) // len(results),
            "images_per_s": rate,
            "p50_s": statistics.median(statistics.median(r["latencies"]) for r in results),
            "p95_s": statistics.median(percentile(r["latencies"], 0.95) for r in results),
            "calls": statistics.median(r["calls"] for r in results),
            "achieved_tflops": achieved,
            "peak_fraction": achieved / peak if peak else None,
            "same_as_naive": min(s for s, _ in same),
            "max_pixel_difference": max(d for _, d in same),
            "image_sha256": [hashlib.sha256(im.tobytes()).hexdigest()
                             for im in results[0]["images"]],
        }
    del plain, generator
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def markdown(results: list[dict]) -> str:
    lines = ["| model | side | images | images/s | p50 | p95 | pipeline calls | GFLOP/image | "
             "TFLOP/s | of bf16 peak | same as naive |", "|---" * 11 + "|"]
    for res in results:
        label = (f"{res['arch']} x{res['scale']:g}, {res['size']} px, {res['steps']} steps, "
                 f"guidance {res['guidance']:g}")
        for name, s in res["sides"].items():
            frac = f"{s['peak_fraction']:.1%}" if s["peak_fraction"] is not None else "n/a"
            lines.append(
                f"| {label} | {name} | {s['images']} | {s['images_per_s']:.2f} | "
                f"{s['p50_s']:.2f} s | {s['p95_s']:.2f} s | {s['calls']:.0f} | "
                f"{res['flops_per_image'] / 1e9:.1f} | {s['achieved_tflops']:.3f} | {frac} | "
                f"{s['same_as_naive']}/{s['images']} (max diff {s['max_pixel_difference']}) |")
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="sd15,sdxl,sd-turbo",
                    help=f"comma-separated, of {', '.join(ARCHES)}")
    ap.add_argument("--scale", type=float, default=None,
                    help="widths x this (default 1.0 on a GPU, 0.1 on a CPU)")
    ap.add_argument("--size", type=int, default=None, help="image side (default: the model's)")
    ap.add_argument("--steps", type=int, default=None, help="default: the model's usual")
    ap.add_argument("--users", type=int, default=16)
    ap.add_argument("--jobs", type=int, default=1, help="jobs per user, one image each")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--batches", default="4,8", help="artbot's max_batch_images to try")
    ap.add_argument("--exact", default="on,off", help="artbot's exact_batches to try")
    ap.add_argument("--device", default=None, help="default: cuda if there is one, else cpu")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch's CPU threads (0: torch's choice; --smoke: 1)")
    ap.add_argument("--smoke", action="store_true",
                    help="a correctness run for CPUs and CI: scale 0.05, 64 px, 2 steps "
                         "(SD-Turbo 1), 4 users, batches of 1 and 4, one torch thread")
    ap.add_argument("--json", default=None, help="also write the figures here")
    ap.add_argument("--flops-only", action="store_true",
                    help="only count each model's FLOPs an image (meta device: no memory, "
                         "seconds on a CPU, any size) and print them")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.smoke:
        args.scale = args.scale or 0.05
        args.size = args.size or 64
        args.threads = args.threads or 1
        if "--users" not in (argv or sys.argv):
            args.users = 4
        if "--batches" not in (argv or sys.argv):
            args.batches = "1,4"
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scale is None:
        args.scale = 1.0 if device.type == "cuda" else 0.1
    if args.size is None and device.type != "cuda" and args.scale < 1:
        args.size = 128
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    unknown = [a for a in args.archs if a not in ARCHES]
    if unknown:
        ap.error(f"unknown architecture {unknown[0]!r}; choose from {', '.join(ARCHES)}")
    args.batches = [int(b) for b in str(args.batches).split(",")]
    args.exact = [e.strip() == "on" for e in str(args.exact).split(",")]
    return args, device


def flops_table(args) -> str:
    lines = ["| model | size | steps (UNet calls) | guidance | one UNet call | VAE decode | "
             "text encoders | an image |", "|---" * 8 + "|"]
    for arch in args.archs:
        spec = ARCHES[arch]
        size, steps = args.size or spec.size, args.steps or spec.steps
        c = meta_flops(arch, args.scale, size, steps, spec.guidance)
        lines.append(f"| {arch} x{args.scale:g} | {size} px | {steps} ({c['unet_calls']}) | "
                     f"{spec.guidance:g} | "
                     f"{c['step'] / 1e12:.3f} | {c['vae'] / 1e12:.3f} | {c['text'] / 1e12:.4f} "
                     f"| **{c['image'] / 1e12:.2f}** |")
    return "TFLOP, counted with torch.utils.flop_counter (math attention):\n\n" + "\n".join(lines)


async def main(argv=None) -> list[dict]:
    args, device = parse(argv)
    if args.flops_only:
        print(flops_table(args))
        return []
    results = []
    with tempfile.TemporaryDirectory(prefix="artbot-bench-gpu-") as tmp:
        for arch in args.archs:
            results.append(await bench_model(arch, args, device, Path(tmp)))
    print(f"Machine: {machine()}. Device: {device_name(device)}. {args.users} users x "
          f"{args.jobs} one-image jobs at once; medians of {args.rounds} round(s).\n")
    print(markdown(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return results


if __name__ == "__main__":
    asyncio.run(main())
