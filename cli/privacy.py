"""Members' data from the command line: `artbot forget` and `artbot history --export`.

    artbot forget USER [--server GUILD] [--yes]   # a member's jobs, images, message links
    artbot forget --expired                       # every server's retention, now
    artbot history --export FILE [--user USER]    # prompts, seeds, parameters: .json or .csv

`forget` says what it would delete and asks for `yes` on a terminal; without one
it needs `--yes`. The bot's messages on Discord stay (the command line cannot
reach Discord), but their buttons say that the result was deleted.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from artbot.config import Settings
from artbot.errors import InvalidRequest
from cli.connect import run_on_queue
from cli.terminal import safe
from storage.images import ImageStore
from worker.privacy import expire, export_csv, export_json, forget


def parse_member(text: str) -> str:
    """A member as the jobs table names them: a Discord user id (or a mention of one),
    or `local:NAME` for someone who used the command line."""
    text = text.strip()
    m = re.fullmatch(r"<@!?([0-9]{5,20})>|([0-9]{5,20})", text)
    if m:
        return m.group(1) or m.group(2)
    if re.fullmatch(r"local:\S{1,100}", text):
        return text
    raise InvalidRequest(f"{safe(text)!r} is not a member: give a Discord user id (digits), a "
                         f"mention <@ID>, or local:NAME for a command-line user.")


def parse_guild(text: str | None) -> str | None:
    if text is None:
        return None
    if not re.fullmatch(r"[0-9]{5,20}", text.strip()):
        raise InvalidRequest(f"--server takes a Discord server id (digits), not {safe(text)!r}.")
    return text.strip()


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def _confirmed(question: str) -> bool:
    """Ask on the terminal; only `yes` goes on."""
    try:
        return input(f"{question} Type yes to go on: ").strip().lower() == "yes"
    except (EOFError, KeyboardInterrupt):
        print()
        return False


def cmd_forget(settings: Settings, args) -> int:
    images = ImageStore(settings.image_dir)
    if args.expired:
        if args.user or args.server:
            raise InvalidRequest("--expired applies every server's retention setting; give it "
                                 "without USER or --server.")
        erased = run_on_queue(settings, lambda queue: expire(queue, images))
        if not erased.jobs:
            print("Nothing is older than its server's retention.")
        else:
            print(f"Deleted {_count(erased.jobs, 'job')} and {_count(erased.images, 'image')} "
                  f"older than their server's retention ({_count(erased.files, 'file')} removed "
                  f"from the image store).")
        _files_left(erased.files_left)
        return 0
    if not args.user:
        raise InvalidRequest("Say whose data to delete: artbot forget USER [--server GUILD], "
                             "or artbot forget --expired.")
    user, server = parse_member(args.user), parse_guild(args.server)
    where = f"in server {server}" if server else "in every server"
    jobs, shown = run_on_queue(settings, lambda queue: queue.member_counts(user, server))
    if not jobs:
        print(f"{safe(user)} has no jobs {where}; nothing to delete.")
        return 0
    what = f"{_count(jobs, 'job')} and {_count(shown, 'image')} of {safe(user)} {where}"
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidRequest(f"This would delete {what}; there is no terminal to ask "
                                 f"on, so add --yes to confirm.")
        if not _confirmed(f"Delete {what}? This cannot be undone."):
            print("Nothing deleted.")
            return 1
    erased = run_on_queue(settings, lambda queue: forget(queue, images, user, server))
    print(f"Deleted {_count(erased.jobs, 'job')} and {_count(erased.images, 'image')} of "
          f"{safe(user)} {where} ({_count(erased.files, 'file')} removed from the image store).")
    if erased.messages:
        print(f"{_count(len(erased.messages), 'Discord message')} showed them; they stay in "
              f"their channels, and their buttons now say the result was deleted.")
    _files_left(erased.files_left)
    return 0


def _files_left(n: int) -> None:
    if n:
        print(f"warning: {_count(n, 'file')} could not be removed from the image store (no job "
              f"uses them any more); check its permissions, then run `artbot doctor --repair`.",
              file=sys.stderr)


def cmd_export(settings: Settings, args) -> int:
    """`artbot history --export FILE`: the jobs of one member (--user) or of everyone, as
    JSON, or as CSV when FILE ends in .csv."""
    user = parse_member(args.user) if args.user else None
    path = Path(args.export).expanduser()
    records = run_on_queue(settings, lambda queue: queue.records(user))
    csv = path.suffix.lower() == ".csv"
    path.write_bytes(export_csv(records) if csv else export_json(records))
    whose = f"of {safe(user)}" if user else "of every member"
    print(f"Wrote {_count(len(records), 'job')} {whose} to {safe(path)} "
          f"({'CSV' if csv else 'JSON'}).")
    return 0
