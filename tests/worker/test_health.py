"""/healthz and Prometheus /metrics of the queue (the bot's side) and of a worker,
over real HTTP, with a real worker running the paint generator on the SQLite queue."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from storage.jobs import JobStatus
from tests.worker.test_worker import make_worker, spec
from worker.health import serve_queue_health, serve_worker_health
from worker.policy import Requester


async def get(server, path):
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{server.port}{path}") as response:
            if path == "/healthz":
                return response.status, await response.json()
            return response.status, await response.text()


async def scrape(server) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, sorted labels): value}."""
    status, text = await get(server, "/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def scrape_until(server, key, timeout=5.0) -> dict[tuple[str, tuple], float]:
    """/metrics once it has the sample `key`."""
    deadline = time.monotonic() + timeout
    while True:
        samples = await scrape(server)
        if samples.get(key) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.02)


async def finished(queue, *job_ids, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        jobs = [await queue.get(job_id) for job_id in job_ids]
        if all(job.status.finished for job in jobs):
            return jobs
        await asyncio.sleep(0.02)
    raise TimeoutError("the jobs did not finish")


@pytest.mark.asyncio
async def test_metrics_count_the_jobs_a_worker_ran_on_both_sides(queue, settings):
    queue_server, _ = await serve_queue_health(queue, "127.0.0.1", 0)
    worker, _ = make_worker(queue, settings)
    worker_server = await serve_worker_health(worker, "127.0.0.1", 0)
    loop = asyncio.create_task(worker.run())
    try:
        good = await queue.submit(spec(settings, model="paint-model"),
                                  requester=Requester("u", "cli"), settings=settings)
        bad = await queue.submit(spec(settings, prompt="crash", model="paint-model"),
                                 requester=Requester("u", "cli"), settings=settings)
        done = await finished(queue, good.id, bad.id)
        assert [job.status for job in done] == [JobStatus.SUCCEEDED, JobStatus.FAILED]
        # A remote worker's report, as it reaches the database.
        await queue.worker_seen("gpu-box:7", [], {"remote": True, "memory_used": 3_000_000_000,
                                                  "memory_total": 24_000_000_000})
        # The results are timed when their final events reach the metrics' subscription.
        bot = await scrape_until(queue_server, ("artbot_time_to_result_seconds_count", ()))
        assert bot[("artbot_jobs_total", (("status", "succeeded"),))] == 1
        assert bot[("artbot_jobs_total", (("status", "failed"),))] == 1
        assert bot[("artbot_jobs_total", (("status", "canceled"),))] == 0
        assert bot[("artbot_queue_jobs", (("status", "queued"),))] == 0
        assert bot[("artbot_queue_jobs", (("status", "running"),))] == 0
        assert bot[("artbot_time_to_result_seconds_count", ())] == 1
        assert bot[("artbot_generation_seconds_count", (("model", "paint-model"),))] == 1
        assert bot[("artbot_workers_alive", (("kind", "local"),))] == 1
        assert bot[("artbot_workers_alive", (("kind", "remote"),))] == 1
        assert bot[("artbot_worker_memory_total_bytes", (("worker", "gpu-box:7"),))] == 24e9
        assert bot[("artbot_worker_memory_used_bytes", (("worker", "gpu-box:7"),))] == 3e9

        own = await scrape(worker_server)
        assert own[("artbot_worker_jobs_total", (("outcome", "succeeded"),))] == 1
        assert own[("artbot_worker_jobs_total", (("outcome", "failed"),))] == 1
        assert own[("artbot_worker_generation_seconds_count", (("model", "paint-model"),))] == 1
        assert own[("artbot_worker_running_jobs", ())] == 0
        assert own[("artbot_worker_memory_total_bytes", ())] > 0  # the CPU's RAM here
        ((name, labels),) = [key for key in own if key[0] == "artbot_worker_info"]
        assert dict(labels)["worker"] == worker.worker_id and dict(labels)["device"] == "cpu"

        assert await get(worker_server, "/healthz") == (
            200, {"ok": True, "worker": worker.worker_id})
        status, report = await get(queue_server, "/healthz")
        assert status == 200 and report["ok"] and report["queued"] == 0
    finally:
        worker.stop()
        await loop
    status, report = await get(worker_server, "/healthz")
    assert status == 503 and report["reason"] == "the worker is stopping"
    await worker_server.close()
    await queue_server.close()
    assert worker.finished_listeners == []


@pytest.mark.asyncio
async def test_queue_health_is_503_when_the_database_is_unreadable(queue, settings):
    server, _ = await serve_queue_health(queue, "127.0.0.1", 0)
    try:
        assert (await get(server, "/healthz"))[0] == 200
        # The disk loses the database under the open connection: its file, journal
        # and shared index are zeroed.
        for path in settings.db_path.parent.glob(settings.db_path.name + "*"):
            size = path.stat().st_size
            with open(path, "r+b") as f:
                f.write(b"\0" * max(size, 4096))
        status, report = await get(server, "/healthz")
        assert status == 503 and report["ok"] is False
        assert "is not an artbot database" in report["reason"]
        assert (await get(server, "/metrics"))[0] == 503
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_worker_health_follows_its_extra_check(queue, settings):
    redis = {"ok": True}

    async def check():
        return dict(redis)

    worker, _ = make_worker(queue, settings)
    server = await serve_worker_health(worker, "127.0.0.1", 0, extra=check)
    try:
        status, report = await get(server, "/healthz")
        assert status == 200 and report["extra"] == {"ok": True}
        redis.update(ok=False, reason="redis: connection refused")
        status, report = await get(server, "/healthz")
        assert status == 503 and report["reason"] == "redis: connection refused"
        del redis["reason"]

        async def broken():
            raise ConnectionError("no route to redis")

        server.metrics.extra = broken
        status, report = await get(server, "/healthz")
        assert status == 503 and "no route to redis" in report["reason"]
    finally:
        await server.close()


@pytest.mark.asyncio
async def test_two_servers_in_one_process_keep_their_own_metrics(queue, settings):
    first, _ = await serve_queue_health(queue, "127.0.0.1", 0)
    second, _ = await serve_queue_health(queue, "127.0.0.1", 0)
    try:
        assert first.port != second.port
        assert first.registry is not second.registry
        assert (await scrape(first)).keys() == (await scrape(second)).keys()
    finally:
        await first.close()
        await second.close()
