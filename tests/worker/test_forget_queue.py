"""`worker.privacy.forget` against the SQLite queue: a member's queued job is canceled and
their running job asked to stop, and waited for, before anything is deleted; another
member's queued job is left alone."""

import asyncio

import pytest

from storage.db import open_db
from storage.images import ImageStore
from storage.jobs import JobStatus, JobStore
from worker.privacy import forget
from worker.queue import LocalJobQueue


def queue_one(store: JobStore, user: str, model: str):
    return store.submit(user_id=user, kind="draw", family="diffusion", model=model,
                        params={"prompt": f"{user}'s"}, seeds=[1], batch_key=model,
                        source="discord", server_id="1")


@pytest.mark.asyncio
async def test_forget_stops_the_members_jobs_before_deleting_them(tmp_path):
    store = JobStore(open_db(tmp_path / "artbot.db"))
    running = queue_one(store, "alice", "a")
    waiting = queue_one(store, "alice", "b")
    bobs = queue_one(store, "bob", "c")
    (claimed,) = store.claim("elsewhere:1", lease_s=60, models=["a"])
    async with LocalJobQueue(tmp_path / "artbot.db") as queue:
        events = queue.subscribe()
        seen = []

        async def worker():
            """A worker that notices the cancel at its heartbeat and stops the job."""
            while True:
                ours, cancel = await queue.heartbeat(claimed, lease_s=60, step=1, total=4)
                if cancel:
                    seen.append(await queue.finish_unsuccessfully(
                        claimed, JobStatus.CANCELED, "Canceled."))
                    return
                await asyncio.sleep(0.05)

        task = asyncio.create_task(worker())
        erased = await forget(queue, ImageStore(tmp_path / "images"), "alice", "1", wait_s=10)
        await task
        assert seen == [True]  # the worker finished the job itself, while its row was there
        assert sorted(erased.job_ids) == [running.id, waiting.id]
        assert (await events.get(1)).job_id == waiting.id  # its message hears it was canceled
        assert await queue.get(running.id) is None and await queue.get(waiting.id) is None
        assert (await queue.get(bobs.id)).status is JobStatus.QUEUED
        # The worker's late result finds no job: nothing is recorded for it.
        assert not await queue.complete(claimed, [], model_revision=None, run_seconds=1.0)
