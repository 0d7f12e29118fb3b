"""A /draw served by a remote worker: the real bot (against the Discord-protocol
server) with no worker of its own and a dispatcher on a real Redis, and a real
`artbot worker --connect` process in another folder with its own data directory
and catalogue, which loads the tiny diffusers pipeline through the same code users
use. The member sees progress, a preview and the PNG; /metrics reports the job;
killing the worker mid-job loses nothing."""

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from storage.images import content_address
from storage.jobs import JobStatus
from tests.bot.discord_server import running_client
from tests.bot.test_bot import draw, has_image, make_bot, newest_job, png_size
from tests.bot.test_metrics import free_port, scrape
from tests.redis_server import RedisServer

ARTBOT = str(Path(sys.executable).parent / "artbot")
pytestmark = pytest.mark.slow


def start_worker(folder: Path, url: str, name: str, model: Path) -> subprocess.Popen:
    """`artbot worker --connect URL` as an operator runs it on the GPU machine: in its
    own folder, whose artbot.toml names the model by the bot's catalogue name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "artbot.toml").write_text(
        f'default_model = "tiny"\n[models.tiny]\nsource = "{model}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARTBOT_")}
    env.update(ARTBOT_OFFLINE="1", ARTBOT_DEVICE="cpu", ARTBOT_DATA_DIR=str(folder / "data"))
    return subprocess.Popen([ARTBOT, "worker", "--connect", url, "--name", name],
                            cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


async def until(predicate, timeout, what):
    for _ in range(int(timeout / 0.05)):
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.mark.asyncio
async def test_a_draw_is_served_by_a_remote_worker_and_survives_its_death(
        server, bot_settings, tiny_pipeline, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    # 100 steps: a few seconds even on a warm worker, long enough for progress edits
    # (at most one per 1.5 s) and a preview.
    bot_settings.models["tiny"].steps = 100
    settings = replace(bot_settings, redis_url=redis.url, local_worker=False,
                       metrics_port=free_port(), lease_s=3.0, max_attempts=5)
    worker = start_worker(tmp_path / "gpu-box", redis.url, "gpu-box", tiny_pipeline)
    try:
        async with running_client(server, make_bot(settings, run_worker=False)) as bot:
            assert bot.worker is None and bot.dispatcher is not None
            await until(lambda: "gpu-box" in bot.dispatcher.fleet, 60, "the worker to join")

            ix = await draw(server, server.alice, seed=3)
            message = await ix.wait_original(has_image, timeout=120)
            job = await newest_job(bot)
            assert job.status is JobStatus.SUCCEEDED and job.worker_id == "gpu-box"
            stored = server.message(message.id)
            contents = [e.payload["content"] for e in stored.edits]
            assert any("step" in c and "of 100" in c for c in contents), contents
            previews = [e for e in stored.edits if e.payload["attachments"] and
                        e.payload["attachments"][0]["filename"].endswith("-preview.jpg")]
            assert previews  # the image forming, made on the worker, shown here
            assert png_size(message) == (64, 64)
            (image,) = await bot.queue.images(job.id)
            assert content_address(message.attachment_bytes(0)) == image.sha256
            assert content_address(bot.images.read_bytes(image.path)) == image.sha256

            for _ in range(100):
                samples = await scrape(settings.metrics_port)
                if samples.get(("artbot_time_to_result_seconds_count", ())):
                    break
                await asyncio.sleep(0.05)
            assert samples[("artbot_jobs_total", (("status", "succeeded"),))] == 1
            assert samples[("artbot_generation_seconds_count", (("model", job.model),))] == 1
            assert samples[("artbot_workers_alive", (("kind", "remote"),))] == 1
            assert samples[("artbot_remote_results_total", (("outcome", "accepted"),))] == 1

            # Kill the worker mid-job: a new one takes over once the lease runs out.
            ix = await draw(server, server.alice, seed=4)
            second = await until(lambda: bot.dispatcher._handovers.get("gpu-box"), 60,
                                 "the second job to be handed over")
            (job_id,) = second.jobs
            for _ in range(200):
                if ((await bot.queue.get(job_id)).progress_step or 0) >= 3:
                    break
                await asyncio.sleep(0.05)
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)
            worker = start_worker(tmp_path / "gpu-box-2", redis.url, "gpu-box-2", tiny_pipeline)
            message = await ix.wait_original(has_image, timeout=120)
            redone = await bot.queue.get(job_id)
            assert redone.status is JobStatus.SUCCEEDED and redone.worker_id == "gpu-box-2"
            # 2, or 3 when the 3 s lease ran out while the dead worker's fleet key (8 s) still
            # said it was alive, so the job was handed to it once more before gpu-box-2.
            assert redone.attempts in (2, 3)
            assert len(await bot.queue.images(job_id)) == 1
        server.assert_clean()
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(20)
            except subprocess.TimeoutExpired:
                worker.kill()
        out = worker.stdout.read() if worker.stdout else ""
        redis.stop()
    assert "Traceback" not in out, out
