"""The offline default's time per image, in one run: emoji-diffusion as `artbot draw` uses it.

    .venv/bin/python benchmarks/bench_offline_default.py [--rounds 15] [--cli-rounds 5]

1. Generation alone, in this process, the model loaded once: one image of
   "a red heart" at 64x64, guidance 3.5 (two rows through the model), with the
   settings below taken in turn, round after round; medians (and the fastest).
   - DDIM, 30 steps, on torch's own thread count: the setting and the code path
     before this benchmark's change (`draw` called directly, as `generate` did);
   - DDIM, 30 steps, one thread: options {"sampler": "ddim"} now;
   - DPM++ 2M in the model's default steps (15), torch's own thread count: the
     new setting alone;
   - DPM++ 2M, its default steps, one thread: the default now (`generate`).
   Plus the model's load and its first image (once, before the rounds).
2. `artbot draw "a red heart" --seed 3` in subprocesses, each with a fresh data
   directory, the two sides alternating: the bundled model, and a copy of it
   whose config.json names no sampler and no steps (so DDIM in 30 steps, as it
   shipped before; the thread setting is this code's for both). Wall time, and
   the run time the command prints ("done in"), which counts the worker's import
   of torch and the model's load as well as the image.
3. `python -c "import torch"` in a subprocess, which part 2 pays once per command.

The machine is shared, so the load average before and after is printed too.
Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from generators.base import GenerationRequest, Task, no_progress  # noqa: E402
from generators.bundled import bundled_path, model_defaults  # noqa: E402
from generators.registry import load_generator  # noqa: E402

PROMPT = "a red heart"
STEPS = int(model_defaults("emoji-diffusion")["steps"])  # what `artbot draw` asks of it
ARTBOT = Path(sys.executable).parent / "artbot"


def request(steps: int, sampler: str, seed: int = 3) -> GenerationRequest:
    return GenerationRequest(task=Task.DRAW, seeds=[seed], prompt=PROMPT, width=64, height=64,
                             steps=steps, guidance=3.5, options={"sampler": sampler})


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def generation(rounds: int) -> tuple[list[tuple[str, list[float]]], float, float]:
    """(label, seconds per round) per setting, the load's seconds, the first image's seconds."""
    cpu = torch.device("cpu")
    t = time.perf_counter()
    gen = load_generator("pixel-diffusion", "emoji-diffusion", cpu, torch.float32)
    load = time.perf_counter() - t
    first = timed(lambda: gen.generate(request(STEPS, "dpmpp_2m")))
    threads = torch.get_num_threads()
    settings = [
        (f"DDIM, 30 steps, {threads} torch threads (before)",
         lambda: gen.draw(request(30, "ddim"), no_progress)),
        ("DDIM, 30 steps, 1 thread", lambda: gen.generate(request(30, "ddim"))),
        (f"DPM++ 2M, {STEPS} steps, {threads} torch threads",
         lambda: gen.draw(request(STEPS, "dpmpp_2m"), no_progress)),
        (f"**DPM++ 2M, {STEPS} steps, 1 thread (now)**",
         lambda: gen.generate(request(STEPS, "dpmpp_2m"))),
    ]
    times: dict[str, list[float]] = {label: [] for label, _ in settings}
    for _ in range(rounds):
        for label, fn in settings:
            times[label].append(timed(fn))
    return list(times.items()), load, first


def old_model_copy(folder: Path) -> Path:
    """emoji-diffusion as it shipped before: its config.json without "sampling" and "steps"."""
    out = folder / "emoji-diffusion-ddim30"
    shutil.copytree(bundled_path("emoji-diffusion"), out)
    config = json.loads((out / "config.json").read_text())
    config.pop("sampling", None)
    config.get("defaults", {}).pop("steps", None)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out


def cli_draw(model: str | None, folder: Path) -> tuple[float, float]:
    """(wall seconds, the run seconds it prints) of one `artbot draw` with a fresh data dir."""
    data = Path(tempfile.mkdtemp(dir=folder))
    env = dict(os.environ, ARTBOT_DATA_DIR=str(data), ARTBOT_DEVICE="cpu", HF_HUB_OFFLINE="1")
    env.pop("ARTBOT_DEFAULT_MODEL", None)
    env.pop("ARTBOT_CONFIG", None)
    args = [str(ARTBOT), "draw", PROMPT, "--seed", "3", "--out", str(data / "h.png")]
    args += ["--model", model] if model else []
    t = time.perf_counter()
    r = subprocess.run(args, env=env, capture_output=True, text=True, cwd=folder, timeout=600)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"artbot draw failed: {r.stderr}")
    run = float(re.search(r"done in ([0-9.]+)s", r.stderr).group(1))
    return wall, run


def torch_import_seconds() -> float:
    return timed(lambda: subprocess.run([sys.executable, "-c", "import torch"], check=True))


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15, help="rounds of part 1 (default 15)")
    ap.add_argument("--cli-rounds", type=int, default=5, help="commands per side in part 2 (default 5)")
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, CPU only; "
          f"Python {platform.python_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads by default. Load average {load_before:.2f} at the "
          "start.\n", flush=True)

    times, load, first = generation(args.rounds)
    print(f"Generation alone, one image of \"{PROMPT}\" at 64x64, guidance 3.5, in-process, "
          f"{args.rounds} interleaved rounds:\n")
    print("| setting | median | fastest |")
    print("|---|---|---|")
    for label, values in times:
        print(f"| {label} | {ms(statistics.median(values))} | {ms(min(values))} |")
    before, now = statistics.median(times[0][1]), statistics.median(times[-1][1])
    print(f"| **before / now** | **{before / now:.1f}x** | |")
    print(f"\nLoad of the model: {ms(load)}; its first image: {ms(first)}.\n", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        old = str(old_model_copy(folder))
        results: dict[str, list[tuple[float, float]]] = {"now": [], "before": []}
        imports = []
        for _ in range(args.cli_rounds):
            results["now"].append(cli_draw(None, folder))
            results["before"].append(cli_draw(old, folder))
            imports.append(torch_import_seconds())
    print(f"`artbot draw \"{PROMPT}\" --seed 3`, {args.cli_rounds} commands a side, alternating:\n")
    print("| model | wall, median | \"done in\" (import torch, load, image), median |")
    print("|---|---|---|")
    for name, label in (("before", "DDIM, 30 steps (a copy of the config as it shipped)"),
                        ("now", f"**emoji-diffusion now: DPM++ 2M, {STEPS} steps**")):
        walls, runs = zip(*results[name])
        print(f"| {label} | {statistics.median(walls):.2f} s | {statistics.median(runs):.2f} s |")
    print(f"| `python -c \"import torch\"` alone | {statistics.median(imports):.2f} s | |")
    print(f"\nLoad average {os.getloadavg()[0]:.2f} at the end.")


if __name__ == "__main__":
    main()
