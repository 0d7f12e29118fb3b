"""Opening the database.

One SQLite file under the data directory, in WAL mode so that readers (the
CLI's `history`, the bot's `/history`) never wait for the worker's writes.
The connection runs in autocommit mode: every write that must be atomic opens
its own `BEGIN IMMEDIATE` transaction (see `storage.jobs`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import sqlite_utils

from storage.migrations import migrate


def open_db(path: str | Path, *, check_same_thread: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path` and bring its schema up to date."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(
        str(path),
        isolation_level=None,  # autocommit; transactions are explicit
        timeout=30.0,  # wait this long for another process's write lock
        check_same_thread=check_same_thread,
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db
