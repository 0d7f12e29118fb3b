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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """`tiny_models(arch)`: the tiny random-weight pipeline of that architecture
    ("sd1", "sd2-v", "sdxl", "sd3", "flux", "pixart-sigma"), built on first use and
    kept for the session; `tiny_models(arch, name)` saves another copy under `name`
    (a name is how an operator's folder says "turbo")."""
    from generators.diffusion.tiny import build_tiny_pipeline

    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, Path] = {}

    def get(arch: str, name: str | None = None, **options) -> Path:
        name = name or f"tiny-{arch}"
        if name not in built:
            built[name] = build_tiny_pipeline(root / name, arch=arch, **options)
        return built[name]

    return get


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
