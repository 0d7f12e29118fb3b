"""Previews of the image forming: the linear latent-to-RGB pictures of each latent
format, the operator's AutoencoderTiny, Flux's packed latents, and the bundled
pixel-space model's own estimate, each through a real draw where one runs."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from artbot.config import Settings
from generators.base import GenerationRequest, Task
from generators.bundled import bundled_path
from generators.previews import (
    FLUX,
    SD1,
    SD3,
    SDXL,
    diffusion_preview,
    latent_format,
    linear_preview,
    unpack_latents,
)
from generators.registry import load_generator

CPU = torch.device("cpu")


def request(seeds, size=64, steps=4, prompt="a red fox", **kw):
    return GenerationRequest(task=Task.DRAW, seeds=seeds, prompt=prompt, width=size,
                             height=size, steps=steps, **kw)


class Recorder:
    """A progress callback that takes the preview of image `index` at every step, as
    the worker would (inside the step, while the latents are those of that step)."""

    def __init__(self, index=0):
        self.index = index
        self.steps, self.images = [], []

    def __call__(self, step, total, preview=None):
        self.steps.append((step, total))
        self.images.append(preview(self.index) if preview is not None else None)


def spread(image: Image.Image) -> float:
    return float(np.asarray(image, dtype=np.float32).std())


@pytest.fixture(scope="module")
def tiny(tiny_pipeline):
    return load_generator("diffusion", str(tiny_pipeline), CPU, torch.float32)


@pytest.mark.parametrize("fmt", [SD1, SDXL, SD3, FLUX], ids=lambda f: f.name)
def test_linear_previews_of_each_latent_format_are_pictures_of_the_latent(fmt):
    latent = torch.randn(fmt.channels, 32, 48, generator=torch.Generator().manual_seed(0))
    image = linear_preview(latent, fmt)
    assert image.mode == "RGB"
    assert image.size == (48 * 5, 32 * 5)  # enlarged by whole factors to about 256 px
    assert spread(image) > 5  # a picture, not a flat colour
    # Where the latent is zero, the colour is the format's bias alone.
    flat = linear_preview(torch.zeros(fmt.channels, 8, 8), fmt).getpixel((0, 0))
    assert flat == tuple(round((b + 1) * 127.5) for b in fmt.bias)


@pytest.mark.parametrize("channels", [1, 7, 64])
def test_a_latent_no_format_fits_still_gets_a_picture(channels):
    latent = torch.randn(channels, 16, 16, generator=torch.Generator().manual_seed(1))
    for fmt in (None, SD1):
        image = linear_preview(latent, fmt)
        assert image.mode == "RGB" and image.size == (256, 256) and spread(image) > 5


def test_each_tiny_architecture_is_told_its_latent_format(tiny, tiny_models):
    assert latent_format(tiny.pipe) is SD1
    assert latent_format(tiny.img2img_pipeline()) is SD1
    for arch, fmt in (("sdxl", SDXL), ("sd3", SD3), ("flux", FLUX)):
        gen = load_generator("diffusion", str(tiny_models(arch)), CPU, torch.float32)
        assert latent_format(gen.pipe) is fmt, arch


def test_a_draw_passes_a_preview_of_each_image_at_every_step(tiny):
    first, second = Recorder(0), Recorder(1)
    tiny.generate(request([1, 2]), first)
    tiny.generate(request([1, 2]), second)
    assert first.steps == [(k, 4) for k in range(1, 5)]
    for image in first.images + second.images:
        assert image.mode == "RGB" and image.size == (256, 256)  # 32x32 latents, x8
    # Each image's own latents: the two images of the call differ, and so do the steps.
    assert first.images[-1].tobytes() != second.images[-1].tobytes()
    assert first.images[0].tobytes() != first.images[-1].tobytes()
    # A guided call (guidance 7.5 doubles the batch inside the UNet) still has one
    # row per image in the callback's latents: a third image does not exist.
    latents = torch.zeros(2, 4, 32, 32)
    with pytest.raises(IndexError):
        diffusion_preview(tiny.pipe, latents)(2)


def test_the_operators_autoencoder_tiny_draws_the_previews(tiny, tiny_pipeline, tmp_path):
    from diffusers import AutoencoderTiny

    # Shaped like diffusers' own test AutoencoderTiny: narrow blocks, random weights;
    # two decoder blocks upsample x2, as the tiny pipeline's VAE does.
    torch.manual_seed(0)
    AutoencoderTiny(latent_channels=4, encoder_block_out_channels=(8, 8),
                    decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1)).save_pretrained(tmp_path / "taesd")
    settings = Settings(data_dir=tmp_path / "data", models={
        "tiny": {"source": str(tiny_pipeline), "preview_vae": str(tmp_path / "taesd")}})
    entry = settings.model_entry("tiny")
    gen = load_generator("diffusion", entry.source, CPU, torch.float32,
                         preview_vae=entry.preview_vae)
    assert isinstance(gen.preview_vae, AutoencoderTiny)
    # Image 1 of a step's latents is what diffusers' decoder makes of them, as a
    # pipeline with it for its VAE would decode them (scaling factor 1: the latents as
    # the UNet sees them), enlarged x4 to 256 px.
    latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        decoded = gen.preview_vae.decode(latents[1:2]).sample[0]
    expected = Image.fromarray(((decoded.clamp(-1, 1) + 1) * 127.5).round().byte()
                               .permute(1, 2, 0).numpy(), "RGB").resize((256, 256), Image.BILINEAR)
    preview = diffusion_preview(gen.pipe, latents, preview_vae=gen.preview_vae)(1)
    assert preview.tobytes() == expected.tobytes()
    assert preview.tobytes() != linear_preview(latents[1], SD1).tobytes()
    # Latents that would decode to more than is shown (512 px here) are averaged down
    # first, to decode at about the 256 px the worker sends.
    large = torch.randn(1, 4, 256, 256, generator=torch.Generator().manual_seed(4))
    assert diffusion_preview(gen.pipe, large, preview_vae=gen.preview_vae)(0).size == (256, 256)
    # In a draw, the same seed on the same model: the tiny VAE's previews, not the linear ones.
    with_tiny, plain = Recorder(), Recorder()
    gen.generate(request([1]), with_tiny)
    tiny.generate(request([1]), plain)
    assert [image.size for image in with_tiny.images] == [(256, 256)] * 4
    assert with_tiny.images[-1].tobytes() != plain.images[-1].tobytes()


def test_a_preview_vae_that_cannot_serve_the_model_is_set_aside(tiny_pipeline, tmp_path, caplog):
    from diffusers import AutoencoderTiny

    AutoencoderTiny(latent_channels=16, encoder_block_out_channels=(8, 8),
                    decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                    num_decoder_blocks=(1, 1)).save_pretrained(tmp_path / "taef1")
    with caplog.at_level(logging.WARNING, logger="generators.previews"):
        for folder in (tmp_path / "taef1", tmp_path / "missing"):
            gen = load_generator("diffusion", str(tiny_pipeline), CPU, torch.float32,
                                 preview_vae=str(folder))
            assert gen.preview_vae is None
            recorder = Recorder()
            gen.generate(request([3], steps=2), recorder)
            assert all(image.size == (256, 256) for image in recorder.images)  # linear ones
    assert "16 latent channels" in caplog.text and "did not load" in caplog.text


def test_flux_packed_latents_unpack_to_the_latent_image(tiny_models):
    from diffusers import FluxPipeline

    latent = torch.randn(2, 16, 6, 10, generator=torch.Generator().manual_seed(2))  # (B, C, h, w)
    packed = FluxPipeline._pack_latents(latent, 2, 16, 6, 10)  # (B, 15, 64)
    assert packed.shape == (2, 15, 64)
    # (height, width) of the image: 48 x 80 with the real VAE's factor 8.
    assert torch.equal(unpack_latents(packed, (48, 80), 8), latent)
    square = torch.randn(1, 16, 8, 8)
    assert torch.equal(unpack_latents(FluxPipeline._pack_latents(square, 1, 16, 8, 8), None, 8),
                       square)
    # The tiny Flux pipeline draws 128 px from packed latents; its previews are pictures.
    gen = load_generator("diffusion", str(tiny_models("flux")), CPU, torch.float32)
    recorder = Recorder()
    gen.generate(request([4], size=128, steps=2, guidance=3.5), recorder)
    assert [image.size for image in recorder.images] == [(256, 256)] * 2
    assert spread(recorder.images[-1]) > 5


def test_the_bundled_pixel_model_previews_its_estimate_of_the_image():
    gen = load_generator("pixel-diffusion", str(bundled_path("emoji-diffusion")), CPU,
                         torch.float32)
    recorder = Recorder(index=1)
    result = gen.generate(request([5, 6], steps=8, guidance=3.0, prompt="red heart"), recorder)
    assert recorder.steps == [(k, 8) for k in range(1, 9)]
    assert all(image.size == (256, 256) and image.mode == "RGB" for image in recorder.images)
    # The estimate converges on image 1 of the result: the last step's is that image.
    final = np.asarray(result.images[1].resize((32, 32), Image.BOX), dtype=np.float32)

    def distance(image):
        return np.abs(np.asarray(image.resize((32, 32), Image.BOX), dtype=np.float32) - final).mean()

    assert distance(recorder.images[-1]) < 8
    assert distance(recorder.images[0]) > distance(recorder.images[-1])
