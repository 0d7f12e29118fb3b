"""LoRAs through the whole path a member's request takes: `<lora:tiny:1.0>` in the
prompt, the gate, the queue, one long-lived worker with the real tiny SD pipeline
and a tiny LoRA made with peft. The LoRA changes the image; the next job without
it gives the byte-identical PNG of a job made before the LoRA was ever loaded."""

from __future__ import annotations

import pytest
from PIL import Image

from generators.diffusion.tiny_lora import build_tiny_lora
from storage.images import ImageStore
from storage.jobs import JobStatus
from worker.policy import Requester
from worker.requests import build_draw
from worker.runner import Worker


@pytest.mark.asyncio
async def test_a_lora_applies_to_its_own_job_only(queue, settings, tiny_pipeline, tmp_path):
    settings.lora_dir = tmp_path / "loras"
    build_tiny_lora(tiny_pipeline, settings.lora_dir / "tiny.safetensors", seed=1,
                    text_encoder=True)
    me = Requester("u", "cli")

    async def submit(prompt):
        spec = build_draw(settings, prompt=prompt, model=str(tiny_pipeline), seed=5, steps=3)
        return await queue.submit(spec, requester=me, settings=settings)

    # In this order, on one worker that keeps the model loaded all along.
    before = await submit("a red fox")
    with_lora = await submit("a red fox <lora:tiny:1.0>")
    half = await submit("a red fox <lora:tiny:0.5>")
    after = await submit("a red fox")
    worker = Worker(queue, ImageStore(settings.image_dir), settings, heartbeat_s=0.05,
                    idle_poll_s=0.05)
    assert await worker.run(burst=True) == 4

    def png(job):
        return (settings.image_dir / images[job.id][0].path).read_bytes()

    images = {}
    for job in (before, with_lora, half, after):
        done = await queue.get(job.id)
        assert done.status is JobStatus.SUCCEEDED, done.error
        images[job.id] = await queue.images(job.id)
    assert png(before) == png(after)  # byte-identical: nothing of the LoRA stayed behind
    assert len({png(before), png(with_lora), png(half)}) == 3
    stored = (await queue.get(with_lora.id)).params
    assert stored["prompt"] == "a red fox" and stored["loras"] == [{"name": "tiny", "weight": 1.0}]
    with Image.open(settings.image_dir / images[half.id][0].path) as im:
        assert im.info["parameters"].startswith("a red fox <lora:tiny:0.5>\n")


@pytest.mark.asyncio
async def test_a_lora_file_that_vanished_fails_its_job_in_words(queue, settings, tiny_pipeline,
                                                                tmp_path):
    settings.lora_dir = tmp_path / "loras"
    path = build_tiny_lora(tiny_pipeline, settings.lora_dir / "gone.safetensors")
    spec = build_draw(settings, prompt="a fox <lora:gone>", model=str(tiny_pipeline), steps=2)
    job = await queue.submit(spec, requester=Requester("u", "cli"), settings=settings)
    path.unlink()
    worker = Worker(queue, ImageStore(settings.image_dir), settings, heartbeat_s=0.05,
                    idle_poll_s=0.05)
    await worker.run(burst=True)
    done = await queue.get(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error == "The LoRA 'gone' is no longer in the operator's LoRA folder."
