"""The GAN family: trained for real on a tiny synthetic set (coloured circles and
squares), saved by the training harness, and loaded through the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

from artbot.errors import InvalidRequest, UserError
from generators.base import GenerationRequest, Task, UnsupportedTask
from generators.datasets import to_tensor
from generators.gan.model import truncate
from generators.gan.train import augment
from generators.registry import load_generator
from generators.training import train
from tests.generators.test_vae import SIZE, shapes_dataset

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 8, "d_width": 8, "z_dim": 16, "batch_size": 16}


@pytest.fixture(scope="module")
def data():
    return shapes_dataset()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("gan") / "model"
    train("gan", "unused", out, epochs=2, size=SIZE, seed=0, dataset=data, options=TINY, progress=False)
    return out


@pytest.fixture(scope="module")
def gan(model_dir):
    return load_generator("gan", str(model_dir), torch.device("cpu"), torch.float32)


def draw(gen, seeds, prompt="red circle", **kw):
    return gen.generate(GenerationRequest(task=Task.DRAW, seeds=seeds, prompt=prompt,
                                          width=kw.pop("width", SIZE), height=kw.pop("height", SIZE),
                                          **kw))


def vary(gen, seeds, source_seed, strength, prompt="red circle", **options):
    init = Image.new("RGB", (SIZE, SIZE), "white")  # the worker sends the source image too
    if source_seed is not None:
        options["source_seed"] = source_seed
    return gen.generate(GenerationRequest(task=Task.VARY, seeds=seeds, prompt=prompt, init_image=init,
                                          strength=strength, width=SIZE, height=SIZE, options=options))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_training_writes_the_ema_generator(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["family"] == "gan"
    assert config["model"]["gan"]["n_classes"] == 2
    assert config["model"]["gan"]["image_size"] == SIZE
    assert (model_dir / "samples" / "epoch-0002.png").is_file()
    weights = load_file(str(model_dir / "model.safetensors"))
    assert "from_z.weight" in weights and not any(k.startswith("D.") for k in weights)
    # The exported weights are the EMA generator's, not the trained one's.
    state = torch.load(model_dir / "training-state.pt", weights_only=False)
    assert torch.equal(weights["from_z.weight"], state["modules"]["G_ema"]["from_z.weight"])
    assert not torch.equal(weights["from_z.weight"], state["modules"]["G"]["from_z.weight"])


def test_draw_one_image_per_seed_at_the_requested_size(gan):
    calls = []
    result = gan.generate(GenerationRequest(task=Task.DRAW, seeds=[1, 2, 3], prompt="blue square",
                                            width=48, height=40),
                          lambda step, total: calls.append((step, total)))
    assert result.seeds == [1, 2, 3]
    assert [im.size for im in result.images] == [(48, 40)] * 3
    assert result.params == {"label": "square", "colour": "blue", "truncation": 0.7}
    assert calls == [(1, 1)]


def test_same_seed_same_image_other_seed_other_image(gan):
    a = draw(gan, [7]).images[0]
    assert draw(gan, [7]).images[0].tobytes() == a.tobytes()
    assert np.abs(pixels(a) - pixels(draw(gan, [8]).images[0])).mean() > 0.5
    # An image does not depend on the rest of its batch.
    assert draw(gan, [5, 7, 9]).images[1].tobytes() == a.tobytes()
    # The prompt's label and the truncation change the image.
    assert draw(gan, [7], prompt="square").images[0].tobytes() != a.tobytes()
    assert draw(gan, [7], options={"truncation": 2.0}).images[0].tobytes() != a.tobytes()
    with pytest.raises(InvalidRequest):
        draw(gan, [7], options={"truncation": 0})


def test_vary_moves_away_from_the_source_as_strength_grows(gan):
    source = draw(gan, [42]).images[0]
    assert vary(gan, [5], 42, 0.0).images[0].tobytes() == source.tobytes()
    close, far = vary(gan, [5], 42, 0.35).images[0], vary(gan, [5], 42, 0.7).images[0]
    assert vary(gan, [5], 42, 0.35).images[0].tobytes() == close.tobytes()
    d_close = np.abs(pixels(close) - pixels(source)).mean()
    d_far = np.abs(pixels(far) - pixels(source)).mean()
    assert 0 < d_close < d_far
    result = vary(gan, [5, 6], 42, 0.5)
    assert result.seeds == [5, 6] and len(result.images) == 2
    assert result.params["source_seed"] == 42 and result.params["strength"] == 0.5


def test_vary_refuses_an_image_it_did_not_draw(gan):
    with pytest.raises(UnsupportedTask, match="emoji-vae"):
        vary(gan, [5], None, 0.5)


def test_truncation_redraws_only_components_beyond_the_threshold():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1000, generator=g)
    t = truncate(z, 0.7, torch.Generator().manual_seed(1))
    assert t.abs().max() <= 0.7
    inside = z.abs() <= 0.7
    assert torch.equal(t[inside], z[inside])
    assert torch.equal(truncate(z, None, g), z)


def test_augment_keeps_shape_and_is_differentiable():
    x = torch.zeros(4, 3, SIZE, SIZE, requires_grad=True)
    y = augment(x, "translation,color", 0.125)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None
    assert torch.equal(augment(x, ""), x)


def test_training_is_deterministic(tmp_path, data, model_dir):
    again = train("gan", "unused", tmp_path / "again", epochs=2, size=SIZE, seed=0, dataset=data,
                  options=TINY, progress=False)
    assert (again / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_resume_continues_to_the_next_epoch(tmp_path, data, model_dir):
    out = tmp_path / "run"
    train("gan", "unused", out, epochs=1, size=SIZE, seed=0, dataset=data, options=TINY, progress=False)
    assert not (out / "samples" / "epoch-0002.png").exists()
    train("gan", "unused", out, epochs=2, size=SIZE, seed=0, dataset=data, options=TINY,
          progress=False, resume=True)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["epochs"] == 2 and config["training"]["steps"] == 6
    assert (out / "samples" / "epoch-0002.png").is_file()
    # Resuming continues the same run: the weights match an uninterrupted run.
    assert (out / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_unknown_option_is_refused(tmp_path, data):
    with pytest.raises(UserError, match="trunc"):
        train("gan", "unused", tmp_path / "bad", epochs=1, size=SIZE, seed=0, dataset=data,
              options={"trunc": 0.5}, progress=False)


def test_pixel_colours_name_emoji_colours():
    from generators.captions import COLOURS
    from generators.gan.model import pixel_colours

    samples = {  # RGB in [0, 1], read off Noto emoji, -> the name a person would give
        "red": (0.86, 0.13, 0.16), "orange": (1.0, 0.6, 0.1), "yellow": (0.99, 0.79, 0.16),
        "green": (0.49, 0.70, 0.26), "blue": (0.2, 0.5, 0.9), "purple": (0.67, 0.28, 0.74),
        "pink": (0.96, 0.5, 0.7), "brown": (0.72, 0.43, 0.33), "black": (0.1, 0.1, 0.12),
        "grey": (0.55, 0.56, 0.58), "white": (0.92, 0.93, 0.94),
    }
    got = pixel_colours(torch.tensor(list(samples.values())))
    assert [COLOURS[i] for i in got.tolist()] == list(samples)


def test_dominant_colour_ignores_the_white_background():
    from generators.captions import COLOURS
    from generators.gan.model import dominant_colours

    images = []
    for fill in [(220, 30, 30), (40, 170, 60), None]:
        im = Image.new("RGB", (32, 32), "white")
        if fill:
            ImageDraw.Draw(im).ellipse((10, 10, 20, 20), fill=fill)  # a tenth of the image
        images.append(to_tensor(im, 32))
    assert [COLOURS[i] for i in dominant_colours(torch.stack(images)).tolist()] == ["red", "green", "white"]


def test_a_model_without_colours_trains_on_with_them(data):
    """--init emoji-gan: a GAN trained before colours existed starts a colour GAN
    unchanged; its new colour parts start at zero, so every colour draws the old image."""
    from generators.gan.model import GANConfig, Generator
    from generators.gan.train import make_trainable
    from generators.training import warm_start

    old = Generator(GANConfig(image_size=SIZE, n_classes=2, width=8, z_dim=16)).eval()
    for p in old.parameters():
        p.data.normal_(0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    trainable = make_trainable(data, device=torch.device("cpu"), seed=0, options=TINY)
    assert sorted(warm_start(trainable, old.state_dict(), "old")) == ["G", "G_ema"]
    z, y = torch.randn(4, 16), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        want = old(z, y)
        for colour in (0, 4, 10):
            assert torch.allclose(trainable.G_ema.eval()(z, y, torch.full((4,), colour)), want)
    with pytest.raises(ValueError, match="colour"):
        trainable.G_ema(z, y)

