"""`artbot` commands run in-process for tests: `cli.main.main` with a fresh data
directory (the same parser, queue, worker and loader as the script; torch is imported
once, not per command), and the jobs table read back, to check what a command left."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cli.main import main


def in_process_artbot(tmp_path: Path, monkeypatch, capsys, *, strip: bool = False):
    """A function `run(*argv) -> (exit status, stdout, stderr)` on `tmp_path/data`, run
    from `tmp_path`; a parser error (argparse exits) counts as its exit status. `run.db`
    is the database's path."""
    monkeypatch.setenv("ARTBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARTBOT_DEVICE", "cpu")
    monkeypatch.delenv("ARTBOT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*argv):
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code
        out = capsys.readouterr()
        return code, out.out, out.err.strip() if strip else out.err

    run.db = tmp_path / "data" / "artbot.db"
    return run


def job_rows(db: Path, columns: str = "id, kind, status") -> list[tuple]:
    """The jobs table's rows (those columns), in id order; [] before there is a database."""
    if not db.exists():
        return []
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT {columns} FROM jobs ORDER BY id").fetchall()
    finally:
        conn.close()
