"""LoRAs on a diffusers pipeline, for one call at a time.

    with applied_loras(pipe, [("ghibli", "/loras/ghibli.safetensors", 0.8)]):
        images = pipe(...).images

Each file is loaded into the pipeline through peft as a named adapter
(`pipe.load_lora_weights`), the adapters of the call are activated with their
weights (`pipe.set_adapters`), and on the way out they are *disabled*, not
removed: a disabled peft layer runs its base layer alone, so the next call
without LoRAs gives byte for byte the image it gave before any LoRA was loaded,
and the next call with the same LoRA skips the load. Measured on the tiny test
models (CPU): loading a LoRA takes about 0.25 s, entering the block again with
two kept LoRAs 0.03 s (SD 1.x) to 0.07 s (SDXL), deleting an adapter 0.02 s and
`unload_lora_weights` 0.05 s; a real SD 1.5 or SDXL LoRA also reads tens to
hundreds of MB. On SD 1.x kept and unloaded are both byte-identical afterwards
(on SDXL both need the repair below). At most `KEEP_LOADED` adapters stay; the
ones used longest ago are deleted first. Tried by hand on the tiny SD3 and Flux
pipelines too (their transformers take LoRAs the same way).

Byte-identity needs one repair: peft freezes (`requires_grad=False`) every
parameter of a model it adds an adapter to, and torch's matmul then rounds a
linear layer on a non-contiguous input differently (SDXL's `proj_in`), so the
flags are put back after each load (`_restore_requires_grad`).

The adapters live in the pipeline's modules (UNet, text encoders), so an
image-to-image pipeline made with `AutoPipelineForImage2Image.from_pipe(pipe)`
shares them: what is loaded through one is loaded for both, and leaving the
block leaves both clean.

An adapter's name is derived from the file (path, size, modification time), so
the same file is loaded once whatever the caller calls it, and a file replaced
on disk is loaded afresh.

Files are read as safetensors only (a pickled `.ckpt`/`.pt` can run code). Both
layouts people have load: diffusers/peft (`unet.<module>.lora_A.weight`) and
kohya/A1111 (`lora_unet_<module>.lora_down.weight` + `.alpha`), which is how
LoRAs from Civitai come.

`is_lora_file(path)` reads only a safetensors file's JSON header, so the model
loader can tell a user who passed a LoRA as the model what they passed,
without importing torch.

Not thread-safe: one pipeline serves one call at a time (as the worker runs jobs).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import struct
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Iterator, Sequence

from artbot.errors import InvalidRequest
from generators.base import UnsupportedTask

log = logging.getLogger(__name__)

#: How many LoRA adapters stay loaded (disabled) between calls, per pipeline's modules.
KEEP_LOADED = 4

#: Adapters this module loads are named `<ADAPTER_PREFIX><hash of the file>`.
ADAPTER_PREFIX = "lora_"

# The largest safetensors header the format allows (100 MB).
_MAX_HEADER = 100_000_000

# Tensor names of LoRA weights, in the layouts in use:
#   peft/diffusers   unet.x.to_q.lora_A.weight
#   older diffusers  x.processor.to_q_lora.down.weight, x.lora.down.weight, x.lora_linear_layer.up.weight
#   kohya/A1111      lora_unet_x_to_q.lora_down.weight (+ .alpha)
#   LyCORIS          x.hada_w1_a, x.lokr_w1
_LORA_KEY = re.compile(
    r"(\.lora_(A|B|down|up|magnitude_vector)\b|[._]lora\.(down|up)\.|\.lora_linear_layer\."
    r"|\.(hada|lokr)_w\d|\.dora_scale$)"
)
_KOHYA_ALPHA = re.compile(r"^lora_[a-z0-9]+_.*\.alpha$")


class UnusableLora(InvalidRequest):
    """A LoRA file that cannot be applied: missing, not a LoRA, or made for another model."""


# -- reading a file's header (no torch) ------------------------------------------


def safetensors_header(path: str | Path) -> dict | None:
    """The JSON header of a safetensors file (tensor names to dtype/shape/offsets, and
    `__metadata__`), or None if `path` is not a readable safetensors file.

    The format: 8 bytes little-endian header length, then that many bytes of JSON.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) != 8:
                return None
            (length,) = struct.unpack("<Q", head)
            if not 2 <= length <= _MAX_HEADER:
                return None
            header = json.loads(fh.read(length))
    except (OSError, ValueError):  # ValueError: bad JSON or bad UTF-8
        return None
    return header if isinstance(header, dict) else None


def _tensor_names(header: dict) -> list[str]:
    return [k for k in header if k != "__metadata__"]


def _is_lora_key(name: str) -> bool:
    return bool(_LORA_KEY.search(name) or _KOHYA_ALPHA.match(name))


def is_lora_file(path: str | Path) -> bool:
    """Whether `path` is a safetensors file of LoRA weights (any of the layouts above):
    most of its tensors are LoRA factors or their alphas. Reads only the header."""
    header = safetensors_header(path)
    return header is not None and is_lora_tensors(_tensor_names(header))


def is_lora_tensors(names) -> bool:
    """Whether tensors of these names are LoRA weights: most are LoRA factors or alphas.
    (`checkpoints.checkpoint_arch` tells a LoRA from a model by this too.)"""
    names = list(names)
    return bool(names) and sum(map(_is_lora_key, names)) * 2 > len(names)


def lora_base_model(path: str | Path) -> str | None:
    """A guess, from the header alone, of the model family a LoRA was made for:
    'SD 1.x', 'SD 2.x', 'SDXL', 'SD3', 'Flux'; None when it cannot tell."""
    header = safetensors_header(path)
    if header is None:
        return None
    names = _tensor_names(header)
    text = "\n".join(names)
    if "single_transformer_blocks" in text or "lora_unet_single_blocks" in text or "double_blocks" in text:
        return "Flux"
    if "joint_blocks" in text or "context_embedder" in text:
        return "SD3"
    if "text_encoder_2." in text or "lora_te2_" in text:
        return "SDXL"
    # The width of the text embedding the UNet's cross-attention reads: 768, 1024 or 2048.
    for name in names:
        if "attn2" in name and "to_k" in name and re.search(r"lora(_A|_down|\.down)\b", name):
            shape = header[name].get("shape") or []
            if len(shape) == 2:
                return {768: "SD 1.x", 1024: "SD 2.x", 2048: "SDXL"}.get(shape[1])
    return None


# -- applying LoRAs to a pipeline ------------------------------------------------

# The adapters this module loaded, per denoiser module (shared between pipelines made
# with from_pipe), least recently used first.
_recency: "weakref.WeakKeyDictionary[object, OrderedDict[str, None]]" = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def applied_loras(pipe, loras: Sequence[tuple[str, str | Path, float]]) -> Iterator[None]:
    """Apply `loras`, a list of (name, path, weight), to `pipe` for the body of the block.

    `name` is what the user calls the LoRA (used in messages only). The same file
    twice adds its weights. Raises `UnusableLora` for a file that is missing, not a
    LoRA, or not a LoRA for this model, and `UnsupportedTask` for a pipeline that
    cannot take LoRAs; in either case the pipeline is left as it was.
    """
    if not loras:
        yield
        return
    if not hasattr(pipe, "load_lora_weights") or not hasattr(pipe, "set_adapters"):
        raise UnsupportedTask(f"This model's pipeline ({type(pipe).__name__}) cannot use LoRAs.")

    import torch

    recency = _recency.setdefault(_denoiser(pipe), OrderedDict())
    requires_grad = _requires_grad(pipe)
    weights: dict[str, float] = {}  # adapter name -> summed weight, in the order given
    try:
        # Adapters made under inference mode would be inference tensors, which peft may not
        # touch (requires_grad) in a later call outside it: make them ordinary tensors.
        with torch.inference_mode(False):
            for name, path, weight in loras:
                adapter = _load(pipe, name, Path(path))
                weights[adapter] = weights.get(adapter, 0.0) + float(weight)
                recency[adapter] = None
                recency.move_to_end(adapter)
            _enable(pipe, True)
            pipe.set_adapters(list(weights), adapter_weights=list(weights.values()))
            _restore_requires_grad(pipe, requires_grad)
        yield
    finally:
        with torch.inference_mode(False):
            # Also after a failed load: a freshly loaded adapter starts out active.
            _enable(pipe, False)
            _trim(pipe, recency)
            _restore_requires_grad(pipe, requires_grad)


def _denoiser(pipe):
    """The module whose adapters stand for the pipeline's (shared by pipelines made with from_pipe)."""
    for component in ("unet", "transformer"):
        module = getattr(pipe, component, None)
        if module is not None:
            return module
    return pipe


def adapter_name(path: Path) -> str:
    """The adapter name of a LoRA file: the same file (path, size, mtime) gives the same name."""
    stat = path.stat()
    key = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return ADAPTER_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:16]


def _loaded(pipe) -> set[str]:
    return {a for adapters in pipe.get_list_adapters().values() for a in adapters}


def _load(pipe, name: str, path: Path) -> str:
    """Load the LoRA at `path` unless it is loaded already; return its adapter name."""
    if not path.is_file():
        raise UnusableLora(f"LoRA file {name} ({path.name}) does not exist.")
    if path.suffix.lower() != ".safetensors" or safetensors_header(path) is None:
        raise UnusableLora(
            f"LoRA file {name} ({path.name}) is not a .safetensors file; only safetensors "
            f"LoRAs are loaded (other formats can run code)."
        )
    if not is_lora_file(path):
        raise UnusableLora(
            f"LoRA file {name} ({path.name}) is not a LoRA (it holds no LoRA weights; "
            f"is it a full model checkpoint?)."
        )
    adapter = adapter_name(path)
    if adapter in _loaded(pipe):
        return adapter

    import torch

    try:
        with _quiet_loaders():
            pipe.load_lora_weights(
                str(path.parent), weight_name=path.name, adapter_name=adapter,
                use_safetensors=True, local_files_only=True,
            )
    except (torch.OutOfMemoryError, MemoryError):
        _forget(pipe, adapter)
        raise
    except Exception as exc:  # noqa: BLE001 - shape errors, unmappable keys, bad configs: all "not for this model"
        _forget(pipe, adapter)
        log.info("LoRA %s (%s) did not load: %s", name, path, _short(exc))
        log.debug("LoRA load failure", exc_info=True)
        raise UnusableLora(_mismatch(name, path, exc)) from exc
    if adapter not in _loaded(pipe):
        # diffusers only warns when no key of the file names a layer of this model.
        raise UnusableLora(_mismatch(name, path, None))
    log.info("loaded LoRA %s from %s as adapter %s", name, path, adapter)
    return adapter


@contextlib.contextmanager
def _quiet_loaders() -> Iterator[None]:
    """Load without diffusers' and peft's own chatter: diffusers logs a failed load as an
    error with every mismatched tensor (hundreds of lines), and peft warns that a second
    adapter makes "multiple adapters in the model" (it does, on purpose) and, listing
    every layer, that a LoRA for another model misses some."""
    loaders = logging.getLogger("diffusers.loaders")
    level = loaders.level
    loaders.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        loaders.setLevel(level)


def _mismatch(name: str, path: Path, exc: BaseException | None) -> str:
    made_for = lora_base_model(path)
    why = f"it looks like a LoRA for {made_for}" if made_for else "it was made for another model"
    if exc is None:
        detail = "none of its layers exist in this model"
    elif isinstance(exc, RuntimeError) and "size mismatch" in str(exc):
        detail = "its layer shapes do not match this model's"
    else:
        detail = _short(exc)
    return f"LoRA file {name} ({path.name}) is not a LoRA for this model ({why}; {detail})."


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def _forget(pipe, adapter: str) -> None:
    """Remove whatever a failed load left of `adapter`."""
    with contextlib.suppress(Exception):
        if adapter in _loaded(pipe):
            pipe.delete_adapters([adapter])


def _enable(pipe, enabled: bool) -> None:
    """Switch every LoRA layer of the pipeline's LoRA-capable modules on or off."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for component in getattr(pipe, "_lora_loadable_modules", []):
        model = getattr(pipe, component, None)
        if model is None or not getattr(model, "peft_config", None):
            continue
        for module in model.modules():
            if isinstance(module, BaseTunerLayer):
                module.enable_adapters(enabled)


def _parameters(pipe):
    for component in getattr(pipe, "_lora_loadable_modules", []):
        model = getattr(pipe, component, None)
        if model is not None and hasattr(model, "parameters"):
            yield from model.parameters()


def _requires_grad(pipe) -> dict[int, bool]:
    return {id(p): p.requires_grad for p in _parameters(pipe)}


def _restore_requires_grad(pipe, before: dict[int, bool]) -> None:
    """Put back the `requires_grad` of the model's own parameters (adapters' own: False).

    peft freezes every parameter of a model it adds an adapter to, and torch's
    matmul takes another path, with other rounding, for a frozen weight times a
    non-contiguous input (SDXL's linear `proj_in`): without this, SDXL images
    after a LoRA differ from those before it by a grey level here and there.
    """
    for param in _parameters(pipe):
        wanted = before.get(id(param), False)
        if param.requires_grad != wanted:
            param.requires_grad_(wanted)


def _trim(pipe, recency: "OrderedDict[str, None]") -> None:
    """Delete the least recently used adapters beyond KEEP_LOADED."""
    loaded = _loaded(pipe)
    for adapter in [a for a in recency if a not in loaded]:
        del recency[adapter]  # deleted by someone else
    while len(recency) > KEEP_LOADED:
        adapter, _ = recency.popitem(last=False)
        pipe.delete_adapters([adapter])
        log.info("unloaded LoRA adapter %s", adapter)
