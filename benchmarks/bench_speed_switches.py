"""What each speed switch (generators/diffusion/speed.py) gains, measured in one run.

Each switch is applied to its own loaded copy of the model, through the catalogue's
path (`DiffusionGenerator.load(..., speed=...)`), and every copy draws the same
one-image job (`generate`, as the worker calls it), the copies taking turns round
after round so that machine noise hits them alike. Reported: the median time per
image, its ratio to the copy without switches under the same `exact_batches`, the
largest pixel difference from that copy's image (0..255), and the extra memory the
switch's weights take. Two models: the tiny SD pipeline (generators/diffusion/tiny.py)
and the SD 1.5 architecture with its widths scaled (benchmarks/real_shapes.py).

    .venv/bin/python benchmarks/bench_speed_switches.py [--rounds 5] [--steps 8]
        [--scale 0.25] [--size 128] [--no-compile] [--threads N]

torch.compile (inductor) is compiled once per copy, at load; the time that takes is
reported with the figures. Prints a Markdown table to paste into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
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

from benchmarks.bench_engine import machine  # noqa: E402
from benchmarks.real_shapes import build_pipeline  # noqa: E402
from generators.base import GenerationRequest, Task  # noqa: E402
from generators.diffusion.generator import DiffusionGenerator  # noqa: E402
from generators.diffusion.tiny import build_tiny_pipeline  # noqa: E402

# name -> (speed switches, exact_batches); the first of each exact setting is its baseline.
SIDES = {
    "off": ({}, True),
    "channels_last": ({"channels_last": True}, True),
    "fuse_projections": ({"fuse_projections": True}, True),
    "channels_last + fuse_projections": ({"channels_last": True, "fuse_projections": True}, True),
    "off, exact off": ({}, False),
    "channels_last, exact off": ({"channels_last": True}, False),
    "fuse_projections, exact off": ({"fuse_projections": True}, False),
    "compile, exact off": ({"compile": True}, False),
}


def load_sides(model: Path, with_compile: bool) -> tuple[dict, dict]:
    """Every side's generator, and the seconds its switches took at load."""
    cpu = torch.device("cpu")
    generators, load_s = {}, {}
    for name, (switches, exact) in SIDES.items():
        if "compile" in switches and not with_compile:
            continue
        started = time.perf_counter()
        speed = {**switches, "exact_batches": exact} if switches else None
        generators[name] = DiffusionGenerator.load(str(model), cpu, torch.float32, speed=speed)
        generators[name].exact = exact
        load_s[name] = time.perf_counter() - started
    return generators, load_s


def measure(model: Path, label: str, size: int, steps: int, rounds: int,
            with_compile: bool) -> list[str]:
    generators, load_s = load_sides(model, with_compile)
    request = GenerationRequest(Task.DRAW, seeds=[7], prompt="a red fox in the snow",
                                width=size, height=size, steps=steps, guidance=7.5)
    images = {name: np.asarray(gen.generate(request).images[0], dtype=np.int16)
              for name, gen in generators.items()}  # also warms every side up
    times: dict[str, list[float]] = {name: [] for name in generators}
    for r in range(rounds):
        order = list(generators) if r % 2 == 0 else list(reversed(generators))
        for name in order:
            started = time.perf_counter()
            generators[name].generate(request)
            times[name].append(time.perf_counter() - started)
        print(f"{label} round {r + 1}: " + ", ".join(
            f"{n} {times[n][-1] * 1000:.0f} ms" for n in generators), file=sys.stderr)
    rows = []
    for name, gen in generators.items():
        exact = SIDES[name][1]
        base = "off" if exact else "off, exact off"
        median = statistics.median(times[name])
        ratio = median / statistics.median(times[base])
        diff = int(np.abs(images[name] - images[base]).max())
        extra = (gen.memory_bytes() - generators[base].memory_bytes()) / 1e6
        note = ""
        if "compile" in name:
            note = f"compile and warm-up at load: {load_s[name]:.0f} s"
        rows.append(f"| {label} | {name} | {median * 1000:.0f} ms | {ratio:.2f} | {diff} | "
                    f"{extra:+.1f} MB | {note} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--scale", type=float, default=0.25, help="SD 1.5 widths x this")
    ap.add_argument("--size", type=int, default=128, help="the SD 1.5-shaped model's image side")
    ap.add_argument("--no-compile", action="store_true", help="leave torch.compile out")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tiny = build_tiny_pipeline(tmp / "tiny-sd")
        sd15 = build_pipeline("sd15", tmp / "sd15", scale=args.scale, size=args.size)
        rows = measure(tiny, "tiny SD, 64 px", 64, args.steps, args.rounds, not args.no_compile)
        rows += measure(sd15, f"SD 1.5 shape x{args.scale:g}, {args.size} px", args.size,
                        args.steps, args.rounds, not args.no_compile)
    print(f"Machine: {machine()}. One image a call, {args.steps} steps, guidance 7.5; "
          f"medians of {args.rounds} interleaved rounds.\n")
    print("| model | switches | time per image | vs off (same exact_batches) | "
          "max pixel difference | extra weights | |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
