"""`artbot workers`: every worker seen in the last hour, local and remote, from the
data directory's `workers` table (rows recorded as workers record them), in-process
through `cli.main.main`."""

from __future__ import annotations

import time

from storage.db import open_db
from storage.workers import WorkerRegistry


def test_no_workers_is_one_line(artbot):
    code, out, err = artbot("workers")
    assert code == 0, err
    assert out == "no workers have served this data directory in the last hour\n"


def test_one_line_per_worker_seen_in_the_last_hour(artbot):
    now = time.time()
    artbot("jobs")  # creates the data directory and its database
    registry = WorkerRegistry(open_db(artbot.db))
    registry.seen("gpu-box:4242", now=now - 1, models=["sdxl", "/models/juggernautXL.safetensors"],
                  info={"host": "gpu-box", "pid": 4242, "remote": True, "serves": ["sdxl"],
                        "device": "cuda:0", "device_name": "NVIDIA H200", "dtype": "float16",
                        "memory_used": 12_300_000_000, "memory_total": 150_000_000_000,
                        "jobs_done": 17, "current": [41, 42], "capacity": 8})
    registry.seen("laptop:77", now=now - 600, models=["emoji-diffusion"],
                  info={"device": "cpu", "device_name": "cpu", "memory_used": 500_000_000,
                        "memory_total": 16_000_000_000, "jobs_done": 3, "current": []})
    registry.seen("old-box:1", now=now - 7200)  # more than an hour ago: not listed

    code, out, err = artbot("workers")
    assert code == 0, err
    header, laptop, remote = out.splitlines()  # the oldest first
    assert header.split() == ["ID", "WHERE", "STATE", "DEVICE", "MEMORY", "JOBS", "CURRENT",
                              "SEEN", "MODELS"]
    assert remote.split() == ["gpu-box:4242", "remote", "alive", "cuda:0", "NVIDIA", "H200",
                              "12.3/150.0", "GB", "17", "41,42", "1", "s", "ago",
                              "juggernautXL.safetensors,", "sdxl"]
    assert laptop.split() == ["laptop:77", "local", "gone", "cpu", "0.5/16.0", "GB", "3", "-",
                              "10", "min", "ago", "emoji-diffusion"]
    # The columns line up under their heading.
    for column in ("DEVICE", "JOBS", "MODELS"):
        at = header.index(column)
        assert remote[at - 1] == " " and remote[at] != " " and laptop[at] != " "
    assert "old-box" not in out
