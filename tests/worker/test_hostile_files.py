"""Hostile and awkward files, each with the outcome it must get.

Images (made here with Pillow or as raw bytes): every one that decodes is read on
purpose, with its pixels and size checked (16-bit grey is grey, CMYK red is red,
an EXIF-rotated photo stands upright, an animation gives its first frame and says
so); every one that cannot be used gets one clear line naming the formats
accepted, and an image over the pixel limit is called too large, with the limit.
They go through `read_input_image` directly, a subset through the `artbot` command
line in-process (one `error:` line, no traceback, no job recorded) and through
the bot's attachments against the Discord-protocol test server.

Also: content images too small or too thin for style transfer (scaled up with a
note, or refused in one line), size suggestions that are themselves valid, and
broken model folders and files, which say what is wrong with them at request time
and when a worker loads them.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from artbot.config import Settings
from artbot.errors import InvalidRequest, ModelNotFound, UserError
from tests.cli_runner import in_process_artbot
from tests.cli_runner import job_rows as _job_rows
from storage.images import ImageStore
from worker import image_files
from worker.image_files import read_input_image
from worker.requests import (STYLE_MIN_SIDE, build_stylize, check_size, fit_size, model_profile,
                             valid_size_near)

ACCEPTED = "PNG, JPEG, WebP, GIF, AVIF, BMP or TIFF"
UNREADABLE = f"is not an image that can be read: send a {ACCEPTED} image."

# -- making files ---------------------------------------------------------------------


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, depth: int, colour_type: int, rows: list[bytes]) -> bytes:
    """A PNG written byte by byte (Pillow cannot write 16-bit colour): each row its
    filter byte (0) and samples, big-endian."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows))
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels)
            + _chunk(b"IEND", b""))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size and holds almost nothing: what a decompression bomb looks like."""
    return raw_png(width, height, 8, 2, [])


def u16(*values: int) -> bytes:
    return struct.pack(f">{len(values)}H", *values)


def halves(size=(40, 20), left=(255, 0, 0), right=(0, 0, 255)) -> Image.Image:
    """A picture whose left half is red and right half blue: how it is turned shows."""
    image = Image.new("RGB", size, right)
    image.paste(left, (0, 0, size[0] // 2, size[1]))
    return image


def with_orientation(orientation: int, fmt: str = "PNG") -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encoded(halves(), fmt, exif=exif)


def animation(fmt: str, colours=("red", "green", "blue"), **options) -> bytes:
    frames = [Image.new("RGB", (16, 16), c) for c in colours]
    return encoded(frames[0], fmt, save_all=True, append_images=frames[1:], **options)


def palette(transparent: bool) -> bytes:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    image.putpixel((0, 0), 0)
    image.putpixel((1, 0), 1)
    return encoded(image, transparency=0) if transparent else encoded(image)


def rgb_with_colour_key() -> bytes:
    image = Image.new("RGB", (2, 1), (200, 0, 0))
    image.putpixel((0, 0), (10, 20, 30))
    return encoded(image, transparency=(10, 20, 30))


def with_bad_crc() -> bytes:
    data = bytearray(encoded(Image.new("RGB", (8, 8), "red")))
    data[data.index(b"IDAT") + 4] ^= 0xFF
    return bytes(data)


def jpeg_with_broken_exif() -> bytes:
    jpeg = encoded(Image.new("RGB", (16, 16), "red"), "JPEG")
    app1 = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x00" * 10
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1 + jpeg[2:]


def gif_claiming(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00"
            + b",\x00\x00\x00\x00" + struct.pack("<HH", width, height) + b"\x00\x02\x02D\x01\x00;")


SVG = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
       b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect/></svg>')
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(200)


# -- the images: (bytes, what must come of them) ----------------------------------------
#
# A handled image: ("image", (width, height), {(x, y): rgb}, note or None); an rgb is
# checked to within a few levels (JPEG and colour conversions round).
# A refused one: ("refused", exact message after the file's name).

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)
GREY = (128, 128, 128)


def image(size, pixels, note=None):
    return ("image", size, pixels, note)


def refused(message):
    return ("refused", message)


def damaged(fmt):
    return refused(f"is a damaged or incomplete {fmt} file, not an image that can be read: "
                   f"save or download it again (accepted: {ACCEPTED}).")


def foreign(fmt):
    return refused(f"is in {fmt} format, not an image that can be read here: export it as PNG "
                   f"or JPEG (accepted: {ACCEPTED}).")


def too_large(megapixels, dims):
    return refused(f"is too large: {megapixels} megapixels ({dims}), over the limit of 64 "
                   f"megapixels (for example 8000x8000). Scale it down and send it again.")


FILES = {
    # 16-bit and deeper: scaled, not clipped to white
    "grey16-mid.png": (lambda: encoded(Image.new("I;16", (4, 4), 32768)),
                       image((4, 4), {(0, 0): GREY, (3, 3): GREY})),
    "grey16-ramp.png": (lambda: raw_png(3, 1, 16, 0, [u16(0, 16384, 65535)]),
                        image((3, 1), {(0, 0): BLACK, (1, 0): (64, 64, 64), (2, 0): WHITE})),
    "rgb16.png": (lambda: raw_png(2, 1, 16, 2, [u16(65535, 0, 0, 0, 32768, 65535)]),
                  image((2, 1), {(0, 0): RED, (1, 0): (0, 128, 255)})),
    "rgba16.png": (lambda: raw_png(2, 1, 16, 6, [u16(0, 0, 0, 0, 0, 32768, 65535, 65535)]),
                   image((2, 1), {(0, 0): WHITE, (1, 0): (0, 128, 255)})),
    "grey-alpha16.png": (lambda: raw_png(2, 1, 16, 4, [u16(32768, 65535, 0, 0)]),
                         image((2, 1), {(0, 0): GREY, (1, 0): WHITE})),
    "grey16.tif": (lambda: encoded(Image.new("I;16", (2, 2), 65535), "TIFF"),
                   image((2, 2), {(0, 0): WHITE})),
    "int32-small.tif": (lambda: encoded(Image.new("I", (2, 2), 100), "TIFF"),
                        image((2, 2), {(1, 1): (100, 100, 100)})),
    "float-half.tif": (lambda: encoded(Image.new("F", (2, 2), 0.5), "TIFF"),
                       image((2, 2), {(0, 0): GREY})),
    "float-wide-range.tif": (lambda: encoded(Image.frombytes("F", (2, 1), struct.pack(
                                 "<2f", -500.0, 1500.0)), "TIFF"),
                             image((2, 1), {(0, 0): BLACK, (1, 0): WHITE})),
    # other colour models
    "cmyk-red.jpg": (lambda: encoded(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG"),
                     image((8, 8), {(4, 4): RED})),
    "cmyk-green.tif": (lambda: encoded(Image.new("CMYK", (4, 4), (255, 0, 255, 0)), "TIFF"),
                       image((4, 4), {(0, 0): GREEN})),
    "lab-grey.tif": (lambda: encoded(Image.new("LAB", (2, 2), (128, 128, 128)), "TIFF"),
                     image((2, 2), {(0, 0): (119, 119, 119)})),
    "one-bit.png": (lambda: encoded(Image.frombytes("1", (8, 1), b"\x0f")),
                    image((8, 1), {(0, 0): BLACK, (7, 0): WHITE})),
    "palette.png": (lambda: palette(transparent=False),
                    image((2, 1), {(0, 0): BLACK, (1, 0): RED})),
    "palette-transparent.png": (lambda: palette(transparent=True),
                                image((2, 1), {(0, 0): WHITE, (1, 0): RED})),
    "palette-transparent.gif": (lambda: encoded(Image.open(io.BytesIO(palette(True))), "GIF"),
                                image((2, 1), {(0, 0): WHITE, (1, 0): RED})),
    "rgb-colour-key.png": (rgb_with_colour_key, image((2, 1), {(0, 0): WHITE, (1, 0): (200, 0, 0)})),
    # transparency on white
    "grey-alpha.png": (lambda: encoded(Image.new("LA", (2, 2), (0, 0))), image((2, 2), {(0, 0): WHITE})),
    "half-transparent-black.png": (lambda: encoded(Image.new("RGBA", (2, 2), (0, 0, 0, 128))),
                                   image((2, 2), {(1, 1): (127, 127, 127)})),
    "transparent.webp": (lambda: encoded(Image.new("RGBA", (4, 4), (0, 0, 0, 0)), "WEBP",
                                         lossless=True), image((4, 4), {(0, 0): WHITE})),
    "icon.ico": (lambda: encoded(Image.new("RGBA", (16, 16), (255, 0, 0, 255)), "ICO"),
                 image((16, 16), {(8, 8): RED})),
    # orientation
    "exif-rotate-90.png": (lambda: with_orientation(6),
                           image((20, 40), {(10, 5): RED, (10, 35): BLUE})),
    "exif-rotate-180.png": (lambda: with_orientation(3),
                            image((40, 20), {(5, 10): BLUE, (35, 10): RED})),
    "exif-rotate-270.png": (lambda: with_orientation(8),
                            image((20, 40), {(10, 5): BLUE, (10, 35): RED})),
    "exif-rotate-90.jpg": (lambda: with_orientation(6, "JPEG"),
                           image((20, 40), {(10, 5): RED, (10, 35): BLUE})),
    "broken-exif.jpg": (jpeg_with_broken_exif, image((16, 16), {(8, 8): RED})),
    # animations and pages: the first, said in a note
    "animated.gif": (lambda: animation("GIF"), image((16, 16), {(8, 8): RED},
                     "animated.gif is an animated GIF of 3 frames; its first frame was used.")),
    "animated.png": (lambda: animation("PNG"), image((16, 16), {(8, 8): RED},
                     "animated.png is an animated APNG of 3 frames; its first frame was used.")),
    "animated.webp": (lambda: animation("WEBP", lossless=True), image((16, 16), {(8, 8): RED},
                      "animated.webp is an animated WebP of 3 frames; its first frame was used.")),
    "pages.tif": (lambda: animation("TIFF", ("red", "blue")), image((16, 16), {(8, 8): RED},
                  "pages.tif has 2 pages; the first one was used.")),
    # sizes that are odd but fine here
    "one-pixel.png": (lambda: encoded(Image.new("RGB", (1, 1), "red")), image((1, 1), {(0, 0): RED})),
    "thin-4000x20.png": (lambda: encoded(Image.new("RGB", (4000, 20), "red")),
                         image((4000, 20), {(3999, 19): RED})),
    "plain.ppm": (lambda: b"P6 2 1 255\n" + bytes([255, 0, 0, 0, 0, 255]),
                  image((2, 1), {(0, 0): RED, (1, 0): BLUE})),
    # not an image
    "empty.png": (lambda: b"", refused(f"is empty (0 bytes), not an image that can be read: "
                                       f"send a {ACCEPTED} image.")),
    "notes.txt.png": (lambda: b"hello, this is a text file\n", refused(UNREADABLE)),
    "page.html.png": (lambda: b"<!DOCTYPE html><html><body>hi</body></html>", refused(UNREADABLE)),
    "random.png": (lambda: bytes(range(7, 250)) * 4, refused(UNREADABLE)),
    "archive.zip.png": (lambda: b"PK\x03\x04" + bytes(60), refused(UNREADABLE)),
    "drawing.svg": (lambda: SVG, foreign("SVG")),
    "bare.svg": (lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><circle r="4"/></svg>',
                 foreign("SVG")),
    "drawing.svgz": (lambda: gzip.compress(SVG), foreign("SVG")),
    "photo.heic": (lambda: HEIC, foreign("HEIC")),
    "document.pdf": (lambda: b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n", foreign("PDF")),
    "figure.eps": (lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
                   foreign("PostScript")),
    "photo.jxl": (lambda: b"\xff\x0a" + bytes(100), foreign("JPEG XL")),
    # damaged
    "truncated.png": (lambda: encoded(Image.effect_noise((64, 64), 60))[:400], damaged("PNG")),
    "truncated.jpg": (lambda: encoded(Image.new("RGB", (64, 64), "red"), "JPEG")[:300],
                      damaged("JPEG")),
    "signature-only.png": (lambda: b"\x89PNG broken", damaged("PNG")),
    "bad-checksum.png": (with_bad_crc, damaged("PNG")),
    "zero-width.png": (lambda: png_header_only(0, 10), damaged("PNG")),
    "header-only.gif": (lambda: b"GIF89a", damaged("GIF")),
    # too large, with the limit
    "bomb-400mp.png": (lambda: png_header_only(20000, 20000), too_large(400, "20000x20000")),
    "over-pillow-warning-100mp.png": (lambda: png_header_only(10000, 10000),
                                      too_large(100, "10000x10000")),
    "over-limit-72mp.png": (lambda: png_header_only(9000, 8000), too_large(72, "9000x8000")),
    "just-over-limit.png": (lambda: png_header_only(8001, 8000), too_large("64.01", "8001x8000")),
    "bomb.gif": (lambda: gif_claiming(65535, 65535), too_large(4295, "65535x65535")),
}


def close(got, want, tolerance=6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got, want))


def test_there_are_at_least_forty_hostile_files():
    assert len(FILES) >= 40


@pytest.mark.parametrize("name", list(FILES))
def test_a_hostile_file_is_read_on_purpose_or_refused_in_one_line(name):
    make, expected = FILES[name]
    notes: list[str] = []
    if expected[0] == "refused":
        with pytest.raises(InvalidRequest) as refusal:
            read_input_image(make(), name=name, notes=notes)
        assert str(refusal.value) == f"{name} {expected[1]}"
        assert "\n" not in str(refusal.value)
        return
    _, size, pixels, note = expected
    result = read_input_image(make(), name=name, notes=notes)
    assert result.mode == "RGB" and result.size == size
    for xy, rgb in pixels.items():
        assert close(result.getpixel(xy), rgb), (xy, result.getpixel(xy), rgb)
    assert notes == ([note] if note else [])


def test_the_bot_says_each_refusal_in_the_words_of_its_key():
    """The English of each refusal is the same here and in bot.i18n (which translates it)."""
    from bot.i18n import MESSAGES

    for key, text in image_files.TEXTS.items():
        assert MESSAGES[key]["en"] == text, key
        assert set(MESSAGES[key]) >= {"en", "zh"}


# -- through the command line, in-process ------------------------------------------------


@pytest.fixture
def artbot(tmp_path, monkeypatch, capsys):
    return in_process_artbot(tmp_path, monkeypatch, capsys)


def job_rows(db: Path) -> list[tuple]:
    return _job_rows(db, "id, kind, status, params")


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


CLI_REFUSED = ["empty.png", "notes.txt.png", "drawing.svg", "photo.heic", "document.pdf",
               "truncated.png", "truncated.jpg", "signature-only.png", "bomb-400mp.png",
               "over-limit-72mp.png", "bomb.gif"]


def test_refused_files_on_the_command_line_get_one_line_and_no_job(artbot, tmp_path):
    for name in CLI_REFUSED:
        make, (_, message) = FILES[name]
        (tmp_path / name).write_bytes(make())
        for argv in (["vary", name, "--model", "emoji-vae"], ["describe", name],
                     ["stylize", "--style", name, name]):
            code, out, err = artbot(*argv)
            assert code == 2, (argv, err)
            assert one_error_line(err) == f"error: {name} {message}", argv
    assert job_rows(artbot.db) == []


@pytest.mark.parametrize("name", ["animated.gif", "grey16-mid.png", "exif-rotate-90.jpg"])
def test_handled_files_on_the_command_line_run_and_say_what_was_done(artbot, tmp_path, name):
    make, (_, size, pixels, note) = FILES[name]
    (tmp_path / name).write_bytes(make())
    code, out, err = artbot("vary", name, "--model", "emoji-vae", "--seed", "3", "--out", "v.png")
    assert code == 0, err
    assert "Traceback" not in err
    assert Image.open(tmp_path / "v.png").size == fit_size(*size, 1536)
    ((_, kind, status, params),) = job_rows(artbot.db)
    assert (kind, status) == ("vary", "succeeded")
    params = json.loads(params)
    # What the worker read is the image as it was meant: upright, grey, the first frame.
    stored = ImageStore(tmp_path / "data" / "images").by_sha(params["init_image"])
    with Image.open(stored) as read:
        assert read.size == size
        for xy, rgb in pixels.items():
            assert close(read.convert("RGB").getpixel(xy), rgb)
    if note:
        assert f"note: {note}" in err.splitlines()
        assert params["notes"][0] == note  # kept beside the generator's own


def test_stylize_scales_up_a_tiny_content_image_and_refuses_a_thin_one(artbot, tmp_path):
    Image.new("RGB", (1, 1), (200, 40, 40)).save(tmp_path / "dot.png")
    Image.new("RGB", (4000, 20), (200, 40, 40)).save(tmp_path / "wide.png")
    Image.new("RGB", (8, 10000), (200, 40, 40)).save(tmp_path / "tall.png")
    Image.new("RGB", (48, 48), (20, 40, 220)).save(tmp_path / "style.png")
    for thin, size in (("wide.png", "4000x20"), ("tall.png", "8x10000")):
        code, _, err = artbot("stylize", thin, "--style", "style.png", "--steps", "2")
        assert code == 2
        assert f"The content image is {size}, too long and thin for style transfer" in \
            one_error_line(err)
    assert job_rows(artbot.db) == []
    # Thin files still work as style images.
    code, _, err = artbot("stylize", "dot.png", "--style", "wide.png", "--steps", "2", "--size",
                          "32", "--out", "dot-styled.png")
    assert code == 0, err
    assert Image.open(tmp_path / "dot-styled.png").size == (STYLE_MIN_SIDE, STYLE_MIN_SIDE)
    assert ("note: Style transfer needs 32 pixels a side or more, so the 1x1 content image was "
            "restyled at 32x32.") in err.splitlines()


def test_stylize_by_text_restyles_a_thin_image_as_vary_does(artbot, tmp_path, tiny_pipeline):
    Image.new("RGB", (4000, 20), (200, 40, 40)).save(tmp_path / "wide.png")
    code, _, err = artbot("stylize", "wide.png", "--prompt", "ink", "--model", str(tiny_pipeline),
                          "--steps", "2", "--size", "64", "--out", "ink.png")
    assert code == 0, err
    assert Image.open(tmp_path / "ink.png").size == (64, 8)


# -- style transfer sizes and size suggestions, at request time --------------------------


SHA = "0" * 64


@pytest.mark.parametrize("content, size, made, noted", [
    ((1, 1), 256, (32, 32), True),
    ((20, 20), 256, (32, 32), True),
    ((1000, 100), 64, (320, 32), True),
    ((100, 1000), 64, (32, 320), True),
    ((300, 200), 256, (256, 168), False),
    ((512, 32), 512, (512, 32), False),
])
def test_style_transfer_lifts_small_content_to_what_vgg_needs(settings, content, size, made, noted):
    spec = build_stylize(settings, content_sha=SHA, content_size=content, style_sha=SHA,
                         size=size, steps=2)
    assert (spec.params["width"], spec.params["height"]) == made
    assert bool(spec.params.get("notes")) is noted


@pytest.mark.parametrize("content", [(4000, 20), (8, 10000), (513, 16)])
def test_style_transfer_refuses_what_is_too_thin_in_one_line(settings, content):
    with pytest.raises(InvalidRequest, match="too long and thin for style transfer") as refusal:
        build_stylize(settings, content_sha=SHA, content_size=content, style_sha=SHA)
    assert "Crop it to at most 16:1" in str(refusal.value)


def test_every_size_suggestion_is_itself_a_valid_size(settings):
    assert valid_size_near(99999, 99999, settings.max_size) == (1536, 1536)
    with pytest.raises(InvalidRequest, match=r"\(try 1536x1536\)\.$"):
        check_size(99999, 99999, settings)
    for multiple in (8, 16, 64):
        for width in (0, 1, 7, 9, 63, 100, 1535, 1537, 4096, 99999):
            for height in (0, 5, 64, 1000, 2000, 99999):
                try:
                    check_size(width, height, settings, multiple)
                    continue
                except InvalidRequest as exc:
                    message = str(exc)
                suggested = valid_size_near(width, height, settings.max_size, multiple)
                assert f"{suggested[0]}x{suggested[1]}" in message
                check_size(*suggested, settings, multiple)  # raises if it is not valid


# -- model folders and files ---------------------------------------------------------------


def broken_models(root: Path, tiny: Path) -> dict[str, tuple[str, str]]:
    """Broken copies of the tiny pipeline and broken single files: case -> (the model as
    a request names it, the exact message it must get)."""
    cases: dict[str, tuple[str, str]] = {}

    def copy(name: str) -> Path:
        shutil.copytree(tiny, root / name)
        return root / name

    def index_of(folder: Path, change) -> None:
        index = json.loads((folder / "model_index.json").read_text())
        change(index)
        (folder / "model_index.json").write_text(json.dumps(index, indent=1))

    f = copy("bad-json")
    (f / "model_index.json").write_text('{\n "_class_name": "StableDiffusionPipeline",\n "unet": [\n')
    cases["bad-json"] = (f, f"{f}/model_index.json is not valid JSON (line 4: expecting value): "
                            f"re-download the model.")
    f = copy("no-class")
    index_of(f, lambda index: index.pop("_class_name"))
    cases["no-class"] = (f, f'{f}/model_index.json names no pipeline class (its "_class_name" is '
                            f'missing), so it is not a diffusers model_index.json: re-download '
                            f'the model.')
    f = copy("list-index")
    (f / "model_index.json").write_text("[1, 2]")
    cases["list-index"] = (f, f"{f}/model_index.json holds a JSON list, not the object of "
                              f"settings a config is: re-download the model.")
    f = copy("empty-index")
    (f / "model_index.json").write_text("")
    cases["empty-index"] = (f, f"{f}/model_index.json is empty: re-download the model.")
    f = copy("no-index")
    (f / "model_index.json").unlink()
    cases["no-index"] = (f, f"Model folder {f} is not a diffusers pipeline (it has no "
                            f"model_index.json).")
    f = copy("no-unet")
    shutil.rmtree(f / "unet")
    cases["no-unet"] = (f, f"Model folder {f} is incomplete: its model_index.json names unet, "
                           f"which is not there. Download the whole model again.")
    f = copy("bad-unet-config")
    (f / "unet" / "config.json").write_text("{oops")
    cases["bad-unet-config"] = (f, f"{f}/unet/config.json is not valid JSON (line 1: expecting "
                                   f"property name enclosed in double quotes): re-download the "
                                   f"model.")
    f = copy("no-unet-weights")
    (f / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    cases["no-unet-weights"] = (f, f"{f}/unet has no weights (no .safetensors or .bin file): "
                                   f"re-download the model.")
    not_safetensors = (" is not a .safetensors file (its header cannot be read: the length in "
                       "its first 8 bytes does not fit the file; random bytes, or another format "
                       "renamed?). Re-download it.")
    f = copy("random-unet-weights")
    (f / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(bytes(range(256)) * 20)
    cases["random-unet-weights"] = (f, f"{f}/unet/diffusion_pytorch_model.safetensors"
                                       f"{not_safetensors}")
    whole = (tiny / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()

    def cut_short(path: Path, keep: int) -> str:
        path.write_bytes(whole[:keep])
        return (f"{path} is cut short: its header describes {len(whole)} bytes but the file has "
                f"{keep} (an unfinished download?). Re-download it.")

    f = copy("cut-unet-weights")
    cases["cut-unet-weights"] = (f, cut_short(f / "unet" / "diffusion_pytorch_model.safetensors",
                                              len(whole) // 2))
    files = root / "files"
    files.mkdir()

    def single(name: str, data: bytes, said: str) -> None:
        (files / name).write_bytes(data)
        cases[name] = (files / name, f"{files / name}{said}")

    single("random.safetensors", bytes(range(255, 0, -1)) * 40, not_safetensors)
    single("empty.safetensors", b"", " is not a .safetensors file: it is empty (0 bytes). "
                                     "Re-download it.")
    cases["cut.safetensors"] = (files / "cut.safetensors",
                                cut_short(files / "cut.safetensors", len(whole) // 3))
    single("random.ckpt", b"\x13\x37" * 500, " is not a PyTorch checkpoint (neither a zip archive "
                                             "nor a pickle): re-download the model.")
    single("empty.ckpt", b"", " is empty (0 bytes): re-download the model.")
    single("cut.ckpt", b"PK\x03\x04" + bytes(500), " is cut short or damaged (its zip archive has "
                                                    "no end): re-download the model.")
    return {case: (str(model), message) for case, (model, message) in cases.items()}


@pytest.fixture(scope="module")
def broken(tmp_path_factory, tiny_pipeline):
    return broken_models(tmp_path_factory.mktemp("broken-models"), tiny_pipeline)


@pytest.mark.parametrize("case", [
    "bad-json", "no-class", "list-index", "empty-index", "no-index", "no-unet", "bad-unet-config",
    "no-unet-weights", "random-unet-weights", "cut-unet-weights", "random.safetensors",
    "empty.safetensors", "cut.safetensors", "random.ckpt", "empty.ckpt", "cut.ckpt"])
def test_a_broken_model_says_what_is_wrong_before_and_when_it_is_loaded(settings, broken, case):
    import torch

    from generators.diffusion.loading import load_pipeline

    model, want = broken[case]
    with pytest.raises(ModelNotFound) as at_request:
        model_profile(settings, model, "diffusion")
    assert str(at_request.value) == want
    with pytest.raises(ModelNotFound) as at_load:
        load_pipeline(model, torch.device("cpu"), torch.float32)
    assert str(at_load.value) == want


def test_a_broken_model_on_the_command_line(artbot, tiny_pipeline, tmp_path):
    """Refused before queueing when its files say so; failed with the reason when only
    loading tells (a pipeline class diffusers does not have)."""
    no_unet = tmp_path / "no-unet"
    shutil.copytree(tiny_pipeline, no_unet)
    shutil.rmtree(no_unet / "unet")
    code, _, err = artbot("draw", "a fox", "--model", str(no_unet), "--size", "64x64")
    assert code == 1
    assert "is incomplete: its model_index.json names unet, which is not there" in \
        one_error_line(err)
    assert job_rows(artbot.db) == []

    unknown = tmp_path / "unknown-class"
    shutil.copytree(tiny_pipeline, unknown)
    index = json.loads((unknown / "model_index.json").read_text())
    (unknown / "model_index.json").write_text(json.dumps({**index, "_class_name": "NoSuchPipeline"}))
    code, _, err = artbot("draw", "a fox", "--model", str(unknown), "--size", "64x64", "--steps", "1")
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"error: job 1 failed: Model folder {unknown} cannot be loaded: AutoPipeline can't find a "
        f"pipeline linked to NoSuchPipeline for None. Re-download the model (a newer kind of "
        f"model may need a newer diffusers).")
    assert [row[2] for row in job_rows(artbot.db)] == ["failed"]


def test_a_model_only_a_remote_worker_has_is_still_guessed_from_its_name(settings, tmp_path):
    """A path that is not on this machine is not an error here: remote workers may hold it."""
    profile = model_profile(settings, str(tmp_path / "elsewhere" / "dreamy-xl.safetensors"),
                            "diffusion")
    assert profile.arch == "sdxl" and profile.detected_from == "name"


# -- through the bot's attachments, against the Discord-protocol server ------------------

BOT_REFUSED = ["empty.png", "notes.txt.png", "drawing.svg", "photo.heic", "truncated.jpg",
               "bomb-400mp.png", "over-limit-72mp.png"]


@pytest_asyncio.fixture
async def server():
    from tests.bot.discord_server import DiscordServer

    async with DiscordServer() as s:
        yield s


@pytest.mark.asyncio
async def test_hostile_uploads_on_discord(server, tmp_path):
    from tests.bot.discord_server import running_client
    from tests.bot.test_bot import RESULT_WAIT, has_image, make_bot

    settings = Settings(data_dir=tmp_path / "data", device="cpu", discord_token="test-token",
                        default_model="emoji-vae")
    async with running_client(server, make_bot(settings)) as bot:
        style = (encoded(Image.new("RGB", (32, 32), "blue")), "style.png", "image/png")
        for name in BOT_REFUSED:
            make, (_, message) = FILES[name]
            for command, files in (("vary", {"image": (make(), name, "image/png")}),
                                   ("stylize", {"image": (make(), name, "image/png"),
                                                "style": style}),
                                   ("stylize", {"image": style, "style": (make(), name,
                                                                          "image/png")})):
                ix = await server.slash_command(server.alice, server.general, command, {},
                                                attachments=files)
                data = (await ix.wait_response())["data"]
                assert data["flags"] & 64, (name, command)  # private
                assert data["content"] == f"{name} {message}", (name, command)
        # In the member's language.
        make, _ = FILES["drawing.svg"]
        ix = await server.slash_command(server.alice, server.general, "vary", {}, locale="zh-CN",
                                        attachments={"image": (make(), "d.svg", "image/svg+xml")})
        data = (await ix.wait_response())["data"]
        assert data["flags"] & 64 and data["content"].startswith("d.svg 是 SVG 格式，这里无法读取")
        assert await bot.queue.list_jobs() == []

        # An animation is varied from its first frame, and the result says so.
        make, (_, _, _, note) = FILES["animated.gif"]
        ix = await server.slash_command(server.alice, server.general, "vary", {},
                                        attachments={"image": (make(), "animated.gif", "image/gif")})
        shown = await ix.wait_original(has_image, timeout=RESULT_WAIT)
        fields = [f["value"] for e in shown.embeds for f in e.get("fields", [])]
        assert note in fields
        (job,) = await bot.queue.list_jobs()
        assert job.params["notes"][0] == note
    server.assert_clean()


def test_every_refusal_here_is_a_user_error():
    """The CLI prints a UserError's message and exits; anything else would be a traceback."""
    for name, (make, expected) in FILES.items():
        if expected[0] == "refused":
            with pytest.raises(UserError):
                read_input_image(make(), name=name)
