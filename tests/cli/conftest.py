"""Fixtures of the CLI tests. `artbot(*args)` runs one `artbot` command in-process
through `cli.main.main` (the same parser, queue, worker and loader as the script,
a worker of its own for each command) on a fresh data directory, and returns
(exit status, stdout, stderr); torch is imported once, not per command.
tests/cli/test_cli.py runs the real script in subprocesses."""

import pytest

from cli.main import main


@pytest.fixture
def artbot(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ARTBOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ARTBOT_DEVICE", "cpu")
    monkeypatch.delenv("ARTBOT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args):
        code = main(list(args))
        out = capsys.readouterr()
        return code, out.out, out.err.strip()

    run.db = tmp_path / "data" / "artbot.db"
    return run
