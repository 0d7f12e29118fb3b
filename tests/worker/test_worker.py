"""The worker loop with a real (cheap) generator: fairness, progress, cancel,
time limits, errors, model reuse, and recovery after a SIGKILL."""

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from artbot.config import Settings
from artbot.errors import QueueFull
from storage.db import open_db
from storage.images import ImageStore
from storage.jobs import JobStatus, JobStore
from tests.worker.paint import paint_loader
from worker.requests import build_draw
from worker.policy import Requester
from worker.runner import Worker

ROOT = Path(__file__).resolve().parents[2]


def spec(settings, prompt="a fox", steps=3, count=1, seed=1, model="paint-model"):
    s = build_draw(settings, prompt=prompt, steps=steps, count=count, seed=seed,
                   size="16x16", model=model)
    s.family = "paint"
    return s


def make_worker(queue, settings, step_s=0.0, **kw):
    loader = paint_loader(step_s)
    worker = Worker(queue, ImageStore(settings.image_dir), settings, loader=loader,
                    heartbeat_s=0.05, idle_poll_s=0.05, **kw)
    return worker, loader


@pytest.mark.asyncio
async def test_burst_runs_every_job_and_stores_images_with_seeds(queue, settings):
    jobs = [await queue.submit(spec(settings, seed=10 * i, count=2),
                               requester=Requester("u", "cli"), settings=settings) for i in range(3)]
    worker, loader = make_worker(queue, settings)
    assert await worker.run(burst=True) == 3
    for i, job in enumerate(jobs):
        done = await queue.get(job.id)
        assert done.status is JobStatus.SUCCEEDED
        assert done.seeds == [10 * i, 10 * i + 1]
        assert done.model_revision == "paint-1"
        images = await queue.images(job.id)
        assert [im.seed for im in images] == [10 * i, 10 * i + 1]
        assert all((settings.image_dir / im.path).is_file() for im in images)
    assert len(loader.generators) == 1  # the model was loaded once and kept


@pytest.mark.asyncio
async def test_events_report_queue_running_steps_and_result(queue, settings):
    job = await queue.submit(spec(settings, steps=4),
                             requester=Requester("u", "cli"), settings=settings)
    events = queue.subscribe(job.id)
    worker, _ = make_worker(queue, settings)
    await worker.run(burst=True)
    seen = []
    while True:
        event = await events.get(timeout=1)
        seen.append((event.kind, event.step))
        if event.final:
            break
    assert seen[0] == ("running", None)
    assert [s for k, s in seen if k == "progress"][-4:] == [1, 2, 3, 4]
    assert seen[-1] == ("succeeded", None)


@pytest.mark.asyncio
async def test_fair_order_through_the_worker(queue, settings):
    for i in range(5):
        await queue.submit(spec(settings, prompt=f"heavy{i}"),
                           requester=Requester("heavy", "cli"), settings=settings)
    light = await queue.submit(spec(settings, prompt="light"),
                               requester=Requester("light", "cli"), settings=settings)
    worker, _ = make_worker(queue, settings)
    await worker.run(burst=True)
    store = JobStore(open_db(settings.db_path))
    order = [j.params["prompt"] for j in sorted(store.list_jobs(limit=10),
                                                 key=lambda j: j.started_at)]
    assert order.index("light") <= 1, order


@pytest.mark.asyncio
async def test_cancel_a_running_job(queue, settings):
    job = await queue.submit(spec(settings, steps=150),
                             requester=Requester("u", "cli"), settings=settings)
    worker, _ = make_worker(queue, settings, step_s=0.02)
    task = asyncio.create_task(worker.run(burst=True))
    while (await queue.get(job.id)).progress_step in (None, 0):
        await asyncio.sleep(0.05)
    assert await queue.cancel(job.id) is JobStatus.RUNNING
    await asyncio.wait_for(task, 5)
    done = await queue.get(job.id)
    assert done.status is JobStatus.CANCELED
    assert done.progress_step < 150
    assert await queue.images(job.id) == []


@pytest.mark.asyncio
async def test_time_limit_fails_the_job_with_a_readable_reason(queue, settings):
    settings.job_timeout_s = 0.3
    job = await queue.submit(spec(settings, steps=100),
                             requester=Requester("u", "cli"), settings=settings)
    worker, _ = make_worker(queue, settings, step_s=0.02)
    started = time.monotonic()
    await worker.run(burst=True)
    assert time.monotonic() - started < 1.5
    done = await queue.get(job.id)
    assert done.status is JobStatus.FAILED
    assert "time limit" in done.error


@pytest.mark.asyncio
async def test_user_error_and_internal_error(queue, settings, caplog):
    bad = await queue.submit(spec(settings, prompt="user-error"),
                             requester=Requester("u", "cli"), settings=settings)
    bug = await queue.submit(spec(settings, prompt="crash"),
                             requester=Requester("u", "cli"), settings=settings)
    ok = await queue.submit(spec(settings), requester=Requester("u", "cli"), settings=settings)
    worker, _ = make_worker(queue, settings)
    await worker.run(burst=True)
    assert (await queue.get(bad.id)).error == "That prompt is not allowed here."
    bug_job = await queue.get(bug.id)
    assert bug_job.status is JobStatus.FAILED
    assert f"job {bug.id}" in bug_job.error and "ZeroDivision" not in bug_job.error
    assert any("ZeroDivisionError" in (r.exc_text or "") for r in caplog.records)
    assert (await queue.get(ok.id)).status is JobStatus.SUCCEEDED  # the worker carried on


@pytest.mark.asyncio
async def test_queue_full_refuses_before_recording(queue, settings):
    for _ in range(2):
        await queue.submit(spec(settings), requester=Requester("u", "cli"),
                           settings=replace(settings, max_queued_per_user=2))
    with pytest.raises(QueueFull):
        await queue.submit(spec(settings), requester=Requester("u", "cli"),
                           settings=replace(settings, max_queued_per_user=2))
    assert len(await queue.list_jobs(user_id="u")) == 2


@pytest.mark.asyncio
async def test_shutdown_puts_the_running_job_back(queue, settings):
    job = await queue.submit(spec(settings, steps=150),
                             requester=Requester("u", "cli"), settings=settings)
    worker, _ = make_worker(queue, settings, step_s=0.01)
    task = asyncio.create_task(worker.run())
    while (await queue.get(job.id)).status is not JobStatus.RUNNING:
        await asyncio.sleep(0.02)
    await worker.shutdown()
    await asyncio.wait_for(task, 5)
    back = await queue.get(job.id)
    assert back.status is JobStatus.QUEUED
    # The next worker runs it to the end.
    worker2, _ = make_worker(queue, settings)
    await worker2.run(burst=True)
    assert (await queue.get(job.id)).status is JobStatus.SUCCEEDED


def test_sigkill_mid_job_then_restart_finishes_every_job_exactly_once(settings):
    store = JobStore(open_db(settings.db_path))
    ids = []
    for i in range(3):
        s = spec(settings, prompt=f"job{i}", steps=40, count=2, seed=100 * i)
        ids.append(store.submit(user_id=f"u{i}", kind=s.kind, family=s.family, model=s.model,
                                params=s.params, seeds=s.seeds, batch_key=s.batch_key,
                                source="cli", max_queued=10).id)
    cmd = [sys.executable, "-m", "tests.worker.paint", str(settings.data_dir), "0.02"]
    proc = subprocess.Popen(cmd, cwd=ROOT)
    deadline = time.time() + 30
    while time.time() < deadline:
        running = store.list_jobs(statuses=[JobStatus.RUNNING])
        if running and (running[0].progress_step or 0) >= 2:
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the worker never started a job")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = running[0].id
    assert store.get(killed).status is JobStatus.RUNNING  # left behind by the dead process

    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    for job_id in ids:
        job = store.get(job_id)
        assert job.status is JobStatus.SUCCEEDED, (job_id, job.status, job.error)
        images = store.images(job_id)
        assert [im.idx for im in images] == [0, 1]
        assert [im.seed for im in images] == job.seeds
    assert store.get(killed).attempts == 2
    (n,) = store.conn.execute("SELECT COUNT(*) FROM images").fetchone()
    assert n == 6
