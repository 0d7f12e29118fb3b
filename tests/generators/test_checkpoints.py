"""Single checkpoint files: architecture from the header, loading with a local config
folder, and the errors an operator sees.

The files are the tiny pipelines written in the original (LDM / A1111) layout by
`ldm_checkpoint.to_single_file`, so a round trip folder -> file -> pipeline must
give back every tensor and the same pixels. Everything runs with HF_HUB_OFFLINE=1
(tests/conftest.py sets it before the hub library loads)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from artbot.errors import ModelNotFound
from generators.diffusion.checkpoints import checkpoint_arch, load_checkpoint, read_tensor_names
from tests.generators.ldm_checkpoint import to_single_file

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny.build_tiny_pipeline's architecture -> the file's layout and what detection says.
LAYOUT = {"sd1": "sd1", "sd2-v": "sd2", "sdxl": "sdxl"}


@pytest.fixture(scope="module")
def folders(tiny_pipeline, tiny_models):
    """The session's tiny diffusers folders, one per architecture (never written to here)."""
    return {"sd1": tiny_pipeline, "sd2-v": tiny_models("sd2-v"), "sdxl": tiny_models("sdxl")}


@pytest.fixture(scope="module")
def files(folders, tmp_path_factory):
    root = tmp_path_factory.mktemp("checkpoint-files")
    return {arch: to_single_file(folder, root / f"tiny-{arch}.safetensors", LAYOUT[arch])
            for arch, folder in folders.items()}


def write(path: Path, names: list[str]) -> Path:
    """A small safetensors file with these tensor names (shapes do not matter to the markers)."""
    save_file({name: torch.zeros(2, 2) for name in names}, str(path), metadata={"format": "pt"})
    return path


# ---------------------------------------------------------------- reading the header

def test_the_header_gives_every_tensor_and_its_shape(files, tmp_path):
    shapes = read_tensor_names(files["sdxl"])
    with safe_open(str(files["sdxl"]), "pt") as f:
        assert shapes == {name: list(f.get_slice(name).get_shape()) for name in f.keys()}
    assert read_tensor_names(write(tmp_path / "m.safetensors", ["a", "b"])) == {"a": [2, 2], "b": [2, 2]}


def test_tiny_files_are_detected_by_architecture(files):
    assert {arch: checkpoint_arch(path) for arch, path in files.items()} == LAYOUT


@pytest.mark.parametrize("names, arch", [
    (["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
      "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight",
      "lora_unet_down_blocks_0_attentions_0_proj_in.alpha",
      "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"], "lora"),  # kohya
    (["unet.down_blocks.0.attentions.0.proj_in.lora_A.weight",
      "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight"], "lora"),  # peft / diffusers
    (["transformer.single_transformer_blocks.0.attn.to_k.lora.down.weight",
      "transformer.single_transformer_blocks.0.attn.to_k.lora.up.weight"], "lora"),  # old diffusers
    (["model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias", "first_stage_model.x"], "sd3"),
    (["joint_blocks.0.context_block.adaLN_modulation.1.bias", "pos_embed"], "sd3"),
    (["double_blocks.0.img_attn.norm.key_norm.scale", "img_in.weight"], "flux"),
    (["model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale", "vae.encoder.conv_in.weight"], "flux"),
    (["conditioner.embedders.0.model.text_projection", "model.diffusion_model.out.2.weight"], "sdxl-refiner"),
    (["cond_stage_model.model.token_embedding.weight", "model.diffusion_model.out.2.weight"], "sd2"),
    (["encoder.conv_in.weight", "decoder.conv_out.weight"], None),  # a bare VAE
])
def test_other_layouts_by_their_marker_tensors(tmp_path, names, arch):
    assert checkpoint_arch(write(tmp_path / "x.safetensors", names)) == arch


def test_a_unet_without_text_encoder_by_its_cross_attention_width(tmp_path):
    path = tmp_path / "unet-only.safetensors"
    save_file({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight":
               torch.zeros(320, 768)}, str(path))
    assert checkpoint_arch(path) == "sd1"


def test_random_bytes_and_cut_files_are_refused_with_one_clear_line(tmp_path, files):
    noise = tmp_path / "noise.safetensors"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelNotFound, match=r"is not a \.safetensors file \(its header cannot be read: "
                                            r"the length in its first 8 bytes does not fit the file"):
        checkpoint_arch(noise)

    data = files["sd1"].read_bytes()
    in_header = tmp_path / "in-header.safetensors"
    in_header.write_bytes(data[:200])
    with pytest.raises(ModelNotFound, match="is not a .safetensors file"):
        read_tensor_names(in_header)

    in_data = tmp_path / "in-data.safetensors"
    in_data.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelNotFound, match="is cut short") as err:
        read_tensor_names(in_data)
    assert "\n" not in str(err.value)

    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(ModelNotFound, match="is not a .safetensors file"):
        read_tensor_names(empty)


def test_a_ckpt_pickle_is_unknown_without_reading_it(tmp_path):
    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not read at all")
    assert read_tensor_names(ckpt) is None
    assert checkpoint_arch(ckpt) is None


# ---------------------------------------------------------------- loading

def reference(folder: Path):
    from diffusers import DiffusionPipeline

    return DiffusionPipeline.from_pretrained(str(folder), dtype=torch.float32)


def assert_same_weights(want: torch.nn.Module, got: torch.nn.Module, name: str) -> None:
    want, got = want.state_dict(), got.state_dict()
    assert want.keys() == got.keys(), name
    unequal = [k for k in want if not torch.equal(want[k], got[k])]
    assert not unequal, f"{name}: {unequal[:3]}"


def fresh_memory(pipe):
    """Every weight copied to newly allocated memory. CPU matmul kernels round differently on
    64-byte-aligned and unaligned data, and safetensors maps tensors at any offset, so equal
    weights straight from two files can draw pixels 1e-6 apart; copied, they draw the same."""
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for tensor in [*component.parameters(), *component.buffers()]:
                tensor.data = tensor.data.clone()
    return pipe


def draw(pipe, seed=5):
    fresh_memory(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe("a red fox", num_inference_steps=2, height=64, width=64, output_type="np",
                generator=torch.Generator().manual_seed(seed)).images


@pytest.mark.parametrize("arch", list(LAYOUT))
def test_a_single_file_loads_back_to_the_same_pipeline_offline(arch, folders, files):
    if arch == "sdxl":
        widths = [json.loads((folders[arch] / te / "config.json").read_text())["hidden_size"]
                  for te in ("text_encoder", "text_encoder_2")]
        assert widths[0] != widths[1], (
            "tiny sdxl: CLIP-G must be wider than CLIP-L (SDXL's are 768 and 1280). diffusers' "
            "from_single_file tells them apart only by width, and loads CLIP-L's weights into "
            "text_encoder_2 when they match")
    pipe = load_checkpoint(files[arch], LAYOUT[arch], config=str(folders[arch]), dtype=torch.float32)
    ref = reference(folders[arch])
    assert type(pipe) is type(ref)

    for name, component in ref.components.items():
        loaded = getattr(pipe, name)
        if isinstance(component, torch.nn.Module):
            assert_same_weights(component, loaded, name)
        elif hasattr(component, "get_vocab"):
            assert loaded.get_vocab() == component.get_vocab(), name
        elif component is not None:
            assert dict(loaded.config) == dict(component.config), name
    if arch == "sd2-v":  # a 2.x file is v-prediction because its config folder says so
        assert pipe.scheduler.config.prediction_type == "v_prediction"

    assert np.array_equal(draw(pipe), draw(ref))


def test_sd3_loads_back_and_may_leave_t5_out(tiny_models, tmp_path):
    """The MMDiT transformer, VAE and T5 round-trip; a file without T5 takes the folder's, or none."""
    folder = tiny_models("sd3")
    full = to_single_file(folder, tmp_path / "sd3.safetensors", "sd3")
    assert checkpoint_arch(full) == "sd3"
    ref = reference(folder)

    pipe = load_checkpoint(full, "sd3", config=str(folder), dtype=torch.float32)
    # (CLIP-G is not compared: diffusers tells it from CLIP-L by width, equal in the tiny model.)
    for name in ("transformer", "vae", "text_encoder_3"):
        assert_same_weights(getattr(ref, name), getattr(pipe, name), name)
    # diffusers loads an SD3 file's CLIP-L with the identity as its text projection.
    projection = pipe.text_encoder.text_projection.weight
    assert torch.equal(projection, torch.eye(*projection.shape))

    with safe_open(str(full), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("text_encoders.t5xxl.")}
    without_t5 = tmp_path / "sd3-no-t5.safetensors"
    save_file(tensors, str(without_t5))
    pipe = load_checkpoint(without_t5, "sd3", config=str(folder), dtype=torch.float32)
    assert_same_weights(ref.text_encoder_3, pipe.text_encoder_3, "text_encoder_3")  # the folder's

    configs_only = tmp_path / "sd3-configs"
    shutil.copytree(folder, configs_only, ignore=shutil.ignore_patterns("*.safetensors"))
    pipe = load_checkpoint(without_t5, "sd3", config=str(configs_only), dtype=torch.float32)
    assert pipe.text_encoder_3 is None and pipe.tokenizer_3 is None
    assert draw(pipe).shape == (1, 64, 64, 3)


def test_a_local_config_folder_needs_no_network(folders, files, monkeypatch):
    """Configs, tokenizers and text-encoder configs all come from the folder: no socket is opened."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access while loading: {args}")

    import diffusers.utils.hub_utils
    import huggingface_hub.constants

    # Online as far as the libraries know (conftest's HF_HUB_OFFLINE would hide a download attempt)...
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(diffusers.utils.hub_utils, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("ARTBOT_OFFLINE")
    # ...but with no network.
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for arch in ("sd1", "sd2-v"):
        pipe = load_checkpoint(files[arch], LAYOUT[arch], config=str(folders[arch]), dtype=torch.float32)
        assert type(pipe).__name__ == "StableDiffusionPipeline"


def test_configs_from_the_hub_cache_are_enough_without_weights(folders, files, tmp_path, monkeypatch):
    """A cached snapshot of the reference model that holds only its json and txt files loads the file."""
    import huggingface_hub.constants

    snapshot = tmp_path / "hub/models--stable-diffusion-v1-5--stable-diffusion-v1-5/snapshots/0123abcd"
    for src in folders["sd1"].rglob("*"):
        if src.suffix in (".json", ".txt"):
            dst = snapshot / src.relative_to(folders["sd1"])
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs/main").write_text("0123abcd")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    pipe = load_checkpoint(files["sd1"], "sd1", config=None, dtype=torch.float32, offline=True)
    assert np.array_equal(draw(pipe), draw(reference(folders["sd1"])))


def test_no_config_offline_says_what_to_do(files, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFound) as err:
        load_checkpoint(files["sdxl"], "sdxl", config=None, dtype=torch.float32)
    message = str(err.value)
    assert "\n" not in message
    assert 'set `config = "/path/to/a/diffusers/folder"` for this model in artbot.toml' in message.lower()
    assert "run once with internet" in message
    assert "stabilityai/stable-diffusion-xl-base-1.0" in message


def test_a_config_folder_of_another_architecture_is_refused(folders, files):
    with pytest.raises(ModelNotFound, match="SDXL checkpoint, but its config .* describes a StableDiffusionPipeline"):
        load_checkpoint(files["sdxl"], "sdxl", config=str(folders["sd1"]), dtype=torch.float32)
    with pytest.raises(ModelNotFound, match="is not a diffusers folder"):
        load_checkpoint(files["sd1"], "sd1", config=str(files["sd1"].parent), dtype=torch.float32)


def test_a_file_missing_tensors_is_refused_at_load_time(folders, files, tmp_path):
    with safe_open(str(files["sd1"]), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    del tensors["cond_stage_model.transformer.text_model.final_layer_norm.weight"]
    cut = tmp_path / "missing.safetensors"
    save_file(tensors, str(cut))
    with pytest.raises(ModelNotFound, match="lacks 1 tensor of text_encoder"):
        load_checkpoint(cut, "sd1", config=str(folders["sd1"]), dtype=torch.float32)


def test_a_part_the_file_leaves_out_comes_from_the_config_folder(folders, files, tmp_path):
    with safe_open(str(files["sd1"]), "pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if not k.startswith("first_stage_model.")}
    no_vae = tmp_path / "no-vae.safetensors"
    save_file(tensors, str(no_vae))
    pipe = load_checkpoint(no_vae, "sd1", config=str(folders["sd1"]), dtype=torch.float32)
    assert_same_weights(reference(folders["sd1"]).vae, pipe.vae, "vae")

    configs_only = tmp_path / "sd1-configs"
    shutil.copytree(folders["sd1"], configs_only, ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelNotFound, match="holds no weights for its vae .* full diffusers"):
        load_checkpoint(no_vae, "sd1", config=str(configs_only), dtype=torch.float32)


def test_a_flux_transformer_alone_needs_a_full_folder(tmp_path):
    """Most Flux files hold only the transformer: its VAE and text encoders must come from somewhere."""
    flux = write(tmp_path / "flux-finetune.safetensors",
                 ["double_blocks.0.img_attn.norm.key_norm.scale", "guidance_in.in_layer.bias"])
    assert checkpoint_arch(flux) == "flux"
    configs = tmp_path / "flux-configs"
    configs.mkdir()
    (configs / "model_index.json").write_text(json.dumps({
        "_class_name": "FluxPipeline", "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"],
    }))
    with pytest.raises(ModelNotFound, match="holds no weights for its vae .* full diffusers Flux model"):
        load_checkpoint(flux, "flux", config=str(configs), dtype=torch.float32)


def test_a_lora_or_an_unknown_file_is_not_loaded_as_a_model(tmp_path, folders):
    lora = write(tmp_path / "style.safetensors", ["lora_unet_x.lora_down.weight", "lora_unet_x.lora_up.weight"])
    with pytest.raises(ModelNotFound, match="is a LoRA, not a model"):
        load_checkpoint(lora, checkpoint_arch(lora), config=str(folders["sd1"]), dtype=torch.float32)
    vae = write(tmp_path / "vae.safetensors", ["encoder.conv_in.weight"])
    with pytest.raises(ModelNotFound, match=r"set `arch = "):
        load_checkpoint(vae, checkpoint_arch(vae), config=str(folders["sd1"]), dtype=torch.float32)


def test_the_module_imports_without_torch():
    import subprocess
    import sys

    code = ("import sys; import generators.diffusion.checkpoints; "
            "sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)")
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ}).returncode == 0
