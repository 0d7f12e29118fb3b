"""benchmarks/bench_gpu.py stays correct: its smoke mode, on this CPU, runs both sides
on the three real-shape models and gives sane figures, and artbot's images are the
ones plain diffusers makes for the same prompt and seed wherever that is designed to
hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAIVE = "naive diffusers loop"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("bench-gpu") / "smoke.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke",
                    "--device", "cpu", "--json", str(out)],
                   check=True, cwd=ROOT, timeout=300, capture_output=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.read_text())


def test_the_smoke_run_measures_both_sides_of_every_model(smoke):
    assert [model["arch"] for model in smoke] == ["sd15", "sdxl", "sd-turbo"]
    for model in smoke:
        sides = model["sides"]
        assert NAIVE in sides and len(sides) == 5  # naive + batches of 1 and 4, exact on and off
        for name, side in sides.items():
            assert side["images"] == model["jobs"] * model["images_per_job"] == 4, name
            assert side["p95_s"] >= side["p50_s"] > 0 and side["images_per_s"] > 0, name
            assert side["achieved_tflops"] > 0 and side["peak_fraction"] is None, name  # a CPU
            assert len(side["image_sha256"]) == 4
        assert sides[NAIVE]["calls"] == 4
        assert sides["artbot, batches of 1, exact on"]["calls"] == 4
        assert sides["artbot, batches of 4, exact off"]["calls"] == 1  # four users' jobs, one call
        # Counted on the pipeline's own calls and from the networks alone (meta device): equal.
        assert model["flops_per_image"] == pytest.approx(model["flops_per_image_meta"], rel=1e-9)
        assert model["flops_per_image"] > 0


def test_artbot_draws_what_plain_diffusers_draws_for_the_same_seed(smoke):
    for model in smoke:
        sides = model["sides"]
        naive = sides[NAIVE]["image_sha256"]
        # One job a call, exact batches off: the same pipeline call as plain diffusers, with
        # the prompt encoded by compel into the very embeddings the pipeline makes itself
        # (a prompt without weights), so the same bytes.
        assert sides["artbot, batches of 1, exact off"]["image_sha256"] == naive, model["arch"]
        # Exact batches: a job's image is the one it makes alone, whatever shares its call.
        lone = sides["artbot, batches of 1, exact on"]["image_sha256"]
        assert sides["artbot, batches of 4, exact on"]["image_sha256"] == lone, model["arch"]
        # Fused batches change the order of sums: the last bits of some pixels, no more.
        assert sides["artbot, batches of 4, exact off"]["max_pixel_difference"] <= 2
