"""Deleting a member's data and a server's old results (storage.privacy), on a real
SQLite file and a real image store: only their rows go, and only the files that no
other job, input or preset still uses."""

import itertools
import time

from PIL import Image

from storage.images import ImageStore
from storage.messages import MessageStore
from storage.presets import PresetStore
from storage.privacy import DAY, PrivacyStore
from storage.settings import SettingsStore
from storage.usage import Usage
from storage.jobs import JobStore
from worker.requests import input_images

_models = itertools.count()


def made(store: JobStore, images: ImageStore, user: str, server: str | None, colour, *,
         params=None, parent=None):
    """A succeeded job of `user` whose one image is a 4x4 PNG of `colour`."""
    model = f"m{next(_models)}"
    job = store.submit(user_id=user, kind="draw", family="diffusion", model=model,
                       params={"prompt": f"{user} {colour}", **(params or {})}, seeds=[7],
                       batch_key=model, source="discord", server_id=server, parent_id=parent)
    (claimed,) = store.claim("w", lease_s=60, models=[model])
    stored = images.put_image(Image.new("RGB", (4, 4), colour))
    assert store.complete(job.id, claimed.claim_token, [(7, stored)], model_revision="r",
                          run_seconds=0.1)
    return store.get(job.id), stored


def rows(db, user: str) -> dict[str, int]:
    """Rows that name `user`, table by table."""
    q = lambda sql: db.conn.execute(sql, (user,)).fetchone()[0]  # noqa: E731
    return {
        "jobs": q("SELECT COUNT(*) FROM jobs WHERE user_id = ?"),
        "images": q("SELECT COUNT(*) FROM images WHERE job_id IN "
                    "(SELECT id FROM jobs WHERE user_id = ?)"),
        "messages": q("SELECT COUNT(*) FROM discord_messages WHERE job_id IN "
                      "(SELECT id FROM jobs WHERE user_id = ?)"),
        "users": q("SELECT COUNT(*) FROM users WHERE id = ?"),
    }


def privacy(db, images):
    return PrivacyStore(db, images, inputs=input_images)


def test_forget_deletes_only_the_members_rows_and_files_nobody_else_uses(fresh_db, tmp_path):
    db, store = fresh_db, JobStore(fresh_db)
    images = ImageStore(tmp_path / "images")
    links = MessageStore(db)
    # Alice: two results in server 1, one in server 2, and a variation of an upload of hers.
    a1, a1_img = made(store, images, "alice", "1", "red")
    a2, a2_img = made(store, images, "alice", "1", "green")
    upload, _ = images.put_bytes(b"not really a png, but stored as one")
    a3, a3_img = made(store, images, "alice", "1", "blue", params={"init_image": upload})
    elsewhere, elsewhere_img = made(store, images, "alice", "2", "white")
    # Bob: the same red bytes as alice's (one shared file), a variation of her green image
    # (a job made from hers: it reads her file), and a preset of her blue one.
    b1, b1_img = made(store, images, "bob", "1", "red")
    b2, _ = made(store, images, "bob", "1", "black", params={"init_image": a2_img.sha256},
                 parent=a2.id)
    PresetStore(db).save("", "blue", a3_img.sha256, created_by="admin")
    assert b1_img.sha256 == a1_img.sha256
    for job in (a1, a2, b1):
        links.link(job.id, f"{job.id}00", "55", guild_id="1", via="channel")
    bob_before = rows(db, "bob")

    erased = privacy(db, images).erase_member("alice", "1")

    assert (erased.jobs, erased.images) == (3, 3)
    assert sorted(erased.messages) == [("55", f"{a1.id}00"), ("55", f"{a2.id}00")]
    assert rows(db, "alice") == {"jobs": 1, "images": 1, "messages": 0, "users": 1}
    assert rows(db, "bob") == bob_before
    assert store.get(elsewhere.id) is not None  # another server: untouched
    assert store.get(b2.id).parent_id is None  # bob's variation stays, without its parent
    # Files: only the upload nobody else reads went. The red file is bob's too, the green
    # one is read by bob's variation, the blue one is a preset's.
    assert not images.path_for(upload).exists()
    for kept in (a1_img, a2_img, a3_img, elsewhere_img):
        assert (images.root / kept.path).exists()
    assert erased.files == 1 and erased.files_left == 0

    # Every server: the last job, its file, and the member's row itself.
    erased = privacy(db, images).erase_member("alice", None)
    assert erased.jobs == 1 and erased.files == 1
    assert rows(db, "alice") == {"jobs": 0, "images": 0, "messages": 0, "users": 0}
    assert not (images.root / elsewhere_img.path).exists()
    assert rows(db, "bob") == bob_before


def test_deleting_does_not_give_back_the_quota_or_the_cooldown(fresh_db, tmp_path):
    db, store = fresh_db, JobStore(fresh_db)
    images = ImageStore(tmp_path / "images")
    made(store, images, "alice", "1", "red")
    made(store, images, "alice", "1", "green")
    since = time.time() - 3600
    before = (Usage(db).images_since("1", "alice", since), Usage(db).last_job_at("1", "alice"))
    privacy(db, images).erase_member("alice", None)
    assert store.list_jobs(user_id="alice") == []
    assert (Usage(db).images_since("1", "alice", since), Usage(db).last_job_at("1", "alice")) \
        == before == (2, before[1])
    # Only a count and a time are kept, and only for two days.
    assert db.conn.execute("SELECT * FROM usage_kept").fetchall()[0][:2] == ("1", "alice")
    privacy(db, images).erase_expired(now=time.time() + 3 * DAY)
    assert db.conn.execute("SELECT COUNT(*) FROM usage_kept").fetchone()[0] == 0


def test_retention_deletes_a_servers_finished_results_older_than_its_days(fresh_db, tmp_path):
    db, store = fresh_db, JobStore(fresh_db)
    images = ImageStore(tmp_path / "images")
    SettingsStore(db).set("1", "retention", 30, actor="admin", via="cli")
    old, old_img = made(store, images, "alice", "1", "red")
    shared, _ = made(store, images, "bob", "1", "green")
    new, new_img = made(store, images, "bob", "1", "green")  # the same file as `shared`
    other_server, other_img = made(store, images, "carol", "2", "blue")
    waiting = store.submit(user_id="alice", kind="draw", family="diffusion", model="q",
                           params={"prompt": "still queued"}, seeds=[1], batch_key="q",
                           source="discord", server_id="1")
    now = time.time()
    for job_id, days in ((old.id, 40), (shared.id, 31), (new.id, 10), (other_server.id, 400),
                         (waiting.id, 45)):
        db.conn.execute("UPDATE jobs SET created_at = ? WHERE id = ?", (now - days * DAY, job_id))

    erased = privacy(db, images).erase_expired(now=now)

    assert sorted(erased.job_ids) == sorted([old.id, shared.id])
    assert store.get(new.id) is not None and store.get(waiting.id) is not None
    assert store.get(other_server.id) is not None  # no retention there: kept forever
    assert not (images.root / old_img.path).exists()
    assert (images.root / new_img.path).exists()  # a kept job still shows it
    assert (images.root / other_img.path).exists()
    assert privacy(db, images).erase_expired(now=now).jobs == 0  # nothing more to do


def test_a_deleted_job_is_told_apart_from_one_that_never_was(fresh_db, tmp_path):
    db, store = fresh_db, JobStore(fresh_db)
    images = ImageStore(tmp_path / "images")
    gone, _ = made(store, images, "alice", "1", "red")
    kept, _ = made(store, images, "bob", "1", "red")
    privacy(db, images).erase_member("alice", None)
    reader = PrivacyStore(db)
    assert reader.was_deleted(gone.id)
    assert not reader.was_deleted(kept.id) and not reader.was_deleted(kept.id + 1)
    assert [job.id for job, _ in reader.records("bob")] == [kept.id]
    assert reader.member_counts("bob", "1") == (1, 1) and reader.member_counts("bob", "2") == (0, 0)
