"""`storage.doctor` on a real data directory: what counts as an orphan (not a job's
input image, not a preset, a crash's stale temporary file yes), jobs left running
with a lease that ran out, and what --repair does about them."""

import os
import time

from PIL import Image

from storage.db import open_db
from storage.doctor import check, repair
from storage.images import ImageStore
from storage.jobs import JobStatus, JobStore
from storage.presets import PresetStore
from worker.queue import gave_up_after
from worker.requests import input_images


def submit(store, **params):
    return store.submit(user_id="u", kind="vary", family="paint", model="m", params=params,
                        seeds=[1], batch_key="k", source="cli")


def test_inputs_and_presets_are_not_orphans_but_a_stale_temp_file_is(settings):
    data = settings.data_dir
    images = ImageStore(settings.image_dir)
    db = open_db(settings.db_path)
    store = JobStore(db)
    init = images.put_image(Image.new("RGB", (8, 8), "red"))
    style = images.put_image(Image.new("RGB", (8, 8), "blue"))
    stray = images.put_image(Image.new("RGB", (8, 8), "green"))
    submit(store, init_image=init.sha256)
    PresetStore(db).save("", "blue", style.sha256, created_by="op")
    crash = images.root / "ab" / ".tmp-crash"
    crash.parent.mkdir(parents=True, exist_ok=True)
    crash.write_bytes(b"half a png")
    os.utime(crash, (time.time() - 7200, time.time() - 7200))
    fresh = images.root / "ab" / ".tmp-writing"
    fresh.write_bytes(b"being written now")
    report = check(data, inputs=input_images)
    assert sorted(p.name for p in report.orphans) == sorted([f"{stray.sha256}.png", ".tmp-crash"])
    assert report.problems == 0
    done = repair(report, give_up=gave_up_after, max_attempts=3)
    assert len(done) == 1 and done[0].startswith("removed 2 orphan files (")
    assert (images.root / init.path).exists() and (images.root / style.path).exists()
    assert fresh.exists() and not crash.exists()


def test_a_running_job_whose_lease_ran_out_is_named_and_repair_requeues_it(settings):
    db = open_db(settings.db_path)
    store = JobStore(db)
    job = submit(store)
    store.claim("gone-worker", lease_s=1)
    report = check(settings.data_dir, inputs=input_images, now=time.time() + 60)
    assert report.abandoned == [job.id]
    assert any("`running` with no worker" in f.text and f.level == "warn" for f in report.findings)
    repair(report, give_up=gave_up_after, max_attempts=3, now=time.time() + 60)
    assert store.get(job.id).status is JobStatus.QUEUED
