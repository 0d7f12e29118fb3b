"""What a preview of the image forming costs, on the CPU, with nothing downloaded.

    .venv/bin/python benchmarks/bench_previews.py [--rounds 7]

- The tiny random-weight SD pipeline (64x64, 20 steps): the step time of a draw
  that offers previews and takes none (as between the worker's previews), and the
  time of taking one, timed inside draws that take one at *every* step (the
  worker takes one at most every 1.5 s a job); rounds alternate; medians.
- Realistic shapes, ms per preview (median of 15 after a warm-up): the linear
  preview of an SD 1.x latent at 512 px (4x64x64), SDXL at 1024 px (4x128x128),
  SD3/Flux at 1024 px (16x128x128, Flux's packed form unpacked first), and an
  AutoencoderTiny of TAESD's real architecture (diffusers' default config,
  random weights: the same arithmetic as madebyollin/taesd) on a 4x64x64 latent,
  as artbot decodes it (averaged down to 256 px out) and whole (512 px out, as
  ComfyUI does; median of 5). Each includes what the worker then does with it:
  shrink to 256 px and encode a JPEG.

The share of a job a preview takes is its cost over the 1.5 s between previews,
whatever the step time. Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from generators.base import GenerationRequest, Task  # noqa: E402
from generators.diffusion.tiny import build_tiny_pipeline  # noqa: E402
from generators.previews import FLUX, SD1, SDXL, diffusion_preview, linear_preview, unpack_latents  # noqa: E402
from generators.registry import load_generator  # noqa: E402

EVERY_S = 1.5  # worker.runner.PREVIEW_EVERY_S


def as_sent(image) -> bytes:
    """What the worker makes of a preview (worker.runner.Worker._preview_of)."""
    image = image.convert("RGB")
    image.thumbnail((256, 256))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def tiny_vae_image(vae, latents):
    """A whole-size decode, as ComfyUI's TAESD previews do, for comparison."""
    image = vae.decode(latents).sample[0]
    return Image.fromarray(((image.clamp(-1, 1) + 1) * 127.5).round().byte()
                           .permute(1, 2, 0).numpy(), "RGB")


def median_ms(fn, repeat: int = 15) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def tiny_pipeline_steps(rounds: int) -> tuple[float, float]:
    """Median ms of a step of the tiny pipeline's plain draw (previews offered, none
    taken, as between the worker's previews), and median ms of taking one (its
    32x32 latents to a 256 px JPEG), timed inside draws that take one every step."""
    with tempfile.TemporaryDirectory() as folder:
        gen = load_generator("diffusion", str(build_tiny_pipeline(Path(folder) / "tiny")),
                             torch.device("cpu"), torch.float32)
    steps = 20
    request = GenerationRequest(task=Task.DRAW, seeds=[1], prompt="a red fox", width=64,
                                height=64, steps=steps)
    plain, taken = [], []

    def every_step(step, total, preview=None):
        t = time.perf_counter()
        as_sent(preview(0))
        taken.append((time.perf_counter() - t) * 1000)

    gen.generate(request)  # warm-up
    for _ in range(rounds):
        t = time.perf_counter()
        gen.generate(request)
        plain.append((time.perf_counter() - t) / steps * 1000)
        gen.generate(request, every_step)
    return statistics.median(plain), statistics.median(taken)


def main() -> None:
    rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 7
    torch.manual_seed(0)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only\n")
    step, preview = tiny_pipeline_steps(rounds)
    print("| measure | value |")
    print("|---|---|")
    print(f"| tiny SD pipeline, 64x64, a step, previews offered, none taken (median of {rounds} "
          f"draws) | {step:.1f} ms |")
    print(f"| same pipeline, taking one preview (32x32 latents to a 256 px JPEG; median of "
          f"{rounds * 20}) | {preview:.1f} ms ({preview / step * 100:.1f}% of a step, "
          f"{preview / (EVERY_S * 1000) * 100:.2f}% of the 1.5 s between previews) |")

    from diffusers import AutoencoderTiny, FluxPipeline

    sd = torch.randn(1, 4, 64, 64)
    xl = torch.randn(1, 4, 128, 128)
    flux = FluxPipeline._pack_latents(torch.randn(1, 16, 128, 128), 1, 16, 128, 128)  # (1, 4096, 64)
    taesd = AutoencoderTiny().eval()  # TAESD's architecture, random weights

    class Pipe:  # what diffusion_preview reads of a pipeline: its VAE's factor
        vae_scale_factor = 8

    cases = [
        ("linear, SD 1.x 512 px (4x64x64)", lambda: as_sent(linear_preview(sd[0], SD1))),
        ("linear, SDXL 1024 px (4x128x128)", lambda: as_sent(linear_preview(xl[0], SDXL))),
        ("linear, Flux 1024 px (packed 4096x64, unpacked to 16x128x128)",
         lambda: as_sent(linear_preview(unpack_latents(flux, (1024, 1024), 8)[0], FLUX))),
        ("AutoencoderTiny (TAESD architecture), 4x64x64 averaged to 4x32x32, to 256x256",
         lambda: as_sent(diffusion_preview(Pipe(), sd, preview_vae=taesd)(0))),
        ("AutoencoderTiny (TAESD architecture), 4x64x64 decoded whole to 512x512",
         lambda: as_sent(tiny_vae_image(taesd, sd))),
    ]
    offer = median_ms(lambda: [diffusion_preview(Pipe(), xl) for _ in range(1000)])  # µs for one
    print(f"| offering a preview at a step (making `preview`, not calling it) | {offer:.1f} µs |")
    for name, fn in cases:
        with torch.inference_mode():
            ms = median_ms(fn, repeat=5 if "TAESD" in name else 15)
        print(f"| {name}, with shrink and JPEG | {ms:.1f} ms "
              f"({ms / (EVERY_S * 1000) * 100:.2f}% of the 1.5 s between previews) |", flush=True)


if __name__ == "__main__":
    main()
