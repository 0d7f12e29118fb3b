"""The `artbot` command as a user runs it: subprocesses on a fresh data dir."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ARTBOT = Path(sys.executable).parent / "artbot"


def run(args, data_dir, cwd, timeout=120):
    env = dict(os.environ, ARTBOT_DATA_DIR=str(data_dir), HF_HUB_OFFLINE="1", ARTBOT_DEVICE="cpu")
    cmd = [str(ARTBOT)] if ARTBOT.exists() else [sys.executable, "-m", "cli"]
    return subprocess.run(cmd + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def statuses(data_dir):
    conn = sqlite3.connect(Path(data_dir) / "artbot.db")
    return [r[0] for r in conn.execute("SELECT status FROM jobs ORDER BY id")]


@pytest.fixture
def env(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    return tmp_path / "data", work


def test_draw_is_reproducible_by_seed_and_lands_in_history(env, tiny_pipeline):
    data, work = env
    common = ["--model", str(tiny_pipeline), "--size", "64x64", "--steps", "4"]
    for seed, out in (("7", "a.png"), ("7", "a2.png"), ("8", "c.png")):
        r = run(["draw", "a red fox", "--seed", seed, "--out", out, *common], data, work)
        assert r.returncode == 0, r.stderr
        assert f"seed {seed}" in r.stdout
    a, a2, c = ((work / n).read_bytes() for n in ("a.png", "a2.png", "c.png"))
    assert a == a2
    assert a != c
    with Image.open(work / "a.png") as im:
        assert im.size == (64, 64)
        assert "Seed: 7" in im.info["parameters"]

    h = run(["history"], data, work)
    assert h.returncode == 0
    lines = [l for l in h.stdout.splitlines() if "a red fox" in l]
    assert len(lines) == 3
    assert all("succeeded" in l for l in lines)
    assert sum(" 7 " in l for l in lines) == 2 and sum(" 8 " in l for l in lines) == 1

    v = run(["vary", "a.png", "--model", str(tiny_pipeline), "--strength", "0.5", "--seed", "1",
             "--steps", "4", "--out", "b.png"], data, work)
    assert v.returncode == 0, v.stderr
    with Image.open(work / "b.png") as im:
        assert im.size == (64, 64)
    assert statuses(data) == ["succeeded"] * 4


def test_count_writes_one_file_per_seed(env, tiny_pipeline):
    data, work = env
    r = run(["draw", "cat", "--model", str(tiny_pipeline), "--size", "64x64", "--steps", "2",
             "--seed", "41", "--count", "2", "--out", "grid.png"], data, work)
    assert r.returncode == 0, r.stderr
    assert (work / "grid-1.png").is_file() and (work / "grid-2.png").is_file()
    assert "seed 41" in r.stdout and "seed 42" in r.stdout


def short_error(result):
    lines = [l for l in result.stderr.splitlines() if l.strip()]
    errors = [l for l in lines if l.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert len(lines) <= 2, result.stderr
    assert "Traceback" not in result.stderr
    return errors[0]


def test_bad_input_gives_a_short_error_and_records_no_success(env, tiny_pipeline):
    data, work = env
    (work / "notes.txt").write_text("not an image")
    r = run(["vary", "notes.txt", "--model", str(tiny_pipeline)], data, work)
    assert r.returncode == 2
    assert "not an image" in short_error(r)

    r = run(["draw", "a fox", "--size", "100x100", "--model", str(tiny_pipeline)], data, work)
    assert r.returncode == 2
    assert "multiple of 8" in short_error(r)

    r = run(["draw", "a fox", "--model", "no-such-model", "--size", "64x64"], data, work)
    assert r.returncode == 1
    assert "no-such-model" in short_error(r)

    r = run(["vary", "missing.png"], data, work)
    assert r.returncode == 2 and "does not exist" in short_error(r)

    assert "succeeded" not in statuses(data)
    assert statuses(data) == ["failed"]  # only the unknown model got as far as the queue
    assert not list(work.glob("*.png"))


def test_help_everywhere_and_empty_listings(env):
    data, work = env
    for cmd in (["--help"], ["draw", "--help"], ["vary", "--help"], ["history", "--help"],
                ["jobs", "--help"]):
        r = run(cmd, data, work)
        assert r.returncode == 0 and "usage: artbot" in r.stdout
    assert "No jobs yet" in run(["history"], data, work).stdout
    assert "Nothing queued" in run(["jobs"], data, work).stdout
