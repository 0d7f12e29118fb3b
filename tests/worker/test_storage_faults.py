"""The worker when storage fails under it: a disk that fills while a job's images are
written, and a database that cannot take a job's outcome. The job is never left
`running` by a living worker; members read a short reason; nothing is lost."""

import asyncio
import errno

import pytest

from artbot.errors import StorageFault
from storage.db import open_db
from storage.images import ImageStore
from storage.jobs import JobStatus, JobStore
from storage.faults import disk_full
from tests.worker.paint import paint_loader
from tests.worker.test_worker import spec
from worker.policy import Requester
from worker.queue import gave_up_after
from worker.runner import Worker


class FillingStore(ImageStore):
    """An image store on a disk that is full for the first `full_for` writes: each
    raises the OSError a real full disk raises (ENOSPC), after the temporary file."""

    def __init__(self, root, full_for: int):
        super().__init__(root)
        self.full_for = full_for

    def put_bytes(self, data, suffix=".png"):
        if self.full_for > 0:
            self.full_for -= 1
            try:
                raise OSError(errno.ENOSPC, "No space left on device")
            except OSError as exc:
                from storage.images import _raise_fault

                _raise_fault(exc, self.root)
        return super().put_bytes(data, suffix)


async def submit(queue, settings, **kw):
    return await queue.submit(spec(settings, **kw), requester=Requester("u", "cli"),
                              settings=settings)


@pytest.mark.asyncio
async def test_images_that_cannot_be_written_fail_the_job_with_the_reason(queue, settings):
    job = await submit(queue, settings)
    worker = Worker(queue, FillingStore(settings.image_dir, full_for=1), settings,
                    loader=paint_loader(0.0), heartbeat_s=0.05, idle_poll_s=0.05)
    assert await worker.run(burst=True) == 1
    done = await queue.get(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error.startswith("The result could not be saved: the disk is full.")
    assert "Traceback" not in done.error and str(settings.data_dir) not in done.error
    assert await queue.images(job.id) == []
    assert not list(settings.image_dir.rglob(".tmp-*"))  # no half file left behind


@pytest.mark.asyncio
async def test_a_long_running_worker_pauses_after_a_full_disk_then_goes_on(queue, settings, monkeypatch):
    import worker.runner as runner

    monkeypatch.setattr(runner, "STORAGE_PAUSE_S", 0.2)
    first = await submit(queue, settings, seed=1)
    second = await submit(queue, settings, seed=2)
    store = FillingStore(settings.image_dir, full_for=1)
    worker = Worker(queue, store, settings, loader=paint_loader(0.0),
                    heartbeat_s=0.05, idle_poll_s=0.05)
    task = asyncio.create_task(worker.run())
    for _ in range(200):
        if (await queue.get(second.id)).status is JobStatus.SUCCEEDED:
            break
        await asyncio.sleep(0.05)
    worker.stop()
    await asyncio.wait_for(task, 5)
    assert (await queue.get(first.id)).status is JobStatus.FAILED
    assert (await queue.get(second.id)).status is JobStatus.SUCCEEDED  # after the pause


class RefusingQueue:
    """The real queue, whose database refuses the first `refuse` writes of a job's
    outcome (complete, fail) as a full disk does."""

    def __init__(self, queue, settings, refuse: int, requeue_refusals: int = 0):
        self._q, self._settings = queue, settings
        self.refuse, self.requeue_refusals = refuse, requeue_refusals

    def __getattr__(self, name):
        return getattr(self._q, name)

    def _fault(self):
        return disk_full(self._settings.db_path)

    async def complete(self, *a, **kw):
        if self.refuse > 0:
            self.refuse -= 1
            raise self._fault()
        return await self._q.complete(*a, **kw)

    async def requeue(self, job):
        if self.requeue_refusals > 0:
            self.requeue_refusals -= 1
            raise self._fault()
        return await self._q.requeue(job)


@pytest.mark.asyncio
async def test_an_outcome_the_database_refuses_puts_the_job_back(queue, settings):
    job = await submit(queue, settings)
    refusing = RefusingQueue(queue, settings, refuse=1)
    worker = Worker(refusing, ImageStore(settings.image_dir), settings,
                    loader=paint_loader(0.0), heartbeat_s=0.05, idle_poll_s=0.05)
    assert await worker.run_job((await queue.claim("w", lease_s=30))[0]) is JobStatus.QUEUED
    again = await queue.get(job.id)
    assert again.status is JobStatus.QUEUED  # not `running`: the next claim runs it
    # The next run stores it; the images written the first time are the same files.
    assert await Worker(queue, ImageStore(settings.image_dir), settings,
                        loader=paint_loader(0.0)).run(burst=True) == 1
    assert (await queue.get(job.id)).status is JobStatus.SUCCEEDED


@pytest.mark.asyncio
async def test_a_burst_run_stops_with_the_fault_when_nothing_can_be_written(queue, settings):
    job = await submit(queue, settings)
    refusing = RefusingQueue(queue, settings, refuse=1, requeue_refusals=5)
    worker = Worker(refusing, ImageStore(settings.image_dir), settings,
                    loader=paint_loader(0.0), heartbeat_s=0.05, idle_poll_s=0.05)
    with pytest.raises(StorageFault, match="is full"):
        await worker.run(burst=True)
    running = await queue.get(job.id)
    assert running.status is JobStatus.RUNNING  # the fault stops the run; the lease holds it
    # Its lease runs out with the process; the next worker's sweep puts it back.
    db = open_db(settings.db_path)
    back = JobStore(db).requeue_abandoned(max_attempts=3, give_up=gave_up_after,
                                          now=running.lease_until + 1)
    assert back == [job.id] and (await queue.get(job.id)).status is JobStatus.QUEUED
