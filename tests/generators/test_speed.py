"""Speed switches (generators/diffusion/speed.py): each one, applied to a tiny
pipeline, still draws the image it drew without it, give or take the last bits;
exact batches stay exact with them; compile warms up at load and is refused where
it cannot work; the catalogue reads the switches and the worker applies them."""

from __future__ import annotations

import importlib.util
import types

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import FusedAttnProcessor2_0

from artbot.config import ConfigError, Settings, load_settings
from generators.base import GenerationRequest, Task
from generators.diffusion.generator import DiffusionGenerator
from generators.diffusion.speed import apply_speed_switches, compile_unavailable
from storage.images import ImageStore
from storage.jobs import JobStatus
from worker.policy import Requester
from worker.queue import LocalJobQueue
from worker.requests import build_draw
from worker.runner import Worker

CPU = torch.device("cpu")
# Tiny sizes: sd1 64 px, sdxl 96 px (their native sizes).
SIZES = {"sd1": 64, "sdxl": 96}


def draw(arch: str, seed: int, prompt: str = "a red fox"):
    size = SIZES[arch]
    return GenerationRequest(Task.DRAW, seeds=[seed], prompt=prompt, width=size, height=size,
                             steps=4, guidance=7.5)


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def ignore_progress(step, total, preview=None, requests=None):
    pass


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
@pytest.mark.parametrize("switch", ["channels_last", "fuse_projections"])
def test_a_switch_still_draws_the_same_image_to_within_a_level(tiny_models, arch, switch):
    path = str(tiny_models(arch))
    plain = DiffusionGenerator.load(path, CPU, torch.float32)
    fast = DiffusionGenerator.load(path, CPU, torch.float32, speed={switch: True})
    unet = fast.pipe.unet
    if switch == "channels_last":
        assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    else:
        assert all(isinstance(p, FusedAttnProcessor2_0) for p in unet.attn_processors.values())
        assert any(hasattr(m, "to_qkv") for m in unet.modules())
    for seed in (1, 2):
        a = pixels(plain.generate(draw(arch, seed)).images[0])
        b = pixels(fast.generate(draw(arch, seed)).images[0])
        # The same arithmetic in another order of sums (another memory layout, one matrix
        # product for three): float32 results differ in their last bits (measured: at most
        # 3e-6 of the 0..1 range), which can flip the rounding of a pixel to 8 bits.
        # A switch that broke the network would move pixels by tens of levels.
        assert np.abs(a - b).max() <= 1
        assert (a != b).mean() < 0.01


def test_exact_batches_stay_byte_identical_with_channels_last_and_fused_projections(
        tiny_pipeline):
    """SD 1.x only: the tiny SDXL's batched images differ from its lone ones already
    without any switch (measured on this CPU), which is the batching's matter, not theirs."""
    arch = "sd1"
    gen = DiffusionGenerator.load(str(tiny_pipeline), CPU, torch.float32,
                                  speed={"channels_last": True, "fuse_projections": True})
    requests = [draw(arch, seed, prompt)
                for seed, prompt in ((1, "a red fox"), (2, "a blue cat"), (3, "green hills"))]
    alone = [gen.generate(r).images[0].tobytes() for r in requests]
    together = [r.images[0].tobytes() for r in gen.generate_many(requests, ignore_progress)]
    assert together == alone


def test_compile_is_refused_while_exact_batches_is_on(tiny_pipeline):
    gen = DiffusionGenerator.load(str(tiny_pipeline), CPU, torch.float32)
    notes = apply_speed_switches(gen.pipe, compile=True, exact_batches=True)
    assert notes == [notes[0]] and notes[0].startswith("compile: skipped, exact_batches is on")
    assert gen.pipe.unet._compiled_call_impl is None


def test_compile_warms_up_at_load_so_the_first_job_compiles_nothing(tiny_pipeline):
    """With dynamo's "eager" backend (tracing without code generation: seconds here,
    where inductor takes minutes on this CPU; docs/benchmarks.md)."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    try:
        plain = DiffusionGenerator.load(str(tiny_pipeline), CPU, torch.float32)
        compiled = DiffusionGenerator.load(str(tiny_pipeline), CPU, torch.float32)
        plain.exact = compiled.exact = False
        notes = apply_speed_switches(compiled.pipe, compile=True, exact_batches=False,
                                     compile_backend="eager")
        assert notes[0].startswith("compile: applied to the unet (backend eager), warmed up")
        graphs = counters["stats"]["unique_graphs"]
        assert graphs > 0  # traced at load, by the warm-up call
        image = compiled.generate(draw("sd1", 5)).images[0]
        assert counters["stats"]["unique_graphs"] == graphs  # the job's call traced nothing new
        assert counters["stats"]["calls_captured"] > 0
        expected = plain.generate(draw("sd1", 5)).images[0]
        assert np.abs(pixels(image) - pixels(expected)).max() <= 1
    finally:
        torch._dynamo.reset()


def test_compile_says_why_where_the_device_has_no_compiler():
    assert compile_unavailable(torch.device("mps")) == "torch.compile is not offered on mps"
    if importlib.util.find_spec("triton") is None:
        assert "triton is not installed" in compile_unavailable(torch.device("cuda"))
    assert compile_unavailable(torch.device("mps"), backend="eager") is None


def test_switches_a_model_lacks_are_skipped_with_the_reason():
    convless = types.SimpleNamespace(transformer=torch.nn.Linear(4, 4))
    assert apply_speed_switches(convless, channels_last=True, fuse_projections=True) == [
        "fuse_projections: skipped, the transformer (Linear) has no fused form",
        "channels_last: skipped, the pipeline has no UNet or VAE with convolutions",
    ]
    assert apply_speed_switches(types.SimpleNamespace(), compile=True, exact_batches=False) == [
        "compile: skipped, the pipeline has no UNet or transformer"]
    assert apply_speed_switches(convless) == []


def test_the_catalogue_reads_the_switches(tmp_path):
    cfg = tmp_path / "artbot.toml"
    cfg.write_text('[models.fast]\nsource = "/m/sd15"\ncompile = true\nchannels_last = true\n'
                   'fuse_projections = true\nloras = []\n'
                   '[models.plain]\nsource = "/m/other"\n')
    s = load_settings({"ARTBOT_CONFIG": str(cfg)})
    fast, plain = s.model_entry("fast"), s.model_entry("plain")
    assert (fast.compile, fast.channels_last, fast.fuse_projections) == (True, True, True)
    assert (plain.compile, plain.channels_last, plain.fuse_projections) == (False, False, False)
    assert fast.speed_switches(exact_batches=False) == {
        "compile": True, "channels_last": True, "fuse_projections": True, "exact_batches": False}
    assert plain.speed_switches(exact_batches=True) is None
    for bad, message in [('[models.x]\nsource = "/s"\ncompile = "yes"\n', "models.x.compile"),
                         ('[models.x]\nsource = "/s"\nchannels_last = 1\n',
                          "models.x.channels_last"),
                         ('[models.x]\nsource = "/s"\nfuse_projections = true\n', "loras = \\[\\]"),
                         ('[models.x]\nsource = "/s"\nfuse_projections = true\nloras = ["a"]\n',
                          "loras = \\[\\]")]:
        cfg.write_text(bad)
        with pytest.raises(ConfigError, match=message):
            load_settings({"ARTBOT_CONFIG": str(cfg)})


@pytest.mark.asyncio
async def test_the_worker_loads_a_catalogue_model_with_its_switches(tiny_pipeline, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", device="cpu", models={"fast": {
        "source": str(tiny_pipeline), "channels_last": True, "fuse_projections": True,
        "loras": []}})
    async with LocalJobQueue(settings.db_path) as queue:
        spec = build_draw(settings, prompt="a red fox", model="fast", size="64x64", steps=3,
                          seed=7)
        job = await queue.submit(spec, requester=Requester("ann", "cli"), settings=settings)
        worker = Worker(queue, ImageStore(settings.image_dir), settings, heartbeat_s=0.05,
                        idle_poll_s=0.05)
        assert await worker.run(burst=True) == 1
        assert (await queue.get(job.id)).status is JobStatus.SUCCEEDED
    (gen,) = worker._models.values()
    assert gen.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert any(hasattr(m, "to_qkv") for m in gen.pipe.vae.modules())
