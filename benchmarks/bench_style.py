"""Style-transfer speed and the gatys-versus-baseline comparison, in one run.

    .venv/bin/python benchmarks/bench_style.py [--compare-only]

- gatys (coarse to fine, default settings, 100 steps) on the drawn house scene
  with the stripes texture, seconds per image at 256 and 512 px;
- adain, one forward pass, milliseconds per image at 256 and 512 px (with
  stand-in random decoder weights: the same FLOPs as the real ones);
- the comparison the issue asks for: gatys against plain single-scale Adam on
  the same inputs with the same compute budget (pixels through VGG), final
  loss measured the same way for both, wall-clock seconds for both.

All on VGG-19 with fixed-seed random weights, which cost the same as ImageNet
weights. Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from generators.style.adain import AdaIN, build_decoder  # noqa: E402
from generators.style.gatys import GatysConfig, final_losses, stylize  # noqa: E402
from generators.style.generator import to_tensor01  # noqa: E402
from generators.style.vgg import VGG19Features  # noqa: E402
from tests.generators.style_images import house_scene, stripes  # noqa: E402


def main() -> None:
    compare_only = "--compare-only" in sys.argv[1:]
    torch.manual_seed(0)
    vgg = VGG19Features().randomize(0).eval().requires_grad_(False)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only\n")
    print("| measure | value |")
    print("|---|---|")
    for size in (() if compare_only else (256, 512)):
        c, s = to_tensor01(house_scene(size)), to_tensor01(stripes(size))
        cfg = GatysConfig(steps=100, scales=3 if size >= 384 else 2)
        t = time.perf_counter()
        stylize(vgg, c, s, cfg)
        print(f"| gatys, {size} px, 100 steps, {cfg.scales} scales | {time.perf_counter() - t:.1f} s |",
              flush=True)
    model = AdaIN(vgg, build_decoder().eval())
    for size in (() if compare_only else (256, 512)):
        c, s = to_tensor01(house_scene(size)), to_tensor01(stripes(size))
        model(c, s)
        t = time.perf_counter()
        for _ in range(3):
            model(c, s)
        print(f"| adain, {size} px, one pass | {(time.perf_counter() - t) / 3 * 1000:.0f} ms |", flush=True)

    size = 128
    c, s = to_tensor01(house_scene(size)), to_tensor01(stripes(size))
    yard = GatysConfig()
    rows = []
    for name, cfg in (("plain Adam, single scale, 40 steps", GatysConfig(steps=40, scales=1)),
                      ("gatys, 2 scales, 74 steps (49 at 64 px, 25 at 128 px)", GatysConfig(steps=74, scales=2))):
        t = time.perf_counter()
        out = stylize(vgg, c, s, cfg)
        seconds = time.perf_counter() - t
        total, style = final_losses(vgg, out.image, c, s, yard)
        rows.append((name, total, style, seconds))
    for name, total, style, seconds in rows:
        print(f"| {name}, {size} px: final loss (style term) | {total:.2f} ({style:.4f}) in {seconds:.1f} s |")
    print(f"| **gatys loss / baseline loss** | **{rows[1][1] / rows[0][1]:.3f}** (≤ 1 wanted) |")
    print(f"| **gatys time / baseline time** | **{rows[1][3] / rows[0][3]:.3f}** (≤ 1 wanted) |")


if __name__ == "__main__":
    main()
