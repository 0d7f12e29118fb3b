"""`artbot draw` and `artbot vary` on every diffusers architecture, as an operator
runs them: with no option but the model, each draws at its own native size,
steps and guidance; variations keep the input's size; what a model cannot do is
refused in one line before anything is queued.

The commands run in-process (the `artbot` fixture of tests/cli/conftest.py) so
that torch is imported once."""

import sqlite3

import pytest
from PIL import Image


# The tiny models' native sizes (their configs' sample_size x VAE scale factor) and
# each architecture's own steps and guidance.
EXPECTED = {
    "sd1": (64, 30, 7.5),
    "sd2-v": (48, 30, 7.5),
    "sdxl": (96, 30, 7.0),
    "sd3": (80, 28, 7.0),
    "flux": (128, 28, 3.5),
    "pixart-sigma": (128, 20, 4.5),
}


def job_params(db):
    conn = sqlite3.connect(db)
    return conn.execute("SELECT json_extract(params, '$.steps'), json_extract(params, '$.guidance'),"
                        " status FROM jobs ORDER BY id DESC LIMIT 1").fetchone()


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_each_architecture_draws_at_its_own_size_steps_and_guidance(arch, artbot, tiny_models,
                                                                      tmp_path):
    side, steps, guidance = EXPECTED[arch]
    model = str(tiny_models(arch))
    code, out, err = artbot("draw", "a red fox", "--model", model, "--seed", "3",
                            "--out", "fox.png")
    assert code == 0, err
    with Image.open(tmp_path / "fox.png") as im:
        assert im.size == (side, side)
        assert f"Steps: {steps}, Guidance: {guidance}" in im.info["parameters"]
    assert job_params(artbot.db) == (steps, guidance, "succeeded")

    # A variation keeps the input's size on every architecture that has image to image.
    Image.new("RGB", (96, 64), (200, 40, 40)).save(tmp_path / "in.png")
    code, out, err = artbot("vary", "in.png", "--model", model, "--steps", "4",
                            "--out", "var.png")
    if arch == "pixart-sigma":
        assert code == 2 and err.count("\n") == 0
        assert "PixArt-Σ has no image-to-image pipeline" in err
    else:
        assert code == 0, err
        with Image.open(tmp_path / "var.png") as im:
            assert im.size == (96, 64)


def test_what_a_model_cannot_do_is_refused_in_one_line(artbot, tiny_models):
    flux, sd3 = str(tiny_models("flux")), str(tiny_models("sd3"))
    refusals = [
        (["draw", "a fox", "--model", flux, "--negative", "blurry"], "has no negative prompt"),
        (["draw", "a fox", "--model", sd3, "--sampler", "Euler a"], "flow-matching scheduler"),
        (["draw", "a fox", "--model", flux, "--size", "100x100"], "not a multiple of 8"),
        (["draw", "a fox", "--model", flux, "--guidance", "0.5", "--negative", "x"],
         "has no negative prompt"),
        (["draw", "a fox <lora:film:1>", "--model", sd3], "No LoRA named 'film'"),
    ]
    for args, message in refusals:
        code, out, err = artbot(*args)
        assert code == 2 and message in err and "\n" not in err, (args, err)
    assert not artbot.db.exists() or job_params(artbot.db) is None


def test_a_few_step_model_runs_few_steps_without_guidance(artbot, tiny_models, tmp_path):
    """A folder named like SDXL-Turbo: 4 steps at guidance 0, and a negative prompt
    (which needs guidance) is refused rather than silently ignored."""
    turbo = str(tiny_models("sdxl", "tiny-sdxl-turbo"))
    code, out, err = artbot("draw", "a red fox", "--model", turbo, "--out", "t.png")
    assert code == 0, err
    assert job_params(artbot.db) == (4, 0.0, "succeeded")
    code, out, err = artbot("draw", "a red fox", "--model", turbo, "--negative", "blurry")
    assert code == 2 and "At guidance 0 the model draws without classifier-free guidance" in err
    code, out, err = artbot("draw", "a red fox", "--model", turbo, "--negative", "blurry",
                            "--guidance", "2", "--out", "t2.png")
    assert code == 0, err


def test_sd3_without_its_t5_encoder_loads_and_draws(artbot, tiny_models, tmp_path):
    model = str(tiny_models("sd3", "tiny-sd3-no-t5", with_t5=False))
    code, out, err = artbot("draw", "a red fox", "--model", model, "--steps", "2",
                            "--out", "no-t5.png")
    assert code == 0, err
    with Image.open(tmp_path / "no-t5.png") as im:
        assert im.size == (80, 80)


def test_a_prompt_longer_than_a_t5_model_reads_is_noted_on_the_job(artbot, tiny_models):
    prompt = ", ".join(["a small red fox in deep snow under a pale winter sky"] * 16)[:1000]
    code, out, err = artbot("draw", prompt, "--model", str(tiny_models("pixart-sigma")),
                            "--steps", "2")
    assert code == 0, err
    assert "note: The prompt is " in err  # said to the user, not only stored
    conn = sqlite3.connect(artbot.db)
    (notes,) = conn.execute("SELECT json_extract(params, '$.notes') FROM jobs").fetchone()
    assert "tokens long; this model reads the first 300." in notes
