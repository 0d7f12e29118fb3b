"""Images people give artbot (uploads, files on the command line), decoded on purpose.

`read_input_image` turns every image that decodes into an upright 8-bit RGB
picture, each kind on purpose rather than by Pillow's defaults:

- 16- and 32-bit greyscale (PNG's ``I;16``, TIFF's ``I``) is scaled from its
  range to 0..255 (Pillow's own conversion clips it, so mid-grey came out white);
  float TIFFs (``F``) from 0..1, or 0..255, or their own range;
- 16-bit RGB(A) PNGs (Pillow keeps the top 8 bits), 1-bit, palette, CMYK, YCbCr
  are converted; L*a*b* goes through Little CMS; an embedded ICC profile other
  than sRGB is converted to sRGB (when Little CMS can read it);
- transparency (RGBA, LA, PA, a palette's transparent index) is composited on white;
- the EXIF orientation is applied;
- an animation (GIF, APNG, WebP, AVIF) or a multi-page TIFF gives its first
  frame, and a note says so (`notes`), which the job shows with its result.

Everything else is refused in one line (an `ImageRefused`, which the bot says in
the member's language through its `bot.i18n` key): not an image, empty, damaged
or cut short, a format that is not decoded here (SVG, HEIC without a plugin,
PDF, ...), each naming the formats accepted; and an image over
`MAX_INPUT_PIXELS` (or over Pillow's own decompression-bomb limit) is too
large, with the limit. Only the decoders of `FORMATS` ever see the bytes.
"""

from __future__ import annotations

import io
import logging
import math
import re
import struct

from PIL import Image, ImageOps, UnidentifiedImageError

from artbot.errors import InvalidRequest, Refusal

log = logging.getLogger(__name__)

# Largest input image accepted, in pixels (an 8000 x 8000 photo is 64 Mpx).
MAX_INPUT_PIXELS = 64_000_000
# The decoders that may read what people send (Pillow's format names), the common
# raster formats; Pillow's rarer ones (EPS through Ghostscript, XBM, FITS, ...) are
# left out. HEIF is decoded only when a plugin (pillow-heif) has registered it.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "AVIF", "BMP", "DIB", "TIFF", "ICO", "PSD", "QOI",
           "JPEG2000", "PPM", "HEIF")
# How the formats accepted are named in messages.
ACCEPTED = "PNG, JPEG, WebP, GIF, AVIF, BMP or TIFF"
# How notes and messages name a format (Pillow's name when not listed).
_LABELS = {"WEBP": "WebP", "JPEG2000": "JPEG 2000", "MPO": "JPEG"}


class ImageRefused(Refusal, InvalidRequest):
    """An image that cannot be used, said in one line. A `Refusal` (the bot looks its
    key up in `bot.i18n`) and an `InvalidRequest` (the CLI exits with status 2)."""


# The English texts; bot.i18n holds the same keys in every language it speaks.
TEXTS = {
    "not_an_image": f"{{name}} is not an image that can be read: send a {ACCEPTED} image.",
    "image_empty": f"{{name}} is empty (0 bytes), not an image that can be read: send a "
                   f"{ACCEPTED} image.",
    "image_damaged": f"{{name}} is a damaged or incomplete {{format}} file, not an image that "
                     f"can be read: save or download it again (accepted: {ACCEPTED}).",
    "image_foreign": f"{{name}} is in {{format}} format, not an image that can be read here: "
                     f"export it as PNG or JPEG (accepted: {ACCEPTED}).",
    "image_too_many_pixels": "{name} is too large: {megapixels} megapixels{dims}, over the limit "
                             "of {limit} megapixels (for example {side}x{side}). Scale it down "
                             "and send it again.",
    "image_mode": "{name} has a colour mode ({mode}) that cannot be turned into RGB: save it "
                  "as an ordinary 8-bit PNG or JPEG.",
}


def refused(key: str, **values) -> ImageRefused:
    return ImageRefused(key, TEXTS[key], **values)


def too_large(name: str, *, width: int | None = None, height: int | None = None,
              pixels: int | None = None) -> ImageRefused:
    """The refusal of an image over MAX_INPUT_PIXELS (its size as far as it is known)."""
    pixels = width * height if width and height else pixels
    limit = MAX_INPUT_PIXELS / 1e6
    if not pixels:
        megapixels = f"over {limit:g}"
    else:  # 64.01 of 64 allowed is not "64 megapixels, over the limit of 64"
        megapixels = f"{pixels / 1e6:.0f}" if pixels / 1e6 - limit >= 1 else f"{pixels / 1e6:.2f}"
    return refused("image_too_many_pixels", name=name, megapixels=megapixels,
                   dims=f" ({width}x{height})" if width and height else "",
                   limit=MAX_INPUT_PIXELS // 1_000_000, side=math.isqrt(MAX_INPUT_PIXELS))


def read_input_image(data: bytes, *, name: str = "the file",
                     notes: list[str] | None = None) -> Image.Image:
    """Decode an uploaded or given image as RGB, upright, transparency on white.

    Raises `ImageRefused`, with a message for the user, for anything that is not
    an image that can be read or is too large. What was done that the user would
    not expect (an animation's first frame taken) is appended to `notes`.
    """
    if not data:
        raise refused("image_empty", name=name)
    image = _decode(data, name)
    frames = _frame_count(image)
    if frames > 1 and notes is not None:
        notes.append(_first_frame_note(image, frames, name))
    image = _upright(image)
    return _to_rgb(image, name)


# -- decoding -------------------------------------------------------------------------


def _decode(data: bytes, name: str) -> Image.Image:
    """Open and decode the first frame, refusing in words whatever cannot be."""
    Image.init()  # registers every plugin, so that FORMATS can be looked up
    formats = [f for f in FORMATS if f in Image.OPEN]
    format_name = None
    try:
        with Image.open(io.BytesIO(data), formats=formats) as probe:
            width, height = probe.size
            if width * height > MAX_INPUT_PIXELS:
                raise too_large(name, width=width, height=height)
            if width < 1 or height < 1:
                raise refused("image_damaged", name=name, format=_label(probe.format))
            format_name = probe.format
            probe.verify()  # checksums and structure, before decoding anything
        image = Image.open(io.BytesIO(data), formats=formats)
        image.load()
    except ImageRefused:
        raise
    except Image.DecompressionBombError as exc:
        raise too_large(name, **_header_size(data, str(exc))) from None
    except UnidentifiedImageError:
        raise _not_decoded(data, name) from None
    except MemoryError:
        raise  # the machine's trouble, not the file's
    except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways in decoders
        log.info("%s: cannot decode: %s: %s", name, type(exc).__name__, exc)
        raise refused("image_damaged", name=name,
                      format=_label(format_name or _magic(data))) from None
    return image


def _not_decoded(data: bytes, name: str) -> ImageRefused:
    """Why Pillow found no decoder for `data`: a damaged file of an accepted format, a
    format that is not decoded here, or not an image at all."""
    known = _magic(data)
    if known is None:
        return refused("not_an_image", name=name)
    if known in FORMATS:
        return refused("image_damaged", name=name, format=_label(known))
    return refused("image_foreign", name=name, format=known)


# The signatures of formats, for saying what a file is when no decoder took it.
_SIGNATURES = [
    (b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
    (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"8BPS", "PSD"), (b"qoif", "QOI"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG2000"), (b"\xff\x4f\xff\x51", "JPEG2000"),
    (b"%PDF", "PDF"), (b"%!PS", "PostScript"), (b"\xff\x0a", "JPEG XL"),
    (b"\x00\x00\x00\x0cJXL ", "JPEG XL"),
]
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs",
                b"mif1", b"msf1"}


def _magic(data: bytes) -> str | None:
    """The format `data` says it is by its first bytes (Pillow's names for those it reads)."""
    for signature, found in _SIGNATURES:
        if data.startswith(signature):
            return found
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"avif", b"avis"):
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIC"
    text = data[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<svg", b"<?xml", b"<!doctype svg")) and b"<svg" in data[:4096].lower():
        return "SVG"
    if data.startswith(b"\x1f\x8b") and b"<svg" in _gunzip_head(data):
        return "SVG"  # .svgz
    return None


def _gunzip_head(data: bytes) -> bytes:
    import zlib

    try:
        return zlib.decompressobj(wbits=31).decompress(data[:4096], 4096).lower()
    except zlib.error:
        return b""


def _header_size(data: bytes, message: str) -> dict:
    """The size of an image Pillow would not open (a decompression bomb): width and height
    from a PNG's or GIF's header, else the pixel count Pillow's message gives."""
    if data.startswith(b"\x89PNG") and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return {"width": width, "height": height}
    if data.startswith(b"GIF8") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return {"width": width, "height": height}
    m = re.search(r"\((\d+) pixels\)", message)
    return {"pixels": int(m.group(1))} if m else {}


def _label(format_name: str | None) -> str:
    return _LABELS.get(format_name or "", format_name or "image")


# -- frames and orientation ------------------------------------------------------------


def _frame_count(image: Image.Image) -> int:
    """How many frames (or pages) the file holds; the first one is decoded and used."""
    if not getattr(image, "is_animated", False) or image.format == "MPO":
        return 1  # an MPO's second picture is a phone's depth map or stereo view, not a frame
    try:
        frames = int(image.n_frames)
        image.seek(0)
    except Exception:  # noqa: BLE001 - a damaged later frame: the first one is fine
        frames = 2
    return frames


def _first_frame_note(image: Image.Image, frames: int, name: str) -> str:
    if image.format == "TIFF":
        return f"{name} has {frames} pages; the first one was used."
    kind = "APNG" if image.format == "PNG" else _label(image.format)
    return f"{name} is an animated {kind} of {frames} frames; its first frame was used."


def _upright(image: Image.Image) -> Image.Image:
    """The EXIF orientation applied (a broken EXIF block is ignored, as viewers do)."""
    try:
        upright = ImageOps.exif_transpose(image)
    except Exception:  # noqa: BLE001 - malformed EXIF comes in many shapes
        log.info("ignoring an unreadable EXIF orientation")
        return image
    return image if upright is None else upright


# -- colour ---------------------------------------------------------------------------


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """8-bit RGB, the way each mode means its values; transparency composited on white."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        image = _scaled_to_8_bit(image.convert("I") if mode != "I" else image,
                                 sixteen_bit=mode != "I" or image.format == "PNG")
    elif mode == "F":
        image = _scaled_to_8_bit(image, sixteen_bit=False, unit=True)
    elif mode == "LAB":
        image = _from_lab(image, name)
    image = _to_srgb(image)
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or (
            image.mode == "P" and "transparency" in image.info) or (
            image.mode in ("L", "RGB") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    try:
        return image.convert("RGB")
    except ValueError:
        raise refused("image_mode", name=name, mode=image.mode) from None


def _scaled_to_8_bit(image: Image.Image, *, sixteen_bit: bool, unit: bool = False) -> Image.Image:
    """An 'I' or 'F' image as 'L': a 16-bit one from 0..65535, a float one from 0..1
    (`unit`) or 0..255, anything else from its own darkest to lightest value."""
    low, high = image.getextrema()
    if isinstance(low, float) and (math.isnan(low) or math.isnan(high)):
        low, high = 0.0, 1.0 if unit else 255.0
    if sixteen_bit:
        scale, offset = 255 / 65535, 0.0
    elif unit and low >= 0 and high <= 1:
        scale, offset = 255.0, 0.0
    elif low >= 0 and high <= 255:
        scale, offset = 1.0, 0.0
    elif not unit and low >= 0 and high <= 65535:
        scale, offset = 255 / 65535, 0.0
    else:
        scale = 255 / (high - low) if high > low else 1.0
        offset = -low * scale
    if image.mode == "I":
        image = image.convert("F")  # exact for 16-bit values, and F's point() is linear
    # + 0.5: converting F to L truncates; this rounds (32768 of 65535 is 128).
    return image.point(lambda v: v * scale + offset + 0.5).convert("L")


def _from_lab(image: Image.Image, name: str) -> Image.Image:
    from PIL import ImageCms

    try:
        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"),
                                            ImageCms.createProfile("sRGB"), "LAB", "RGB")
        return ImageCms.applyTransform(image, transform)
    except Exception:  # noqa: BLE001 - Pillow without Little CMS
        raise refused("image_mode", name=name, mode="L*a*b*") from None


def _to_srgb(image: Image.Image) -> Image.Image:
    """Colours through the image's own ICC profile into sRGB, when it has one that is
    not sRGB already; without Little CMS, or with a profile it cannot read, as they are."""
    icc = image.info.get("icc_profile")
    if not icc or image.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        return image
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in (ImageCms.getProfileDescription(source) or "").lower().replace(" ", ""):
            return image
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        base = image.convert({"RGBA": "RGB", "LA": "L"}.get(image.mode, image.mode))
        converted = ImageCms.profileToProfile(base, source, ImageCms.createProfile("sRGB"),
                                              outputMode="RGB")
    except Exception:  # noqa: BLE001 - an unreadable or mismatched profile: colours as they are
        log.info("ignoring an ICC profile that cannot be applied", exc_info=True)
        return image
    if converted is None:
        return image
    if alpha is not None:
        converted.putalpha(alpha)
    return converted
