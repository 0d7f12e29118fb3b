"""The diffusion family on the tiny random-weight pipeline, loaded from disk
through the same code users use."""

import numpy as np
import pytest
import torch
from PIL import Image

from artbot.errors import ModelNotFound
from generators.base import GenerationRequest, Task, UnsupportedTask
from generators.device import pick_device, pick_dtype
from generators.registry import load_generator


@pytest.fixture(scope="module")
def tiny(tiny_pipeline):
    return load_generator("diffusion", str(tiny_pipeline), torch.device("cpu"), torch.float32)


def draw(gen, seeds, **kw):
    req = GenerationRequest(task=Task.DRAW, seeds=seeds, prompt=kw.pop("prompt", "a red fox"),
                            width=kw.pop("width", 64), height=kw.pop("height", 64),
                            steps=kw.pop("steps", 4), **kw)
    return gen.generate(req)


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.int16)


def test_same_seed_same_image_other_seed_other_image(tiny):
    a = draw(tiny, [7]).images[0]
    b = draw(tiny, [7]).images[0]
    c = draw(tiny, [8]).images[0]
    assert a.tobytes() == b.tobytes()
    assert np.abs(pixels(a) - pixels(c)).mean() > 1.0


def test_each_image_of_a_batch_has_its_own_seed(tiny):
    result = draw(tiny, [7, 8, 9])
    assert result.seeds == [7, 8, 9]
    assert len(result.images) == 3
    single = draw(tiny, [8]).images[0]
    # Batch image 2 is (up to float rounding of a batched forward pass) the seed-8 image.
    assert np.abs(pixels(result.images[1]) - pixels(single)).max() <= 2
    assert np.abs(pixels(result.images[0]) - pixels(result.images[1])).mean() > 1.0


def test_size_negative_prompt_and_guidance_are_used(tiny):
    r = draw(tiny, [1], width=96, height=48)
    assert r.images[0].size == (96, 48)
    plain = draw(tiny, [1]).images[0]
    negative = draw(tiny, [1], negative_prompt="blurry").images[0]
    assert plain.tobytes() != negative.tobytes()
    assert r.params["scheduler"] == "DDIMScheduler"


def test_progress_reports_every_step_and_can_stop_the_run(tiny):
    steps = []
    req = GenerationRequest(task=Task.DRAW, seeds=[1], prompt="x", width=64, height=64, steps=5)
    tiny.generate(req, lambda k, n, preview=None: steps.append((k, n)))
    assert steps == [(k, 5) for k in range(1, 6)]

    class Stop(Exception):
        pass

    def stop_at_2(k, n, preview=None):
        if k == 2:
            raise Stop

    with pytest.raises(Stop):
        tiny.generate(req, stop_at_2)


def test_vary_keeps_the_size_and_strength_sets_how_much_is_redone(tiny):
    source = draw(tiny, [3], width=64, height=48).images[0]

    def vary(strength, seed=1):
        steps = []
        req = GenerationRequest(task=Task.VARY, seeds=[seed], init_image=source, strength=strength,
                                width=64, height=48, steps=10)
        image = tiny.generate(req, lambda k, n, preview=None: steps.append(n)).images[0]
        return image, steps

    subtle, subtle_steps = vary(0.2)
    strong, strong_steps = vary(1.0)
    assert subtle.size == strong.size == (64, 48)
    # Strength is the share of the denoising schedule that is run again from
    # the noised source: subtle redoes 2 of 10 steps, strong all 10.
    assert len(subtle_steps) == 2 and subtle_steps[-1] == 2
    assert len(strong_steps) == 10
    assert vary(0.5)[0].tobytes() == vary(0.5)[0].tobytes()
    assert vary(0.5, seed=1)[0].tobytes() != vary(0.5, seed=2)[0].tobytes()


def test_style_image_is_refused_by_diffusion(tiny):
    img = Image.new("RGB", (64, 64))
    req = GenerationRequest(task=Task.STYLIZE, seeds=[1], init_image=img, style_image=img,
                            width=64, height=64)
    with pytest.raises(UnsupportedTask):
        tiny.generate(req)


def test_missing_models_say_what_is_wrong(tmp_path):
    cpu, f32 = torch.device("cpu"), torch.float32
    with pytest.raises(ModelNotFound, match="not in the Hugging Face cache"):
        load_generator("diffusion", "someone/not-downloaded", cpu, f32)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match="no model_index.json"):
        load_generator("diffusion", str(tmp_path / "empty"), cpu, f32)
    with pytest.raises(ModelNotFound, match="does not exist"):
        load_generator("diffusion", str(tmp_path / "nope.safetensors"), cpu, f32)
    with pytest.raises(ModelNotFound, match="Unknown model"):
        load_generator("diffusion", "./no/such/thing", cpu, f32)


def test_model_revision_identifies_the_local_folder(tiny, tiny_pipeline):
    assert tiny.model_revision.startswith("local-")
    again = load_generator("diffusion", str(tiny_pipeline), torch.device("cpu"), torch.float32)
    assert again.model_revision == tiny.model_revision


def test_device_and_dtype_choice():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", torch.device("cuda")) == torch.float16
    assert pick_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    from artbot.errors import UserError

    with pytest.raises(UserError):
        pick_dtype("float8", torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="no CUDA"):
            pick_device("cuda")


def test_safety_checker_is_off_only_when_the_job_says_so():
    """The server's rules put `safety_checker: False` in a job only for an age-restricted
    channel of a server that turned it off; otherwise the model's checker runs."""
    from generators.diffusion.generator import DiffusionGenerator

    checker = object()

    class Pipe:
        safety_checker = checker

    pipe = Pipe()
    for options, inside in (({}, checker), ({"safety_checker": True}, checker),
                            ({"safety_checker": False}, None)):
        request = GenerationRequest(task=Task.DRAW, seeds=[1], options=options)
        with DiffusionGenerator._safety(pipe, request):
            assert pipe.safety_checker is inside
        assert pipe.safety_checker is checker  # put back afterwards


# -- samplers ------------------------------------------------------------------------------


def test_a_sampler_by_its_a1111_or_comfyui_name_is_used_for_that_job_only(tiny):
    from generators.diffusion.samplers import SAMPLERS, canonical

    assert canonical("dpm++ 2m karras") == canonical("dpmpp_2m_karras") == "DPM++ 2M Karras"
    assert canonical("euler_ancestral") == canonical("EULER A") == "Euler a"
    before = draw(tiny, [5]).images[0]
    karras = draw(tiny, [5], sampler="DPM++ 2M Karras")
    assert karras.params["scheduler"] == "DPMSolverMultistepScheduler"
    assert karras.images[0].tobytes() == draw(tiny, [5], sampler="DPM++ 2M Karras").images[0].tobytes()
    assert karras.images[0].tobytes() != before.tobytes()
    # Every sampler in the table runs on an SD-style model, and an ancestral one is
    # reproducible too: its extra noise comes from the job's seeded generators.
    for name in SAMPLERS:
        assert draw(tiny, [5], steps=2, sampler=name).images[0].size == (64, 64), name
    ancestral = [draw(tiny, [5], sampler="Euler a").images[0].tobytes() for _ in range(2)]
    assert ancestral[0] == ancestral[1]
    # DPM++ SDE's Brownian-tree noise is seeded by the job's seed: same seed, same
    # image; another seed, another image.
    sde = [draw(tiny, [seed], steps=3, sampler="DPM++ SDE Karras").images[0].tobytes()
           for seed in (5, 5, 6)]
    assert sde[0] == sde[1] != sde[2]
    # The model's own scheduler is back for the next job: the same bytes as before.
    after = draw(tiny, [5])
    assert after.images[0].tobytes() == before.tobytes() and after.params["scheduler"] == "DDIMScheduler"
    # The model's own DDIM, asked for by name, is the same image.
    assert draw(tiny, [5], sampler="DDIM").images[0].tobytes() == before.tobytes()


def test_a_flow_matching_model_refuses_a_sampler_in_one_line():
    from diffusers import FlowMatchEulerDiscreteScheduler

    from generators.diffusion.samplers import UnsupportedSampler, scheduler_for

    with pytest.raises(UnsupportedSampler, match="flow matching.*Leave the sampler out"):
        scheduler_for("Euler a", FlowMatchEulerDiscreteScheduler())


def test_large_images_are_decoded_in_tiles_for_that_call_only(tiny, monkeypatch):
    from generators.diffusion import generator as diffusion

    whole = draw(tiny, [3], width=128, height=128, steps=2).images[0]
    monkeypatch.setattr(diffusion, "TILED_ABOVE_PIXELS", 100 * 100)
    tiled = draw(tiny, [3], width=128, height=128, steps=2).images[0]
    assert tiled.size == (128, 128) and tiled.tobytes() != whole.tobytes()  # tiles, blended
    assert tiny.pipe.vae.use_tiling is False  # off again after the call
    monkeypatch.setattr(diffusion, "TILED_ABOVE_PIXELS", 2048 * 1024)
    assert draw(tiny, [3], width=128, height=128, steps=2).images[0].tobytes() == whole.tobytes()
