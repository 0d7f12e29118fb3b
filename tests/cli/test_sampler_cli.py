"""--sampler on the command line: by the names A1111 and ComfyUI users type,
stored with the job and in the PNG, the same bytes for the same seed; a bad
name or a model without samplers gets one line. (In-process through
`cli.main.main`, each command with its own worker, as the `artbot` script runs it.)"""

import sqlite3

from PIL import Image

from tests.cli.test_cli import statuses


def test_sampler_is_reproducible_stored_and_refused_clearly(artbot, tiny_pipeline,
                                                            tmp_path):
    data, work = tmp_path / "data", tmp_path
    common = ["--model", str(tiny_pipeline), "--size", "64x64", "--steps", "3", "--seed", "9"]
    for out in ("a.png", "b.png"):
        code, _, err = artbot("draw", "a red fox", *common, "--sampler", "DPM++ 2M Karras",
                              "--out", out)
        assert code == 0, err
    code, _, err = artbot("draw", "a red fox", *common, "--sampler", "dpmpp_2m", "--out", "c.png")
    assert code == 0, err
    a, b, c = ((work / name).read_bytes() for name in ("a.png", "b.png", "c.png"))
    assert a == b and a != c
    with Image.open(work / "a.png") as im:
        assert "Sampler: DPM++ 2M Karras" in im.info["parameters"]
    conn = sqlite3.connect(data / "artbot.db")
    stored = [row[0] for row in conn.execute(
        "SELECT json_extract(params, '$.sampler') FROM jobs ORDER BY id")]
    assert stored == ["DPM++ 2M Karras", "DPM++ 2M Karras", "DPM++ 2M"]

    code, _, err = artbot("draw", "a red fox", *common, "--sampler", "Euler b")
    assert code == 2 and "Unknown sampler 'Euler b'; samplers: Euler, Euler a" in err
    code, _, err = artbot("draw", "a red heart", "--model", "emoji-diffusion", "--sampler", "Euler")
    assert code == 2 and "applies to diffusers models only" in err
    assert statuses(data) == ["succeeded"] * 3  # the refused ones were never queued
