"""`artbot draw` when a worker already serves the data directory: the CLI queues
the job and waits, the worker (with its model loaded) runs it, and the CLI
process never loads a model itself."""

import os
import signal
import sqlite3
import subprocess
import sys
import time

from tests.cli.test_cli import ARTBOT, env, run  # noqa: F401


def start_worker(data, work):
    """`artbot worker` on the data dir, returned once it has said it is serving."""
    environ = dict(os.environ, ARTBOT_DATA_DIR=str(data), HF_HUB_OFFLINE="1", ARTBOT_DEVICE="cpu")
    cmd = [str(ARTBOT)] if ARTBOT.exists() else [sys.executable, "-m", "cli"]
    worker = subprocess.Popen(cmd + ["worker"], cwd=work, env=environ,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:  # the worker is serving once it has its entry
        db = data / "artbot.db"
        if db.exists():
            conn = sqlite3.connect(db)
            try:
                rows = conn.execute("SELECT id FROM workers").fetchall()
            except sqlite3.OperationalError:  # not migrated yet
                rows = []
            conn.close()
            if rows:
                return worker
        time.sleep(0.1)
    worker.kill()
    raise AssertionError("the worker never said it was serving")


def test_draw_is_run_by_the_worker_that_serves_the_data_dir(env, tiny_pipeline):  # noqa: F811
    data, work = env
    worker = start_worker(data, work)
    try:
        r = run(["draw", "a red fox", "--model", str(tiny_pipeline), "--size", "64x64",
                 "--steps", "2", "--seed", "5", "--out", "fox.png"], data, work)
        assert r.returncode == 0, r.stderr
        assert "serves this data directory; waiting" in r.stderr
        assert (work / "fox.png").is_file() and "seed 5" in r.stdout
        conn = sqlite3.connect(data / "artbot.db")
        (worker_id,) = conn.execute("SELECT worker_id FROM jobs").fetchone()
        conn.close()
        assert worker_id.endswith(f":{worker.pid}")  # the worker ran it, not the CLI
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    # Stopped, the worker leaves the list: the next draw runs in the CLI's own process.
    r = run(["draw", "a red fox", "--model", str(tiny_pipeline), "--size", "64x64",
             "--steps", "2", "--seed", "5", "--out", "fox2.png"], data, work)
    assert r.returncode == 0, r.stderr
    assert "serves this data directory" not in r.stderr
    assert (work / "fox2.png").read_bytes() == (work / "fox.png").read_bytes()


def test_a_worker_that_stops_answering_does_not_leave_the_cli_waiting(env, tiny_pipeline):  # noqa: F811
    data, work = env
    worker = start_worker(data, work)
    worker.send_signal(signal.SIGSTOP)  # alive, but it neither claims nor says it is serving
    try:
        r = run(["draw", "a red fox", "--model", str(tiny_pipeline), "--size", "64x64",
                 "--steps", "2", "--seed", "5", "--out", "fox.png"], data, work, timeout=90)
    finally:
        worker.send_signal(signal.SIGCONT)
        worker.terminate()
        worker.wait(timeout=30)
    assert r.returncode == 0, r.stderr
    assert "serves this data directory; waiting" in r.stderr
    assert "no worker serves this data directory any more; running it here" in r.stderr
    assert (work / "fox.png").is_file()


def test_sigterm_hands_the_running_job_back_at_once(env, tiny_pipeline):  # noqa: F811
    """`artbot worker` stopped by SIGTERM (systemd, docker stop) mid-job: the job is
    `queued` again the moment it exits, not `running` until a later worker notices its
    lease ran out. (SIGINT, Ctrl-C, goes through the same handler: cli.serve.)"""
    import asyncio

    from artbot.config import Settings
    from worker.policy import Requester
    from worker.queue import LocalJobQueue
    from worker.requests import build_draw

    data, work = env
    settings = Settings(data_dir=data, default_model=str(tiny_pipeline), device="cpu")

    async def queue_one() -> int:
        async with LocalJobQueue(settings.db_path) as queue:
            spec = build_draw(settings, prompt="a slow fox", steps=150, size="64x64", seed=1)
            return (await queue.submit(spec, requester=Requester("local:me", "cli"),
                                       settings=settings)).id

    for sig in (signal.SIGTERM,):
        job_id = asyncio.run(queue_one())
        worker = start_worker(data, work)
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                conn = sqlite3.connect(data / "artbot.db")
                status, step = conn.execute("SELECT status, progress_step FROM jobs WHERE id = ?",
                                            (job_id,)).fetchone()
                conn.close()
                if status == "running" and step:
                    break
                time.sleep(0.1)
            assert status == "running", status
            worker.send_signal(sig)
            assert worker.wait(timeout=30) in (0, 130)
        finally:
            if worker.poll() is None:
                worker.kill()
        conn = sqlite3.connect(data / "artbot.db")
        status, token = conn.execute("SELECT status, claim_token FROM jobs WHERE id = ?",
                                     (job_id,)).fetchone()
        conn.close()
        assert (status, token) == ("queued", None), sig
