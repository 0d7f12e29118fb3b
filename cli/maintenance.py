"""`artbot doctor` and `artbot backup`: the operator's checks of a data directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from artbot.config import Settings
from storage.doctor import backup, check, repair
from storage.faults import size_text
from worker.queue import gave_up_after
from worker.requests import input_images

MARKS = {"ok": "ok     ", "warn": "warn   ", "problem": "PROBLEM"}


def cmd_doctor(settings: Settings, args: argparse.Namespace) -> int:
    """Check the data directory; with --repair, mend what can be mended. Exit 1 when a
    problem remains (warnings alone exit 0)."""
    report = check(settings.data_dir, inputs=input_images, verify=not args.quick)
    print(f"artbot doctor: {settings.data_dir}")
    for finding in report.findings:
        print(f"  {MARKS[finding.level]}  {finding.text}")
    if args.repair and report.repairable:
        for line in repair(report, give_up=gave_up_after, max_attempts=settings.max_attempts):
            print(f"  repaired {line}")
        print("Repaired. Run `artbot doctor` again to see what is left.")
        return 0 if report.database_ok else 1
    problems, warnings = report.problems, report.warnings
    if not problems and not warnings:
        print("All well.")
        return 0
    summary = (f"{problems} problem{'s' if problems != 1 else ''}, "
               f"{warnings} warning{'s' if warnings != 1 else ''}.")
    if report.repairable:
        summary += (" `artbot doctor --repair` marks lost images, removes orphan files and "
                    "puts abandoned jobs back on the queue.")
    print(summary)
    return 1 if problems else 0


def cmd_backup(settings: Settings, args: argparse.Namespace) -> int:
    """A consistent copy of the database, safe while the bot runs."""
    written, counts = backup(settings.db_path, Path(args.path).expanduser(), force=args.force)
    rows = ", ".join(f"{n} {table}" for table, n in counts.items())
    print(f"Backed up {settings.db_path} to {written} ({rows}; {size_text(written.stat().st_size)}).")
    print(f"The images are files under {settings.image_dir}: copy that folder too "
          f"(for example `rsync -a {settings.image_dir}/ BACKUP/images/`).")
    return 0
