"""The workers table: who serves the database and which models each holds, as
`artbot models` reports them ("loaded: yes, on host:pid")."""

import os
import socket

from storage.workers import WorkerRegistry


def test_live_workers_report_the_models_they_hold(fresh_db):
    workers = WorkerRegistry(fresh_db)
    me = f"{socket.gethostname()}:{os.getpid()}"
    elsewhere = "gpu-box:4242"
    workers.seen(me, now=100.0, models=["/m/sdxl", "emoji-gan"])
    workers.seen(elsewhere, now=100.0, models=["/m/sdxl"])
    assert workers.loaded_models(within_s=10, now=105.0) == {
        "/m/sdxl": [me, elsewhere], "emoji-gan": [me]}
    workers.seen(me, now=106.0, models=[])  # it unloaded everything
    assert workers.loaded_models(within_s=10, now=108.0) == {"/m/sdxl": [elsewhere]}
    # A worker not heard from for longer than the window holds nothing any more.
    assert workers.loaded_models(within_s=10, now=120.0) == {}
    # One that ran on this host and whose process is gone, at once.
    gone = f"{socket.gethostname()}:{2**22 + 12345}"
    workers.seen(gone, now=130.0, models=["/m/flux"])
    assert workers.loaded_models(within_s=10, now=131.0) == {}
