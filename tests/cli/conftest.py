"""Fixtures of the CLI tests. `artbot(*args)` runs one `artbot` command in-process
through `cli.main.main` (the same parser, queue, worker and loader as the script,
a worker of its own for each command) on a fresh data directory, and returns
(exit status, stdout, stderr); torch is imported once, not per command.
tests/cli/test_cli.py runs the real script in subprocesses."""

import pytest

from tests.cli_runner import in_process_artbot


@pytest.fixture
def artbot(tmp_path, monkeypatch, capsys):
    return in_process_artbot(tmp_path, monkeypatch, capsys, strip=True)
