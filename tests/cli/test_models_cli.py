"""The model catalogue as an operator uses it: Civitai-style single files of SD 1.x
and SDXL named in artbot.toml with a local config folder draw with the network cut;
`artbot models` shows each model's architecture, defaults, memory and whether it
is loaded; a LoRA given as the model, or a file without configs, is one clear line.
In-process through `cli.main.main`, like tests/cli/test_architectures_cli.py."""

import socket

import pytest
from PIL import Image

from tests.generators.ldm_checkpoint import to_single_file


@pytest.fixture
def no_network(monkeypatch):
    """Every TCP connection fails, as on a machine with the cable pulled; the hub
    switches are off, as a user who never set them has them."""
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("ARTBOT_OFFLINE", raising=False)


@pytest.fixture
def civitai(tmp_path, tiny_models, tiny_pipeline, monkeypatch):
    """An SD 1.x and an SDXL checkpoint as single files, each with a config folder, a
    LoRA folder, and the catalogue naming them."""
    files = tmp_path / "checkpoints"
    files.mkdir()
    sd15 = to_single_file(tiny_pipeline, files / "dreamy_v8.safetensors", "sd1")
    xl = to_single_file(tiny_models("sdxl"), files / "ponyish_xl.safetensors", "sdxl")
    from generators.diffusion.tiny_lora import build_tiny_lora

    build_tiny_lora(tiny_pipeline, tmp_path / "loras" / "grain.safetensors")
    (tmp_path / "artbot.toml").write_text(f'''
lora_dir = "{tmp_path / 'loras'}"
[models.dreamy]
source = "{sd15}"
config = "{tiny_pipeline}"
description = "soft pastel dreams"
sampler = "DPM++ 2M Karras"
loras = ["grain"]
[models.pony]
source = "{xl}"
config = "{tiny_models('sdxl')}"
steps = 6
clip_skip = 2
[models.lost]
source = "{files / 'lost.safetensors'}"
''')
    monkeypatch.setenv("ARTBOT_CONFIG", str(tmp_path / "artbot.toml"))
    return {"sd15": sd15, "xl": xl}


def test_single_file_checkpoints_draw_with_the_network_cut(artbot, civitai, no_network,
                                                           tmp_path):
    code, out, err = artbot("draw", "a red fox <lora:grain:0.7>", "--model", "dreamy",
                            "--steps", "3", "--seed", "1", "--out", "sd15.png")
    assert code == 0, err
    with Image.open(tmp_path / "sd15.png") as im:
        assert im.size == (64, 64)
        assert "Sampler: DPM++ 2M Karras" in im.info["parameters"]
        assert im.info["parameters"].startswith("a red fox <lora:grain:0.7>")
    code, out, err = artbot("draw", "a red fox", "--model", "pony", "--seed", "1",
                            "--out", "xl.png")
    assert code == 0, err
    with Image.open(tmp_path / "xl.png") as im:
        assert im.size == (96, 96)  # SDXL's own size, from its config folder
        assert "Steps: 6," in im.info["parameters"] and "Clip skip: 2" in im.info["parameters"]


def test_what_cannot_load_says_why_in_one_line(artbot, civitai, no_network, tmp_path):
    # A checkpoint outside the catalogue, with no config folder and no hub: what to do.
    stray = tmp_path / "stray_xl.safetensors"
    stray.write_bytes(civitai["xl"].read_bytes())
    code, out, err = artbot("draw", "a fox", "--model", str(stray), "--steps", "2")
    error = err.splitlines()[-1]  # (the lines before it say the job was queued and ran)
    assert code == 1 and error.startswith("error: job 1 failed: Cannot load stray_xl.safetensors")
    assert 'Set `config = "/path/to/a/diffusers/folder"` for this model in artbot.toml' in error
    # A LoRA given as the model.
    lora = tmp_path / "loras" / "grain.safetensors"
    code, out, err = artbot("draw", "a fox", "--model", str(lora), "--steps", "2")
    assert code == 2 and err.startswith("error: grain.safetensors is a LoRA, not a model")
    assert "<lora:grain:0.8>" in err and "\n" not in err
    code, out, err = artbot("draw", "a fox <lora:nope>", "--model", "dreamy")
    assert code == 2 and "No LoRA named 'nope'; LoRAs: grain." in err


def test_artbot_models_lists_the_catalogue(artbot, civitai):
    code, out, err = artbot("models")
    assert code == 0, err
    blocks = {b.split()[0]: b for b in out.strip().split("\n\n")}
    assert list(blocks)[:1] == ["emoji-diffusion"] and "(default)" in blocks["emoji-diffusion"]
    dreamy = blocks["dreamy"]
    assert f"<- file {civitai['sd15']}" in dreamy
    assert "soft pastel dreams" in dreamy
    assert "architecture: Stable Diffusion 1.x" in dreamy
    assert "defaults: 64x64, 30 steps, guidance 7.5, sampler DPM++ 2M Karras" in dreamy
    assert "LoRAs allowed: grain" in dreamy and "loaded: no" in dreamy
    assert "can: negative prompt, vary and stylize, samplers, LoRAs" in dreamy
    assert "memory: " in dreamy and "in float16 (GPU)" in dreamy
    pony = blocks["pony"]
    assert "architecture: Stable Diffusion XL" in pony and "96x96, 6 steps, guidance 7" in pony
    assert "cannot be used" not in out
    assert "lost" in blocks and "memory: unknown" in blocks["lost"]
    assert "emoji-gan" in blocks and "artbot GAN" in blocks["emoji-gan"]
