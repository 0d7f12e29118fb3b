"""Opening the database, and the small helpers every store in `storage` shares.

One SQLite file under the data directory, in WAL mode so that readers (the
CLI's `history`, the bot's `/history`) never wait for the worker's writes.
The connection runs in autocommit mode: every write that must be atomic runs
inside `transaction(conn)`, one `BEGIN IMMEDIATE` ... `COMMIT`.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any, Iterator, Sequence

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


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: `BEGIN IMMEDIATE`, then COMMIT, or ROLLBACK on any error.

    Inside a transaction that is already open (the gate reading settings and
    usage while the job is inserted), it joins that one instead.
    """
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def fetch_one(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> dict[str, Any] | None:
    """The first row of a query as a dict, or None."""
    cur = conn.execute(sql, params)
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([c[0] for c in cur.description], row))


def fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Every row of a query as a dict."""
    cur = conn.execute(sql, params)
    cols = [c[0] for c in cur.description]
    return [dict(zip(cols, row)) for row in cur.fetchall()]
