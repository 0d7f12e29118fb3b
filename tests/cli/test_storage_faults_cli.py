"""Storage faults on real files, as an operator meets them at the command line: a
read-only data directory, a full disk (a small tmpfs), a truncated and a corrupted
database, a deleted image, another process holding the write lock. Each gives one
clear `error:` line and a non-zero exit, never a traceback, and leaves no job
`running`; `artbot doctor` says what is wrong and `artbot backup` copies safely."""

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

DRAW = ("draw", "a red heart", "--seed", "3", "--model", "emoji-diffusion")


def one_clear_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), err
    assert "Traceback" not in err and len(lines) <= 3, err
    return lines[-1]


def jobs_by_status(db: Path) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall())
    finally:
        conn.close()


def mounts_allowed() -> bool:
    return os.geteuid() == 0 and subprocess.run(["which", "mount"], capture_output=True).returncode == 0


@contextlib.contextmanager
def read_only(folder: Path):
    """`folder` read-only for this process: a read-only bind mount as root (root writes
    through permission bits), else permission bits."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p, mode in modes.items():
                p.chmod(mode)
        return
    for cmd in (["mount", "--bind", str(folder), str(folder)],
                ["mount", "-o", "remount,ro,bind", str(folder)]):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            subprocess.run(["umount", str(folder)], capture_output=True)
            pytest.skip("root here may not bind-mount, so a read-only folder cannot be made")
    try:
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_data_directory_is_said_in_words(artbot):
    code, _, _ = artbot(*DRAW, "--out", "first.png")
    assert code == 0
    data = artbot.db.parent
    with read_only(data):
        code, _, err = artbot(*DRAW, "--out", "second.png")
        assert code == 1
        line = one_clear_line(err)
        assert "read-only or not writable" in line and str(data) in line
        code, _, err = artbot("history")
        assert code == 1 and "read-only" in one_clear_line(err)
    assert jobs_by_status(artbot.db) == {"succeeded": 1}


@pytest.mark.skipif(not mounts_allowed(), reason="a small full filesystem needs root's tmpfs mounts")
def test_a_full_disk_is_said_in_words_and_leaves_nothing_running(tmp_path, monkeypatch, artbot):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                      capture_output=True).returncode != 0:
        pytest.skip("tmpfs cannot be mounted here")
    try:
        monkeypatch.setenv("ARTBOT_DATA_DIR", str(disk / "data"))
        db = disk / "data" / "artbot.db"
        code, _, _ = artbot(*DRAW, "--out", "first.png")
        assert code == 0
        fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # fill it to the last byte
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        os.close(fd)
        code, _, err = artbot(*DRAW[:3], "4", *DRAW[4:], "--out", "second.png")
        assert code == 1
        line = one_clear_line(err)
        assert "is full" in line and "Free some space" in line
        (disk / "filler").unlink()
        assert jobs_by_status(db).get("running", 0) == 0
        code, out, _ = artbot("history")
        assert code == 0 and "a red heart" in out
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def corrupt(db: Path, *, start_page: int = 3) -> None:
    data = bytearray(db.read_bytes())
    for i in range(4096 * start_page, len(data), 397):
        data[i] = (data[i] * 31 + 7) % 256
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated", "corrupted", "not-sqlite"])
def test_a_damaged_database_is_said_in_words_and_doctor_names_it(artbot, damage):
    assert artbot(*DRAW, "--count", "2", "--out", "h.png")[0] == 0
    db = artbot.db
    for side in db.parent.glob("artbot.db-*"):
        side.unlink()
    if damage == "truncated":
        db.write_bytes(db.read_bytes()[:5000])
    elif damage == "corrupted":
        corrupt(db)
    else:
        db.write_bytes(b"these are not the droids\n" * 40)
    for command in (("history",), DRAW):
        code, _, err = artbot(*command)
        assert code == 1, (command, err)
        line = one_clear_line(err)
        assert ("is damaged" in line or "not an artbot database" in line) and "backup" in line
    code, out, err = artbot("doctor")
    assert code == 1 and "Traceback" not in out + err
    assert ("not an SQLite database" if damage == "not-sqlite" else "database is damaged") in out
    assert "PROBLEM" in out


def test_doctor_reports_a_deleted_image_and_repair_marks_it_lost(artbot):
    assert artbot(*DRAW, "--count", "2", "--out", "h.png")[0] == 0
    conn = sqlite3.connect(artbot.db)
    (path,) = conn.execute("SELECT path FROM images WHERE idx = 1").fetchone()
    conn.close()
    image_dir = artbot.db.parent / "images"
    (image_dir / path).unlink()
    (image_dir / "stray.png").write_bytes(b"not ours")
    code, out, _ = artbot("doctor")
    assert code == 1
    assert "1 image missing from the image store: job 1 image 2" in out
    assert "1 file in the image store that no job references" in out
    code, out, _ = artbot("doctor", "--repair")
    assert code == 0 and "marked 1 image as lost" in out and "removed 1 orphan file" in out
    assert not (image_dir / "stray.png").exists()
    code, out, _ = artbot("doctor")
    assert code == 0 and "1 already marked lost" in out and "All well." in out
    # The lost image is refused in words; the one still there works.
    code, _, err = artbot("describe", "1", "--image", "2")
    assert code == 1 and "no longer in the image store" in one_clear_line(err)
    assert jobs_by_status(artbot.db) == {"succeeded": 1}  # refused before a job was queued
    assert artbot("describe", "1", "--image", "1")[0] == 0


HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE jobs SET status = status")
conn.execute("INSERT INTO users (id, name, created_at) VALUES ('uncommitted', 'x', 0)")
print("holding", flush=True)
time.sleep(60)
"""


def test_a_process_holding_the_write_lock_gets_a_clear_line_not_a_crash(artbot, monkeypatch, tmp_path):
    assert artbot(*DRAW, "--out", "h.png")[0] == 0
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(artbot.db)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        monkeypatch.setenv("ARTBOT_DB_BUSY_TIMEOUT", "1")
        started = time.monotonic()
        code, _, err = artbot(*DRAW, "--out", "again.png")
        assert code == 1 and time.monotonic() - started < 20
        assert "stayed locked" in one_clear_line(err)
        code, out, _ = artbot("history")  # readers do not wait for the writer
        assert code == 0 and "a red heart" in out
        # A backup is consistent meanwhile: what is committed, not the holder's rows.
        code, out, _ = artbot("backup", str(tmp_path / "copy.db"))
        assert code == 0 and "1 jobs" in out
        copy = sqlite3.connect(tmp_path / "copy.db")
        assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert copy.execute("SELECT COUNT(*) FROM users WHERE id = 'uncommitted'").fetchone()[0] == 0
        copy.close()
    finally:
        holder.kill()
        holder.wait()
    assert jobs_by_status(artbot.db) == {"succeeded": 1}


def test_backup_refuses_to_overwrite_and_names_a_dated_file_in_a_folder(artbot, tmp_path):
    assert artbot(*DRAW, "--out", "h.png")[0] == 0
    folder = tmp_path / "backups"
    folder.mkdir()
    code, out, _ = artbot("backup", str(folder))
    assert code == 0
    (written,) = folder.glob("artbot-*.db")
    assert str(written) in out and "rsync" in out
    code, _, err = artbot("backup", str(written))
    assert code == 2 and "already exists" in one_clear_line(err)
    assert artbot("backup", str(written), "--force")[0] == 0
