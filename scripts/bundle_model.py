"""Copy a trained model into generators/bundled/NAME, its weights in float16.

    .venv/bin/python scripts/bundle_model.py /path/to/trained emoji-gan [--float32]

Writes config.json and model.safetensors only; the optimiser state
(training-state.pt) and the per-epoch sample grids stay behind. The model
card (README.md) and samples.png are written by hand and by
benchmarks/eval_emoji_models.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("source")
    ap.add_argument("name")
    ap.add_argument("--float32", action="store_true", help="keep float32 weights")
    args = ap.parse_args()
    src = Path(args.source)
    dst = ROOT / "generators" / "bundled" / args.name
    dst.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    weights = load_file(str(src / "model.safetensors"))
    if not args.float32:
        weights = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()}
    config["weights_dtype"] = "float32" if args.float32 else "float16"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(dst / "model.safetensors"),
              metadata={"family": config["family"]})
    (dst / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    size = (dst / "model.safetensors").stat().st_size
    print(f"{dst}: {size / 1e6:.1f} MB, {sum(v.numel() for v in weights.values()) / 1e6:.2f}M values")


if __name__ == "__main__":
    main()
