"""`artbot upscale`, `zoom`, `pan`, `blend`, `describe` and `draw --style` as a user runs
them: through the same parser, gate, queue and worker as every command, on the tiny
random-weight SD pipeline and the bundled emoji models."""

import sqlite3

import numpy as np
from PIL import Image, ImageDraw


def _job(db, job_id):
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    conn.close()
    return row


def _pixels(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB")).astype(int)


def test_upscale_zoom_and_pan_a_job_by_its_id(artbot, tiny_pipeline, tmp_path):
    code, _, err = artbot("draw", "a red fox", "--model", str(tiny_pipeline), "--size", "64x64",
                          "--steps", "4", "--seed", "5", "--out", "fox.png")
    assert code == 0, err
    original = _pixels(tmp_path / "fox.png")

    code, out, err = artbot("upscale", "1", "--out", "big.png")
    assert code == 0, err
    with Image.open(tmp_path / "big.png") as big:
        assert big.size == (128, 128)
        assert "Task: upscale" in big.info["parameters"]
    job = _job(artbot.db, 2)
    assert (job["kind"], job["parent_id"], job["model"]) == ("upscale", 1, str(tiny_pipeline))
    assert '"method": "hires-fix"' in job["params"] and '"seed": 5' in job["params"]

    code, _, err = artbot("zoom", "1", "--by", "2", "--out", "zoomed.png")
    assert code == 0, err
    zoomed = _pixels(tmp_path / "zoomed.png")
    assert zoomed.shape == (128, 128, 3)
    # The old picture is pasted back unchanged: its pixels in the centre are the same.
    assert np.array_equal(zoomed[32:96, 32:96], original)
    border = np.concatenate([zoomed[:32].reshape(-1, 3), zoomed[96:].reshape(-1, 3)])
    assert border.std() > 5  # filled, not one flat colour

    code, _, err = artbot("pan", "1", "left", "--out", "panned.png")
    assert code == 0, err
    panned = _pixels(tmp_path / "panned.png")
    assert panned.shape == (64, 96, 3)
    assert np.array_equal(panned[:, 32:], original)
    assert _job(artbot.db, 4)["parent_id"] == 1


def test_tools_refuse_in_one_line_where_the_model_cannot(artbot, tmp_path):
    code, _, err = artbot("draw", "a red heart", "--model", "emoji-gan", "--seed", "1",
                          "--out", "heart.png")
    assert code == 0, err
    code, _, err = artbot("upscale", "1")
    assert code == 2 and len(err.splitlines()) == 1
    assert "no upscaler model is configured" in err
    code, _, err = artbot("zoom", "1")
    assert code == 2 and "cannot zoom out or pan" in err
    code, _, err = artbot("blend", "heart.png", "--model", "emoji-gan")
    assert code == 2 and "2 to 5 images" in err
    code, _, err = artbot("upscale", "99")
    assert code == 2 and "There is no job 99" in err
    code, _, err = artbot("describe", "nothing-here.png")
    assert code == 2 and "does not exist" in err
    conn = sqlite3.connect(artbot.db)
    assert conn.execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 1  # nothing queued


def test_blend_two_images_with_the_emoji_vae(artbot, tmp_path):
    for name, colour in (("red.png", (220, 30, 30)), ("blue.png", (30, 60, 220))):
        image = Image.new("RGB", (64, 64), "white")
        ImageDraw.Draw(image).ellipse((12, 12, 52, 52), fill=colour)
        image.save(tmp_path / name)
    code, out, err = artbot("blend", "red.png", "blue.png", "--model", "emoji-vae", "--seed", "3",
                            "--out", "blend.png")
    assert code == 0, err
    with Image.open(tmp_path / "blend.png") as blend:
        assert blend.size == (64, 64)
    job = _job(artbot.db, 1)
    assert job["kind"] == "blend" and job["generator"] == "vae"
    assert job["params"].count('"images"') == 1


def test_describe_prints_prompts_and_draw_style_says_how_it_restyled(artbot, tmp_path):
    code, _, err = artbot("draw", "a red heart", "--model", "emoji-diffusion", "--seed", "3",
                          "--out", "heart.png")
    assert code == 0, err
    code, out, err = artbot("describe", "1")
    assert code == 0, err
    prompts = [line.split(". ", 1)[1] for line in out.splitlines() if line[:1].isdigit()]
    assert 2 <= len(prompts) <= 5 and all(prompts)
    job = _job(artbot.db, 2)
    assert (job["kind"], job["generator"], job["parent_id"]) == ("describe", "describe", 1)
    assert sqlite3.connect(artbot.db).execute(
        "SELECT COUNT(*) FROM images WHERE job_id = 2").fetchone()[0] == 0

    stripes = Image.new("RGB", (64, 64), "yellow")
    for x in range(0, 64, 8):
        ImageDraw.Draw(stripes).rectangle((x, 0, x + 3, 63), fill="navy")
    stripes.save(tmp_path / "stripes.png")
    code, _, err = artbot("draw", "a red heart", "--model", "emoji-diffusion", "--seed", "3",
                          "--style", "stripes.png", "--out", "styled.png")
    assert code == 0, err
    assert "Restyled after drawing by Gatys" in err
    assert not np.array_equal(_pixels(tmp_path / "styled.png"), _pixels(tmp_path / "heart.png"))


def test_upscale_with_the_operators_network_keeps_the_content(artbot, tmp_path, monkeypatch):
    """An emoji-gan result (real content, 64x64) upscaled x2 by a configured network: a
    Real-ESRGAN Compact the test builds, read through spandrel like an operator's file."""
    import torch

    from tests.generators.test_image_tools import compact_network

    torch.save(compact_network(2), tmp_path / "compact-x2.pth")
    monkeypatch.setenv("ARTBOT_UPSCALER", str(tmp_path / "compact-x2.pth"))
    code, _, err = artbot("draw", "a red heart", "--model", "emoji-gan", "--seed", "1",
                          "--out", "heart.png")
    assert code == 0, err
    code, _, err = artbot("upscale", "1", "--out", "big.png")
    assert code == 0, err
    with Image.open(tmp_path / "big.png") as big:
        assert big.size == (128, 128)
        back = np.asarray(big.convert("RGB").resize((64, 64), Image.LANCZOS)).astype(int)
    # Within 4 of 255 levels per channel on average: a Lanczos round trip alone costs
    # 1-2 (tests/generators/test_image_tools.py), a one-pixel shift of the picture 6-8.
    assert np.abs(back - _pixels(tmp_path / "heart.png")).mean() < 4
    job = _job(artbot.db, 2)
    assert (job["generator"], job["parent_id"]) == ("upscaler", 1)
    assert '"upscaler": "' in job["params"]
