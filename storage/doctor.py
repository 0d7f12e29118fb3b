"""`artbot doctor` and `artbot backup`: a data directory checked, and copied safely.

`check` looks at everything a data directory holds and says what it found, in
words: whether `artbot.db` is an SQLite file at all, `PRAGMA integrity_check`,
the schema's migrations, every stored image (its file is there, and its bytes
still hash to the sha256 it is stored under), files in the image store that no
job, input or preset references (orphans, and temporary files a crash left),
jobs still `running` whose worker's lease ran out, and the free space.

`repair` mends what can be mended without guessing: lost images are marked
(`images.lost_at`, so `/job` and the buttons say so instead of failing), orphans
are removed, abandoned jobs go back on the queue. A damaged database is not
mended in place; the report says to restore a backup.

`backup` copies the database with SQLite's online backup API, page by page, so the
copy is consistent while the bot and workers keep writing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from artbot.errors import UserError
from storage.faults import explain, size_text
from storage.jobs import referenced_images
from storage.migrations import MIGRATIONS

SQLITE_HEADER = b"SQLite format 3\x00"
# Free space below either of these is worth a warning: new images would soon fail.
LOW_SPACE_BYTES = 1 << 30
LOW_SPACE_SHARE = 0.05
# A temporary file of the image store older than this was left by a crash.
STALE_TMP_S = 3600.0


@dataclass
class Finding:
    level: str  # "ok", "warn" or "problem"
    text: str


@dataclass
class Report:
    data_dir: Path
    findings: list[Finding] = field(default_factory=list)
    database_ok: bool = False
    # (image row id, job id, index, relative path) of images whose file is gone / changed
    missing: list[tuple[int, int, int, str]] = field(default_factory=list)
    mismatched: list[tuple[int, int, int, str]] = field(default_factory=list)
    orphans: list[Path] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)  # running jobs whose lease ran out

    def add(self, level: str, text: str) -> None:
        self.findings.append(Finding(level, text))

    @property
    def problems(self) -> int:
        return sum(f.level == "problem" for f in self.findings)

    @property
    def warnings(self) -> int:
        return sum(f.level == "warn" for f in self.findings)

    @property
    def repairable(self) -> bool:
        return bool(self.missing or self.mismatched or self.orphans or self.abandoned)


def _connect(db_path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA busy_timeout=10000")
    return conn


def _images_of(what: str, rows: list[tuple[int, int, int, str]]) -> str:
    shown = ", ".join(f"job {job} image {idx + 1} ({path})" for _id, job, idx, path in rows[:5])
    more = f" and {len(rows) - 5} more" if len(rows) > 5 else ""
    n = len(rows)
    return f"{n} image{'s' if n != 1 else ''} {what}: {shown}{more}"


def check(data_dir: str | Path, *, inputs: Callable[[dict[str, Any]], Iterable[str]],
          verify: bool = True, now: float | None = None) -> Report:
    """Look at the data directory (`artbot.db` and `images/`); change nothing.

    `inputs(params)` names the stored images a job reads (its init or style image,
    blend inputs), which are not orphans. With `verify`, every image's bytes are hashed.
    """
    now = time.time() if now is None else now
    data_dir = Path(data_dir)
    db_path, image_dir = data_dir / "artbot.db", data_dir / "images"
    report = Report(data_dir=data_dir)
    if not data_dir.is_dir():
        report.add("problem", f"{data_dir} does not exist (or is not a folder): nothing to check.")
        return report
    referenced: set[str] = set()
    if not db_path.exists():
        report.add("ok", "no database yet: artbot creates one at the first command")
    else:
        referenced = _check_database(report, db_path, image_dir, inputs, verify, now)
    if image_dir.is_dir():
        _check_orphans(report, image_dir, referenced, now)
    _check_space(report, data_dir)
    return report


def _check_database(report: Report, db_path: Path, image_dir: Path, inputs, verify: bool,
                    now: float) -> set[str]:
    with open(db_path, "rb") as fh:
        head = fh.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        size = db_path.stat().st_size
        report.add("problem", f"{db_path} is not an SQLite database ({size_text(size)} of "
                   f"something else): restore it from a backup (artbot backup makes them).")
        return set()
    conn = _connect(db_path)
    try:
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
        except sqlite3.DatabaseError as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            report.add("problem", f"the database is damaged: {shown}. Stop artbot and restore "
                       f"{db_path.name} from a backup (`artbot backup` makes them); what can still "
                       f"be read is listed below.")
        else:
            report.database_ok = True
            report.add("ok", f"{db_path.name}: integrity check passed")
        try:
            return _check_contents(report, conn, image_dir, inputs, verify, now)
        except sqlite3.DatabaseError as exc:
            report.add("problem", f"the database's tables cannot be read ({exc}); images and "
                       f"jobs were not checked.")
            return set()
    finally:
        conn.close()


def _check_contents(report: Report, conn: sqlite3.Connection, image_dir: Path, inputs,
                    verify: bool, now: float) -> set[str]:
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    known = sorted(number for number, _name, _fn in MIGRATIONS)
    done = (sorted(row[0] for row in conn.execute("SELECT id FROM _migrations"))
            if "_migrations" in tables else [])
    ahead = [n for n in done if n not in known]
    behind = [n for n in known if n not in done]
    if ahead:
        report.add("problem", f"the database was made by a newer artbot (migrations "
                   f"{', '.join(map(str, ahead))} are unknown here): upgrade artbot.")
    elif behind:
        report.add("warn", f"{len(behind)} migration{'s' if len(behind) != 1 else ''} to apply "
                   f"({', '.join(map(str, behind))}): the next artbot command applies them.")
    else:
        report.add("ok", f"schema up to date ({len(done)} migrations)")
    if "jobs" not in tables or "images" not in tables:
        report.add("problem", "the jobs or images table is missing.")
        return set()

    jobs = conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    columns = {row[1] for row in conn.execute("PRAGMA table_info(images)")}
    lost_col = "lost_at" in columns
    rows = conn.execute(
        "SELECT id, job_id, idx, path, sha256" + (", lost_at" if lost_col else ", NULL")
        + " FROM images ORDER BY id").fetchall()
    already_lost = 0
    for image_id, job_id, idx, path, sha, lost_at in rows:
        if lost_at is not None:
            already_lost += 1
            continue
        file = image_dir / path
        if not file.is_file():
            report.missing.append((image_id, job_id, idx, path))
        elif verify and hashlib.sha256(file.read_bytes()).hexdigest() != sha:
            report.mismatched.append((image_id, job_id, idx, path))
    referenced = referenced_images(conn, inputs)
    checked = "checked" if verify else "found (not hashed: --quick)"
    report.add("ok", f"{jobs} jobs, {len(rows)} images {checked}"
               + (f", {already_lost} already marked lost" if already_lost else ""))
    if report.missing:
        report.add("problem", _images_of("missing from the image store", report.missing))
    if report.mismatched:
        report.add("problem", _images_of("whose bytes no longer match their sha256",
                                         report.mismatched))
    for job_id, lease_until, worker in conn.execute(
            "SELECT id, lease_until, worker_id FROM jobs WHERE status = 'running' "
            "AND lease_until IS NOT NULL AND lease_until < ?", (now,)):
        report.abandoned.append(job_id)
    if report.abandoned:
        n = len(report.abandoned)
        report.add("warn", f"{n} job{'s are' if n != 1 else ' is'} `running` with no worker "
                   f"(its lease ran out): {', '.join(map(str, report.abandoned[:10]))}; the next "
                   f"worker to start puts {'them' if n != 1 else 'it'} back on the queue.")
    return referenced


def _check_orphans(report: Report, image_dir: Path, referenced: set[str], now: float) -> None:
    orphan_bytes = 0
    for path in sorted(image_dir.rglob("*")):
        if not path.is_file():
            continue
        if path.name.startswith(".tmp-"):
            if now - path.stat().st_mtime > STALE_TMP_S:
                report.orphans.append(path)
                orphan_bytes += path.stat().st_size
            continue
        if path.stem not in referenced and report.database_ok:
            report.orphans.append(path)
            orphan_bytes += path.stat().st_size
    if report.orphans:
        n = len(report.orphans)
        report.add("warn", f"{n} file{'s' if n != 1 else ''} in the image store that no job "
                   f"references ({size_text(orphan_bytes)}), e.g. "
                   f"{report.orphans[0].relative_to(image_dir)}")


def _check_space(report: Report, data_dir: Path) -> None:
    try:
        usage = shutil.disk_usage(data_dir)
    except OSError:
        return
    share = usage.free / usage.total if usage.total else 0.0
    text = f"{size_text(usage.free)} free on the data directory's disk ({share:.0%})"
    if usage.free < LOW_SPACE_BYTES or share < LOW_SPACE_SHARE:
        report.add("warn", f"only {text}: new images will fail when it runs out.")
    else:
        report.add("ok", text)


def repair(report: Report, *, give_up: Callable[[int], str], max_attempts: int,
           now: float | None = None) -> list[str]:
    """Mend what `report` found that can be mended; return what was done, in words."""
    from storage.db import open_db, transaction
    from storage.jobs import JobStore

    now = time.time() if now is None else now
    done: list[str] = []
    if report.missing or report.mismatched or report.abandoned:
        if not report.database_ok:
            raise UserError("The database is damaged, so nothing was marked in it: restore it "
                            "from a backup first, then run `artbot doctor --repair` again.")
        db = open_db(report.data_dir / "artbot.db")
        try:
            lost = report.missing + report.mismatched
            if lost:
                with transaction(db.conn):
                    db.conn.executemany("UPDATE images SET lost_at = ? WHERE id = ?",
                                        [(now, image_id) for image_id, *_ in lost])
                done.append(f"marked {len(lost)} image{'s' if len(lost) != 1 else ''} as lost")
            if report.abandoned:
                back = JobStore(db).requeue_abandoned(max_attempts=max_attempts,
                                                      give_up=give_up, now=now, leases_only=True)
                done.append(f"put {len(back)} abandoned job{'s' if len(back) != 1 else ''} "
                            f"back on the queue")
        finally:
            db.conn.close()
    if report.orphans:
        freed = 0
        for path in report.orphans:
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                fault = explain(exc, path)
                raise fault if fault is not None else exc
        done.append(f"removed {len(report.orphans)} orphan file"
                    f"{'s' if len(report.orphans) != 1 else ''} ({size_text(freed)})")
    return done


def backup(db_path: str | Path, target: str | Path, *, force: bool = False) -> tuple[Path, dict[str, int]]:
    """Copy the database at `db_path` to `target` (a file, or a folder to put a dated file
    in) with SQLite's backup API, consistent while others write. Returns the file written
    and its row counts. The copy is written beside the target and renamed into place, so
    a failed backup never leaves a half file under the name."""
    db_path, target = Path(db_path), Path(target)
    if not db_path.exists():
        raise UserError(f"There is no database to back up at {db_path}.")
    if target.is_dir():
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        target = target / f"artbot-{stamp}.db"
    if target.resolve() == db_path.resolve():
        raise UserError("The backup cannot be the database itself; name another file.")
    if target.exists() and not force:
        raise UserError(f"{target} already exists; name another file, or pass --force to "
                        f"replace it.")
    if not target.parent.is_dir():
        raise UserError(f"{target.parent} is not a folder.")
    partial = target.with_name(f".{target.name}.partial")
    src = _connect(db_path)
    try:
        dst = sqlite3.connect(str(partial))
        try:
            # A few hundred pages at a time, so writers are not held up for long.
            src.backup(dst, pages=256, sleep=0.005)
            ok = dst.execute("PRAGMA integrity_check(1)").fetchone()[0]
            counts = {table: dst.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                      for table in ("jobs", "images")
                      if dst.execute("SELECT 1 FROM sqlite_master WHERE name = ?",
                                     (table,)).fetchone()}
        finally:
            dst.close()
        if ok != "ok":
            raise UserError(f"The database {db_path} is damaged ({ok}), so its copy would be "
                            f"too; run `artbot doctor`.")
        os.replace(partial, target)
    except (sqlite3.Error, OSError) as exc:
        fault = explain(exc, partial if isinstance(exc, OSError) else db_path)
        if fault is None:
            raise
        raise fault from exc
    finally:
        src.close()
        if partial.exists():
            partial.unlink()
    return target, counts
