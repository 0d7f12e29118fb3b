"""What is wrong with a model folder or file, read without torch.

A model that cannot be loaded should say why in words, before a job is queued
(the request builders read profiles, which call these) and again when a worker
loads it:

- a diffusers folder: `model_index.json` missing, empty, not valid JSON (with
  its line), not an object, or naming no pipeline class (`_class_name`); a
  component it names (``unet``, ``vae``, ...) missing; a component's config
  that is not valid JSON; a model component without weights; a weights file
  that is empty, not a safetensors file, or cut short;
- a single `.safetensors` file: empty, not one (random bytes, another format
  renamed), cut short (`checkpoints.read_tensor_names` reads the header);
- a `.ckpt`: empty, neither a PyTorch zip archive nor a pickle, or a zip archive
  cut short.

Each raises `ModelNotFound` naming the file or folder, what is wrong, and what to
do (re-download it, mostly). Only JSON and file headers are read.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from artbot.errors import ModelNotFound

# Components a folder may leave out although its model_index.json names them: SD3's
# T5 encoder (4.7 B parameters) is often not downloaded; the pipeline then reads
# prompts with its two CLIP encoders only.
OPTIONAL_COMPONENTS = ("text_encoder_3", "tokenizer_3")

REDOWNLOAD = "re-download the model"


def read_config(path: Path, *, required: bool = True) -> dict[str, Any] | None:
    """A JSON config file as a dict; `ModelNotFound` saying what is wrong with it.
    A missing file is an error when `required`, else None."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if not required:
            return None
        raise ModelNotFound(f"{path} is missing: {REDOWNLOAD}.") from None
    except IsADirectoryError:
        raise ModelNotFound(f"{path} is a folder, not a JSON file: {REDOWNLOAD}.") from None
    except OSError as exc:
        raise ModelNotFound(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if not raw.strip():
        raise ModelNotFound(f"{path} is empty: {REDOWNLOAD}.")
    try:
        data = json.loads(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ModelNotFound(f"{path} is not text (not JSON at all): {REDOWNLOAD}.") from None
    except json.JSONDecodeError as exc:
        raise ModelNotFound(f"{path} is not valid JSON (line {exc.lineno}: {exc.msg.lower()}): "
                            f"{REDOWNLOAD}.") from None
    if not isinstance(data, dict):
        raise ModelNotFound(f"{path} holds a JSON {type(data).__name__}, not the object of "
                            f"settings a config is: {REDOWNLOAD}.")
    return data


def read_model_index(folder: Path) -> dict[str, Any]:
    """A pipeline folder's model_index.json, checked to name a pipeline class."""
    index_path = folder / "model_index.json"
    if not index_path.exists():
        raise ModelNotFound(f"Model folder {folder} is not a diffusers pipeline (it has no "
                            f"model_index.json).")
    index = read_config(index_path)
    class_name = index.get("_class_name")
    if not isinstance(class_name, str) or not class_name.strip():
        raise ModelNotFound(f"{index_path} names no pipeline class (its \"_class_name\" is "
                            f"{'missing' if class_name is None else 'not a name'}), so it is not "
                            f"a diffusers model_index.json: {REDOWNLOAD}.")
    return index


def components(index: dict[str, Any]) -> dict[str, tuple[str | None, str | None]]:
    """The components model_index.json names: name -> (library, class); (None, None) for
    one the pipeline is saved without (a safety checker left out)."""
    found = {}
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list):
            continue  # "_class_name", "_diffusers_version", flags like requires_safety_checker
        library, class_name = (list(value) + [None, None])[:2]
        found[name] = (library, class_name)
    return found


def check_model_folder(folder: Path) -> dict[str, Any]:
    """Everything a diffusers pipeline folder needs before it can load, checked in the
    files: model_index.json, each component it names, their configs and weights.
    Returns the model index. Components in OPTIONAL_COMPONENTS may be missing."""
    index = read_model_index(folder)
    missing = []
    for name, (library, _class_name) in components(index).items():
        part = folder / name
        if library is None:
            continue
        if not part.is_dir():
            if name not in OPTIONAL_COMPONENTS:
                missing.append(name)
            continue
        for config in sorted(part.glob("*.json")):
            if config.stat().st_size < 50_000_000:  # a tokenizer.json can be tens of MB
                read_config(config)
        if (part / "config.json").is_file():  # a model, not a scheduler, tokenizer or processor
            _check_weights(part)
    if missing:
        raise ModelNotFound(f"Model folder {folder} is incomplete: its model_index.json names "
                            f"{', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                            f"not there. Download the whole model again.")
    return index


def _check_weights(part: Path) -> None:
    """A model component's weights: there, not empty, and (safetensors) whole."""
    from generators.diffusion.checkpoints import read_tensor_names

    weights = sorted(p for p in part.iterdir()
                     if p.suffix in (".safetensors", ".bin") and not p.name.startswith("."))
    if not weights:
        raise ModelNotFound(f"{part} has no weights (no .safetensors or .bin file): "
                            f"{REDOWNLOAD}.")
    for path in weights:
        if path.suffix == ".safetensors":
            read_tensor_names(path)
        else:
            check_checkpoint_file(path)


def check_checkpoint_file(path: Path) -> None:
    """A pickled PyTorch file (`.ckpt`, `.bin`) is at least one: not empty, a zip archive
    that is whole (torch.save's format) or a pickle (the legacy one)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4)
    except FileNotFoundError:
        raise ModelNotFound(f"Model file {path} does not exist.") from None
    except OSError as exc:
        raise ModelNotFound(f"Model file {path} cannot be read ({exc.strerror or exc}).") from None
    if size == 0:
        raise ModelNotFound(f"{path} is empty (0 bytes): {REDOWNLOAD}.")
    if head.startswith(b"PK"):
        if not zipfile.is_zipfile(path):
            raise ModelNotFound(f"{path} is cut short or damaged (its zip archive has no end): "
                                f"{REDOWNLOAD}.")
        return
    if head[:1] != b"\x80":  # a pickle's PROTO opcode
        raise ModelNotFound(f"{path} is not a PyTorch checkpoint (neither a zip archive nor a "
                            f"pickle): {REDOWNLOAD}.")
