"""`artbot stylize` and `artbot preset` as a user runs them, with the network cut
where this machine allows it (no VGG download is possible either way)."""

import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.cli.test_cli import run, short_error
from tests.generators.style_images import edge_correlation, house_scene, mean_colour, stripes


def test_gatys_from_the_command_line_moves_colours_and_keeps_structure(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    house_scene(96).save(work / "content.png")
    stripes(96).save(work / "style.png")
    r = run(["stylize", "content.png", "--style", "style.png", "--method", "gatys", "--size", "64",
             "--steps", "40", "--out", "o.png"], data, work, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "random VGG weights" in r.stderr  # honest about what ran
    with Image.open(work / "o.png") as out:
        out = out.convert("RGB")
        assert out.size == (64, 64)
        content = Image.open(work / "content.png").convert("RGB")
        style = Image.open(work / "style.png").convert("RGB")
        before = np.linalg.norm(mean_colour(content) - mean_colour(style))
        after = np.linalg.norm(mean_colour(out) - mean_colour(style))
        assert after < 0.7 * before
        assert edge_correlation(out, content, blur=2) > 0.15


def test_adain_without_decoder_refuses_in_one_line_and_presets_work(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    house_scene(64).save(work / "content.png")
    stripes(64).save(work / "style.png")
    r = run(["stylize", "content.png", "--style", "style.png", "--method", "adain", "--out", "o.png"],
            data, work)
    assert r.returncode == 2
    assert "AdaIN needs decoder weights" in short_error(r)
    assert not (work / "o.png").exists()

    assert run(["preset", "add", "stripes", "style.png"], data, work).returncode == 0
    listed = run(["preset", "list"], data, work)
    assert "stripes" in listed.stdout
    r = run(["stylize", "content.png", "--preset", "stripes", "--size", "48", "--steps", "5",
             "--out", "p.png"], data, work, timeout=300)
    assert r.returncode == 0, r.stderr
    assert Image.open(work / "p.png").size == (48, 48)
    r = run(["stylize", "content.png", "--preset", "nope"], data, work)
    assert r.returncode == 2 and "no preset" in short_error(r)
    r = run(["stylize", "content.png", "--style", "style.png", "--prompt", "oil"], data, work)
    assert r.returncode == 2 and "exactly one" in short_error(r)
    conn = sqlite3.connect(data / "artbot.db")
    assert [s for (s,) in conn.execute("SELECT status FROM jobs")] == ["succeeded"]
