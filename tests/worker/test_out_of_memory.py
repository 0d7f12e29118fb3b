"""Running out of device memory never kills the worker and never loses the job:
the worker retries in smaller calls (half the images each time), then in the
family's low-memory mode, and says so in the job; only when nothing fits does the
job fail, in words, and the worker goes on with the next one."""

from __future__ import annotations

import pytest
import torch

from storage.images import ImageStore
from storage.jobs import JobStatus
from tests.worker.paint import PaintGenerator
from worker.policy import Requester
from worker.requests import build_draw
from worker.runner import Worker


class TightGenerator(PaintGenerator):
    """Paints, but raises CUDA's out-of-memory error for calls of more than `fits`
    images (every call until `use_less_memory` when `fits` is 0), and always for the
    seeds in `too_big`."""

    def __init__(self, fits: int, can_offload: bool = False, too_big: tuple = ()):
        super().__init__()
        self.fits, self.can_offload, self.too_big, self.sizes = fits, can_offload, too_big, []

    def _paint(self, request, progress):
        self.sizes.append(request.count)
        if request.count > self.fits or request.seeds[0] in self.too_big:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super()._paint(request, progress)

    draw = _paint

    def use_less_memory(self):
        if not self.can_offload:
            return None
        self.fits = 4
        return "the model was offloaded to the CPU between its parts"


async def run_jobs(queue, settings, generator, *counts):
    jobs = []
    for i, count in enumerate(counts):
        spec = build_draw(settings, prompt="a fox", count=count, seed=100 * i, size="16x16",
                          steps=2, model="paint-model")
        spec.family = "paint"
        jobs.append(await queue.submit(spec, requester=Requester("u", "cli"), settings=settings))
    worker = Worker(queue, ImageStore(settings.image_dir), settings,
                    loader=lambda *args, **kw: generator, heartbeat_s=0.05, idle_poll_s=0.05)
    assert await worker.run(burst=True) == len(counts)  # the worker ran them all
    return [await queue.get(job.id) for job in jobs]


@pytest.mark.asyncio
async def test_out_of_memory_is_retried_with_fewer_images_per_call(queue, settings):
    generator = TightGenerator(fits=1)
    (job,) = await run_jobs(queue, settings, generator, 4)
    assert job.status is JobStatus.SUCCEEDED
    assert generator.sizes == [4, 2, 1, 1, 1, 1]
    assert [im.seed for im in await queue.images(job.id)] == [0, 1, 2, 3]
    assert job.params["notes"] == [
        "The device ran out of memory, so the images were made 1 at a time."]


@pytest.mark.asyncio
async def test_then_the_low_memory_mode_then_a_clear_failure(queue, settings):
    generator = TightGenerator(fits=0, can_offload=True)
    (job,) = await run_jobs(queue, settings, generator, 2)
    assert job.status is JobStatus.SUCCEEDED
    assert "the model was offloaded to the CPU between its parts" in job.params["notes"][-1]

    # Nothing fits and there is no low-memory mode: the job fails in words, and the
    # next job (which fits) still runs on the same worker.
    generator = TightGenerator(fits=4, too_big=(0,))
    failed, fine = await run_jobs(queue, settings, generator, 1, 1)
    assert failed.status is JobStatus.FAILED
    assert failed.error == ("The device ran out of memory even for one image at a time; "
                            "try a smaller size.")
    assert fine.status is JobStatus.SUCCEEDED


class TightBatcher(TightGenerator):
    """Makes a batch of jobs in one call, as the diffusion family does, so the call's
    size is the sum of the jobs' images."""

    def generate_many(self, requests, progress):
        total = sum(r.count for r in requests)
        self.sizes.append(total)
        if total > self.fits:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return [PaintGenerator._paint(self, r, progress) for r in requests]


@pytest.mark.asyncio
async def test_a_batch_out_of_memory_is_split_and_later_batches_stay_smaller(queue, settings):
    generator = TightBatcher(fits=2)
    submit = []
    for user in "abcd":
        spec = build_draw(settings, prompt="a fox", seed=ord(user), size="16x16", steps=2,
                          model="paint-model")
        spec.family = "paint"
        submit.append(spec)
    worker = Worker(queue, ImageStore(settings.image_dir), settings,
                    loader=lambda *args, **kw: generator, heartbeat_s=0.05, idle_poll_s=0.05)
    for spec, user in zip(submit, "abcd"):
        await queue.submit(spec, requester=Requester(user, "cli"), settings=settings)
    assert await worker.run(burst=True) == 4
    assert generator.sizes == [4, 2, 2]  # the batch of 4 jobs ran out, then two calls of 2
    assert worker.batch_images == 2
    for spec, user in zip(submit, "abcd"):
        await queue.submit(spec, requester=Requester(user, "cli"), settings=settings)
    assert await worker.run(burst=True) == 4
    assert generator.sizes[3:] == [2, 2]  # claimed two jobs at a time from then on
    jobs = await queue.list_jobs(limit=10)
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs) and len(jobs) == 8
