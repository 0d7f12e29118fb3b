"""The fleet on Discord, end to end: the real discord.py client against the
Discord-protocol server, with the bot's own worker painting flat colours
(tests/worker/paint.py) so jobs take a known, short time. /stats shows an admin
each live worker; /queue tells a member when a queued job should start."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from storage.jobs import JobStatus
from tests.bot.test_admin import answer_of, text_of
from tests.bot.test_bot import draw, make_bot, newest_job, result
from tests.bot.discord_server import running_client
from tests.worker.paint import paint_loader
from worker.runner import Worker


def painting_worker(step_s: float):
    """A worker factory for ArtBot: the real worker, with the paint generator."""
    load = paint_loader(step_s)

    def make(queue, images, settings):
        return Worker(queue, images, settings,
                      loader=lambda family, model, device, dtype, **_: load(family, model, device, dtype))

    return make


async def until(predicate, timeout: float = 10.0, what: str = "it"):
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.asyncio
async def test_stats_shows_each_live_workers_device_models_and_jobs_done(server, bot_settings):
    async with running_client(server, make_bot(bot_settings,
                                               worker_factory=painting_worker(0.0))) as bot:
        await result(await draw(server, server.alice, seed=1))

        async def counted():  # a worker renews what it says of itself every 2 s
            rows = await bot.queue.workers(within_s=60)
            return rows and rows[0]["info"].get("jobs_done") == 1

        await until(counted, what="the worker to count its job")
        data = await answer_of(await server.slash_command(server.owner, server.general, "stats"))
        fields = {f["name"]: f["value"] for f in data["embeds"][0]["fields"]}
        fleet = fields["Workers serving now"]
        assert fleet.startswith(f"`{bot.worker.worker_id}` (local) · cpu · ")
        assert "jobs done: 1 · idle · seen <t:" in fleet
        assert f"models: {Path(bot_settings.default_model).name}" in fleet  # warmed up at start
        assert all(len(f["value"]) <= 1024 for f in data["embeds"][0]["fields"])

        zh = text_of(await answer_of(await server.slash_command(
            server.owner, server.general, "stats", locale="zh-CN")))
        assert "正在服务的工作进程" in zh and "已完成任务：1" in zh and "空闲" in zh
    server.assert_clean()


@pytest.mark.asyncio
async def test_queue_shows_the_estimated_wait_once_a_job_has_succeeded(server, bot_settings):
    bot_settings.max_batch_images = 1  # one job per call: the third waits behind the second
    async with running_client(server, make_bot(bot_settings,
                                               worker_factory=painting_worker(0.1))) as bot:
        await result(await draw(server, server.alice, seed=1))  # 4 steps of 0.1 s
        await draw(server, server.alice, seed=2, steps=60)      # 6 s: still running below
        second = await newest_job(bot)

        async def running():
            return (await bot.queue.get(second.id)).status is JobStatus.RUNNING

        await until(running, what="the second job to start")
        await draw(server, server.alice, seed=3)
        third = await newest_job(bot)

        data = await answer_of(await server.slash_command(server.alice, server.general, "queue"))
        lines = data["embeds"][0]["description"].splitlines()
        assert lines[0].startswith(f"Job {second.id}: running")
        assert lines[1] == f"Job {third.id}: queued, position 1, starts in under a minute"
        data = await answer_of(await server.slash_command(server.alice, server.general, "queue",
                                                          locale="zh-CN"))
        assert f"任务 {third.id}：排队第 1 位，不到一分钟后开始" in data["embeds"][0]["description"]
        await bot.queue.cancel(second.id)
    server.assert_clean()


def test_a_large_fleet_fits_discords_field_limits():
    from bot.admin import packed_fields, worker_entry
    from worker.fleet import summarize_worker

    rows = [{"id": f"gpu-{i:02}.example.net:{4000 + i}", "seen_at": 100.0, "alive": True,
             "models": ["stabilityai/stable-diffusion-xl-base-1.0", "black-forest-labs/FLUX.1-dev"],
             "info": {"remote": True, "device": "cuda:0", "device_name": "NVIDIA H200",
                      "memory_used": 40e9, "memory_total": 150e9, "jobs_done": 1000 + i,
                      "current": [i, i + 1]}}
            for i in range(40)]
    entries = [worker_entry(summarize_worker(row, now=101.0), "en-US") for row in rows]
    values = packed_fields(entries, more=lambda n: f"… and {n} more")
    assert len(values) == 2 and all(len(v) <= 1024 for v in values)
    shown = sum(v.count("jobs done:") for v in values)
    assert 0 < shown < 40 and values[-1].endswith(f"… and {40 - shown} more")
    assert "running job 0, 1" in values[0] and "(remote)" in values[0]
    assert packed_fields(entries[:2], more=str) == ["\n".join(entries[:2])]
    assert packed_fields([], more=str) == []
