"""The bot's /metrics and /healthz (settings.metrics_port): a /draw through the real
discord.py client against the Discord-protocol server shows up in what Prometheus
scrapes."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import replace

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.bot.discord_server import running_client
from tests.bot.test_bot import draw, make_bot, newest_job, result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.asyncio
async def test_a_draw_shows_in_the_bots_metrics(server, bot_settings):
    settings = replace(bot_settings, metrics_port=free_port())
    async with running_client(server, make_bot(settings)) as bot:
        assert bot.metrics_port == settings.metrics_port
        await result(await draw(server, server.alice, seed=5))
        job = await newest_job(bot)
        for _ in range(100):  # the result is timed when its event reaches the metrics
            samples = await scrape(bot.metrics_port)
            if samples.get(("artbot_time_to_result_seconds_count", ())):
                break
            await asyncio.sleep(0.02)
        assert samples[("artbot_jobs_total", (("status", "succeeded"),))] == 1
        assert samples[("artbot_queue_jobs", (("status", "queued"),))] == 0
        assert samples[("artbot_time_to_result_seconds_count", ())] == 1
        assert samples[("artbot_generation_seconds_count", (("model", job.model),))] == 1
        assert samples[("artbot_workers_alive", (("kind", "local"),))] == 1
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{bot.metrics_port}/healthz") as response:
                assert response.status == 200 and (await response.json())["ok"] is True
    assert bot.health_server is None  # closed with the bot
    server.assert_clean()
