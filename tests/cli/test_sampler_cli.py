"""--sampler on the command line: by the names A1111 and ComfyUI users type,
stored with the job and in the PNG, the same bytes for the same seed; a bad
name or a model without samplers gets one line."""

import sqlite3

from PIL import Image

from tests.cli.test_cli import env, run, short_error, statuses  # noqa: F401


def test_sampler_is_reproducible_stored_and_refused_clearly(env, tiny_pipeline):  # noqa: F811
    data, work = env
    common = ["--model", str(tiny_pipeline), "--size", "64x64", "--steps", "3", "--seed", "9"]
    for out in ("a.png", "b.png"):
        r = run(["draw", "a red fox", *common, "--sampler", "DPM++ 2M Karras", "--out", out],
                data, work)
        assert r.returncode == 0, r.stderr
    r = run(["draw", "a red fox", *common, "--sampler", "dpmpp_2m", "--out", "c.png"], data, work)
    assert r.returncode == 0, r.stderr
    a, b, c = ((work / name).read_bytes() for name in ("a.png", "b.png", "c.png"))
    assert a == b and a != c
    with Image.open(work / "a.png") as im:
        assert "Sampler: DPM++ 2M Karras" in im.info["parameters"]
    conn = sqlite3.connect(data / "artbot.db")
    stored = [row[0] for row in conn.execute(
        "SELECT json_extract(params, '$.sampler') FROM jobs ORDER BY id")]
    assert stored == ["DPM++ 2M Karras", "DPM++ 2M Karras", "DPM++ 2M"]

    r = run(["draw", "a red fox", *common, "--sampler", "Euler b"], data, work)
    assert r.returncode == 2 and "Unknown sampler 'Euler b'; samplers: Euler, Euler a" in short_error(r)
    r = run(["draw", "a red heart", "--model", "emoji-diffusion", "--sampler", "Euler"], data, work)
    assert r.returncode == 2 and "applies to diffusers models only" in short_error(r)
    assert statuses(data) == ["succeeded"] * 3  # the refused ones were never queued
