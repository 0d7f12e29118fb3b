"""Errors whose text a user is meant to read.

Anything raised as a `UserError` (or a subclass) is a mistake or a limit the
user can act on: a bad option, a full queue, a model that is not installed.
The CLI prints its message on one line and exits non-zero; the bot answers it
privately; the worker stores it as the job's error. Every other exception is a
bug or an outage: it is logged once with the job id and the user sees only that
id.
"""


class UserError(Exception):
    """An error whose message is shown to the user as it is."""

    #: Exit status the CLI uses for this kind of error.
    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidRequest(UserError):
    """The request itself is wrong: a bad size, an empty prompt, not an image."""


class QueueFull(UserError):
    """The user already has as many jobs waiting as they may."""


class ModelNotFound(UserError):
    """The model named is not a folder, a checkpoint file or a cached hub model."""

    exit_code = 1
