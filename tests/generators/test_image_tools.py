"""Upscaling, zooming out and panning, and blending, on tiny real models: a super-resolution
network made here (spandrel's Real-ESRGAN Compact architecture), the tiny random-weight
SD pipelines (plain and inpainting) and the bundled emoji models."""


import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from artbot.errors import UserError
from generators import upscale as upscale_module
from generators.base import GenerationRequest, Task, UnsupportedTask
from generators.outpaint import FEATHER, extend_canvas, paste_back
from generators.registry import load_generator

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def picture(size=64, seed=0) -> Image.Image:
    """A test image with content at several scales: a gradient, shapes, a little texture."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    arr = np.stack([200 * x + 30, 180 * y + 40, 120 + 80 * np.sin(6 * x + 3 * y)], axis=-1)
    image = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * 0.2, size * 0.2, size * 0.55, size * 0.6), fill=(240, 220, 40))
    draw.rectangle((size * 0.6, size * 0.5, size * 0.85, size * 0.9), fill=(20, 40, 160))
    noise = rng.integers(-6, 7, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(image, dtype=np.int16) + noise, 0, 255).astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


# -- upscaler (spandrel) --------------------------------------------------------------------



def compact_network(scale: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A Real-ESRGAN Compact (SRVGGNetCompact) of 8 features and 2 body convs. It adds the
    nearest-upsampled input to what its convolutions make; its last conv scaled down to 10 %
    makes that a small residual: a near-identity upscaler with real content."""
    upscale_module._spandrel()  # imports it where torchvision does not load
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=scale)
    with torch.no_grad():
        last = net.body[-1]
        last.weight.mul_(0.1)
        last.bias.mul_(0.1)
    return net.state_dict()


@pytest.fixture(scope="module")
def networks(tmp_path_factory):
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("upscalers")
    files = {}
    for scale in (2, 4):
        state = compact_network(scale)
        torch.save(state, root / f"compact-x{scale}.pth")
        save_file(state, str(root / f"compact-x{scale}.safetensors"))
        files[scale] = root / f"compact-x{scale}"
    return files


def upscale(gen, image, scale, progress=None):
    request = GenerationRequest(task=Task.UPSCALE, seeds=[5], init_image=image,
                                width=image.width * scale, height=image.height * scale,
                                options={"scale": scale, "method": "upscaler"})
    return gen.generate(request, progress) if progress else gen.generate(request)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("native", [2, 4])
def test_an_upscaler_keeps_the_content_at_2x_and_4x(networks, suffix, native):
    gen = load_generator("upscaler", str(networks[native]) + suffix, CPU, torch.float32)
    assert gen.scale == native and gen.model_revision.startswith("file-")
    image = picture()
    for scale in (2, 4):
        result = upscale(gen, image, scale)
        out = result.images[0]
        assert out.size == (64 * scale, 64 * scale) and result.seeds == [5]
        assert result.params["upscaler"] == "RealESRGAN Compact"
        assert result.params["upscaler_scale"] == native and result.params["scale"] == scale
        # The network ran: its output is not the plain nearest-neighbour enlargement.
        nearest = image.resize(out.size, Image.NEAREST)
        assert np.abs(pixels(out) - pixels(nearest)).max() >= 1
        # Its Lanczos downscale is the original within 4/255 per channel on average. The
        # network is nearest upsampling plus its residual (1 to 1.8 levels on average here), and
        # Lanczos down of a nearest upsample is the original up to ringing at edges (1.0 to 1.7
        # levels alone); measured with both: 1.1 to 1.9 levels. 4 leaves room for other CPUs'
        # rounding yet is far below content that is lost or moved: this image against itself
        # shifted by one pixel differs by 5.9 to 8.5 levels (test_a_shifted_image_...).
        back = pixels(out.resize(image.size, Image.LANCZOS))
        mad = np.abs(back - pixels(image)).mean(axis=(0, 1))
        assert (mad < 4.0).all(), mad
    if native == 4:
        assert any("reduced to 2x with Lanczos" in n for n in upscale(gen, image, 2).params["notes"])
    else:
        assert "ran 2 times" in upscale(gen, image, 4).params["notes"][0]


def test_a_shifted_image_is_beyond_the_threshold():
    """The threshold above means something: a shift of one pixel costs more than 4 levels."""
    image = pixels(picture())
    assert (np.abs(image[:, 1:] - image[:, :-1]).mean(axis=(0, 1)) > 5.0).all()
    assert (np.abs(image[1:] - image[:-1]).mean(axis=(0, 1)) > 5.0).all()


def test_tiles_give_the_same_image_and_report_progress(networks, monkeypatch):
    gen = load_generator("upscaler", str(networks[2]) + ".pth", CPU, torch.float32)
    image = picture(80)
    whole = upscale(gen, image, 2).images[0]
    monkeypatch.setattr(upscale_module, "TILE", 32)  # 3 x 3 tiles of an 80-px image
    steps = []
    tiled = upscale(gen, image, 2, lambda step, total, *a, **k: steps.append((step, total))).images[0]
    assert steps == [(i, 9) for i in range(1, 10)]
    # The overlap (16 px) exceeds the network's reach (4 convs of 3x3: 4 px), so the tiles
    # meet without seams: equal up to float rounding.
    assert np.abs(pixels(tiled) - pixels(whole)).max() <= 1


def test_transparency_is_kept(networks):
    gen = load_generator("upscaler", str(networks[2]) + ".safetensors", CPU, torch.float32)
    image = picture(32).convert("RGBA")
    image.putalpha(Image.new("L", (32, 32), 128))
    out = upscale(gen, image, 2).images[0]
    assert out.mode == "RGBA" and out.size == (64, 64)
    assert abs(np.asarray(out.getchannel("A")).mean() - 128) < 1


def test_what_is_not_an_upscaler_is_refused_in_one_line(tmp_path):
    from safetensors.torch import save_file

    junk = tmp_path / "junk.pth"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    weights = tmp_path / "classifier.safetensors"  # a state dict of no known architecture
    save_file({"fc.weight": torch.zeros(10, 64), "fc.bias": torch.zeros(10)}, str(weights))
    identity = tmp_path / "compact-x1.safetensors"  # a 1x Compact: a restorer, not an upscaler
    save_file(compact_network(1), str(identity))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for path, words in [(junk, "not a model file spandrel can read"),
                        (weights, "not a super-resolution network"),
                        (identity, "not a super-resolution (upscaling) network"),
                        (text, "not a super-resolution network file"),
                        (tmp_path / "missing.pth", "is not a file")]:
        with pytest.raises(UserError) as caught:
            load_generator("upscaler", str(path), CPU, torch.float32)
        message = str(caught.value)
        assert words in message and "\n" not in message, message


# -- the diffusion family: hires fix, outpainting, blending ----------------------------------

@pytest.fixture(scope="module")
def tiny(tiny_pipeline):
    return load_generator("diffusion", str(tiny_pipeline), CPU, torch.float32)


@pytest.fixture(scope="module")
def tiny_inpaint(tiny_models):
    return load_generator("diffusion", str(tiny_models("sd-inpaint")), CPU, torch.float32)


def test_hires_fix_enlarges_and_refines_reproducibly(tiny):
    image = picture()

    def run(seed):
        return tiny.generate(GenerationRequest(
            task=Task.UPSCALE, seeds=[seed], prompt="a red fox", init_image=image, width=128,
            height=128, steps=4, strength=0.5, options={"scale": 2, "method": "hires-fix"}))

    a, b = run(3), run(3)
    assert a.images[0].size == (128, 128)
    assert a.images[0].tobytes() == b.images[0].tobytes()
    assert a.params["upscaler"] == "hires fix" and a.params["strength"] == 0.5
    # It ran the model: the result is not the Lanczos enlargement it started from.
    enlarged = image.resize((128, 128), Image.LANCZOS)
    assert np.abs(pixels(a.images[0]) - pixels(enlarged)).mean() > 1.0


def outpaint(gen, image, pad, seed=4, **kw):
    left, top, right, bottom = pad
    return gen.generate(GenerationRequest(
        task=Task.OUTPAINT, seeds=[seed], prompt="a red fox", init_image=image,
        width=image.width + left + right, height=image.height + top + bottom, steps=4,
        strength=kw.pop("strength", 1.0), options={"pad": list(pad), **kw}))


def check_outpainted(result, image, pad):
    left, top, right, bottom = pad
    out = pixels(result.images[0])
    assert result.images[0].size == (image.width + left + right, image.height + top + bottom)
    # The original, pixel-identical, at (left, top).
    assert (out[top:top + image.height, left:left + image.width] == pixels(image)).all()
    # The border beyond the feather is filled: not the blurred edges it started from, not flat.
    start = pixels(extend_canvas(image, pad))
    far = np.ones(out.shape[:2], bool)
    far[max(0, top - FEATHER - 1):top + image.height + FEATHER + 1,
        max(0, left - FEATHER - 1):left + image.width + FEATHER + 1] = False
    assert far.sum() > 0
    assert np.abs(out[far] - start[far]).mean() > 5.0
    assert out[far].std(axis=0).min() > 3.0


def test_zoom_out_and_pan_with_an_inpainting_model(tiny_inpaint):
    image = picture()
    zoom = outpaint(tiny_inpaint, image, (32, 32, 32, 32), zoom=2.0)
    check_outpainted(zoom, image, (32, 32, 32, 32))
    assert zoom.params["notes"][-1] == "The new area was filled with the inpainting pipeline."
    pan = outpaint(tiny_inpaint, image, (32, 0, 0, 0), pan="left")
    check_outpainted(pan, image, (32, 0, 0, 0))
    again = outpaint(tiny_inpaint, image, (32, 0, 0, 0), pan="left")
    assert again.images[0].tobytes() == pan.images[0].tobytes()
    with pytest.raises(UnsupportedTask, match="inpainting model"):
        tiny_inpaint.generate(GenerationRequest(task=Task.DRAW, seeds=[1], prompt="x",
                                                width=64, height=64, steps=2))


def test_zoom_out_by_image_to_image_where_there_is_no_inpainting_pipeline(tiny, monkeypatch):
    monkeypatch.setattr(tiny, "inpaint_pipeline", lambda: None)
    image = picture()
    zoom = outpaint(tiny, image, (32, 32, 32, 32), zoom=2.0)
    check_outpainted(zoom, image, (32, 32, 32, 32))
    assert "image to image on the extended canvas" in zoom.params["notes"][-1]
    assert zoom.params["strength"] == 0.8  # 1.0 would ignore the canvas
    pan = outpaint(tiny, image, (32, 0, 0, 0), pan="left")
    check_outpainted(pan, image, (32, 0, 0, 0))


def test_a_plain_model_inpaints_with_its_own_unet(tiny):
    """SD's inpainting pipeline takes a 4-channel UNet too (blending latents at each step)."""
    image = picture()
    pan = outpaint(tiny, image, (0, 0, 0, 24), pan="down")
    check_outpainted(pan, image, (0, 0, 0, 24))
    assert "inpainting pipeline" in pan.params["notes"][-1]


def test_an_uneven_pad_is_rounded_for_the_model_and_cropped_back(tiny):
    image = picture(40)
    result = outpaint(tiny, image, (5, 0, 0, 3))
    assert result.images[0].size == (45, 43)
    assert (pixels(result.images[0])[0:40, 5:45] == pixels(image)).all()


def test_the_feather_blends_into_the_new_area_only():
    image = picture(16)
    pad = (8, 0, 0, 0)
    fill = Image.new("RGB", (24, 16), (0, 255, 0))
    out = pixels(paste_back(fill, image, pad, feather=4))
    assert (out[:, 8:] == pixels(image)).all()
    edge = pixels(image)[:, :1]
    # 1 px out: 4/5 the image's edge; 5 px out and beyond: the fill alone.
    assert np.abs(out[:, 7:8] - (0.8 * edge + 0.2 * np.array([0, 255, 0]))).max() <= 0.5
    assert (out[:, :4] == [0, 255, 0]).all()


def test_diffusion_blend_of_two_images(tiny):
    red, blue = Image.new("RGB", (64, 64), (220, 30, 30)), picture(48)
    request = GenerationRequest(task=Task.BLEND, seeds=[2], prompt="a red fox", images=[red, blue],
                                width=64, height=64, steps=4, strength=0.5)
    result = tiny.generate(request)
    assert [im.size for im in result.images] == [(64, 64)]
    assert result.params["blended"] == 2 and result.seeds == [2]
    assert tiny.generate(request).images[0].tobytes() == result.images[0].tobytes()


def test_the_normalised_mean_keeps_the_spread():
    from generators.diffusion.generator import normalised_mean

    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=g) * 2 + 1
    mixed = normalised_mean(latents)
    assert mixed.shape == (1, 4, 8, 8)
    # A plain mean of two unrelated latents has 1/sqrt(2) of their spread; this keeps it.
    assert torch.allclose(mixed.std(dim=(2, 3)), latents.std(dim=(2, 3)).mean(dim=0), atol=1e-5)


# -- the bundled models ---------------------------------------------------------------------

def test_emoji_vae_blends_red_and_blue_reproducibly():
    gen = load_generator("vae", "emoji-vae", CPU, torch.float32)
    red, blue = Image.new("RGB", (64, 64), (230, 20, 20)), Image.new("RGB", (64, 64), (20, 20, 230))

    def blend(seeds):
        return gen.generate(GenerationRequest(task=Task.BLEND, seeds=seeds, images=[red, blue],
                                              width=64, height=64, strength=0.5))

    a, b = blend([1, 2]), blend([1])
    assert [im.size for im in a.images] == [(64, 64), (64, 64)]
    assert a.images[0].tobytes() == b.images[0].tobytes()  # per seed, not per batch
    assert a.images[0].tobytes() != a.images[1].tobytes()
    # The blend lies between its inputs: redder than the blue image, bluer than the red one.
    mean = pixels(a.images[0]).mean(axis=(0, 1))
    only_red = pixels(gen.generate(GenerationRequest(
        task=Task.BLEND, seeds=[1], images=[red, red], width=64, height=64, strength=0.0)).images[0])
    assert mean[2] > only_red.mean(axis=(0, 1))[2]


def test_emoji_diffusion_blends_by_pixel_mean_then_varies():
    gen = load_generator("pixel-diffusion", "emoji-diffusion", CPU, torch.float32)
    red, blue = Image.new("RGB", (64, 64), (230, 20, 20)), Image.new("RGB", (64, 64), (20, 20, 230))
    request = GenerationRequest(task=Task.BLEND, seeds=[3], images=[red, blue], width=64,
                                height=64, steps=10, strength=0.3)
    a, b = gen.generate(request), gen.generate(request)
    assert a.images[0].size == (64, 64) and a.params["blended"] == 2
    assert a.images[0].tobytes() == b.images[0].tobytes()


def test_the_gan_refuses_to_blend_in_one_line():
    gen = load_generator("gan", "emoji-gan", CPU, torch.float32)
    with pytest.raises(UnsupportedTask) as caught:
        gen.generate(GenerationRequest(task=Task.BLEND, seeds=[1], width=64, height=64,
                                       images=[picture(), picture(seed=1)]))
    assert "cannot blend" in str(caught.value) and "\n" not in str(caught.value)
