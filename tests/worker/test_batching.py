"""Jobs that can share a generator call run as one: fewer pipeline calls than jobs,
every image byte-identical to its job run alone, and each job still lives on its
own (a canceled one loses its images, the others keep theirs; a job that breaks
the batch fails alone)."""

from __future__ import annotations

import dataclasses
import functools

import pytest

from generators.diffusion.generator import DiffusionGenerator
from storage.images import ImageStore
from storage.jobs import JobStatus
from tests.worker.paint import PaintGenerator
from worker.policy import Requester
from worker.queue import LocalJobQueue
from worker.requests import build_draw
from worker.runner import Worker

# A grid of 4 from one member, single images from three others, one prompt each.
ORDERS = [("ann", "a red fox", 4, 11), ("bob", "a blue house", 1, 22),
          ("cat", "green hills at dawn", 1, 33), ("dan", "a yellow boat", 1, 44)]


def counting(generator: DiffusionGenerator, calls: list[int]) -> DiffusionGenerator:
    """The generator, with its pipeline's calls counted (images per call in `calls`)."""
    pipe = generator.pipe
    own = type(pipe).__call__

    @functools.wraps(own)
    def call(self, *args, **kwargs):
        calls.append(len(kwargs["generator"]))
        return own(self, *args, **kwargs)

    pipe.__class__ = type(type(pipe).__name__, (type(pipe),), {"__call__": call})
    return generator


async def run_orders(settings, tiny_pipeline, orders, *, hook=None):
    """Queue `orders` together and run them with one worker; returns (calls, jobs,
    {job id: the sha256 of each image})."""
    calls: list[int] = []
    async with LocalJobQueue(settings.db_path) as queue:
        jobs = []
        for user, prompt, count, seed in orders:
            spec = build_draw(settings, prompt=prompt, count=count, seed=seed, size="64x64",
                              steps=6, model=str(tiny_pipeline))
            jobs.append(await queue.submit(spec, requester=Requester(user, "cli"),
                                           settings=settings))
        holder = {}

        def load(family, model, device, dtype, **options):
            generator = counting(DiffusionGenerator.load(model, device, dtype), calls)
            if hook is not None:
                generator = hook(generator, holder["worker"], jobs)
            return generator

        worker = holder["worker"] = Worker(queue, ImageStore(settings.image_dir), settings,
                                           loader=load, heartbeat_s=0.05, idle_poll_s=0.05)
        assert await worker.run(burst=True) == len(orders)
        done = [await queue.get(job.id) for job in jobs]
        shas = {job.id: [im.sha256 for im in await queue.images(job.id)] for job in jobs}
    return calls, done, shas


def alone(settings, tiny_pipeline, order, tmp_path, name):
    """The order run by itself, on a data directory of its own."""
    return run_orders(dataclasses.replace(settings, data_dir=tmp_path / name), tiny_pipeline,
                      [order])


@pytest.mark.asyncio
async def test_jobs_share_calls_and_each_image_is_the_one_its_job_makes_alone(
        settings, tiny_pipeline, tmp_path):
    calls, jobs, shas = await run_orders(settings, tiny_pipeline, ORDERS)
    assert all(job.status is JobStatus.SUCCEEDED for job in jobs)
    assert len(calls) < len(ORDERS) and sum(calls) == 7  # 4 jobs' 7 images: one call
    for i, order in enumerate(ORDERS):
        solo_calls, (solo,), solo_shas = await alone(settings, tiny_pipeline, order, tmp_path,
                                                     f"alone-{i}")
        assert solo_calls == [order[2]]
        assert shas[jobs[i].id] == solo_shas[solo.id], f"{order[0]}'s images differ from alone"
        assert jobs[i].seeds == solo.seeds


@pytest.mark.asyncio
async def test_a_job_canceled_in_its_batch_loses_its_images_and_the_others_keep_theirs(
        settings, tiny_pipeline, tmp_path):
    def cancel_bob_at_step_2(generator, worker, jobs):
        own = generator.generate_many

        def generate_many(requests, progress):
            def watched(step, total, preview=None, requests=None):
                if step == 2:
                    worker.cancel_local(jobs[1].id)  # as the Cancel button does, mid-call
                progress(step, total, preview, requests=requests)

            return own(requests, watched)

        generator.generate_many = generate_many
        return generator

    calls, jobs, shas = await run_orders(settings, tiny_pipeline, ORDERS, hook=cancel_bob_at_step_2)
    assert len(calls) == 1  # the others went on in the same call
    assert [job.status for job in jobs] == [JobStatus.SUCCEEDED, JobStatus.CANCELED,
                                            JobStatus.SUCCEEDED, JobStatus.SUCCEEDED]
    assert shas[jobs[1].id] == [] and jobs[1].error == "Canceled."
    for i in (0, 2, 3):
        _, (solo,), solo_shas = await alone(settings, tiny_pipeline, ORDERS[i], tmp_path,
                                            f"alone-{i}")
        assert shas[jobs[i].id] == solo_shas[solo.id]


@pytest.mark.asyncio
async def test_a_job_that_breaks_its_batch_fails_alone(queue, settings):
    class Painter(PaintGenerator):
        draw = PaintGenerator._paint

    painter = Painter()
    jobs = []
    for user, prompt in (("ann", "a fox"), ("bob", "crash"), ("cat", "a cat")):
        spec = build_draw(settings, prompt=prompt, size="16x16", steps=2, model="paint-model")
        spec.family = "paint"
        jobs.append(await queue.submit(spec, requester=Requester(user, "cli"), settings=settings))
    worker = Worker(queue, ImageStore(settings.image_dir), settings,
                    loader=lambda *args, **kw: painter, heartbeat_s=0.05, idle_poll_s=0.05)
    assert await worker.run(burst=True) == 3
    done = [await queue.get(job.id) for job in jobs]
    assert [job.status for job in done] == [JobStatus.SUCCEEDED, JobStatus.FAILED,
                                            JobStatus.SUCCEEDED]
    assert "went wrong on our side" in done[1].error
    assert len(await queue.images(jobs[0].id)) == 1 and len(await queue.images(jobs[2].id)) == 1


@pytest.mark.asyncio
async def test_max_batch_images_of_one_runs_one_job_a_call(settings, tiny_pipeline):
    settings.max_batch_images = 1
    calls, jobs, _ = await run_orders(settings, tiny_pipeline, ORDERS[1:])
    assert calls == [1, 1, 1] and all(job.status is JobStatus.SUCCEEDED for job in jobs)


@pytest.mark.asyncio
async def test_the_bundled_default_batches_members_draws_too(settings, tmp_path):
    from worker.runner import _default_loader

    orders = [("ann", "red heart", 2, 5), ("bob", "green apple", 1, 6),
              ("cat", "a smiling face", 1, 7), ("dan", "blue book", 1, 8)]

    async def run(settings, orders):
        calls = []

        def load(family, model, device, dtype, **options):
            generator = _default_loader(family, model, device, dtype, **options)
            own = generator._draw
            generator._draw = lambda requests, progress: (
                calls.append(sum(r.count for r in requests)) or own(requests, progress))
            return generator

        async with LocalJobQueue(settings.db_path) as queue:
            jobs = []
            for user, prompt, count, seed in orders:
                spec = build_draw(settings, prompt=prompt, count=count, seed=seed,
                                  model="emoji-diffusion")
                jobs.append(await queue.submit(spec, requester=Requester(user, "cli"),
                                               settings=settings))
            worker = Worker(queue, ImageStore(settings.image_dir), settings, loader=load)
            assert await worker.run(burst=True) == len(orders)
            shas = [[im.sha256 for im in await queue.images(job.id)] for job in jobs]
            statuses = [(await queue.get(job.id)).status for job in jobs]
        return calls, statuses, shas

    calls, statuses, shas = await run(settings, orders)
    assert statuses == [JobStatus.SUCCEEDED] * 4
    # "red heart", "green apple" and "blue book" are 3 tokens; "a smiling face" loses its
    # article and is 3 too: one call for all five images.
    assert calls == [5]
    for i, order in enumerate(orders):
        _, _, solo = await run(dataclasses.replace(settings, data_dir=tmp_path / f"solo{i}"),
                               [order])
        assert shas[i] == solo[0], f"{order[0]}'s images differ from alone"
