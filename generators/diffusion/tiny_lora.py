"""A tiny random LoRA for a tiny pipeline, for tests and offline trials.

It is made the way a trainer makes one: peft wraps the denoiser's attention
projections (`to_q`, `to_k`, `to_v`, `to_out.0` of the UNet or transformer),
and optionally the CLIP text encoders' (`q_proj`, `k_proj`, `v_proj`,
`out_proj`), in LoRA layers; their weights are drawn from `seed` (lora_B
non-zero, so the LoRA visibly changes images; a freshly initialised LoRA has
lora_B = 0 and changes nothing), and the result is written as one
`.safetensors` file in one of the two layouts users bring:

- diffusers/peft (default): keys `unet.<module>.lora_A.weight` / `lora_B.weight`
  and the LoRA config in the header, as the pipeline class's `save_lora_weights`
  writes them at the end of diffusers' own training scripts;
- kohya/A1111 (`kohya=True`, SD 1.x/2.x): keys
  `lora_unet_<module_with_underscores>.lora_down.weight` / `lora_up.weight` /
  `.alpha`, and `lora_te_text_model_...` for the text encoder, the layout of
  LoRAs from Civitai.

Both layouts of one seed hold the same weights, so they give the same images.

    python -m generators.diffusion.tiny_lora PIPELINE_FOLDER OUT.safetensors [--kohya] [--text-encoder]
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import torch

DENOISER_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]  # UNet and transformer attention alike
TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]

# Standard deviation of the random lora_B entries (lora_A keeps peft's kaiming init):
# the tiny SD 1.x model's pixels then move by about 6 grey levels on average (3 at weight 0.5).
LORA_B_STD = 0.5


def build_tiny_lora(
    pipeline_folder: str | Path,
    out_file: str | Path,
    seed: int = 0,
    rank: int = 4,
    text_encoder: bool = False,
    kohya: bool = False,
) -> Path:
    """Make a LoRA for the pipeline in `pipeline_folder` and save it to `out_file` (one .safetensors file).

    Any tiny pipeline whose class loads LoRAs will do (tried: sd1, sdxl, sd3, flux):
    the LoRA covers its denoiser (UNet or transformer) and, with `text_encoder`,
    every CLIP text encoder the pipeline loads LoRAs into. `kohya` is for SD 1.x/2.x
    (kohya names SDXL's layers after the original UNet's blocks, not diffusers').
    The LoRA's alpha is half its rank (scale 0.5), so a loader that ignored alpha
    would give other images.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict

    pipeline_folder, out_file = Path(pipeline_folder), Path(out_file)
    index = json.loads((pipeline_folder / "model_index.json").read_text(encoding="utf-8"))
    pipeline_cls = getattr(importlib.import_module("diffusers"), index["_class_name"])
    loadable = getattr(pipeline_cls, "_lora_loadable_modules", None)
    if not loadable:
        raise ValueError(f"{index['_class_name']} does not load LoRAs")
    if kohya and index["_class_name"] != "StableDiffusionPipeline":
        raise ValueError("the kohya layout is written for SD 1.x/2.x pipelines only")
    components = [c for c in loadable if not c.startswith("text_encoder")]
    if text_encoder:
        components += [c for c in loadable if c.startswith("text_encoder") and index.get(c, [None])[0]]

    alpha = rank / 2
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # peft's kaiming init of lora_A
    layers: dict[str, dict] = {}
    configs: dict[str, LoraConfig] = {}
    for component in components:
        library, class_name = index[component]
        model = getattr(importlib.import_module(library), class_name).from_pretrained(
            pipeline_folder / component)
        targets = TEXT_ENCODER_TARGETS if component.startswith("text_encoder") else DENOISER_TARGETS
        config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True)
        # peft itself, not the models' `add_adapter`: transformers 5 wants a newer peft for that.
        inject_adapter_in_model(config, model, adapter_name="default")
        _randomise_lora_b(model, generator)
        state = get_peft_model_state_dict(model, adapter_name="default")
        if component.startswith("text_encoder") and not hasattr(model, "text_model"):
            # LoRA files name CLIP's layers `text_model.encoder...`, the layout before
            # transformers 5 flattened CLIPTextModel; write them that way.
            state = {f"text_model.{k}": v for k, v in state.items()}
        layers[component], configs[component] = state, config

    out_file.parent.mkdir(parents=True, exist_ok=True)
    if kohya:
        _save_kohya(layers, alpha, out_file)
    else:
        pipeline_cls.save_lora_weights(
            save_directory=out_file.parent,
            weight_name=out_file.name,
            safe_serialization=True,
            **{f"{c}_lora_layers": state for c, state in layers.items()},
            **{f"{c}_lora_adapter_metadata": configs[c].to_dict() for c in layers},
        )
    return out_file


def _randomise_lora_b(model: torch.nn.Module, generator: torch.Generator) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * LORA_B_STD)


def _save_kohya(layers: dict, alpha: float, out_file: Path) -> None:
    """kohya's names: the module path with '_' for '.', `lora_down` = lora_A, `lora_up` = lora_B."""
    from safetensors.torch import save_file

    prefixes = {"unet": "lora_unet_", "text_encoder": "lora_te_"}
    tensors: dict[str, torch.Tensor] = {}
    for component, state in layers.items():
        for key, value in state.items():
            module, _, kind = key.rpartition(".lora_")  # 'down_blocks.1...to_q', 'A.weight'
            name = prefixes[component] + module.replace(".", "_")
            tensors[f"{name}.lora_{'down' if kind == 'A.weight' else 'up'}.weight"] = value.contiguous()
            tensors[f"{name}.alpha"] = torch.tensor(float(alpha))
    save_file(tensors, str(out_file), metadata={"ss_network_module": "networks.lora",
                                                "ss_network_alpha": str(alpha)})


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Write a tiny random LoRA for the tiny pipeline.")
    parser.add_argument("pipeline_folder")
    parser.add_argument("out_file")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=4)
    parser.add_argument("--text-encoder", action="store_true")
    parser.add_argument("--kohya", action="store_true")
    args = parser.parse_args()
    print(build_tiny_lora(args.pipeline_folder, args.out_file, seed=args.seed, rank=args.rank,
                          text_encoder=args.text_encoder, kohya=args.kohya))
