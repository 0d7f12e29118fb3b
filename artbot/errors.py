"""Errors whose text a user is meant to read.

Anything raised as a `UserError` (or a subclass) is a mistake or a limit the
user can act on: a bad option, a full queue, a model that is not installed.
The CLI prints its message on one line and exits non-zero; the bot answers it
privately; the worker stores it as the job's error. Every other exception is a
bug or an outage: it is logged once with the job id and the user sees only that
id.

A `Refusal` is the one kind of user error that carries a translation key: the
server's rules refusing a job (`worker.gate`), or the bot refusing a button
press. Its `message` is English, for the CLI and the logs; the bot looks its
`key` up in `bot.i18n` and fills the same `values` in the user's language.
"""

from __future__ import annotations

import datetime as dt
from typing import Any


class UserError(Exception):
    """An error whose message is shown to the user as it is."""

    #: Exit status the CLI uses for this kind of error.
    exit_code = 2
    #: A translation key of `bot.i18n` (set by `Refusal`); None: the message is English only.
    key: str | None = None

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class Refusal(UserError):
    """A refusal with a translation key: `key` names the text, `values` fill it.

    `retry_at` (a Unix time), when set, says when the same request would be
    accepted; the template writes it as `{when}`: local time for the CLI, a
    Discord timestamp on Discord (each reader sees their own time zone).
    """

    def __init__(self, key: str, template: str, *, retry_at: float | None = None, **values: Any):
        self.key, self.template, self.values, self.retry_at = key, template, values, retry_at
        super().__init__(self.render(local_time(retry_at) if retry_at else ""))

    def render(self, when: str, **overrides: Any) -> str:
        """The English text with `{when}` (and any value in `overrides`) written as given."""
        return self.template.format(**{"when": when, **self.values, **overrides})


def local_time(ts: float) -> str:
    """A time for the CLI: local time with its zone, e.g. '2026-11-22 00:00 UTC'."""
    return dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M %Z")


class InvalidRequest(UserError):
    """The request itself is wrong: a bad size, an empty prompt, not an image."""


class QueueFull(UserError):
    """The user already has as many jobs waiting as they may."""

    def __init__(self, pending: int, limit: int):
        super().__init__(
            f"You already have {pending} job{'s' if pending != 1 else ''} waiting or "
            f"running (the limit is {limit}). Try again when one finishes."
        )
        self.pending, self.limit = pending, limit


class ModelNotFound(UserError):
    """The model named is not a folder, a checkpoint file or a cached hub model."""

    exit_code = 1


class StorageFault(UserError):
    """The data directory cannot be used: read-only, full, locked by a stalled process,
    corrupted or not a database. `storage.faults.explain` makes one from the OSError or
    sqlite3 error where it enters; its message says what happened and what to do, for
    the operator; `reason` is the short form a member may read ("the disk is full")."""

    exit_code = 1

    def __init__(self, message: str, *, reason: str):
        super().__init__(message)
        self.reason = reason
