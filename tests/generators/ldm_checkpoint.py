"""Diffusers pipeline folder -> one `.safetensors` file in the original (LDM, A1111, Civitai) layout.

The inverse of the conversion `from_single_file` does, written for tests: a tiny
diffusers folder becomes the kind of file operators download, so loading it
back can be checked tensor by tensor against the folder it came from.

    to_single_file("tiny-sdxl/", "tiny-sdxl.safetensors", "sdxl")

Layouts (prefixes of the file's tensor names):

    sd1    model.diffusion_model.*   first_stage_model.*   cond_stage_model.transformer.text_model.*
    sd2    model.diffusion_model.*   first_stage_model.*   cond_stage_model.model.*   (OpenCLIP)
    sdxl   model.diffusion_model.*   first_stage_model.*   conditioner.embedders.0.transformer.text_model.*
                                                           conditioner.embedders.1.model.*   (OpenCLIP)
    sd3    model.diffusion_model.* (MMDiT `joint_blocks`)  first_stage_model.*
           text_encoders.clip_l.transformer.text_model.*   text_encoders.clip_g.transformer.text_model.*
           text_encoders.t5xxl.transformer.*  (when the folder has a T5 encoder)

The UNet and VAE renaming is that of diffusers' own
scripts/convert_diffusers_to_original_stable_diffusion.py and
convert_diffusers_to_original_sdxl.py, derived here from the folder's configs so it
works for any number of levels and layers; every tensor must find a name, or
the conversion fails (a silently dropped tensor would load as random weights).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

ARCHES = ("sd1", "sd2", "sdxl", "sd3")


def to_single_file(pipeline_folder: str | Path, out_path: str | Path, arch: str) -> Path:
    """Write the diffusers pipeline in `pipeline_folder` as one original-layout file at `out_path`."""
    if arch not in ARCHES:
        raise ValueError(f"arch must be one of {ARCHES}, not {arch!r}")
    folder = Path(pipeline_folder)
    out: dict[str, torch.Tensor] = {}

    if arch == "sd3":
        _put(out, "model.diffusion_model.", _mmdit_to_ldm(_weights(folder / "transformer"),
                                                           _config(folder / "transformer")))
    else:
        _put(out, "model.diffusion_model.", _unet_to_ldm(_weights(folder / "unet"), _config(folder / "unet")))
    _put(out, "first_stage_model.", _vae_to_ldm(_weights(folder / "vae"), _config(folder / "vae")))

    if arch == "sd1":
        _put(out, "cond_stage_model.transformer.", _clip_to_hf(_weights(folder / "text_encoder")))
    elif arch == "sd2":
        _put(out, "cond_stage_model.model.", _clip_to_open_clip(_weights(folder / "text_encoder")))
    elif arch == "sdxl":
        _put(out, "conditioner.embedders.0.transformer.", _clip_to_hf(_weights(folder / "text_encoder")))
        _put(out, "conditioner.embedders.1.model.", _clip_to_open_clip(_weights(folder / "text_encoder_2")))
    else:
        _put(out, "text_encoders.clip_l.transformer.", _clip_to_hf(_weights(folder / "text_encoder")))
        _put(out, "text_encoders.clip_g.transformer.", _clip_to_hf(_weights(folder / "text_encoder_2")))
        if (folder / "text_encoder_3").is_dir():
            _put(out, "text_encoders.t5xxl.transformer.", _weights(folder / "text_encoder_3"))

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Each tensor its own contiguous copy: safetensors refuses shared or strided storage.
    save_file({k: v.contiguous().clone() for k, v in out.items()}, str(out_path))
    return out_path


def _weights(component: Path) -> dict[str, torch.Tensor]:
    files = sorted(component.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{component} has no .safetensors weights")
    weights: dict[str, torch.Tensor] = {}
    for f in files:
        weights.update(load_file(str(f)))
    return weights


def _config(component: Path) -> dict:
    return json.loads((component / "config.json").read_text(encoding="utf-8"))


def _put(out: dict, prefix: str, tensors: dict[str, torch.Tensor]) -> None:
    for name, tensor in tensors.items():
        out[prefix + name] = tensor


# --- UNet ------------------------------------------------------------------------------------

_UNET_FIXED = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's size/crop + pooled-text embedding
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}


def _unet_to_ldm(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """UNet2DConditionModel names -> `openaimodel.UNetModel` names (input/middle/output blocks)."""
    per_level = config["layers_per_block"]
    if not isinstance(per_level, int):
        raise ValueError("a UNet with a different layers_per_block per level is not supported")
    out = {_unet_name(name, per_level): tensor for name, tensor in sd.items()}
    # An upsampler follows its level's last layer: output_blocks.N.1 without attention, .2 with it.
    fixed = {}
    for name, tensor in out.items():
        if "{up}" in name:
            block = name.split(".{up}.")[0]
            has_attention = any(k.startswith(block + ".1.") for k in out if "{up}" not in k)
            name = name.replace("{up}", "2" if has_attention else "1")
        fixed[name] = tensor
    return fixed


def _unet_name(name: str, per_level: int) -> str:
    for diffusers, ldm in _UNET_FIXED.items():
        if name.startswith(diffusers + "."):
            return ldm + name[len(diffusers):]
    parts = name.split(".")
    if parts[0] == "down_blocks":
        level, kind = int(parts[1]), parts[2]
        first = 1 + level * (per_level + 1)  # input_blocks.0 is conv_in
        if kind == "resnets":
            return f"input_blocks.{first + int(parts[3])}.0." + _resnet_param(parts[4:], name)
        if kind == "attentions":
            return f"input_blocks.{first + int(parts[3])}.1." + ".".join(parts[4:])
        if kind == "downsamplers":  # down_blocks.L.downsamplers.0.conv.*
            return f"input_blocks.{first + per_level}.0.op." + ".".join(parts[5:])
    if parts[0] == "mid_block":
        if parts[1] == "resnets":  # resnet, attention, resnet
            return f"middle_block.{2 * int(parts[2])}." + _resnet_param(parts[3:], name)
        if parts[1] == "attentions":
            return "middle_block.1." + ".".join(parts[3:])
    if parts[0] == "up_blocks":
        level, kind = int(parts[1]), parts[2]
        first = level * (per_level + 1)
        if kind == "resnets":
            return f"output_blocks.{first + int(parts[3])}.0." + _resnet_param(parts[4:], name)
        if kind == "attentions":
            return f"output_blocks.{first + int(parts[3])}.1." + ".".join(parts[4:])
        if kind == "upsamplers":  # the slot ({up}) depends on the block's attention, filled in above
            return f"output_blocks.{first + per_level}.{{up}}.conv." + ".".join(parts[5:])
    raise KeyError(f"no original-layout name for UNet tensor {name}")


def _resnet_param(rest: list[str], name: str) -> str:
    if rest[0] not in _UNET_RESNET:
        raise KeyError(f"no original-layout name for UNet tensor {name}")
    return ".".join([_UNET_RESNET[rest[0]], *rest[1:]])


# --- VAE -------------------------------------------------------------------------------------

_VAE_ATTENTION = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_to_ldm(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """AutoencoderKL names -> `ldm.modules.diffusionmodules.model` Encoder/Decoder names."""
    levels = len(config["up_block_types"])
    out: dict[str, torch.Tensor] = {}
    for name, tensor in sd.items():
        part, rest = name.split(".", 1) if "." in name else (name, "")
        if part in ("quant_conv", "post_quant_conv"):
            out[name] = tensor
            continue
        if part not in ("encoder", "decoder"):
            raise KeyError(f"no original-layout name for VAE tensor {name}")
        p = rest.split(".")
        if p[0] in ("conv_in", "conv_out"):
            new = rest
        elif p[0] == "conv_norm_out":
            new = "norm_out." + ".".join(p[1:])
        elif p[0] == "down_blocks" and p[2] == "resnets":
            new = f"down.{p[1]}.block.{p[3]}." + _vae_resnet(p[4:])
        elif p[0] == "down_blocks" and p[2] == "downsamplers":
            new = f"down.{p[1]}.downsample." + ".".join(p[4:])
        elif p[0] == "up_blocks" and p[2] == "resnets":  # the decoder's levels run the other way
            new = f"up.{levels - 1 - int(p[1])}.block.{p[3]}." + _vae_resnet(p[4:])
        elif p[0] == "up_blocks" and p[2] == "upsamplers":
            new = f"up.{levels - 1 - int(p[1])}.upsample." + ".".join(p[4:])
        elif p[0] == "mid_block" and p[1] == "resnets":
            new = f"mid.block_{int(p[2]) + 1}." + _vae_resnet(p[3:])
        elif p[0] == "mid_block" and p[1] == "attentions":
            sub = ".".join(p[3:])
            for diffusers, ldm in _VAE_ATTENTION.items():
                if sub.startswith(diffusers + "."):
                    new = "mid.attn_1." + ldm + sub[len(diffusers):]
                    break
            else:
                raise KeyError(f"no original-layout name for VAE tensor {name}")
            if tensor.ndim == 2:  # the original attention is 1x1 convolutions
                tensor = tensor[:, :, None, None]
        else:
            raise KeyError(f"no original-layout name for VAE tensor {name}")
        out[f"{part}.{new}"] = tensor
    return out


def _vae_resnet(rest: list[str]) -> str:
    return ".".join(["nin_shortcut" if rest[0] == "conv_shortcut" else rest[0], *rest[1:]])


# --- Text encoders ---------------------------------------------------------------------------

def _clip_to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model as the original files store it: `text_model.*`
    (transformers >= 5.6 saves CLIPTextModel without that prefix), and for a model
    with projection its `text_projection.weight` beside it."""
    out = {}
    for name, tensor in sd.items():
        if name.startswith("text_projection."):
            out[name] = tensor
        else:
            out["text_model." + name.removeprefix("text_model.")] = tensor
    return out


_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _clip_to_open_clip(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers CLIP text model -> OpenCLIP's text tower (SDXL's CLIP-G, SD 2.x's encoder).

    q, k and v are one `in_proj_weight` (rows q, then k, then v); `text_projection`
    is a bare matrix applied as x @ P, i.e. the Linear weight transposed.
    """
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {
        "positional_embedding": sd.pop("embeddings.position_embedding.weight"),
        "token_embedding.weight": sd.pop("embeddings.token_embedding.weight"),
        "ln_final.weight": sd.pop("final_layer_norm.weight"),
        "ln_final.bias": sd.pop("final_layer_norm.bias"),
    }
    if "text_projection.weight" in sd:  # SDXL's CLIP-G has one; SD 2.x's encoder is used without
        out["text_projection"] = sd.pop("text_projection.weight").T
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for n in layers:
        src, dst = f"encoder.layers.{n}.", f"transformer.resblocks.{n}."
        for kind in ("weight", "bias"):
            out[dst + f"attn.in_proj_{kind}"] = torch.cat(
                [sd.pop(src + f"self_attn.{p}_proj.{kind}") for p in ("q", "k", "v")], dim=0
            )
            for hf, oc in _OPEN_CLIP_LAYER.items():
                out[dst + f"{oc}.{kind}"] = sd.pop(src + f"{hf}.{kind}")
    if sd:
        raise KeyError(f"no OpenCLIP name for text-encoder tensors {sorted(sd)[:5]}")
    return out


# --- SD3 MMDiT -------------------------------------------------------------------------------

def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    """diffusers' AdaLayerNormContinuous is (scale, shift); SD3's original is (shift, scale)."""
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def _mmdit_to_ldm(sd: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    """SD3Transformer2DModel names -> the original MMDiT names (`joint_blocks.N.{x,context}_block`)."""
    sd = dict(sd)
    out = {
        "pos_embed": sd.pop("pos_embed.pos_embed"),
        "x_embedder.proj.weight": sd.pop("pos_embed.proj.weight"),
        "x_embedder.proj.bias": sd.pop("pos_embed.proj.bias"),
        "context_embedder.weight": sd.pop("context_embedder.weight"),
        "context_embedder.bias": sd.pop("context_embedder.bias"),
        "final_layer.linear.weight": sd.pop("proj_out.weight"),
        "final_layer.linear.bias": sd.pop("proj_out.bias"),
        "final_layer.adaLN_modulation.1.weight": _swap_halves(sd.pop("norm_out.linear.weight")),
        "final_layer.adaLN_modulation.1.bias": _swap_halves(sd.pop("norm_out.linear.bias")),
    }
    for ours, theirs in (("timestep_embedder", "t_embedder"), ("text_embedder", "y_embedder")):
        for lin, mlp in (("linear_1", "0"), ("linear_2", "2")):
            for kind in ("weight", "bias"):
                out[f"{theirs}.mlp.{mlp}.{kind}"] = sd.pop(f"time_text_embed.{ours}.{lin}.{kind}")
    last = config["num_layers"] - 1
    for i in range(config["num_layers"]):
        b, x, c = f"transformer_blocks.{i}.", f"joint_blocks.{i}.x_block.", f"joint_blocks.{i}.context_block."
        for kind in ("weight", "bias"):
            out[x + f"attn.qkv.{kind}"] = torch.cat([sd.pop(b + f"attn.to_{p}.{kind}") for p in "qkv"])
            out[c + f"attn.qkv.{kind}"] = torch.cat([sd.pop(b + f"attn.add_{p}_proj.{kind}") for p in "qkv"])
            out[x + f"attn.proj.{kind}"] = sd.pop(b + f"attn.to_out.0.{kind}")
            out[x + f"adaLN_modulation.1.{kind}"] = sd.pop(b + f"norm1.linear.{kind}")
            out[x + f"mlp.fc1.{kind}"] = sd.pop(b + f"ff.net.0.proj.{kind}")
            out[x + f"mlp.fc2.{kind}"] = sd.pop(b + f"ff.net.2.{kind}")
            context_norm = sd.pop(b + f"norm1_context.linear.{kind}")
            if i == last:  # the last context block only modulates (AdaLayerNormContinuous)
                out[c + f"adaLN_modulation.1.{kind}"] = _swap_halves(context_norm)
            else:
                out[c + f"adaLN_modulation.1.{kind}"] = context_norm
                out[c + f"attn.proj.{kind}"] = sd.pop(b + f"attn.to_add_out.{kind}")
                out[c + f"mlp.fc1.{kind}"] = sd.pop(b + f"ff_context.net.0.proj.{kind}")
                out[c + f"mlp.fc2.{kind}"] = sd.pop(b + f"ff_context.net.2.{kind}")
            if b + f"attn2.to_q.{kind}" in sd:  # SD 3.5 medium's dual attention
                out[x + f"attn2.qkv.{kind}"] = torch.cat([sd.pop(b + f"attn2.to_{p}.{kind}") for p in "qkv"])
                out[x + f"attn2.proj.{kind}"] = sd.pop(b + f"attn2.to_out.0.{kind}")
        for norm, ln in (("norm_q", "ln_q"), ("norm_k", "ln_k")):  # SD 3.5's qk norms
            if b + f"attn.{norm}.weight" in sd:
                out[x + f"attn.{ln}.weight"] = sd.pop(b + f"attn.{norm}.weight")
                out[c + f"attn.{ln}.weight"] = sd.pop(b + f"attn.{norm.replace('norm_', 'norm_added_')}.weight")
            if b + f"attn2.{norm}.weight" in sd:
                out[x + f"attn2.{ln}.weight"] = sd.pop(b + f"attn2.{norm}.weight")
    if sd:
        raise KeyError(f"no original-layout name for transformer tensors {sorted(sd)[:5]}")
    return out
