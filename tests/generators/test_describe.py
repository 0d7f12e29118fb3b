"""/describe's generator side (family "describe"): the bundled emoji classifier reads
pictures the bundled models draw (and a heart drawn here) as their emoji, says when a
picture is no emoji, and a transformers image-to-text model (a tiny random-weight BLIP
built here, offline) gives captions through the same family."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from artbot.errors import InvalidRequest, ModelNotFound
from generators.base import GenerationRequest, Task, UnsupportedTask
from generators.bundled import BUNDLED_NAMES, available, bundled_path, classifier_path, family_of
from generators.registry import load_generator

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(classifier_path() is None, reason="bundled classifier not installed")]

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def describer():
    return load_generator("describe", "emoji-classifier", CPU, torch.float32)


def describe(gen, image: Image.Image, seed: int = 0) -> dict:
    result = gen.generate(GenerationRequest(task=Task.DESCRIBE, seeds=[seed], init_image=image))
    assert result.images == [] and result.seeds == []
    return result.params


def drawn_heart(size: int = 64) -> Image.Image:
    """A red heart as two circles and a triangle on white, drawn large then shrunk."""
    big = size * 4
    im = Image.new("RGB", (big, big), "white")
    draw = ImageDraw.Draw(im)
    red = (230, 30, 40)
    r = big * 0.22
    for cx in (big * 0.33, big * 0.67):
        draw.ellipse((cx - r, big * 0.2, cx + r, big * 0.2 + 2 * r), fill=red)
    draw.polygon([(big * 0.12, big * 0.42), (big * 0.88, big * 0.42), (big * 0.5, big * 0.88)], fill=red)
    return im.resize((size, size), Image.LANCZOS)


def photo_like(size: int = 96) -> Image.Image:
    """A made-up outdoor photo: a sky gradient over a green-brown field, grain and a blurred
    dark tree line; nothing of it is white background."""
    rng = np.random.default_rng(3)
    y = np.linspace(0, 1, size)[:, None, None]
    sky = np.array([90, 150, 230]) * (1 - y) + np.array([200, 220, 240]) * y
    field = np.array([70, 120, 40]) * (1 - y) + np.array([110, 90, 50]) * y
    img = np.where(y < 0.45, sky, field) * np.ones((1, size, 1))
    img[int(size * 0.38):int(size * 0.47)] *= 0.35 + 0.3 * rng.random((1, size, 1))
    img = img + rng.normal(0, 18, img.shape)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.8))


def test_the_classifier_is_bundled_apart_from_the_drawing_models():
    assert "emoji-classifier" not in BUNDLED_NAMES and "emoji-classifier" not in available()
    assert bundled_path("emoji-classifier") is None
    assert family_of("emoji-classifier") == "describe"
    assert family_of(str(classifier_path())) == "describe"
    assert (classifier_path() / "model.safetensors").stat().st_size < 2_000_000
    config = json.loads((classifier_path() / "config.json").read_text())
    # The subcategories are the ones the bundled models are conditioned on, plus "not an emoji".
    vae = json.loads((bundled_path("emoji-vae") / "config.json").read_text())
    assert config["sublabels"][:-1] == vae["sublabels"] and config["labels"] == vae["labels"]


@pytest.mark.skipif("emoji-diffusion" not in available(), reason="bundled models not installed")
def test_a_red_heart_drawn_by_emoji_diffusion_is_described_as_one(describer):
    diffusion = load_generator("pixel-diffusion", "emoji-diffusion", CPU, torch.float32)
    image = diffusion.generate(GenerationRequest(task=Task.DRAW, seeds=[0], prompt="a red heart",
                                                 width=64, height=64)).images[0]
    params = describe(describer, image)
    assert params["described_by"] == "emoji-classifier"
    assert 3 <= len(params["prompts"]) <= 4 and len(set(params["prompts"])) == len(params["prompts"])
    assert params["prompts"][0] == "a red heart", params
    assert params["labels"][0]["label"] == "heart" and params["colour"] == "red"
    assert params["notes"][0].startswith("Read as an emoji: heart")
    assert "not its details" in params["notes"][1]


def test_a_heart_drawn_with_pil_reads_as_a_red_heart(describer):
    params = describe(describer, drawn_heart())
    assert params["labels"][0]["label"] == "heart", params
    assert params["colour"] == "red" and "red heart" in params["prompts"][0]
    # The same picture in blue asks for blue ones: the colour is the image's own. (Flat
    # blue shapes read first as flags, and the heart comes fourth: see the model card.)
    blue = describe(describer, Image.fromarray(np.asarray(drawn_heart())[:, :, ::-1].copy()))
    assert blue["colour"] == "blue" and "a blue heart" in blue["prompts"], blue
    assert all("blue" in prompt for prompt in blue["prompts"])


def test_a_photo_is_said_not_to_look_like_an_emoji(describer):
    params = describe(describer, photo_like())
    assert params["notes"][0].startswith("This does not look like an emoji; the closest labels were ")
    assert "captioner" in params["notes"][0]
    assert 3 <= len(params["prompts"]) <= 4  # still something to draw from
    assert not describe(describer, drawn_heart())["notes"][0].startswith("This does not look")


def test_describe_is_all_the_family_does(describer):
    with pytest.raises(InvalidRequest, match="Describing needs an image"):
        describer.generate(GenerationRequest(task=Task.DESCRIBE, seeds=[0]))
    with pytest.raises(UnsupportedTask):
        describer.generate(GenerationRequest(task=Task.DRAW, seeds=[0], prompt="a red heart"))


# -- a transformers captioner ----------------------------------------------------------

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "a", "red", "heart", "blue", "cat",
         "face", "green", "apple", "of", "the", "picture", "yellow", "sun", "on", "white"]


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    """A random-weight BLIP captioner with a 21-word vocabulary, saved as a hub model is."""
    import transformers

    folder = tmp_path_factory.mktemp("blip")
    torch.manual_seed(0)
    config = transformers.BlipConfig(
        text_config=dict(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, bos_token_id=5,
                         pad_token_id=0, sep_token_id=3, eos_token_id=3),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=32)
    transformers.BlipForConditionalGeneration(config).save_pretrained(folder)
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(WORDS)}, bos_token="[DEC]")
    image_processor = transformers.BlipImageProcessor(size={"height": 32, "width": 32})
    transformers.BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_a_transformers_captioner_gives_its_captions_as_prompts(tiny_blip):
    gen = load_generator("describe", str(tiny_blip), CPU, torch.float32)
    params = describe(gen, drawn_heart(), seed=4)
    prompts = params["prompts"]
    assert params["described_by"] == str(tiny_blip)
    assert 1 <= len(prompts) <= 4 and len({p.lower() for p in prompts}) == len(prompts)
    # Random weights: the words are arbitrary, but they are the model's vocabulary, decoded.
    assert all(p and set(p.split()) <= set(WORDS[6:]) for p in prompts), prompts
    assert describe(gen, drawn_heart(), seed=4)["prompts"] == prompts  # reproducible


def test_a_missing_or_broken_captioner_is_refused_in_one_line(tmp_path):
    with pytest.raises(ModelNotFound) as missing:
        load_generator("describe", str(tmp_path / "nowhere"), CPU, torch.float32)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelNotFound) as bad:
        load_generator("describe", str(broken), CPU, torch.float32)
    for error in (missing.value, bad.value):
        assert "\n" not in str(error) and str(error).startswith("Could not load the captioner")
