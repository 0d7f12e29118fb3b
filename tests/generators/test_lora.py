"""LoRAs applied for one call: what a user notices is that the LoRA changes the
picture, that the next picture without it is exactly the one they had before,
and that a wrong file is named in a plain sentence. On the tiny SD 1.x and
SDXL pipelines, with tiny LoRAs made through peft (`generators.diffusion.tiny_lora`)."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from generators.base import UnsupportedTask
from generators.diffusion import lora as lora_module
from generators.diffusion.loading import load_pipeline
from generators.diffusion.lora import UnusableLora, applied_loras, is_lora_file, lora_base_model
from generators.diffusion.tiny_lora import build_tiny_lora

pytestmark = pytest.mark.usefixtures("one_thread")

CPU, F32 = torch.device("cpu"), torch.float32
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loras(tiny_pipeline, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return {
        "style": build_tiny_lora(tiny_pipeline, folder / "style.safetensors", seed=1, text_encoder=True),
        "style_kohya": build_tiny_lora(tiny_pipeline, folder / "style_kohya.safetensors", seed=1,
                                       text_encoder=True, kohya=True),
        "detail": build_tiny_lora(tiny_pipeline, folder / "detail.safetensors", seed=2),
    }


@pytest.fixture(scope="module")
def sdxl_lora(tiny_models, tmp_path_factory):
    return build_tiny_lora(tiny_models("sdxl"), tmp_path_factory.mktemp("sdxl-lora") / "xl.safetensors",
                           seed=3, text_encoder=True)


@pytest.fixture
def pipe(tiny_pipeline):
    """A freshly loaded pipeline per test: each starts from "no LoRA ever loaded"."""
    return load_pipeline(str(tiny_pipeline), CPU, F32)[0]


def draw(pipe, size=32, **kw) -> bytes:
    with torch.inference_mode():
        image = pipe("a red fox", num_inference_steps=2, width=size, height=size,
                     generator=torch.Generator().manual_seed(7), **kw).images[0]
    return image.tobytes()


def test_a_lora_changes_the_image_and_leaves_no_trace(pipe, loras):
    before = draw(pipe)
    with applied_loras(pipe, [("style", loras["style"], 1.0)]):
        full = draw(pipe)
    with applied_loras(pipe, [("style", loras["style"], 0.5)]):
        half = draw(pipe)
    after = draw(pipe)
    assert full != before and half != before and half != full
    assert after == before  # byte for byte, though the adapter stays loaded (disabled)
    with applied_loras(pipe, [("style", loras["style"], 1.0)]):
        assert draw(pipe) == full  # the kept adapter gives what the first load gave


def test_two_loras_at_once_and_the_same_file_twice_adds_up(pipe, loras):
    before = draw(pipe)
    with applied_loras(pipe, [("style", loras["style"], 1.0)]):
        style = draw(pipe)
    with applied_loras(pipe, [("style", loras["style"], 1.0), ("detail", loras["detail"], 0.8)]):
        both = draw(pipe)
    assert both not in (before, style)
    with applied_loras(pipe, [("a", loras["style"], 0.5), ("b", loras["style"], 0.5)]):
        assert draw(pipe) == style
    assert draw(pipe) == before


def test_the_kohya_layout_of_civitai_files_gives_the_same_images(pipe, loras):
    assert is_lora_file(loras["style_kohya"])
    with applied_loras(pipe, [("style", loras["style"], 1.0)]):
        diffusers_layout = draw(pipe)
    with applied_loras(pipe, [("style", loras["style_kohya"], 1.0)]):
        kohya_layout = draw(pipe)
    assert kohya_layout == diffusers_layout


def test_img2img_made_from_the_pipeline_shares_its_loras_and_both_stay_clean(pipe, loras):
    from diffusers import AutoPipelineForImage2Image

    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    source = Image.new("RGB", (32, 32), (200, 90, 30))

    def vary() -> bytes:
        with torch.inference_mode():
            return img2img("a red fox", image=source, strength=0.8, num_inference_steps=3,
                           generator=torch.Generator().manual_seed(7)).images[0].tobytes()

    drawn, varied = draw(pipe), vary()
    with applied_loras(img2img, [("style", loras["style"], 1.0)]):
        assert vary() != varied
    with applied_loras(pipe, [("style", loras["style"], 1.0), ("detail", loras["detail"], 1.0)]):
        assert draw(pipe) != drawn
    assert draw(pipe) == drawn and vary() == varied


def test_sdxl_images_after_a_lora_are_the_ones_before(tiny_models, sdxl_lora):
    # SDXL is where peft's freezing of the model's weights would show (see lora.py); at
    # 64 px it does, without `_restore_requires_grad`.
    xl = load_pipeline(str(tiny_models("sdxl")), CPU, F32)[0]
    before = draw(xl, size=64)
    with applied_loras(xl, [("xl", sdxl_lora, 1.0)]):
        assert draw(xl, size=64) != before
    assert draw(xl, size=64) == before
    assert lora_base_model(sdxl_lora) == "SDXL"


def test_wrong_files_are_named_in_a_plain_sentence(pipe, loras, sdxl_lora, tiny_pipeline, tmp_path):
    before = draw(pipe)
    checkpoint = tiny_pipeline / "unet" / "diffusion_pytorch_model.safetensors"
    with pytest.raises(UnusableLora, match=r"LoRA file unet .* is not a LoRA \(.*full model checkpoint"):
        with applied_loras(pipe, [("unet", checkpoint, 1.0)]):
            pass
    with pytest.raises(UnusableLora, match=r"LoRA file xl \(xl.safetensors\) is not a LoRA for this "
                                           r"model \(it looks like a LoRA for SDXL; its layer shapes"):
        with applied_loras(pipe, [("style", loras["style"], 1.0), ("xl", sdxl_lora, 1.0)]):
            pass
    with pytest.raises(UnusableLora, match="does not exist"):
        with applied_loras(pipe, [("gone", tmp_path / "gone.safetensors", 1.0)]):
            pass
    pickled = tmp_path / "old.ckpt"
    pickled.write_bytes(b"\x80\x04not really")
    with pytest.raises(UnusableLora, match="not a .safetensors file"):
        with applied_loras(pipe, [("old", pickled, 1.0)]):
            pass
    # Nothing of the failed loads (nor of the good LoRA loaded before one) shows.
    assert draw(pipe) == before


def test_an_sd1_lora_on_sdxl_is_refused(tiny_models, loras):
    xl = load_pipeline(str(tiny_models("sdxl")), CPU, F32)[0]
    with pytest.raises(UnusableLora, match="is not a LoRA for this model"):
        with applied_loras(xl, [("style", loras["detail"], 1.0)]):
            pass


def test_a_pipeline_without_lora_support_says_so():
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 8),
                       down_block_types=("DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    pipe = DDPMPipeline(unet=unet, scheduler=DDPMScheduler())
    with pytest.raises(UnsupportedTask, match=r"\(DDPMPipeline\) cannot use LoRAs"):
        with applied_loras(pipe, [("style", "style.safetensors", 1.0)]):
            pass
    with applied_loras(pipe, []):  # no LoRAs asked for: nothing to refuse
        pass


def test_only_the_most_recently_used_adapters_stay_loaded(pipe, loras, monkeypatch):
    monkeypatch.setattr(lora_module, "KEEP_LOADED", 1)
    before = draw(pipe)
    with applied_loras(pipe, [("style", loras["style"], 1.0)]):
        pass
    with applied_loras(pipe, [("detail", loras["detail"], 1.0)]):
        pass
    assert lora_module._loaded(pipe) == {lora_module.adapter_name(loras["detail"])}
    assert draw(pipe) == before


def test_lora_files_are_told_from_the_header_alone(loras, tiny_pipeline, tmp_path):
    assert is_lora_file(loras["style"]) and is_lora_file(loras["style_kohya"])
    assert not is_lora_file(tiny_pipeline / "unet" / "diffusion_pytorch_model.safetensors")
    (tmp_path / "notes.safetensors").write_text("not a safetensors file")
    assert not is_lora_file(tmp_path / "notes.safetensors")
    assert not is_lora_file(tmp_path / "missing.safetensors")
    # The model loader may ask without importing torch.
    code = ("import sys; from generators.diffusion.lora import is_lora_file; "
            f"assert is_lora_file({str(loras['style'])!r}); assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_loras_applied_under_inference_mode_as_the_worker_does(pipe, loras):
    with torch.inference_mode(), applied_loras(pipe, [("style", loras["style"], 1.0)]):
        inside = draw(pipe)
    # Outside inference mode peft sets requires_grad on the adapters it activates, which
    # adapters created as inference tensors would refuse.
    with applied_loras(pipe, [("style", loras["style"], 1.0), ("detail", loras["detail"], 1.0)]):
        pass
    with torch.inference_mode(), applied_loras(pipe, [("style", loras["style"], 1.0)]):
        assert draw(pipe) == inside
