"""Storage faults said in words: what went wrong with the data directory, and what to do.

SQLite and the file system report faults as `sqlite3.OperationalError("unable to
open database file")` or `OSError(28, ...)`: true, but not something an operator
can act on at 3 a.m., and a member on Discord should never see it. `explain`
turns the faults that are the disk's or the file's (read-only, full, locked by
another process, damaged, not a database) into a `StorageFault`, whose message
names the file and says what to do, and whose `reason` is the short version a
member may read. Anything else (a bug: a wrong column name) is not a storage
fault and `explain` returns None, so it is raised as it is.

The places where storage is entered call it: `storage.db.open_db`, the image
store's writes, and `worker.queue.LocalJobQueue`'s database thread.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
from pathlib import Path

from artbot.errors import StorageFault

#: The exceptions a storage fault arrives as, for front doors that catch what no layer
#: below said in words (the CLI's last resort) without touching sqlite3 themselves.
STORAGE_ERRORS = (sqlite3.Error, OSError)

_READ_ONLY = {errno.EROFS, errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT} if hasattr(errno, "EDQUOT") else {errno.ENOSPC}


def free_bytes(path: str | Path) -> int | None:
    """Free space on the disk holding `path` (or its nearest existing parent)."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def size_text(n: int) -> str:
    """1536 -> '1.5 KB': sizes for people."""
    value = float(n)
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def read_only(path: str | Path) -> StorageFault:
    where = Path(path)
    return StorageFault(
        f"{where} cannot be written: the data directory is read-only or not writable by "
        f"this user. Check its permissions and mount (artbot needs to write its database "
        f"and images there), or set data_dir to a writable folder.",
        reason="the data folder is read-only",
    )


def disk_full(path: str | Path) -> StorageFault:
    free = free_bytes(path)
    left = f" ({size_text(free)} free)" if free is not None else ""
    return StorageFault(
        f"The disk holding {Path(path)} is full{left}. Free some space, then run it again; "
        f"nothing already saved was lost.",
        reason="the disk is full",
    )


def locked(path: str | Path) -> StorageFault:
    return StorageFault(
        f"The database {Path(path)} stayed locked: another process has held its write lock "
        f"for longer than artbot waits (ARTBOT_DB_BUSY_TIMEOUT, default 30 s). Is an artbot "
        f"process stalled? Stop it (`artbot workers` lists who serves this data directory) "
        f"and try again.",
        reason="the database is busy",
    )


def damaged(path: str | Path, detail: str) -> StorageFault:
    return StorageFault(
        f"The database {Path(path)} is damaged ({detail}). Run `artbot doctor` to see what "
        f"is wrong, and restore the file from a backup (`artbot backup` makes one).",
        reason="the database is damaged",
    )


def not_a_database(path: str | Path) -> StorageFault:
    return StorageFault(
        f"{Path(path)} is not an artbot database (it is not an SQLite file at all). Restore "
        f"it from a backup, or move it away and artbot starts an empty one.",
        reason="the database is damaged",
    )


def explain(exc: BaseException, path: str | Path) -> StorageFault | None:
    """The `StorageFault` that `exc` is, for the file or folder `path`; None when `exc`
    is not a fault of the storage (a bug, which should be raised as it is)."""
    if isinstance(exc, StorageFault):
        return exc
    if isinstance(exc, sqlite3.Error):
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            return locked(path)
        if "readonly" in text or "read-only" in text or "unable to open" in text:
            return read_only(path)
        if "disk is full" in text or "database or disk is full" in text:
            return disk_full(path)
        if "file is not a database" in text or "not a database" in text:
            return not_a_database(path)
        if "malformed" in text or "corrupt" in text:
            return damaged(path, str(exc))
        if "disk i/o error" in text:
            if free_bytes(path) == 0:
                return disk_full(path)
            return damaged(path, "the disk reported an I/O error")
        return None
    if isinstance(exc, OSError):
        if exc.errno in _FULL:
            return disk_full(path)
        if exc.errno in _READ_ONLY:
            return read_only(exc.filename or path)
        if exc.errno == errno.EIO:
            return StorageFault(
                f"The disk holding {Path(path)} reported an I/O error; check the disk "
                f"(dmesg) before going on.",
                reason="the disk failed to write",
            )
    return None


def raise_explained(exc: BaseException, path: str | Path) -> None:
    """Raise `exc` as its `StorageFault` when it is one, else leave it to the caller."""
    fault = explain(exc, path)
    if fault is not None and fault is not exc:
        raise fault from exc


def can_write(folder: str | Path, nbytes: int = 64 * 1024) -> bool:
    """Whether `nbytes` can be written to a new file in `folder` now: a real write, since
    root passes `os.access` on a read-only mount and a full disk still creates empty files."""
    probe = Path(folder) / f".artbot-write-test-{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"\0" * nbytes)
            fh.flush()
            os.fsync(fh.fileno())
        return True
    except OSError:
        return False
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
