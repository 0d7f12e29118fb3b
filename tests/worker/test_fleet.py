"""The fleet as people see it (worker.fleet): the wait estimate /queue shows, the
durations it is worded in, and a worker row as `artbot workers` and /stats show it,
read back from a real `workers` table."""

from __future__ import annotations

import pytest

from storage.db import open_db
from storage.workers import WorkerRegistry
from worker.fleet import (ago, estimate_wait, format_duration, rough_duration, short_model,
                          summarize_worker, typical_run_seconds)


def test_no_recent_job_or_no_live_worker_means_no_estimate():
    assert estimate_wait(1, [], workers_alive=1) is None
    assert estimate_wait(3, [], workers_alive=4, running=2) is None
    assert estimate_wait(1, [10.0], workers_alive=0) is None


def test_one_worker_runs_the_jobs_ahead_one_after_another():
    # Nothing running: the next job starts at once; the third waits for two jobs.
    assert estimate_wait(1, [10.0], workers_alive=1) == 0.0
    assert estimate_wait(3, [10.0], workers_alive=1) == 20.0
    # One running (counted as half done) ahead of position 1, and of position 3.
    assert estimate_wait(1, [10.0], workers_alive=1, running=1) == 5.0
    assert estimate_wait(3, [10.0], workers_alive=1, running=1) == 25.0


def test_more_workers_share_the_queue():
    # Two idle workers take positions 1 and 2 at once.
    assert estimate_wait(2, [12.0], workers_alive=2) == 0.0
    # Four jobs ahead of position 5, two workers: half the time of one.
    assert estimate_wait(5, [12.0], workers_alive=2) == 24.0
    assert estimate_wait(5, [12.0], workers_alive=1) == 48.0
    # One of two busy: position 1 takes the free one, position 2 waits.
    assert estimate_wait(1, [12.0], workers_alive=2, running=1) == 0.0
    assert estimate_wait(2, [12.0], workers_alive=2, running=1) == pytest.approx(9.0)
    # More workers never make the wait longer.
    waits = [estimate_wait(7, [8.0], workers_alive=w, running=1) for w in range(1, 6)]
    assert waits == sorted(waits, reverse=True)


def test_the_speed_is_the_median_so_one_slow_job_does_not_move_it():
    assert typical_run_seconds([2.0, 3.0, 100.0]) == 3.0
    assert typical_run_seconds([]) is None
    assert estimate_wait(2, [2.0, 3.0, 100.0], workers_alive=1) == 3.0


@pytest.mark.parametrize("seconds, unit, n, text", [
    (0, "under_minute", 0, "under a minute"),
    (59.9, "under_minute", 0, "under a minute"),
    (60, "minutes", 1, "about 1 min"),
    (130, "minutes", 2, "about 2 min"),
    (89 * 60, "minutes", 89, "about 89 min"),
    (90 * 60, "hours", 2, "about 2 h"),
    (5 * 3600 + 10, "hours", 5, "about 5 h"),
])
def test_durations_a_member_reads(seconds, unit, n, text):
    assert rough_duration(seconds) == (unit, n)
    assert format_duration(seconds) == text


def test_ago():
    assert ago(3.7) == "3 s ago"
    assert ago(-1) == "0 s ago"
    assert ago(300) == "5 min ago"
    assert ago(7300) == "2 h ago"


def test_a_worker_row_becomes_the_fields_shown(tmp_path):
    db = open_db(tmp_path / "artbot.db")
    registry = WorkerRegistry(db)
    registry.seen("gpu-box:4242", now=1000.0, models=["/models/juggernautXL.safetensors", "sdxl"],
                  info={"host": "gpu-box", "pid": 4242, "remote": True, "serves": ["sdxl"],
                        "device": "cuda:0", "device_name": "NVIDIA H200",
                        "memory_used": 12_300_000_000, "memory_total": 150_000_000_000,
                        "jobs_done": 17, "current": [41, 42], "capacity": 8})
    registry.seen("fresh:7", now=1002.0)  # said nothing of itself yet
    remote, fresh = (summarize_worker(row, now=1004.0)
                     for row in registry.listing(within_s=3600, now=1004.0))
    assert remote.id == "gpu-box:4242" and remote.where == "remote" and remote.alive
    assert remote.device_text == "cuda:0 NVIDIA H200"
    assert remote.memory_text == "12.3/150.0 GB"
    assert remote.models == ["juggernautXL.safetensors", "sdxl"]
    assert remote.jobs_done == 17 and remote.current == [41, 42]
    assert remote.seen_text == "4 s ago"
    assert fresh.where == "local" and fresh.device is None and fresh.device_text == "-"
    assert fresh.memory_text == "-" and fresh.models == [] and fresh.jobs_done == 0
    assert fresh.current == []


def test_a_cpu_worker_and_a_gone_one():
    row = {"id": "laptop:9", "started_at": 0.0, "seen_at": 100.0, "models": ["emoji-diffusion"],
           "info": {"device": "cpu", "device_name": "cpu", "memory_used": 500_000_000,
                    "memory_total": 16_000_000_000, "jobs_done": 3, "current": []},
           "alive": False}
    w = summarize_worker(row, now=400.0)
    assert not w.alive and w.device_text == "cpu" and w.memory_text == "0.5/16.0 GB"
    assert w.seen_text == "5 min ago"


def test_short_model():
    assert short_model("./models/ours") == "ours"
    assert short_model("stabilityai/stable-diffusion-xl-base-1.0") == \
        "stabilityai/stable-diffusion-xl-base-1.0"
