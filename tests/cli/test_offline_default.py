"""`artbot draw` with no model named, as a new user meets it: the bundled
emoji-diffusion with DPM-Solver++(2M) in its 15 default steps, which the job and
the PNG record, the same bytes for the same seed; --steps still sets the count.
(In-process through `cli.main.main`, each command with its own worker.)"""

import json
import sqlite3

import pytest
from PIL import Image

from generators.bundled import available

pytestmark = pytest.mark.skipif("emoji-diffusion" not in available(), reason="bundled models not installed")


def test_the_offline_default_draws_in_15_dpm_solver_steps(artbot, tmp_path, monkeypatch):
    monkeypatch.delenv("ARTBOT_DEFAULT_MODEL", raising=False)
    for out in ("a.png", "b.png"):
        code, _, err = artbot("draw", "a red heart", "--seed", "3", "--out", out)
        assert code == 0, err
        assert "with emoji-diffusion" in err
    code, _, err = artbot("draw", "a red heart", "--seed", "3", "--steps", "30", "--out", "c.png")
    assert code == 0, err
    a, b, c = ((tmp_path / name).read_bytes() for name in ("a.png", "b.png", "c.png"))
    assert a == b != c
    with Image.open(tmp_path / "a.png") as im:
        assert "Steps: 15" in im.info["parameters"]
    conn = sqlite3.connect(artbot.db)
    params = [json.loads(row[0]) for row in conn.execute("SELECT params FROM jobs ORDER BY id")]
    assert [(p["steps"], p["scheduler"]) for p in params] == [(15, "DPM++ 2M")] * 2 + [(30, "DPM++ 2M")]
