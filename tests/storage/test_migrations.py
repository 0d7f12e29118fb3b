import sqlite3

from storage.db import open_db
from storage.migrations import MIGRATIONS, applied


def test_new_database_is_migrated_and_recorded(tmp_path):
    db = open_db(tmp_path / "a.db")
    assert applied(db) == sorted(n for n, _, _ in MIGRATIONS)
    assert {"users", "servers", "server_settings", "jobs", "images", "_migrations"} <= set(
        db.table_names()
    )
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopening_applies_nothing_and_keeps_data(tmp_path):
    db = open_db(tmp_path / "a.db")
    db.conn.execute("INSERT INTO users (id, name, created_at) VALUES ('u1', 'Ann', 1)")
    db.conn.close()
    db2 = open_db(tmp_path / "a.db")
    rows = db2.execute("SELECT id, name FROM _migrations").fetchall()
    assert len(rows) == len(MIGRATIONS)
    assert db2.execute("SELECT name FROM users WHERE id = 'u1'").fetchone() == ("Ann",)


def test_failed_migration_leaves_no_trace(tmp_path, monkeypatch):
    import storage.migrations as m

    def broken(db):
        db.conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("boom")

    monkeypatch.setattr(m, "MIGRATIONS", m.MIGRATIONS + [(999, "broken", broken)])
    try:
        open_db(tmp_path / "b.db")
    except RuntimeError:
        pass
    conn = sqlite3.connect(tmp_path / "b.db")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "half_done" not in tables
    assert 999 not in [r[0] for r in conn.execute("SELECT id FROM _migrations")]
    assert "jobs" in tables  # migration 1 went through on its own


def test_migration_8_keeps_the_jobs_of_version_7_as_fast_jobs(tmp_path, monkeypatch):
    import storage.migrations as m
    from storage.jobs import JobStore

    path = tmp_path / "v7.db"
    with monkeypatch.context() as patch:
        patch.setattr(m, "MIGRATIONS", [x for x in m.MIGRATIONS if x[0] <= 7])
        old = open_db(path)
        assert applied(old) == [1, 2, 3, 4, 5, 6, 7]
        old.conn.execute("INSERT INTO users (id, created_at) VALUES ('u', 1)")
        for status in ("queued", "succeeded"):
            old.conn.execute(
                "INSERT INTO jobs (user_id, source, kind, generator, model, params, seeds, "
                "batch_key, status, created_at) VALUES ('u', 'cli', 'draw', 'diffusion', 'm', "
                "'{\"prompt\": \"old\"}', '[1]', 'k', ?, 1)", (status,))
        old.conn.close()
    store = JobStore(open_db(path))  # version 8 now
    assert 8 in applied(store.db)
    jobs = store.list_jobs(limit=5)
    assert len(jobs) == 2 and not any(j.relax for j in jobs)
    relax = store.submit(user_id="v", kind="draw", family="diffusion", model="m",
                         params={"prompt": "new"}, seeds=[1], batch_key="k", source="cli",
                         relax=True)
    assert [j.id for j in store.claim("w", lease_s=60, max_jobs=4)] == [jobs[-1].id]  # the old one
    assert [j.id for j in store.claim("w", lease_s=60, max_jobs=4)] == [relax.id]
    # The claim query finds each user's oldest job per time through the new index.
    plan = " ".join(str(row) for row in store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT relax, user_id, MIN(id) FROM jobs WHERE status = 'queued' "
        "GROUP BY relax, user_id"))
    assert "jobs_queue_relax" in plan
