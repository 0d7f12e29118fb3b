"""Models that ship with artbot, and which family a model reference belongs to.

Torch-free: the bot and the request builders use it to pick a family.

The bundled models are folders next to this file (`emoji-diffusion/`,
`emoji-gan/`, `emoji-vae/`), each with `config.json`, `model.safetensors`, a
model card (`README.md`) and a sample grid (`samples.png`). They are trained
by `artbot train` on the emoji set; each card gives the exact command.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLED_NAMES = ("emoji-diffusion", "emoji-gan", "emoji-vae")


def bundled_path(name: str) -> Path | None:
    """The folder of a bundled model, if `name` is one and it is installed."""
    if name in BUNDLED_NAMES and (HERE / name / "config.json").is_file():
        return HERE / name
    return None


def available() -> list[str]:
    return [name for name in BUNDLED_NAMES if bundled_path(name) is not None]


# The emoji classifier /describe uses offline (family "describe"): bundled too, but not
# one of BUNDLED_NAMES, which are the models members draw with.
CLASSIFIER_NAME = "emoji-classifier"


def classifier_path() -> Path | None:
    """The bundled emoji classifier's folder, if it is installed."""
    folder = HERE / CLASSIFIER_NAME
    return folder if (folder / "config.json").is_file() else None


def _config(model: str) -> dict | None:
    path = (bundled_path(model) or (classifier_path() if model == CLASSIFIER_NAME else None)
            or Path(model).expanduser())
    config = path / "config.json"
    if path.is_dir() and config.is_file() and not (path / "model_index.json").exists():
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None
    return None


def native_size(model: str) -> int | None:
    """The image size an artbot-trained model draws at (its training size), if it is one."""
    config = _config(model)
    size = ((config or {}).get("training") or {}).get("size")
    return int(size) if isinstance(size, (int, float)) else None


def model_defaults(model: str) -> dict:
    """Request defaults an artbot-trained model asks for (for example its best guidance)."""
    defaults = (_config(model) or {}).get("defaults")
    return defaults if isinstance(defaults, dict) else {}


def family_of(model: str) -> str:
    """'diffusion' (diffusers), or the family written in an artbot model folder's config.json."""
    family = (_config(model) or {}).get("family")
    return family if isinstance(family, str) and family else "diffusion"
