"""Shared fixtures: settings on a temporary data dir, a fresh database, and the
tiny random-weight diffusion pipeline (built once per test run, saved to disk
and loaded through the same code users use)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests never touch the network: artbot downloads nothing (VGG weights included),
# the hub is off, and so is telemetry. Subprocesses inherit these.
os.environ["ARTBOT_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory) -> Path:
    from generators.diffusion.tiny import build_tiny_pipeline

    return build_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def settings(tmp_path):
    from artbot.config import Settings

    return Settings(data_dir=tmp_path / "data", device="cpu", max_queued_per_user=100)


@pytest.fixture
def fresh_db(tmp_path):
    from storage.db import open_db

    db = open_db(tmp_path / "test.db")
    yield db
    db.conn.close()


@pytest.fixture
def job_store(fresh_db):
    from storage.jobs import JobStore

    return JobStore(fresh_db)
