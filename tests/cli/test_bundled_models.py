"""The bundled emoji models as a new user meets them: with the network cut
(`unshare -rn` where this machine allows it), `artbot draw` with no --model
uses emoji-diffusion; emoji-gan and emoji-vae draw; the VAE varies a result;
`artbot train vae` on a small folder makes a model that draws."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from generators.bundled import available

ARTBOT = Path(sys.executable).parent / "artbot"
pytestmark = pytest.mark.skipif(len(available()) < 3, reason="bundled models not installed")


def offline_prefix() -> list[str]:
    if shutil.which("unshare") and subprocess.run(["unshare", "-rn", "true"]).returncode == 0:
        return ["unshare", "-rn"]
    return []


def run(args, data_dir, cwd, timeout=300):
    env = dict(os.environ, ARTBOT_DATA_DIR=str(data_dir), ARTBOT_DEVICE="cpu")
    env.pop("ARTBOT_DEFAULT_MODEL", None)
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(offline_prefix() + [str(ARTBOT)] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_bundled_models_draw_and_vary_offline(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    work.mkdir()
    r = run(["draw", "a red heart", "--seed", "3", "--out", "h.png"], data, work)
    assert r.returncode == 0, r.stderr
    assert "emoji-diffusion" in r.stderr
    with Image.open(work / "h.png") as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
        assert im.size == (64, 64)
    # A red heart: where the picture is not background, red dominates.
    ink = rgb[(rgb.min(axis=2) < 200)]
    assert len(ink) > 200
    assert ink[:, 0].mean() > ink[:, 1].mean() + 40 and ink[:, 0].mean() > ink[:, 2].mean() + 40

    for model in ("emoji-gan", "emoji-vae"):
        r = run(["draw", "cat face", "--model", model, "--seed", "1", "--out", f"{model}.png"],
                data, work)
        assert r.returncode == 0, r.stderr
        assert Image.open(work / f"{model}.png").size == (64, 64)

    r = run(["vary", "h.png", "--model", "emoji-vae", "--seed", "2", "--out", "hv.png"], data, work)
    assert r.returncode == 0, r.stderr
    varied = np.asarray(Image.open(work / "hv.png").convert("RGB"), dtype=np.float32)
    assert varied.shape == rgb.shape and np.abs(varied - rgb).mean() > 1


def test_train_a_vae_on_a_folder_then_draw_with_it(tmp_path):
    data, work, images = tmp_path / "data", tmp_path / "work", tmp_path / "images"
    work.mkdir()
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(36):
        im = Image.new("RGB", (64, 64), "white")
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        d = ImageDraw.Draw(im)
        (d.ellipse if i % 2 else d.rectangle)([12, 12, 52, 52], fill=colour)
        im.save(images / f"{'circle' if i % 2 else 'square'}-{i}.png")
    r = run(["train", "vae", "--data", str(images), "--epochs", "1", "--out", "M"], data, work)
    assert r.returncode == 0, r.stderr
    assert (work / "M" / "model.safetensors").is_file() and (work / "M" / "samples").is_dir()
    r = run(["draw", "a circle", "--model", "M", "--seed", "4", "--out", "m.png"], data, work)
    assert r.returncode == 0, r.stderr
    assert Image.open(work / "m.png").size == (64, 64)
