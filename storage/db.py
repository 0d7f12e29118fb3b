"""Opening the database, and the small helpers every store in `storage` shares.

One SQLite file under the data directory, in WAL mode so that readers (the
CLI's `history`, the bot's `/history`) never wait for the worker's writes.
The connection runs in autocommit mode: every write that must be atomic runs
inside `transaction(conn)`, one `BEGIN IMMEDIATE` ... `COMMIT`.

Another process's write lock is waited for: SQLite's busy timeout
(`ARTBOT_DB_BUSY_TIMEOUT` seconds, default 30, split over `LOCK_TRIES` tries of
`BEGIN IMMEDIATE`, each logged), then a `StorageFault` that says the database stayed
locked. Faults of the file itself (read-only, full, damaged, not a database) are
said the same way (`storage.faults`), never as a raw sqlite3 error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import sqlite_utils

from storage.faults import explain
from storage.migrations import migrate

log = logging.getLogger(__name__)

#: How many times `transaction` tries to take the write lock before giving up.
LOCK_TRIES = 3


def busy_timeout() -> float:
    """Seconds to wait in all for another process's write lock (ARTBOT_DB_BUSY_TIMEOUT)."""
    try:
        return max(0.1, float(os.environ.get("ARTBOT_DB_BUSY_TIMEOUT", "30")))
    except ValueError:
        return 30.0


def open_db(path: str | Path, *, check_same_thread: bool = True) -> sqlite_utils.Database:
    """Open (creating if needed) the database at `path` and bring its schema up to date.

    Raises `StorageFault` when the file or its folder is what stops it."""
    path = Path(path)
    conn = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        wait = busy_timeout() / LOCK_TRIES
        conn = sqlite3.connect(
            str(path),
            isolation_level=None,  # autocommit; transactions are explicit
            timeout=wait,  # wait this long for another process's write lock, per try
            check_same_thread=check_same_thread,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # durable across process crashes in WAL mode
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
        db = sqlite_utils.Database(conn)
        migrate(db)
        return db
    except (sqlite3.Error, OSError) as exc:
        if conn is not None:
            conn.close()
        fault = explain(exc, path)
        if fault is None:
            raise
        raise fault from exc


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: `BEGIN IMMEDIATE`, then COMMIT, or ROLLBACK on any error.

    Inside a transaction that is already open (the gate reading settings and
    usage while the job is inserted), it joins that one instead.
    """
    if conn.in_transaction:
        yield
        return
    begin(conn)
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def begin(conn: sqlite3.Connection) -> None:
    """`BEGIN IMMEDIATE`, tried `LOCK_TRIES` times while another process holds the write
    lock (each try waits the connection's busy timeout). Safe to retry: nothing has
    been done yet. The last failure is raised as sqlite3 raised it; callers explain it."""
    for attempt in range(1, LOCK_TRIES + 1):
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc) or attempt == LOCK_TRIES:
                raise
            log.warning("the database is locked by another process; waiting (try %d of %d)",
                        attempt + 1, LOCK_TRIES)
            time.sleep(0.05 * attempt)


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
