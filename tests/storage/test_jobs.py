"""The jobs table as a queue: caps, fair order, positions, leases, exactly-once."""

import os
import subprocess
import sys
import threading

import pytest

from artbot.errors import QueueFull
from storage.db import open_db
from storage.images import StoredImage
from storage.jobs import JobStatus, JobStore

# The texts the queue (worker.queue) gives the store for jobs it ends itself.
CANCELED = "Canceled before it started."


def GIVE_UP(attempts: int) -> str:
    return f"The worker stopped while running this job {attempts} times."


def submit(store: JobStore, user: str, prompt: str = "x", max_queued: int = 1000, **kw):
    return store.submit(
        user_id=user,
        kind="draw",
        family="diffusion",
        model=kw.pop("model", "m"),
        params={"prompt": prompt},
        seeds=kw.pop("seeds", [1]),
        batch_key=kw.pop("batch_key", "k"),
        source="cli",
        max_queued=max_queued,
        **kw,
    )


def fake_image(n: int) -> StoredImage:
    return StoredImage(sha256=f"{n:064x}", path=f"aa/bb/{n:064x}.png", width=8, height=8)


def test_user_with_fifty_jobs_delays_a_newcomer_by_at_most_one(job_store):
    heavy = [submit(job_store, "heavy", f"h{i}") for i in range(50)]
    first = job_store.claim("w", lease_s=60)
    assert [j.id for j in first] == [heavy[0].id]
    light = submit(job_store, "light", "l0")
    # The newcomer is next: only the job already running is ahead of it.
    assert job_store.positions()[light.id] == 1
    nxt = job_store.claim("w", lease_s=60)
    assert [j.id for j in nxt] == [light.id]


def test_users_take_turns(job_store):
    for i in range(3):
        submit(job_store, "a", f"a{i}")
    for i in range(3):
        submit(job_store, "b", f"b{i}")
    submit(job_store, "c", "c0")
    order = []
    while jobs := job_store.claim("w", lease_s=60):
        order.append(jobs[0].params["prompt"])
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "b2"]


def test_positions_predict_claim_order(job_store):
    for user, n in (("a", 4), ("b", 1), ("c", 2)):
        for i in range(n):
            submit(job_store, user, f"{user}{i}")
    job_store.claim("w", lease_s=60)  # serve 'a' once so turns are uneven
    positions = job_store.positions()
    predicted = sorted(positions, key=positions.get)
    claimed = []
    while jobs := job_store.claim("w", lease_s=60):
        claimed.append(jobs[0].id)
    assert claimed == predicted


def test_queue_cap_per_user(job_store):
    for _ in range(3):
        submit(job_store, "u", max_queued=3)
    with pytest.raises(QueueFull) as err:
        submit(job_store, "u", max_queued=3)
    assert "3" in err.value.message
    submit(job_store, "other", max_queued=3)  # other users are not affected
    (n,) = job_store.conn.execute("SELECT COUNT(*) FROM jobs WHERE user_id = 'u'").fetchone()
    assert n == 3


def test_queue_cap_holds_under_concurrent_submits(tmp_path):
    path = tmp_path / "q.db"
    open_db(path).conn.close()
    errors, accepted = [], []

    def go():
        store = JobStore(open_db(path, check_same_thread=False))
        try:
            accepted.append(submit(store, "u", max_queued=5).id)
        except QueueFull:
            errors.append(1)

    threads = [threading.Thread(target=go) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 5 and len(errors) == 15


def test_batch_claim_takes_the_fair_orders_run_of_compatible_jobs(job_store):
    submit(job_store, "a", "a0", batch_key="512")
    submit(job_store, "c", "c0", batch_key="512")
    submit(job_store, "b", "b0", batch_key="768")
    submit(job_store, "d", "d0", batch_key="512")
    jobs = job_store.claim("w", lease_s=60, max_jobs=4)
    # d0 shares the key but the fair order serves b first: d may not jump ahead of b.
    assert [j.params["prompt"] for j in jobs] == ["a0", "c0"]
    assert all(j.status is JobStatus.RUNNING for j in jobs)
    assert [j.params["prompt"] for j in job_store.claim("w", lease_s=60, max_jobs=4)] == ["b0"]
    assert [j.params["prompt"] for j in job_store.claim("w", lease_s=60, max_jobs=4)] == ["d0"]


def test_batch_claim_stops_before_the_image_limit(job_store):
    submit(job_store, "a", "grid", seeds=[1, 2, 3, 4])
    submit(job_store, "b", "b0", seeds=[5])
    submit(job_store, "c", "c0", seeds=[6, 7])
    submit(job_store, "d", "d0", seeds=[8])
    jobs = job_store.claim("w", lease_s=60, max_jobs=8, max_images=6)
    assert [j.params["prompt"] for j in jobs] == ["grid", "b0"]  # 4 + 1; c0's 2 would make 7
    # A job larger than the limit alone still runs (the limit shapes batches only).
    assert [j.params["prompt"] for j in job_store.claim("w", lease_s=60, max_images=1)] == ["c0"]


def test_complete_is_exactly_once(job_store):
    job = submit(job_store, "u")
    (claimed,) = job_store.claim("w1", lease_s=60)
    stale_token = claimed.claim_token
    # The worker is presumed dead; the job is handed to another one.
    job_store.conn.execute("UPDATE jobs SET lease_until = 0 WHERE id = ?", (job.id,))
    assert job_store.requeue_abandoned(max_attempts=3, give_up=GIVE_UP) == [job.id]
    (again,) = job_store.claim("w2", lease_s=60)
    assert again.attempts == 2
    # The first worker wakes up and tries to finish: refused, nothing stored.
    assert not job_store.complete(job.id, stale_token, [(1, fake_image(1))],
                                  model_revision=None, run_seconds=1)
    assert job_store.images(job.id) == []
    assert job_store.complete(job.id, again.claim_token, [(1, fake_image(2))],
                              model_revision="r", run_seconds=1)
    assert not job_store.complete(job.id, again.claim_token, [(1, fake_image(3))],
                                  model_revision="r", run_seconds=1)
    done = job_store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert [i.sha256 for i in job_store.images(job.id)] == [fake_image(2).sha256]


def test_jobs_of_a_dead_local_process_are_requeued_at_once(job_store):
    job = submit(job_store, "u")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    import socket

    job_store.claim(f"{socket.gethostname()}:{dead}", lease_s=3600)
    live = submit(job_store, "v")
    job_store.claim(f"{socket.gethostname()}:{os.getppid()}", lease_s=3600)  # a live process
    assert job_store.requeue_abandoned(max_attempts=3, give_up=GIVE_UP) == [job.id]
    assert job_store.get(job.id).status is JobStatus.QUEUED
    assert job_store.get(live.id).status is JobStatus.RUNNING


def test_job_abandoned_too_often_fails_with_a_reason(job_store):
    job = submit(job_store, "u")
    for _ in range(3):
        job_store.claim("elsewhere:1", lease_s=-1)  # lease already over
        job_store.requeue_abandoned(max_attempts=3, give_up=GIVE_UP)
    failed = job_store.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert "3 times" in failed.error


def test_cancel_queued_and_running(job_store):
    a = submit(job_store, "u")
    b = submit(job_store, "v")
    (running,) = job_store.claim("w", lease_s=60)
    queued = b if running.id == a.id else a
    assert job_store.cancel(queued.id, error=CANCELED) is JobStatus.CANCELED
    assert job_store.cancel(running.id, error=CANCELED) is JobStatus.RUNNING
    ours, cancel = job_store.heartbeat(running.id, running.claim_token, lease_s=60, step=3, total=10)
    assert ours and cancel
    assert job_store.get(running.id).progress_step == 3
    assert job_store.cancel(12345, error=CANCELED) is None


# -- fast and relax time ---------------------------------------------------------------------


def test_a_relax_job_queued_before_fast_jobs_runs_after_all_of_them(job_store):
    relax = submit(job_store, "r", "relax", relax=True)
    assert relax.relax and relax.params["relax"] is True
    fast = [submit(job_store, u, f"{u}{i}") for u in ("a", "b") for i in range(2)]
    assert not any(j.relax or "relax" in j.params for j in fast)
    positions = job_store.positions()
    assert positions[relax.id] == 5 and sorted(positions[j.id] for j in fast) == [1, 2, 3, 4]
    order = []
    while jobs := job_store.claim("w", lease_s=60):
        order.append(jobs[0].params["prompt"])
        if order == ["a0"]:  # a fast job queued while the relax one waits still goes first
            submit(job_store, "c", "c0")
    assert order == ["a0", "b0", "c0", "a1", "b1", "relax"]


def test_relax_users_take_turns_least_recently_served_first(job_store):
    # z, never served, leads the relax users; then x, served (in fast time) before y.
    for user in ("x", "y"):
        submit(job_store, user, f"{user}-fast")
    for user in ("x", "y", "z"):
        for i in range(2):
            submit(job_store, user, f"{user}{i}", relax=True)
    positions = job_store.positions()
    predicted = [job_store.get(i).params["prompt"] for i in sorted(positions, key=positions.get)]
    order = []
    while jobs := job_store.claim("w", lease_s=60):
        order.append(jobs[0].params["prompt"])
    assert order == ["x-fast", "y-fast", "z0", "x0", "y0", "z1", "x1", "y1"]
    assert predicted == order


def test_relax_jobs_wait_only_for_fast_jobs_the_worker_can_run(job_store):
    submit(job_store, "a", "other model", model="m2")
    submit(job_store, "b", "relax", relax=True)
    (job,) = job_store.claim("w", lease_s=60, models=["m"])
    assert job.params["prompt"] == "relax"  # the only fast job waits for another worker
    (job,) = job_store.claim("w", lease_s=60)
    assert job.params["prompt"] == "other model"


def test_a_batch_never_mixes_fast_and_relax_jobs(job_store):
    submit(job_store, "a", "a-relax", relax=True)
    submit(job_store, "b", "b-fast")
    submit(job_store, "c", "c-fast")
    submit(job_store, "d", "d-relax", relax=True)
    batches = []
    while jobs := job_store.claim("w", lease_s=60, max_jobs=8):
        batches.append([j.params["prompt"] for j in jobs])
        assert len({j.relax for j in jobs}) == 1
    assert batches == [["b-fast", "c-fast"], ["a-relax", "d-relax"]]


def test_relax_in_params_alone_does_not_make_a_relax_job(job_store):
    job = job_store.submit(user_id="u", kind="draw", family="diffusion", model="m",
                           params={"prompt": "copied", "relax": True}, seeds=[1],
                           batch_key="k", source="cli")
    assert not job.relax and "relax" not in job.params
    gated = job_store.submit(user_id="u", kind="draw", family="diffusion", model="m",
                             params={"prompt": "p"}, seeds=[1], batch_key="k", source="cli",
                             admit=lambda db: {"relax": True})
    assert gated.relax and gated.params["relax"] is True
