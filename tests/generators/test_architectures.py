"""The tiny random-weight pipelines of every architecture, saved to disk and loaded
through the same loader users use: each draws at its own native size, repeats
itself for a seed, and turns into its image-to-image pipeline."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from generators.diffusion.loading import load_pipeline
from generators.diffusion.tiny import ARCHITECTURES, build_tiny_pipeline

pytestmark = pytest.mark.usefixtures("one_thread")

# What each tiny architecture draws when given no height or width, and as what class it loads.
NATIVE_SIZE = {"sd1": 64, "sd2-v": 48, "sdxl": 96, "sd3": 80, "flux": 128, "pixart-sigma": 128}
PIPELINE = {
    "sd1": "StableDiffusionPipeline",
    "sd2-v": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
    "pixart-sigma": "PixArtSigmaPipeline",
}
WITH_IMAGE_TO_IMAGE = ("sd1", "sd2-v", "sdxl", "sd3", "flux")


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    """Every architecture built once, plus SD3 saved without its T5 encoder."""
    root = tmp_path_factory.mktemp("architectures")
    built = {arch: build_tiny_pipeline(root / arch, arch=arch) for arch in ARCHITECTURES}
    built["sd3-no-t5"] = build_tiny_pipeline(root / "sd3-no-t5", arch="sd3", with_t5=False)
    return built


@pytest.fixture(scope="module")
def pipes(folders) -> dict:
    """Each architecture loaded through `load_pipeline`, lazily and once."""
    loaded: dict = {}

    def get(arch: str):
        if arch not in loaded:
            loaded[arch], _ = load_pipeline(str(folders[arch]), torch.device("cpu"), torch.float32)
        return loaded[arch]

    return get


def seeded(seed: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def source_image(width: int = 96, height: int = 64) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_each_architecture_loads_as_its_own_pipeline(pipes, arch):
    assert type(pipes(arch)).__name__ == PIPELINE[arch]


def test_the_architectures_are_told_apart_by_their_configs(pipes):
    sd1, sd2 = pipes("sd1"), pipes("sd2-v")
    assert sd1.scheduler.config.prediction_type == "epsilon"
    assert sd2.scheduler.config.prediction_type == "v_prediction"
    assert sd2.text_encoder.config.hidden_act == "gelu"
    assert sd2.text_encoder.config.hidden_size != sd1.text_encoder.config.hidden_size
    assert sd2.unet.config.cross_attention_dim == sd2.text_encoder.config.hidden_size

    sdxl = pipes("sdxl")
    assert sdxl.unet.config.addition_embed_type == "text_time"
    assert type(sdxl.text_encoder_2).__name__ == "CLIPTextModelWithProjection"

    sd3 = pipes("sd3")
    assert [type(e).__name__ for e in (sd3.text_encoder, sd3.text_encoder_2, sd3.text_encoder_3)] == [
        "CLIPTextModelWithProjection", "CLIPTextModelWithProjection", "T5EncoderModel"]
    assert type(pipes("flux").text_encoder_2).__name__ == "T5EncoderModel"
    assert type(pipes("pixart-sigma").text_encoder).__name__ == "T5EncoderModel"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_draws_at_its_native_size_and_a_seed_repeats_its_pixels(pipes, arch):
    pipe = pipes(arch)
    a = pipe("a red fox", num_inference_steps=2, generator=seeded(7)).images[0]
    b = pipe("a red fox", num_inference_steps=2, generator=seeded(7)).images[0]
    c = pipe("a red fox", num_inference_steps=2, generator=seeded(8)).images[0]
    assert a.size == (NATIVE_SIZE[arch], NATIVE_SIZE[arch])
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_native_sizes_differ_except_where_a_pipeline_fixes_them():
    # Flux always draws 128 x the VAE factor (so factor 1); PixArt's resolution
    # binning needs a sample size of 32/64/128/256, so it shares 128 with Flux.
    sizes = [size for arch, size in NATIVE_SIZE.items() if arch != "pixart-sigma"]
    assert len(set(sizes)) == len(sizes)
    assert max(NATIVE_SIZE.values()) <= 128


@pytest.mark.parametrize("arch", WITH_IMAGE_TO_IMAGE)
def test_image_to_image_keeps_the_input_size(pipes, arch):
    from diffusers import AutoPipelineForImage2Image

    vary = AutoPipelineForImage2Image.from_pipe(pipes(arch))
    vary.set_progress_bar_config(disable=True)
    source = source_image(96, 64)
    out = vary("a red fox", image=source, strength=0.6, num_inference_steps=2,
               generator=seeded(3), width=96, height=64).images[0]
    assert out.size == source.size
    again = vary("a red fox", image=source, strength=0.6, num_inference_steps=2,
                 generator=seeded(3), width=96, height=64).images[0]
    assert out.tobytes() == again.tobytes()


@pytest.mark.parametrize("arch", ["sd3", "flux"])
def test_sd3_and_flux_image_to_image_draw_at_native_size_unless_told(pipes, arch):
    """Unlike SD and SDXL, their img2img resizes the input to the native size when
    no height/width is passed, so callers must pass the input's size."""
    from diffusers import AutoPipelineForImage2Image

    vary = AutoPipelineForImage2Image.from_pipe(pipes(arch))
    vary.set_progress_bar_config(disable=True)
    out = vary("a red fox", image=source_image(96, 64), strength=0.6, num_inference_steps=2,
               generator=seeded(3)).images[0]
    assert out.size == (NATIVE_SIZE[arch], NATIVE_SIZE[arch])


def test_t5_tokenizer_spells_english_without_unknowns_and_survives_saving(pipes):
    tokenizer = pipes("pixart-sigma").tokenizer  # as loaded back from the folder
    prompt = "The quick brown fox jumps over the lazy dog; 1234567890 (hello)? A café!"
    ids = tokenizer(prompt).input_ids
    assert tokenizer.unk_token_id not in ids
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == prompt
    assert (tokenizer.pad_token, tokenizer.eos_token, tokenizer.unk_token) == ("<pad>", "</s>", "<unk>")
    assert len(tokenizer("a red fox").input_ids) < 10  # whole words are pieces


def test_sd3_without_t5_is_saved_without_it_and_loads_when_told_so(folders):
    from diffusers import AutoPipelineForText2Image

    folder = folders["sd3-no-t5"]
    assert not (folder / "text_encoder_3").exists() and not (folder / "tokenizer_3").exists()
    index = json.loads((folder / "model_index.json").read_text())
    assert index["text_encoder_3"] == [None, None] and index["tokenizer_3"] == [None, None]
    # SD3 does not list its T5 as optional, so from_pretrained must be told it is absent.
    with pytest.raises(ValueError, match="expected"):
        AutoPipelineForText2Image.from_pretrained(str(folder))
    pipe = AutoPipelineForText2Image.from_pretrained(str(folder), text_encoder_3=None, tokenizer_3=None)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red fox", num_inference_steps=2, generator=seeded(1)).images[0]
    assert image.size == (NATIVE_SIZE["sd3"], NATIVE_SIZE["sd3"])


def test_load_pipeline_loads_sd3_without_t5(folders):
    pipe, _ = load_pipeline(str(folders["sd3-no-t5"]), torch.device("cpu"), torch.float32)
    assert pipe.text_encoder_3 is None


def test_unknown_architectures_and_t5_less_non_sd3_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture"):
        build_tiny_pipeline(tmp_path / "x", arch="sd4")
    with pytest.raises(ValueError, match="sd3 only"):
        build_tiny_pipeline(tmp_path / "x", arch="flux", with_t5=False)
    assert not (tmp_path / "x").exists()
