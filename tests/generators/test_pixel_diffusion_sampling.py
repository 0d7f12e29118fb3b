"""The pixel diffusion samplers: DPM-Solver++(2M) against DDIM on data whose exact
answer is known, its log-SNR timesteps, and the bundled emoji-diffusion drawing
with it by default (15 steps), reproducibly, close to many DDIM steps and in the
colours asked for, with DDIM still there on request."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from artbot.errors import UserError
from generators.base import GenerationRequest, Task
from generators.bundled import available, model_defaults
from generators.captions import COLOURS
from generators.gan.model import dominant_colours
from generators.datasets import to_tensor
from generators.pixel_diffusion.sampling import NoiseSchedule, ddim_sample, dpmpp_2m_sample
from generators.registry import load_generator

pytestmark = pytest.mark.usefixtures("one_thread")
bundled = pytest.mark.skipif("emoji-diffusion" not in available(), reason="bundled models not installed")
STEPS = 15  # emoji-diffusion's default


class GaussianDenoiser(torch.nn.Module):
    """The exact v-prediction for data x0 ~ N(0, s²) per pixel: E[x0 | x_t] = α s² / (α² s² + σ²) · x_t.

    Its probability-flow ODE is solved in closed form, x_t = sqrt(α_t² s² + σ_t²) · z, so a
    sampler's error is its own, not the model's."""

    def __init__(self, schedule: NoiseSchedule, s: float):
        super().__init__()
        self.ab = schedule.alphas_cumprod.double()
        self.s2 = s * s
        self.unused = torch.nn.Parameter(torch.zeros(1))  # the samplers read the model's dtype

    def forward(self, x, t, mask=None, text=None, pooled=None):
        ab = self.ab[t].view(-1, 1, 1, 1)
        a, sig = ab.sqrt(), (1 - ab).sqrt()
        var = ab * self.s2 + (1 - ab)  # of x_t
        x0, eps = a * self.s2 / var * x, sig / var * x
        return (a * eps - sig * x0).float()


def gaussian_errors(n: int, s: float = 0.2) -> tuple[float, float]:
    """Relative error of DDIM and of DPM-Solver++(2M), each n steps on the same log-SNR
    timesteps from t=970, against the exact result (the clean estimate at the last step)."""
    schedule = NoiseSchedule(1000, "cosine", "v")
    model = GaussianDenoiser(schedule, s)
    timesteps = schedule.logsnr_timesteps(n, start=970)
    ab = schedule.alphas_cumprod.double()
    x_start = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * math.sqrt(
        ab[970] * s * s + 1 - ab[970])
    end = timesteps[-1]
    x_end = x_start.double() * math.sqrt((ab[end] * s * s + 1 - ab[end]) / (ab[970] * s * s + 1 - ab[970]))
    exact = math.sqrt(ab[end]) * s * s / (ab[end] * s * s + 1 - ab[end]) * x_end
    captions = (torch.zeros(4, 1, 1), torch.zeros(4, 1), torch.ones(4, 1, dtype=torch.bool))
    errors = []
    for sample in (ddim_sample, dpmpp_2m_sample):
        out = sample(model, schedule, x_start.clone(), timesteps, captions, guidance=1.0)
        errors.append(((out.double() - exact).norm() / exact.norm()).item())
    return errors[0], errors[1]


def test_dpm_solver_is_second_order_where_ddim_is_first():
    (ddim_6, dpm_6), (ddim_12, dpm_12), (ddim_24, dpm_24) = (gaussian_errors(n) for n in (6, 12, 24))
    assert dpm_6 < ddim_6 / 4 and dpm_12 < ddim_12 / 8 and dpm_24 < ddim_24 / 8
    # Four times the steps: DDIM's error falls about fourfold, DPM-Solver++(2M)'s about sixteen.
    assert 3.0 < ddim_6 / ddim_24 < 5.5
    assert dpm_6 / dpm_24 > 8.0


def test_its_first_and_last_steps_are_ddim_steps():
    """Two steps on the same timesteps: both are first order, so DPM-Solver++ is DDIM."""
    schedule = NoiseSchedule(1000, "cosine", "v")
    model = GaussianDenoiser(schedule, 0.3)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    captions = (torch.zeros(2, 1, 1), torch.zeros(2, 1), torch.ones(2, 1, dtype=torch.bool))
    a = ddim_sample(model, schedule, x, [999, 499], captions, 1.0)
    b = dpmpp_2m_sample(model, schedule, x, [999, 499], captions, 1.0)
    assert torch.allclose(a, b, atol=1e-5)


def test_logsnr_timesteps():
    schedule = NoiseSchedule(1000, "cosine", "v")
    assert schedule.logsnr_timesteps(12) == [999, 970, 942, 889, 789, 623, 412, 232, 119, 57, 26, 10]
    assert schedule.logsnr_timesteps(1) == [999] and schedule.logsnr_timesteps(2) == [999, 10]
    # From a start below the knee (a variation), evenly in log-SNR from there.
    assert schedule.logsnr_timesteps(4, start=582)[0] == 582
    assert schedule.logsnr_timesteps(4, start=582)[-1] == 10
    for steps in (5, 30, 300, 1000):
        ts = schedule.logsnr_timesteps(steps)
        assert all(a > b for a, b in zip(ts, ts[1:])) and len(ts) <= steps
    assert len(schedule.logsnr_timesteps(100)) == 100


# -- the bundled emoji-diffusion ------------------------------------------------------


@pytest.fixture(scope="module")
def emoji():
    return load_generator("pixel-diffusion", "emoji-diffusion", torch.device("cpu"), torch.float32)


def draw(gen, prompt, seeds, steps, progress=None, **options):
    request = GenerationRequest(task=Task.DRAW, seeds=seeds, prompt=prompt, width=64, height=64,
                                steps=steps, guidance=3.5, options=options)
    return gen.generate(request, progress or (lambda k, n, preview=None: None))


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.float32) for im in images])


@bundled
def test_the_default_is_dpm_solver_in_15_steps_reproducibly(emoji):
    assert model_defaults("emoji-diffusion")["steps"] == STEPS  # what `artbot draw` asks for
    steps = []
    a = draw(emoji, "a red heart", [3], STEPS, progress=lambda k, n, preview=None: steps.append((k, n)))
    assert a.params["scheduler"] == "DPM++ 2M" and a.params["steps"] == STEPS
    assert steps == [(k, STEPS) for k in range(1, STEPS + 1)]
    b, c = draw(emoji, "a red heart", [3], STEPS), draw(emoji, "a red heart", [4], STEPS)
    assert a.images[0].tobytes() == b.images[0].tobytes() != c.images[0].tobytes()
    # The whole call ran on one torch thread, and left the caller's count as it was.
    torch.set_num_threads(2)
    try:
        assert draw(emoji, "a red heart", [3], STEPS).images[0].tobytes() == a.images[0].tobytes()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


@bundled
def test_the_old_ddim_setting_stays_available(emoji):
    old = draw(emoji, "a red heart", [3], 30, sampler="ddim")
    assert old.params["scheduler"] == "DDIM" and old.params["steps"] == 30
    assert draw(emoji, "a red heart", [3], 30, eta=0.5).params["scheduler"] == "DDIM"
    with pytest.raises(UserError, match="ddim sampler only"):
        draw(emoji, "a red heart", [3], 12, sampler="dpmpp_2m", eta=0.5)
    with pytest.raises(UserError, match="Unknown sampler 'euler'"):
        draw(emoji, "a red heart", [3], 12, sampler="euler")


@bundled
def test_15_steps_come_closer_to_many_ddim_steps_than_30_ddim_steps(emoji):
    """What a user would notice: the 15-step image is the 30-step one, give or take what
    30 steps themselves miss (both within a pixel level or two of 100 DDIM steps); DDIM in
    the same 15 steps misses twice as much."""
    ref = pixels(draw(emoji, "cat face", [1, 2, 3, 4], 100, sampler="ddim").images)

    def error(steps, sampler):
        return np.abs(pixels(draw(emoji, "cat face", [1, 2, 3, 4], steps, sampler=sampler).images) - ref).mean()

    dpm, ddim_same, ddim_30 = error(STEPS, "dpmpp_2m"), error(STEPS, "ddim"), error(30, "ddim")
    assert dpm < 0.6 * ddim_same, (dpm, ddim_same)
    assert dpm < 1.1 * ddim_30, (dpm, ddim_30)
    assert dpm < 2.0, dpm  # in 0..255


@bundled
def test_the_colour_words_still_pick_the_colour(emoji):
    for prompt, colour in (("red heart", "red"), ("green apple", "green"), ("blue book", "blue")):
        images = draw(emoji, prompt, [1, 2, 3], STEPS).images
        drawn = dominant_colours(torch.stack([to_tensor(im, 64) for im in images])).tolist()
        assert [COLOURS[c] for c in drawn] == [colour] * 3, (prompt, drawn)


@bundled
def test_vary_redoes_the_same_share_of_the_noise(emoji):
    source = draw(emoji, "a red heart", [3], STEPS).images[0]

    def vary(strength, **options):
        steps = []
        request = GenerationRequest(task=Task.VARY, seeds=[1], init_image=source, strength=strength,
                                    width=64, height=64, steps=STEPS, guidance=3.5, options=options)
        result = emoji.generate(request, lambda k, n, preview=None: steps.append(k))
        return result, steps

    subtle, subtle_steps = vary(0.3)
    strong, strong_steps = vary(0.9)
    assert subtle.params["scheduler"] == "DPM++ 2M" and len(subtle_steps) == 4 and len(strong_steps) == 13
    src = pixels([source])
    assert np.abs(pixels(subtle.images) - src).mean() < np.abs(pixels(strong.images) - src).mean()
    # From the same noise level, DDIM over the same share lands near the same image.
    ddim, _ = vary(0.3, sampler="ddim")
    assert np.abs(pixels(subtle.images) - pixels(ddim.images)).mean() < 6.0
