"""Remote workers through a real Redis (worker.remote, worker.dispatcher): worker
processes with data directories of their own that talk only to Redis, and the
dispatcher in this process on the bot's SQLite queue. What must hold: every job
finishes exactly once, with its images' bytes intact, through SIGKILLs, a worker
frozen past its lease, and a Redis restart; and three workers give three times
the throughput of one."""

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from artbot.config import Settings
from storage.images import ImageStore, content_address
from storage.jobs import JobStatus
from tests.redis_server import RedisServer
from tests.worker.test_worker import spec
from worker.dispatcher import Dispatcher
from worker.policy import Requester
from worker.queue import LocalJobQueue

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture
def redis(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def bot_settings(tmp_path):
    # A short lease, so that a job whose worker vanished goes back on the queue within
    # seconds; many attempts, since a job may be hit by several of the test's kills.
    return Settings(data_dir=tmp_path / "bot", device="cpu", max_queued_per_user=100,
                    lease_s=1.5, max_attempts=50)


@pytest_asyncio.fixture
async def bot(bot_settings, redis):
    """The bot's side: its SQLite queue and image store, and the dispatcher."""
    queue = await LocalJobQueue(bot_settings.db_path).open()
    dispatcher = await Dispatcher(queue, ImageStore(bot_settings.image_dir), bot_settings,
                                  url=redis.url, tick_s=0.05).start()
    yield queue, dispatcher
    await dispatcher.close()
    await queue.close()


class Workers:
    """Remote worker processes (python -m tests.worker.paint ... --connect URL)."""

    def __init__(self, root: Path, url: str, step_s: float, lease_s: float = 1.5):
        self.root, self.url, self.step_s, self.lease_s = root, url, step_s, lease_s
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str | None = None, env: dict | None = None, url: str | None = None,
              models: str | None = None) -> subprocess.Popen:
        data = self.root / f"worker-{len(self.procs)}"
        cmd = [sys.executable, "-m", "tests.worker.paint", str(data), str(self.step_s),
               "--connect", url or self.url]
        if name:
            cmd += ["--name", name]
        if models:
            cmd += ["--models", models]
        data.mkdir(parents=True, exist_ok=True)
        with open(data / "worker.log", "wb") as log:  # what an operator's journal would hold
            proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env={**os.environ, "ARTBOT_LEASE_S": str(self.lease_s),
                                         **(env or {})})
        proc.log_path = data / "worker.log"
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
            proc.wait(10)


@pytest.fixture
def workers(tmp_path, redis):
    pool = Workers(tmp_path, redis.url, step_s=0.05)
    yield pool
    pool.stop_all()


async def submit(queue, settings, n, *, steps=10, count=1, prefix="job", user_per_job=True,
                 model="paint-model"):
    jobs = []
    for i in range(n):
        s = spec(settings, prompt=f"{prefix}{i}", steps=steps, count=count, seed=1000 + 7 * i,
                 model=model)
        user = f"u{i}" if user_per_job else "u"
        jobs.append(await queue.submit(s, requester=Requester(user, "cli"), settings=settings))
    return jobs


async def until(predicate, timeout: float, what: str, poll: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await predicate()
        if value:
            return value
        await asyncio.sleep(poll)
    pytest.fail(f"timed out waiting for {what}")


async def all_finished(queue, jobs):
    current = [await queue.get(j.id) for j in jobs]
    return all(j.status.finished for j in current) and current


def assert_images_intact(queue_db_images, store: ImageStore, job):
    assert [im.seed for im in queue_db_images] == job.seeds
    for im in queue_db_images:
        data = store.read_bytes(im.path)
        assert content_address(data) == im.sha256, f"job {job.id}: image bytes changed"


async def assert_exactly_once(queue, dispatcher, jobs, store):
    """Every job succeeded once: its images are its own seeds' (never twice), their
    bytes match their sha256, and the dispatcher accepted one result per job."""
    for job in jobs:
        done = await queue.get(job.id)
        assert done.status is JobStatus.SUCCEEDED, (job.id, done.status, done.error)
        images = await queue.images(job.id)
        assert [im.idx for im in images] == list(range(len(job.seeds)))
        assert_images_intact(images, store, done)
    assert dispatcher.completed == len(jobs)


@pytest.mark.asyncio
async def test_a_remote_worker_process_runs_jobs_with_progress_and_input_images(
        bot, bot_settings, workers):
    queue, dispatcher = bot
    events = queue.subscribe()
    jobs = await submit(queue, bot_settings, 3, steps=6, count=2)
    proc = workers.start(name="gpu-1")
    done = await until(lambda: all_finished(queue, jobs), 60, "the jobs to finish")
    store = ImageStore(bot_settings.image_dir)
    await assert_exactly_once(queue, dispatcher, jobs, store)
    assert {j.worker_id for j in done} == {"gpu-1"}
    # The worker made the PNGs: they say AI made them, with the model and revision it loaded.
    first = (await queue.images(jobs[0].id))[0]
    with Image.open(store.root / first.path) as image:
        xmp = image.info["XML:com.adobe.xmp"]
    assert "trainedAlgorithmicMedia" in xmp and ">paint-model<" in xmp and ">paint-1<" in xmp
    seen = []
    while True:
        try:
            seen.append(events._events.get_nowait())
        except asyncio.QueueEmpty:
            break
    steps = [e.step for e in seen if e.job_id == jobs[0].id and e.kind == "progress"]
    assert 6 in steps and len(steps) >= 3  # step k of n reached the bot's subscribers
    # The fleet, as the bot's database sees it: the remote worker with what it said of itself.
    fleet = await queue.workers(within_s=60)
    (row,) = [w for w in fleet if w["id"] == "gpu-1"]
    assert row["alive"] and row["info"]["remote"] and row["info"]["serves"] == ["paint-model"]
    # What the worker kept: nothing of the bot's (no database), only its scratch store.
    assert not (workers.root / "worker-0" / "artbot.db").exists()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(20) == 0


@pytest.mark.asyncio
async def test_sigkill_a_remote_worker_20_times_loses_nothing_and_runs_nothing_twice(
        bot, bot_settings, workers):
    queue, dispatcher = bot
    rng = random.Random(15)
    jobs = await submit(queue, bot_settings, 24, steps=10, count=2)
    for _ in range(2):
        workers.start()
    kills = 0
    deadline = time.monotonic() + 150
    while kills < 20 and time.monotonic() < deadline:
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        running = await queue.list_jobs(statuses=[JobStatus.RUNNING])
        victims = [p for p in workers.alive()]
        if not running or not victims:
            continue
        os.kill(rng.choice(victims).pid, signal.SIGKILL)
        kills += 1
        workers.start()  # a new one takes its place, as systemd's Restart=always does
    assert kills == 20, "the run ended before 20 kills"
    await until(lambda: all_finished(queue, jobs), 120, "every job to finish")
    await assert_exactly_once(queue, dispatcher, jobs, ImageStore(bot_settings.image_dir))
    attempts = [(await queue.get(j.id)).attempts for j in jobs]
    assert sum(attempts) > len(jobs)  # the kills did hit jobs mid-run


@pytest.mark.asyncio
async def test_a_worker_frozen_past_its_lease_is_replaced_and_its_late_result_rejected(
        bot, bot_settings, workers):
    queue, dispatcher = bot
    (job,) = await submit(queue, bot_settings, 1, steps=40)  # 2 s of steps
    first = workers.start(name="frozen")
    running = await until(lambda: _running_on(queue, job.id, "frozen"), 30, "the job to start")
    assert running.progress_step is None or running.progress_step < 40
    os.kill(first.pid, signal.SIGSTOP)  # cut off: no heartbeat, no result
    workers.start(name="spare")
    done = await until(lambda: _succeeded(queue, job.id), 60, "the job to run elsewhere")
    assert done.worker_id == "spare" and done.attempts == 2
    os.kill(first.pid, signal.SIGCONT)  # it wakes up and answers for a claim it lost
    await until(lambda: _true(dispatcher.rejected >= 1), 30, "the late answer")
    after = await queue.get(job.id)
    assert after.status is JobStatus.SUCCEEDED and after.worker_id == "spare"
    images = await queue.images(job.id)
    assert len(images) == 1
    assert dispatcher.completed == 1


@pytest.mark.asyncio
async def test_redis_restarted_mid_run_every_job_still_finishes_exactly_once(
        bot, bot_settings, workers, redis):
    queue, dispatcher = bot
    jobs = await submit(queue, bot_settings, 12, steps=10)
    for _ in range(3):
        workers.start()
    await until(lambda: _count(queue, JobStatus.SUCCEEDED, at_least=3), 60, "some jobs to finish")
    redis.restart(down_s=1.0)  # empty: every stream, group and worker key is gone
    await until(lambda: all_finished(queue, jobs), 120, "every job to finish after the restart")
    await assert_exactly_once(queue, dispatcher, jobs, ImageStore(bot_settings.image_dir))


async def _true(value):
    return value


async def _running_on(queue, job_id, worker_id):
    job = await queue.get(job_id)
    return job if job.status is JobStatus.RUNNING and job.worker_id == worker_id and \
        job.progress_step else None


async def _succeeded(queue, job_id):
    job = await queue.get(job_id)
    return job if job.status is JobStatus.SUCCEEDED else None


async def _count(queue, status, at_least):
    return len(await queue.list_jobs(statuses=[status], limit=1000)) >= at_least


@pytest.mark.asyncio
async def test_three_remote_workers_give_at_least_2_7_times_the_throughput_of_one(tmp_path):
    from benchmarks.bench_fleet import compare

    out = await compare(tmp_path, jobs=9, steps=6, step_s=0.1)
    assert out["ratio"] >= 2.7, out


@pytest.mark.asyncio
async def test_cancel_reaches_a_remote_worker_at_its_next_step(bot, bot_settings, workers):
    queue, dispatcher = bot
    (job,) = await submit(queue, bot_settings, 1, steps=150)  # 7.5 s if not stopped
    workers.start(name="gpu-1")
    await until(lambda: _running_on(queue, job.id, "gpu-1"), 30, "the job to start")
    asked = time.monotonic()
    assert await queue.cancel(job.id) is JobStatus.RUNNING
    done = await until(lambda: _finished(queue, job.id), 10, "the job to stop")
    took = time.monotonic() - asked
    assert done.status is JobStatus.CANCELED and done.error == "Canceled."
    # Passed on at once (not at the next heartbeat): a few 50 ms steps at most.
    assert took < 1.0, took
    assert await queue.images(job.id) == []


@pytest.mark.asyncio
async def test_jobs_go_only_to_workers_that_have_their_model_preferring_it_loaded(
        bot, bot_settings, workers):
    queue, dispatcher = bot
    workers.start(name="z-paint", models="paint-model")
    workers.start(name="m-other", models="other-model")
    await until(lambda: _true(len(dispatcher.fleet) == 2), 30, "both workers to join")
    paint = await submit(queue, bot_settings, 3, steps=2, prefix="p")
    other = await submit(queue, bot_settings, 3, steps=2, prefix="o", model="other-model")
    await until(lambda: all_finished(queue, paint + other), 60, "the jobs to finish")
    assert {(await queue.get(j.id)).worker_id for j in paint} == {"z-paint"}
    assert {(await queue.get(j.id)).worker_id for j in other} == {"m-other"}
    # A job whose model no live worker has waits in the queue; it is never handed over.
    (orphan,) = await submit(queue, bot_settings, 1, prefix="x", model="nobody-has-it")
    # A third worker that also serves paint-model, first by name: the next paint job still
    # goes to z-paint, which has the model loaded.
    workers.start(name="a-paint", models="paint-model")
    await until(lambda: _true("paint-model" in dispatcher.fleet.get("z-paint", {})
                              .get("loaded_names", []) and "a-paint" in dispatcher.fleet),
                30, "the fleet to say who has what loaded")
    (again,) = await submit(queue, bot_settings, 1, steps=2, prefix="again")
    await until(lambda: all_finished(queue, [again]), 30, "the job to finish")
    assert (await queue.get(again.id)).worker_id == "z-paint"
    assert (await queue.get(orphan.id)).status is JobStatus.QUEUED


@pytest.mark.asyncio
async def test_a_worker_under_its_own_redis_acl_user_serves_jobs_and_sees_nothing_else(
        bot_settings, workers, redis):
    # The per-worker ACL of docs/remote-workers.md, as written there.
    acl = ("gpu1 on >s3cret-pass resetkeys ~artbot:worker:gpu1 ~artbot:jobs:gpu1 "
           "~artbot:control:gpu1 %W~artbot:results resetchannels -@all +ping +hello +auth "
           "+client|setname +get +set +del +expire +xadd +xread +xreadgroup "
           "+xack +xgroup|create")
    assert redis.command("ACL", "SETUSER", *acl.split()) == "OK"
    queue = await LocalJobQueue(bot_settings.db_path).open()
    dispatcher = await Dispatcher(queue, ImageStore(bot_settings.image_dir), bot_settings,
                                  url=redis.url, tick_s=0.05).start()
    try:
        jobs = await submit(queue, bot_settings, 2, steps=4)
        url = f"redis://gpu1@127.0.0.1:{redis.port}"
        proc = workers.start(name="gpu1", url=url, env={"ARTBOT_REDIS_PASSWORD": "s3cret-pass"})
        await until(lambda: all_finished(queue, jobs), 60, "the jobs to finish")
        await assert_exactly_once(queue, dispatcher, jobs, ImageStore(bot_settings.image_dir))
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        await dispatcher.close()
        await queue.close()
    logged = proc.log_path.read_text()
    assert "connecting to redis://gpu1@127.0.0.1" in logged
    assert "s3cret-pass" not in logged  # the password never reaches the log
    # With the worker's credentials, nothing beyond its own keys can be read.
    as_worker = ["--user", "gpu1", "--pass", "s3cret-pass", "--no-auth-warning"]
    assert "NOPERM" in redis.command(*as_worker, "XRANGE", "artbot:results", "-", "+")
    assert "NOPERM" in redis.command(*as_worker, "XRANGE", "artbot:jobs:gpu2", "-", "+")
    assert "NOPERM" in redis.command(*as_worker, "KEYS", "*")


async def _finished(queue, job_id):
    job = await queue.get(job_id)
    return job if job.status.finished else None
