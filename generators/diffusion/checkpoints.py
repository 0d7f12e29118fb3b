"""Single checkpoint files: which architecture a file is, and loading it as a pipeline.

Operators download Civitai-style checkpoints: one `.safetensors` file in the
original (LDM / A1111 / ComfyUI) layout, whose tensor names say what it is:

    sd1           model.diffusion_model.*  first_stage_model.*  cond_stage_model.transformer.*
    sd2           ... cond_stage_model.model.*                    (an OpenCLIP text encoder)
    sdxl          ... conditioner.embedders.0.transformer.*  conditioner.embedders.1.model.*
    sdxl-refiner  ... conditioner.embedders.0.model.*              (OpenCLIP only)
    sd3           joint_blocks.*  (MMDiT; with or without the model.diffusion_model. prefix)
    flux          double_blocks.* single_blocks.*  (usually the transformer alone)
    lora          lora_unet_* / lora_te_* (kohya), *.lora_A.* / *.lora.down.* (diffusers, peft)

`read_tensor_names` and `checkpoint_arch` read only the file's JSON header, so
they are instant on a 7 GB file and need no torch: the request builders and the
model profiles use them. `.ckpt` files are pickles, whose names cannot be read
without unpickling: their architecture is unknown (None) until the operator
names it.

`load_checkpoint` loads a file with its architecture's diffusers pipeline.
diffusers takes the weights from the file and everything else (model_index.json,
the scheduler, the UNet/VAE/text-encoder configs, the tokenizer files) from a
diffusers folder: the one the operator gave (`config = "..."` in artbot.toml),
else the architecture's reference model in the local Hugging Face cache, else,
when online, a download of that model's configs (json and txt, no weights).
The cache is looked up here first: diffusers, told `local_files_only=True`
and finding no cached configs, quietly tries the network anyway.

Parts a file leaves out (the VAE, SD3's T5, all but the transformer of most
Flux files) are taken from the config folder's weights and handed to
diffusers, which would only look for them under diffusers' own weight names
and so never finds a transformers text encoder; SD3 without T5 runs without
it. A tensor still missing after loading (diffusers leaves it on the "meta"
device and fails only when drawing) is reported at load time.

Prediction type (SD 2.x): a 2.x file looks the same whether it predicts noise
(2.x-base, 512 px) or velocity (768-v), so it is the config folder's
scheduler_config.json that decides. diffusers, given no config, sends every
SD 2.x file to stabilityai/stable-diffusion-2-1 (v-prediction); here "sd2"
means the base model's configs (epsilon) and "sd2-v" means 2-1's, and with
arch "sd2-v" the scheduler is set to v-prediction whatever the folder says.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Mapping, Sequence

from artbot.errors import ModelNotFound
from generators.diffusion.lora import is_lora_tensors

ARCHITECTURES = ("sd1", "sd2", "sd2-v", "sdxl", "sdxl-refiner", "sd3", "flux")

# What the architecture is called in messages.
LABELS = {
    "sd1": "Stable Diffusion 1.x",
    "sd2": "Stable Diffusion 2.x",
    "sd2-v": "Stable Diffusion 2.x (v-prediction)",
    "sdxl": "SDXL",
    "sdxl-refiner": "SDXL refiner",
    "sd3": "Stable Diffusion 3",
    "flux": "Flux",
    "lora": "LoRA",
}

# The diffusers pipeline that loads each architecture.
PIPELINES = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sd2-v": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sdxl-refiner": "StableDiffusionXLImg2ImgPipeline",  # the refiner only refines
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}

# A config folder of this pipeline family fits the architecture (model_index.json's _class_name).
_FAMILIES = {
    "sd1": "StableDiffusion",
    "sd2": "StableDiffusion",
    "sd2-v": "StableDiffusion",
    "sdxl": "StableDiffusionXL",
    "sdxl-refiner": "StableDiffusionXL",
    "sd3": "StableDiffusion3",
    "flux": "Flux",
}

# The hub model whose configs describe each architecture, as diffusers' own
# single_file_utils.DIFFUSERS_DEFAULT_PIPELINE_PATHS (but SD 2.x base apart from 768-v).
HUB_CONFIGS = {
    "sd1": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "sd2": "stabilityai/stable-diffusion-2-1-base",
    "sd2-v": "stabilityai/stable-diffusion-2-1",
    "sdxl": "stabilityai/stable-diffusion-xl-base-1.0",
    "sdxl-refiner": "stabilityai/stable-diffusion-xl-refiner-1.0",
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "sd3.5-large": "stabilityai/stable-diffusion-3.5-large",
    "sd3.5-medium": "stabilityai/stable-diffusion-3.5-medium",
    "flux-dev": "black-forest-labs/FLUX.1-dev",
    "flux-schnell": "black-forest-labs/FLUX.1-schnell",
}

# safetensors refuses headers larger than this; a larger length means it is not one.
_MAX_HEADER = 100_000_000

_UNET = "model.diffusion_model."


def _not_safetensors(path: Path, why: str) -> ModelNotFound:
    return ModelNotFound(f"{path} is not a .safetensors file (its header cannot be read: {why}). "
                         f"Re-download it.")


def read_tensor_names(path: str | os.PathLike) -> dict[str, list[int]] | None:
    """The name and shape of every tensor of a `.safetensors` file, from its header alone.

    The format: 8 bytes (little-endian u64) giving the header's length, then
    that many bytes of JSON mapping each name to its dtype, shape and byte
    offsets (and an optional `__metadata__`, skipped), then the data. A file
    that is not one, or whose data stops short of what its header describes
    (an unfinished download), raises `ModelNotFound`. A `.ckpt` (a pickle) has
    no such header: None.
    """
    path = Path(path)
    if path.suffix.lower() == ".ckpt":
        return None
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            prefix = fh.read(8)
            if size == 0:
                raise ModelNotFound(f"{path} is not a .safetensors file: it is empty (0 bytes). "
                                    f"Re-download it.")
            if len(prefix) < 8:
                raise _not_safetensors(path, f"the file is only {size} bytes long")
            (length,) = struct.unpack("<Q", prefix)
            if length < 2 or length > min(_MAX_HEADER, size - 8):
                raise _not_safetensors(path, "the length in its first 8 bytes does not fit the "
                                             "file; random bytes, or another format renamed?")
            raw = fh.read(length)
    except FileNotFoundError:
        raise ModelNotFound(f"Model file {path} does not exist.") from None
    except IsADirectoryError:
        raise ModelNotFound(f"{path} is a folder, not a checkpoint file.") from None
    except OSError as exc:
        raise ModelNotFound(f"Model file {path} cannot be read ({exc.strerror or exc}).") from None
    try:
        header = json.loads(raw)
    except ValueError:  # UnicodeDecodeError is a ValueError too
        raise _not_safetensors(path, "its header is not JSON") from None
    if not isinstance(header, dict):
        raise _not_safetensors(path, "its header is not a JSON object")

    shapes: dict[str, list[int]] = {}
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            shape = [int(d) for d in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise _not_safetensors(path, f"its header describes tensor {name[:80]!r} "
                                         f"without a shape and offsets") from None
        if not 0 <= start <= end:
            raise _not_safetensors(path, f"tensor {name[:80]!r} has offsets {start}..{end}")
        shapes[name] = shape
        data_end = max(data_end, end)
    if 8 + length + data_end > size:
        raise ModelNotFound(
            f"{path} is cut short: its header describes {8 + length + data_end} bytes but the file "
            f"has {size} (an unfinished download?). Re-download it."
        )
    return shapes


def checkpoint_arch(path: str | os.PathLike) -> str | None:
    """The architecture of a single file ("sd1", "sdxl", ..., "lora"), or None when unknown.

    Reads the header only (see `read_tensor_names`); a `.ckpt` is unknown (None).
    """
    shapes = read_tensor_names(path)
    return None if shapes is None else arch_from_tensors(shapes)


def arch_from_tensors(shapes: Mapping[str, Sequence[int]]) -> str | None:
    """The architecture that a checkpoint's tensor names (and shapes) describe, or None.

    The marker tensors are those of diffusers' CHECKPOINT_KEY_NAMES, chosen so
    that none depends on how many layers a model has (diffusers tells SDXL by
    its text encoder's resblocks.9, which a small model lacks): the first
    block, the embeddings, the text projection.
    """
    if is_lora_tensors(shapes):
        return "lora"

    def has(*names: str) -> bool:
        return any(n in shapes for n in names)

    def in_unet(name: str) -> bool:  # with or without model.diffusion_model. (ComfyUI saves both)
        return has(name, _UNET + name)

    if in_unet("double_blocks.0.img_attn.norm.key_norm.scale"):
        # Chroma and Flux.2 have double blocks too, but other pipelines.
        if in_unet("distilled_guidance_layer.in_proj.bias") or in_unet("single_stream_modulation.lin.weight"):
            return None
        return "flux"
    if in_unet("joint_blocks.0.context_block.adaLN_modulation.1.bias"):
        return "sd3"
    # SDXL: CLIP-L as embedders.0, OpenCLIP ViT-bigG as embedders.1; the refiner has only bigG, as 0.
    if has("conditioner.embedders.1.model.positional_embedding",
           "conditioner.embedders.1.model.token_embedding.weight"):
        return "sdxl"
    if has("conditioner.embedders.0.model.positional_embedding",
           "conditioner.embedders.0.model.text_projection"):
        return "sdxl-refiner"
    if has("cond_stage_model.model.token_embedding.weight", "cond_stage_model.model.positional_embedding"):
        return "sd2"
    if has("cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
           "cond_stage_model.transformer.embeddings.position_embedding.weight"):
        return "sd1"
    # A UNet saved without its text encoder: its cross-attention width tells which.
    width = next((int(shape[-1]) for name, shape in shapes.items()
                  if name.startswith(_UNET) and name.endswith("attn2.to_k.weight")), None)
    return {768: "sd1", 1024: "sd2", 2048: "sdxl", 1280: "sdxl-refiner"}.get(width)


# --- Loading ---------------------------------------------------------------------------------

def hub_offline() -> bool:
    """HF_HUB_OFFLINE, or ARTBOT_OFFLINE (artbot downloads nothing at all)."""
    return any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
               for var in ("HF_HUB_OFFLINE", "ARTBOT_OFFLINE"))


def hub_config_repo(arch: str, shapes: Mapping[str, Sequence[int]] | None = None) -> str:
    """The hub model whose configs describe a file of `arch` (SD3 and Flux by their variant)."""
    shapes = shapes or {}

    def in_unet(name: str) -> bool:
        return name in shapes or _UNET + name in shapes

    if arch == "sd3":
        if in_unet("joint_blocks.37.x_block.mlp.fc1.weight"):
            return HUB_CONFIGS["sd3.5-large"]
        if in_unet("joint_blocks.0.x_block.attn2.qkv.weight"):
            return HUB_CONFIGS["sd3.5-medium"]
        return HUB_CONFIGS["sd3"]
    if arch == "flux":  # schnell is distilled without the guidance embedding
        return HUB_CONFIGS["flux-dev" if in_unet("guidance_in.in_layer.bias") else "flux-schnell"]
    return HUB_CONFIGS[arch]


def cached_config(repo_id: str) -> Path | None:
    """The folder of `repo_id` in the local Hugging Face cache, if its model_index.json is there."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - diffusers depends on it
        return None
    try:
        found = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:  # noqa: BLE001 - a malformed id or cache is simply not a cached model
        return None
    return Path(found).parent if isinstance(found, str) else None


def load_checkpoint(path: str | os.PathLike, arch: str | None, *, config: str | os.PathLike | None,
                    dtype: Any, offline: bool | None = None):
    """Load a single checkpoint file as the diffusers pipeline of `arch`, on the CPU.

    `arch` is what `checkpoint_arch` says (or what the operator set). `config` is
    a local diffusers folder holding the model's configurations (its weights
    are not needed, but are used for any component the file lacks: SD3 without
    T5, Flux files that hold only the transformer, files without a VAE). Without it, the
    architecture's reference model is taken from the Hugging Face cache, or,
    unless `offline` (default: HF_HUB_OFFLINE or ARTBOT_OFFLINE), its configs are
    downloaded. Raises `ModelNotFound` saying what to do when neither is there.
    Returns the pipeline, not moved to a device.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFound(f"Model file {path} does not exist.")
    shapes = read_tensor_names(path)  # fails early and clearly on a broken file
    if arch == "lora":
        raise ModelNotFound(f"{path} is a LoRA, not a model: put it in the LoRA folder and draw with a "
                            f"model it was trained for.")
    if arch is None:
        raise ModelNotFound(f"Cannot tell which architecture {path} is (sd1, sdxl, sd3, flux, ...); set "
                            f"`arch = \"...\"` for this model in artbot.toml.")
    if arch not in PIPELINES:
        raise ModelNotFound(f"{path}: architecture {arch!r} cannot be loaded from a single file "
                            f"(one of {', '.join(PIPELINES)}).")
    offline = hub_offline() if offline is None else offline

    import diffusers
    from diffusers.loaders.single_file_utils import SingleFileComponentError

    pipeline_class = getattr(diffusers, PIPELINES[arch])
    config_source, local = _config_source(path, arch, shapes, config, offline)
    folder = Path(config_source) if local else None

    kwargs: dict[str, Any] = {}
    if arch in ("sd1", "sd2", "sd2-v"):
        kwargs["requires_safety_checker"] = False  # from_single_file never loads the checker
    if shapes is not None:
        kwargs.update(_components_the_file_lacks(path, arch, shapes, folder, dtype))
    try:
        pipe = pipeline_class.from_single_file(
            str(path), config=str(config_source), local_files_only=local or offline, dtype=dtype, **kwargs
        )
    except SingleFileComponentError as exc:  # a .ckpt lacking a part: its names were not read beforehand
        component = str(exc).split("Failed to load ")[-1].split(".")[0]
        raise ModelNotFound(
            f"{path} has no weights for its {component}; set `config = \"/path/to/a/diffusers/folder\"` "
            f"for this model in artbot.toml to a full diffusers model of the same architecture, whose "
            f"weights fill in what the file lacks."
        ) from None
    except OSError as exc:
        if not local:
            raise ModelNotFound(
                f"Cannot load {path.name}: the configuration of {config_source} could not be downloaded "
                f"from the Hugging Face hub ({_first_line(exc)}). Set `config = \"/path/to/a/diffusers/"
                f"folder\"` for this model in artbot.toml, or try again when the hub can be reached."
            ) from None
        raise ModelNotFound(
            f"Cannot load {path}: a configuration file of {config_source} is missing or unreadable "
            f"({_first_line(exc)})."
        ) from None

    _check_no_missing_weights(pipe, path)
    if arch == "sd2-v" and getattr(pipe.scheduler.config, "prediction_type", None) != "v_prediction":
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, prediction_type="v_prediction")
    return pipe


def _config_source(path: Path, arch: str, shapes, config, offline: bool) -> tuple[str, bool]:
    """Where the configs come from: (a local folder, True) or (a hub id to download from, False)."""
    if config is not None:
        folder = Path(config).expanduser()
        index = folder / "model_index.json"
        if not index.is_file():
            raise ModelNotFound(f"The config of {path.name}, {folder}, is not a diffusers folder "
                                f"(it has no model_index.json).")
        try:
            class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name", "")
        except (OSError, ValueError, AttributeError):
            raise ModelNotFound(f"{index} cannot be read as JSON.") from None
        if not _fits(class_name, arch):
            raise ModelNotFound(f"{path.name} is {_a(LABELS[arch])} checkpoint, but its config {folder} "
                                f"describes a {class_name}.")
        return str(folder), True
    repo = hub_config_repo(arch, shapes)
    cached = cached_config(repo)
    if cached is not None:
        return str(cached), True
    if offline:
        raise ModelNotFound(
            f"Cannot load {path.name} offline: {_a(LABELS[arch])} checkpoint needs its diffusers "
            f"configuration (configs and tokenizer files, no weights), which is neither given nor in "
            f"the Hugging Face cache. Set `config = \"/path/to/a/diffusers/folder\"` for this model in "
            f"artbot.toml, or run once with internet to cache {repo}'s configuration."
        )
    return repo, False


def _a(label: str) -> str:
    """'an SDXL', 'a Stable Diffusion 1.x': the article as the name is said."""
    return ("an " if label.startswith(("SD", "A", "E", "I", "O", "U")) else "a ") + label


def _fits(class_name: str, arch: str) -> bool:
    """A StableDiffusionXLPipeline folder fits sdxl, not sd1 (whose family name it also starts with)."""
    family = _FAMILIES[arch]
    if not class_name.startswith(family):
        return False
    if family == "StableDiffusion":
        return not class_name.startswith(("StableDiffusionXL", "StableDiffusion3"))
    return True


def _has_weights(component: Path) -> bool:
    return component.is_dir() and (any(component.glob("*.safetensors")) or any(component.glob("*.bin")))


# The parts a single file may leave out, each known by the prefix of its tensors' names.
_VAE_PREFIXES = ("first_stage_model.", "vae.")
_PARTS = {
    "sd1": {"vae": _VAE_PREFIXES, "text_encoder": ("cond_stage_model.transformer.",)},
    "sd2": {"vae": _VAE_PREFIXES, "text_encoder": ("cond_stage_model.model.",)},
    "sdxl": {"vae": _VAE_PREFIXES, "text_encoder": ("conditioner.embedders.0.transformer.",),
             "text_encoder_2": ("conditioner.embedders.1.model.",)},
    "sdxl-refiner": {"vae": _VAE_PREFIXES, "text_encoder_2": ("conditioner.embedders.0.model.",)},
    "sd3": {"vae": _VAE_PREFIXES, "text_encoder": ("text_encoders.clip_l.",),
            "text_encoder_2": ("text_encoders.clip_g.",), "text_encoder_3": ("text_encoders.t5xxl.",)},
    # Most Flux files are the transformer alone; ComfyUI's "full" ones add these.
    "flux": {"vae": _VAE_PREFIXES, "text_encoder": ("text_encoders.clip_l.",),
             "text_encoder_2": ("text_encoders.t5xxl.",)},
}
_PARTS["sd2-v"] = _PARTS["sd2"]


def _components_the_file_lacks(path: Path, arch: str, shapes: Mapping[str, Any], folder: Path | None,
                               dtype) -> dict[str, Any]:
    """The components a file leaves out, loaded from the config folder's weights.

    `from_single_file` cannot do it itself for text encoders: it looks for
    diffusers' weight names (diffusion_pytorch_model.*), never transformers'
    model.safetensors. SD3 without T5 runs without it (a little worse) when the
    folder has no T5 weights either.
    """
    import importlib

    lacking = [name for name, prefixes in _PARTS[arch].items()
               if not any(n.startswith(prefixes) for n in shapes)]
    if not lacking:
        return {}
    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8")) if folder else {}
    given: dict[str, Any] = {}
    for name in lacking:
        library, class_name = (index.get(name) or [None, None])[:2]
        if folder is not None and library and _has_weights(folder / name):
            cls = getattr(importlib.import_module(library), class_name)
            given[name] = cls.from_pretrained(str(folder / name), dtype=dtype, local_files_only=True)
        elif name == "text_encoder_3":
            given.update(text_encoder_3=None, tokenizer_3=None)  # SD3 without T5
        else:
            raise ModelNotFound(
                f"{path.name} holds no weights for its {name.replace('_', ' ')} (a file of only the "
                f"UNet or transformer?): set `config = \"/path/to/a/diffusers/folder\"` for this model in "
                f"artbot.toml to a full diffusers {LABELS[arch]} model, whose {name} is used."
            )
    return given


def _check_no_missing_weights(pipe, path: Path) -> None:
    """diffusers leaves a tensor the file lacks on the "meta" device (no data) and fails only
    when drawing; say so at load time instead."""
    import torch

    for name, component in pipe.components.items():
        if not isinstance(component, torch.nn.Module):
            continue
        empty = _meta_tensors(component)
        if empty and hasattr(component, "tie_weights"):
            # T5's encoder.embed_tokens is shared.weight: files store it once, and loading into an
            # empty model replaces `shared` without re-tying. Tie again, then look once more.
            component.tie_weights()
            empty = _meta_tensors(component)
        if empty:
            raise ModelNotFound(
                f"{path} lacks {len(empty)} tensor{'s' if len(empty) != 1 else ''} of {name} "
                f"(e.g. {empty[0]}): the file is incomplete, or not the architecture its config describes."
            )


def _meta_tensors(module) -> list[str]:
    return [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
