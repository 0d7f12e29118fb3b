"""The pixel diffusion family: a tiny model trained for real on red and blue
squares, saved by the training harness, and loaded through the registry."""

from __future__ import annotations

import json

import numpy as np

import pytest
import torch
from PIL import Image, ImageDraw

from artbot.errors import ModelNotFound, UserError
from generators.base import GenerationRequest, Task
from generators.datasets import ImageDataset, to_tensor
from generators.pixel_diffusion.model import CaptionTokenizer
from generators.pixel_diffusion.sampling import NoiseSchedule
from generators.registry import load_generator
from generators.training import train

SIZE = 16
# Two resolutions (16, 8), attention at 8x8; a high lr and a short warm-up so a few
# dozen steps learn the colours.
TINY = {"channels": [16, 32], "text_dim": 32, "emb_dim": 32, "attention_heads": 2, "batch_size": 32,
        "lr": 3e-3, "warmup_steps": 10, "ema_decay": 0.99, "sample_steps": 2}
COLOURS = {"red": (220, 30, 30), "blue": (30, 50, 220)}


def squares(n: int = 256, size: int = SIZE) -> ImageDataset:
    """Red and blue squares of jittered size and place on white."""
    rng = np.random.default_rng(0)
    images, captions = [], []
    for i in range(n):
        colour = ("red", "blue")[i % 2]
        im = Image.new("RGB", (size, size), "white")
        side = int(rng.integers(size // 2, size - 2))
        x, y = (int(v) for v in rng.integers(0, size - side, 2))
        ImageDraw.Draw(im).rectangle((x, y, x + side, y + side), fill=COLOURS[colour])
        images.append(to_tensor(im, size))
        captions.append(f"{colour} square")
    labels = torch.tensor([i % 2 for i in range(n)])
    return ImageDataset(images=torch.stack(images), captions=captions, labels=labels,
                        label_names=["red", "blue"], sublabels=labels.clone(),
                        sublabel_names=["red", "blue"], source={"name": "squares", "images": n})


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data() -> ImageDataset:
    return squares()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("pixel-diffusion") / "model"
    # 256 images / 32 per step = 8 steps an epoch; 32 steps learn the colours well.
    train("diffusion", "unused", out, epochs=4, size=32, seed=0, dataset=data, options=TINY,
          progress=False)
    return out


@pytest.fixture(scope="module")
def gen(model_dir):
    return load_generator("pixel-diffusion", str(model_dir), torch.device("cpu"), torch.float32)


def draw(gen, seeds, prompt="red square", **kw):
    progress = kw.pop("progress", None) or (lambda k, n, preview=None: None)
    return gen.generate(GenerationRequest(task=Task.DRAW, seeds=seeds, prompt=prompt,
                                          width=kw.pop("width", 64), height=kw.pop("height", 64),
                                          steps=kw.pop("steps", 8), guidance=kw.pop("guidance", 3.0),
                                          **kw), progress)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def test_draw_makes_one_image_per_seed_at_the_requested_size(gen):
    result = draw(gen, [1, 2, 3], width=96, height=48)
    assert result.seeds == [1, 2, 3]
    assert [im.size for im in result.images] == [(96, 48)] * 3
    assert all(im.mode == "RGB" for im in result.images)
    assert result.params["scheduler"] == "DDIM" and result.params["steps"] == 8
    assert gen.model_revision.startswith("local-")


def test_same_seed_same_image_other_seed_other_image(gen):
    a = draw(gen, [7]).images[0]
    b = draw(gen, [7]).images[0]
    c = draw(gen, [8]).images[0]
    assert a.tobytes() == b.tobytes()
    assert np.abs(pixels(a) - pixels(c)).mean() > 1.0
    # In a batch, each image still comes from its own seed.
    batch = draw(gen, [8, 7]).images
    assert np.abs(pixels(batch[1]) - pixels(a)).max() <= 2


def test_progress_reports_every_step_and_can_stop_the_run(gen):
    steps = []
    draw(gen, [1, 2], steps=5, progress=lambda k, n, preview=None: steps.append((k, n)))
    assert steps == [(k, 5) for k in range(1, 6)]

    class Stop(Exception):
        pass

    seen = []

    def stop_at_2(k, n, preview=None):
        seen.append(k)
        if k == 2:
            raise Stop

    with pytest.raises(Stop):
        draw(gen, [1], steps=5, progress=stop_at_2)
    assert seen == [1, 2]


def test_negative_prompt_and_guidance_change_the_image(gen):
    plain = draw(gen, [3]).images[0]
    assert draw(gen, [3], negative_prompt="red").images[0].tobytes() != plain.tobytes()
    assert draw(gen, [3], guidance=1.0).images[0].tobytes() != plain.tobytes()
    assert draw(gen, [3], options={"guidance": 1.0}).params["guidance"] == 1.0


def test_vary_keeps_the_size_and_strength_sets_the_steps(gen):
    source = draw(gen, [3], prompt="blue square", width=64, height=64).images[0]

    def vary(strength, seed=1, prompt=""):
        steps = []
        req = GenerationRequest(task=Task.VARY, seeds=[seed], init_image=source, strength=strength,
                                prompt=prompt, width=80, height=60, steps=10, guidance=3.0)
        result = gen.generate(req, lambda k, n, preview=None: steps.append((k, n)))
        return result.images[0], steps

    subtle, subtle_steps = vary(0.3)
    strong, strong_steps = vary(1.0)
    assert subtle.size == strong.size == (80, 60)
    assert subtle_steps == [(1, 3), (2, 3), (3, 3)]
    assert len(strong_steps) == 10
    assert vary(0.5)[0].tobytes() == vary(0.5)[0].tobytes()
    assert vary(0.5, seed=1)[0].tobytes() != vary(0.5, seed=2)[0].tobytes()
    # A light variation stays close to the source; a full one need not.
    src = pixels(source.resize((80, 60)))
    redone = vary(1.0, prompt="red square")[0]
    assert np.abs(pixels(subtle) - src).mean() < np.abs(pixels(redone) - src).mean()


def redness(images: list[Image.Image]) -> float:
    """Mean red minus mean blue over the images, in 0..255 units."""
    arr = np.stack([pixels(im) for im in images])
    return float(arr[..., 0].mean() - arr[..., 2].mean())


def test_the_prompt_picks_the_colour(gen):
    seeds = list(range(8))
    red = draw(gen, seeds, prompt="red square", steps=10).images
    blue = draw(gen, seeds, prompt="blue square", steps=10).images
    assert redness(red) > 20
    assert redness(blue) < -20
    # Image by image too, for most seeds.
    assert sum(redness([r]) > redness([b]) for r, b in zip(red, blue)) >= 7


def test_training_is_deterministic_and_resumes(tmp_path, data):
    small = data.subset(torch.arange(32))
    opts = dict(TINY, sample_steps=2)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    train("diffusion", "unused", a, epochs=2, size=32, seed=0, dataset=small, options=opts, progress=False)
    train("diffusion", "unused", b, epochs=2, size=32, seed=0, dataset=small, options=opts, progress=False)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    # One epoch, then a second one resumed from the checkpoint: the same weights.
    train("diffusion", "unused", c, epochs=1, size=32, seed=0, dataset=small, options=opts, progress=False)
    assert not (c / "samples" / "epoch-0002.png").exists()
    train("diffusion", "unused", c, epochs=2, size=32, seed=0, dataset=small, options=opts, progress=False,
          resume=True)
    assert (c / "samples" / "epoch-0002.png").is_file()
    assert (c / "model.safetensors").read_bytes() == (a / "model.safetensors").read_bytes()


def test_training_can_start_from_a_trained_model(tmp_path, data):
    """--init: the bundled models ship without training state, yet can be trained further."""
    from generators.training import FAMILY_OF_TRAINER, _load_trainer, load_model_folder, warm_start

    small = data.subset(torch.arange(32))
    opts = dict(TINY, sample_steps=2)
    a = tmp_path / "a"
    train("diffusion", "unused", a, epochs=1, size=32, seed=0, dataset=small, options=opts, progress=False)
    _, _, weights = load_model_folder(str(a), FAMILY_OF_TRAINER["diffusion"])
    trainable = _load_trainer("diffusion")(small, device=torch.device("cpu"), seed=1, options=opts)
    assert sorted(warm_start(trainable, weights, "a")) == ["ema", "model"]
    assert all(torch.equal(v, weights[k]) for k, v in trainable.model.state_dict().items())
    with pytest.raises(UserError, match="does not fit"):
        warm_start(trainable, {"junk": torch.zeros(3)}, "junk")
    d = tmp_path / "d"
    train("diffusion", "unused", d, epochs=1, size=32, seed=0, dataset=small, options=opts, progress=False,
          init=str(a))
    config = json.loads((d / "config.json").read_text())
    assert config["training"]["init"] == str(a)
    assert config["training"]["init_training"]["epochs"] == 1  # provenance, for model cards
    assert (d / "model.safetensors").read_bytes() != (a / "model.safetensors").read_bytes()


def test_cosine_schedule_ends_the_run_at_min_lr(tmp_path, data):
    """lr_schedule=cosine: warm-up, then down to min_lr on the last step of --epochs."""
    from generators.pixel_diffusion.train import make_trainable

    small = data.subset(torch.arange(64))  # 2 steps an epoch
    opts = dict(TINY, lr_schedule="cosine", min_lr=1e-4, warmup_steps=2)
    trainable = make_trainable(small, device=torch.device("cpu"), seed=0, options=opts)
    trainable.plan(12)
    rates = [trainable.learning_rate(step) for step in range(12)]
    assert rates[:2] == pytest.approx([1.5e-3, 3e-3]) and rates[-1] == pytest.approx(1e-4)
    assert all(a > b for a, b in zip(rates[2:], rates[3:]))
    # the harness plans the whole run: after 3 epochs of 2 steps, the last rate is min_lr
    out = tmp_path / "cos"
    train("diffusion", "unused", out, epochs=3, size=32, seed=0, dataset=small, options=opts, progress=False)
    state = torch.load(out / "training-state.pt", weights_only=False)
    assert state["optimizers"]["model"]["param_groups"][0]["lr"] == pytest.approx(1e-4)
    constant = make_trainable(small, device=torch.device("cpu"), seed=0, options=TINY)
    constant.plan(100)
    assert constant.learning_rate(99) == TINY["lr"]
    with pytest.raises(UserError, match="lr_schedule"):
        make_trainable(small, device=torch.device("cpu"), seed=0, options=dict(TINY, lr_schedule="step"))


def test_articles_do_not_change_the_drawing(gen):
    """Captions have no articles: "a red square" draws what "red square" draws."""
    from generators.pixel_diffusion.generator import without_articles

    assert draw(gen, [3], "a red square").images[0].tobytes() == draw(gen, [3], "red square").images[0].tobytes()
    assert without_articles("The cat in a hat") == "cat in hat"
    assert without_articles("letter a") == "letter a" and without_articles("the") == "the"


def test_tokenizer_lowercases_and_knows_unknown_words():
    vocab = CaptionTokenizer.build(["red heart, heart", "Flag of Japan, JP"])
    assert vocab[:3] == ["<pad>", "<unk>", "<start>"] and vocab[3] == "heart"
    tok = CaptionTokenizer(vocab, max_tokens=4)
    ids = tok.encode("A RED heart!")
    assert [vocab[i] for i in ids] == ["<start>", "<unk>", "red", "heart"]
    assert len(tok.encode("red heart red heart red heart")) == 4
    tokens, mask = tok(["red", ""])
    assert tokens.shape == mask.shape == (2, 2)
    assert mask.tolist() == [[True, True], [True, False]]


def test_schedule_and_timesteps():
    schedule = NoiseSchedule(1000, "cosine", "v")
    ab = schedule.alphas_cumprod
    assert ab[0] > 0.999 and ab[-1] < 1e-3 and bool((ab[1:] < ab[:-1]).all())
    assert schedule.ddim_timesteps(4) == [999, 749, 499, 249]
    assert len(schedule.ddim_timesteps(5000)) == 1000
    x0, noise = torch.rand(2, 3, 4, 4) * 2 - 1, torch.randn(2, 3, 4, 4)
    t = torch.tensor([10, 500])
    x_t = schedule.add_noise(x0, noise, t)
    x0_back, eps_back = schedule.split(x_t, schedule.target(x0, noise, t), t)
    assert torch.allclose(x0_back, x0, atol=1e-4) and torch.allclose(eps_back, noise, atol=1e-3)


def test_bad_options_and_missing_models_say_what_is_wrong(tmp_path, data):
    with pytest.raises(UserError, match="Unknown pixel diffusion option"):
        train("diffusion", "unused", tmp_path / "x", epochs=1, dataset=data, options={"widht": 3},
              progress=False)
    with pytest.raises(ModelNotFound):
        load_generator("pixel-diffusion", str(tmp_path / "nothing"), torch.device("cpu"), torch.float32)
