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
