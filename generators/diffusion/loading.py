"""Loading a diffusion pipeline from whatever the user named.

A model reference is, in the order tried:

1. a local folder holding a diffusers pipeline (`model_index.json`);
2. a single checkpoint file (`.safetensors` or `.ckpt`), loaded with
   `from_single_file`;
3. a Hugging Face hub id (`org/name`): taken from the local cache if it is
   there, else downloaded once when the hub is reachable.

Anything else, or a hub model that is neither cached nor reachable, raises
`ModelNotFound` with what to do about it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path

import torch

from artbot.errors import ModelNotFound
from generators.diffusion.checkpoints import cached_config, hub_offline
from generators.diffusion.model_files import (OPTIONAL_COMPONENTS, check_checkpoint_file,
                                              check_model_folder, components)

log = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _quiet_libraries() -> None:
    """diffusers and transformers draw their own progress bars; the worker reports progress itself."""
    from diffusers.utils import logging as dlogging
    from transformers.utils import logging as tlogging

    dlogging.disable_progress_bar()
    tlogging.disable_progress_bar()
    if not log.isEnabledFor(logging.DEBUG):
        # Their warnings (optional torchvision, deprecated config keys) are not the user's business.
        dlogging.set_verbosity_error()
        tlogging.set_verbosity_error()


def folder_fingerprint(folder: Path) -> str:
    """A short, stable id of a local model: its configs' bytes and its weights' sizes."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        h.update(rel.encode())
        if path.suffix in (".json", ".txt"):
            h.update(path.read_bytes())
        else:
            h.update(str(path.stat().st_size).encode())
    return "local-" + h.hexdigest()[:12]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Can we open a TCP connection to the hub at all? (Saves a minute of retries offline.)"""
    import socket
    from urllib.parse import urlparse

    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except (ImportError, AttributeError):  # pragma: no cover
        endpoint = "https://huggingface.co"
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_revision(repo_id: str) -> str | None:
    snapshot = cached_config(repo_id)
    return snapshot.name if snapshot else None  # .../snapshots/<commit>/


def load_pipeline(ref: str, device: torch.device, dtype: torch.dtype, *,
                  config: str | None = None, arch: str | None = None):
    """Load `ref` as a text-to-image pipeline on `device`. Returns (pipeline, revision).

    For a single checkpoint file, `config` is a local diffusers folder with its
    configuration and `arch` the architecture, when the operator's catalogue
    names them; otherwise the architecture comes from the file's tensors."""
    _quiet_libraries()  # before importing the pipelines, which warn as they import
    from diffusers import AutoPipelineForText2Image

    path = Path(ref).expanduser()

    if path.is_dir():
        index = check_model_folder(path)  # what is wrong with it in words, before diffusers tries
        try:
            pipe = AutoPipelineForText2Image.from_pretrained(
                str(path), torch_dtype=dtype, **_left_out_components(path, index))
        except Exception as exc:  # noqa: BLE001 - said in words when it is the files' fault
            reason = _unloadable(exc, f"Model folder {ref}")
            if reason is None:
                raise
            raise reason from None
        revision = folder_fingerprint(path)

    elif path.suffix.lower() in (".safetensors", ".ckpt"):
        pipe = _load_single_file(path, dtype, config=config, arch=arch)
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            h.update(fh.read(1 << 20))
        revision = f"file-{h.hexdigest()[:12]}-{path.stat().st_size}"

    elif _HUB_ID.match(ref) and not ref.startswith((".", "/", "~")):
        pipe = _load_from_hub(ref, dtype)
        revision = _cached_revision(ref)

    else:
        raise ModelNotFound(
            f"Unknown model {ref!r}: it is not a folder, a .safetensors file or a Hugging Face model id."
        )

    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe, revision


def _left_out_components(folder: Path, index: dict) -> dict:
    """`name=None` for each optional component (OPTIONAL_COMPONENTS) the folder does
    not have; `check_model_folder` has refused any other that is missing."""
    return {name: None for name, (library, _) in components(index).items()
            if name in OPTIONAL_COMPONENTS and (library is None or not (folder / name).is_dir())}


def _unloadable(exc: BaseException, what: str) -> ModelNotFound | None:
    """A load failure that is the model files' fault, in words naming `what` (a folder
    or file); None for anything else (a bug, no memory), which stays as it is."""
    if isinstance(exc, ModelNotFound):
        return exc
    text = _short(exc).split(". ")[0].rstrip(".")  # the first sentence says it
    files = isinstance(exc, (OSError, ValueError, KeyError, AttributeError)) or \
        type(exc).__name__ == "SafetensorError" or (
            isinstance(exc, RuntimeError) and ("state_dict" in text or "size mismatch" in text))
    if not files or isinstance(exc, MemoryError):
        return None
    log.info("%s cannot be loaded", what, exc_info=exc)
    return ModelNotFound(f"{what} cannot be loaded: {text}. Re-download the model (a newer kind "
                         f"of model may need a newer diffusers).")


def _load_single_file(path: Path, dtype: torch.dtype, *, config: str | None, arch: str | None):
    """A Civitai-style single file, as the pipeline of the architecture its tensors say."""
    from generators.diffusion.checkpoints import checkpoint_arch, load_checkpoint

    if not path.is_file():
        raise ModelNotFound(f"Model file {path} does not exist.")
    if path.suffix.lower() == ".ckpt":
        check_checkpoint_file(path)  # empty, not a zip or pickle, a zip cut short
    found = checkpoint_arch(path) if path.suffix.lower() == ".safetensors" else None
    if found == "lora":
        raise ModelNotFound(
            f"{path.name} is a LoRA, not a model: put it in the lora_dir folder and name it in "
            f"the prompt, <lora:{path.stem}:0.8>, with a model it was made for.")
    if arch is not None:  # the catalogue's name for it (profiles say flux-dev, files flux)
        found = "flux" if arch.startswith("flux") else arch
    if found is None and path.suffix.lower() == ".ckpt":
        found = "sd1"  # a pickle's names cannot be read without loading it; SD 1.x is the usual
    offline = hub_offline() or (config is None and not _hub_reachable())
    try:
        return load_checkpoint(path, found, config=config, dtype=dtype, offline=offline)
    except Exception as exc:  # noqa: BLE001 - said in words when it is the file's fault
        reason = _unloadable(exc, f"Model file {path}")
        if reason is None:
            raise
        raise reason from None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


def _load_from_hub(repo_id: str, dtype: torch.dtype):
    from diffusers import AutoPipelineForText2Image

    try:
        return AutoPipelineForText2Image.from_pretrained(
            repo_id, torch_dtype=dtype, local_files_only=True
        )
    except (OSError, ValueError) as cached_exc:
        log.info("model %s is not in the local cache (%s)", repo_id, _short(cached_exc))
    if hub_offline() or not _hub_reachable():
        why = "HF_HUB_OFFLINE is set" if hub_offline() else "the hub cannot be reached"
        raise ModelNotFound(
            f"Unknown model {repo_id!r}: no such folder or file, not in the Hugging Face cache, "
            f"and {why}. Download it with internet (huggingface-cli download {repo_id}) or pass "
            f"a local folder."
        )
    try:
        return AutoPipelineForText2Image.from_pretrained(repo_id, torch_dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types
        name = type(exc).__name__
        if "RepositoryNotFound" in name or "404" in str(exc):
            raise ModelNotFound(
                f"Unknown model {repo_id!r}: no such model on the Hugging Face hub, and no local "
                f"folder or file by that name."
            ) from None
        raise ModelNotFound(
            f"Could not download model {repo_id!r} from the Hugging Face hub ({_short(exc)})."
        ) from None
