"""The VAE family: trained for real on a tiny synthetic set (coloured circles and
squares), saved by the training harness, and loaded through the registry."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from artbot.errors import InvalidRequest
from generators.base import GenerationRequest, Task
from generators.datasets import ImageDataset, to_tensor
from generators.registry import load_generator
from generators.training import train

SIZE = 32
TINY = {"width": 8, "latent_dim": 16, "batch_size": 16}
COLOURS = {"red": (220, 40, 40), "blue": (40, 60, 220), "green": (40, 170, 60)}


def shapes_dataset(n: int = 48, size: int = SIZE) -> ImageDataset:
    """Circles and squares in three colours at jittered places; label = shape."""
    rng = np.random.default_rng(0)
    images, captions, labels = [], [], []
    names = list(COLOURS)
    for i in range(n):
        colour, shape = names[i % 3], ("circle", "square")[(i // 3) % 2]
        im = Image.new("RGB", (size, size), "white")
        r = int(rng.integers(size // 5, size // 3))
        cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
        box = (cx - r, cy - r, cx + r, cy + r)
        draw = ImageDraw.Draw(im)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill=COLOURS[colour])
        images.append(to_tensor(im, size))
        captions.append(f"{colour} {shape}")
        labels.append(0 if shape == "circle" else 1)
    labels_t = torch.tensor(labels)
    return ImageDataset(images=torch.stack(images), captions=captions, labels=labels_t,
                        label_names=["circle", "square"], sublabels=labels_t.clone(),
                        sublabel_names=["circle", "square"], source={"name": "shapes", "images": n})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    return shapes_dataset()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("vae") / "model"
    train("vae", "unused", out, epochs=2, size=SIZE, seed=0, dataset=data, options=TINY, progress=False)
    return out


@pytest.fixture(scope="module")
def vae(model_dir):
    return load_generator("vae", str(model_dir), torch.device("cpu"), torch.float32)


def draw(gen, seeds, prompt="red circle", **kw):
    return gen.generate(GenerationRequest(task=Task.DRAW, seeds=seeds, prompt=prompt,
                                          width=kw.pop("width", SIZE), height=kw.pop("height", SIZE),
                                          **kw))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_training_writes_a_model_folder(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["family"] == "vae"
    assert config["model"]["vae"]["image_size"] == SIZE
    assert config["model"]["vae"]["latent_dim"] == 16
    assert config["training"]["epochs"] == 2
    assert (model_dir / "samples" / "epoch-0002.png").is_file()


def test_draw_one_image_per_seed_at_the_requested_size(vae):
    calls = []
    result = vae.generate(GenerationRequest(task=Task.DRAW, seeds=[1, 2, 3], prompt="blue square",
                                            width=48, height=40),
                          lambda step, total: calls.append((step, total)))
    assert result.seeds == [1, 2, 3]
    assert [im.size for im in result.images] == [(48, 40)] * 3
    assert result.params == {"label": "square", "temperature": 0.8}
    assert calls == [(1, 1)]


def test_same_seed_same_image_other_seed_other_image(vae):
    a = draw(vae, [7]).images[0]
    b = draw(vae, [7]).images[0]
    c = draw(vae, [8]).images[0]
    assert a.tobytes() == b.tobytes()
    assert np.abs(pixels(a) - pixels(c)).mean() > 0.5
    # An image does not depend on the rest of its batch.
    assert draw(vae, [5, 7, 9]).images[1].tobytes() == a.tobytes()


def test_temperature_zero_draws_the_label_mean(vae):
    a = draw(vae, [1], options={"temperature": 0.0}).images[0]
    b = draw(vae, [2], options={"temperature": 0.0}).images[0]
    assert a.tobytes() == b.tobytes()
    with pytest.raises(InvalidRequest):
        draw(vae, [1], options={"temperature": -1})


def test_vary_any_image_further_with_strength(vae, data):
    upload = Image.new("RGBA", (100, 80), (0, 0, 0, 0))
    ImageDraw.Draw(upload).ellipse((20, 10, 80, 70), fill=(220, 40, 40, 255))

    def vary(strength, seeds=(3,)):
        return vae.generate(GenerationRequest(task=Task.VARY, seeds=list(seeds), init_image=upload,
                                              strength=strength, width=SIZE, height=SIZE))

    recon = vary(0.0).images[0]
    assert vary(0.0, seeds=[4]).images[0].tobytes() == recon.tobytes()  # no noise at strength 0
    near, far = vary(0.2).images[0], vary(1.0).images[0]
    assert vary(0.2).images[0].tobytes() == near.tobytes()
    d_near = np.abs(pixels(near) - pixels(recon)).mean()
    d_far = np.abs(pixels(far) - pixels(recon)).mean()
    assert 0 < d_near < d_far
    result = vary(0.5, seeds=[1, 2])
    assert result.params == {"strength": 0.5} and len(result.images) == 2


def test_interpolate_runs_from_one_image_to_the_other(vae):
    a = Image.new("RGB", (SIZE, SIZE), "white")
    ImageDraw.Draw(a).ellipse((4, 4, 20, 20), fill=COLOURS["red"])
    b = Image.new("RGB", (SIZE, SIZE), "white")
    ImageDraw.Draw(b).rectangle((10, 10, 28, 28), fill=COLOURS["blue"])
    frames = vae.interpolate(a, b, 5)
    assert len(frames) == 5 and all(f.size == (SIZE, SIZE) for f in frames)
    recon = lambda im: vae.generate(GenerationRequest(  # noqa: E731
        task=Task.VARY, seeds=[0], init_image=im, strength=0.0, width=SIZE, height=SIZE)).images[0]
    assert frames[0].tobytes() == recon(a).tobytes()
    assert frames[-1].tobytes() == recon(b).tobytes()


def test_training_is_deterministic(tmp_path, data, model_dir):
    again = train("vae", "unused", tmp_path / "again", epochs=2, size=SIZE, seed=0, dataset=data,
                  options=TINY, progress=False)
    assert (again / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_resume_continues_to_the_next_epoch(tmp_path, data, model_dir):
    out = tmp_path / "run"
    train("vae", "unused", out, epochs=1, size=SIZE, seed=0, dataset=data, options=TINY, progress=False)
    assert not (out / "samples" / "epoch-0002.png").exists()
    train("vae", "unused", out, epochs=2, size=SIZE, seed=0, dataset=data, options=TINY,
          progress=False, resume=True)
    config = json.loads((out / "config.json").read_text())
    assert config["training"]["epochs"] == 2
    assert (out / "samples" / "epoch-0002.png").is_file()
    # Resuming continues the same run: the weights match an uninterrupted run.
    assert (out / "model.safetensors").read_bytes() == (model_dir / "model.safetensors").read_bytes()


def test_reconstruction_improves_with_training(tmp_path, data):
    """A behaviour test: a few epochs must lower the reconstruction error."""
    out = tmp_path / "learn"
    errors = []
    for epochs in (1, 6):
        train("vae", "unused", out, epochs=epochs, size=SIZE, seed=0, dataset=data,
              options={**TINY, "width": 16, "batch_size": 8}, progress=False, resume=epochs > 1)
        gen = load_generator("vae", str(out), torch.device("cpu"), torch.float32)
        with torch.inference_mode():
            mu, _ = gen.vae.encode(data.images)
            errors.append((gen.vae.decode(mu) - data.images).abs().mean().item())
    assert errors[1] < 0.8 * errors[0], errors


def test_unknown_option_is_refused(tmp_path, data):
    from artbot.errors import UserError

    with pytest.raises(UserError, match="widht"):
        train("vae", "unused", tmp_path / "bad", epochs=1, size=SIZE, seed=0, dataset=data,
              options={"widht": 8}, progress=False)
