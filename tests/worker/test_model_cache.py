"""The worker keeps models loaded by a memory budget, not by a count: the least
recently used go first, as soon as the loaded weights would not fit; a model's
size is read from its files before it is loaded and measured once it is."""

from __future__ import annotations

import pytest
import torch

from generators.diffusion.tiny import build_tiny_pipeline
from storage.images import ImageStore
from tests.worker.paint import PaintGenerator
from worker.policy import Requester
from worker.requests import build_draw
from worker.runner import Worker

MB = 1_000_000


class Weighty(PaintGenerator):
    """A paint model whose weights are a real tensor of `mb` megabytes."""

    def __init__(self, mb: int):
        super().__init__()
        self.weights = torch.nn.Linear(mb * MB // 4, 1, bias=False)


async def draw_with(queue, settings, worker, *models):
    for model in models:
        spec = build_draw(settings, prompt="a fox", size="16x16", steps=1, model=model)
        spec.family = "paint"
        await queue.submit(spec, requester=Requester("u", "cli"), settings=settings)
        await worker.run(burst=True)


@pytest.mark.asyncio
async def test_models_stay_loaded_while_they_fit_the_budget(queue, settings):
    sizes = {"a": 5, "b": 4, "c": 3, "d": 12}
    loads = []

    def loader(family, model, device, dtype):
        loads.append(model)
        return Weighty(sizes[model])

    settings.model_memory_gb = 10 * MB / 1e9
    worker = Worker(queue, ImageStore(settings.image_dir), settings, loader=loader,
                    heartbeat_s=0.05, idle_poll_s=0.05)
    assert worker.memory_budget() == 10 * MB
    await draw_with(queue, settings, worker, "a")
    assert worker.loaded_models() == ["a"]
    await draw_with(queue, settings, worker, "c")  # 5 + 3 fit
    assert worker.loaded_models() == ["a", "c"]
    await draw_with(queue, settings, worker, "a")  # used again: now the most recent
    await draw_with(queue, settings, worker, "b")  # 5 + 3 + 4 do not fit: c (least recent) goes
    assert worker.loaded_models() == ["a", "b"]
    await draw_with(queue, settings, worker, "d")  # larger than the budget: alone, still drawn
    assert worker.loaded_models() == ["d"]
    assert loads == ["a", "c", "b", "d"]  # "a" was not loaded twice


def test_a_diffusers_model_is_measured_and_its_files_read_before_loading(tmp_path, settings):
    from generators.diffusion.generator import DiffusionGenerator
    from worker.catalogue import parameter_count

    folder = build_tiny_pipeline(tmp_path / "tiny")
    gen = DiffusionGenerator.load(str(folder), torch.device("cpu"), torch.float32)
    measured = gen.memory_bytes()
    # float32: 4 bytes a parameter, as the files' headers count them (plus a few
    # buffers the files do not hold, such as CLIP's position ids).
    assert 0 <= measured - parameter_count(str(folder)) * 4 < 1000
    gen.img2img_pipeline()  # shares the modules: counted once
    assert gen.memory_bytes() == measured
