"""The content-addressed image store.

Every image is a PNG file named by the sha256 of its bytes, under
``<data_dir>/images/ab/cd/abcd....png``. Writing the same image twice stores it
once; a file is written to a temporary name and renamed into place, so a crash
never leaves half a file under a real name. The database (table `images`)
links files to jobs; files are never modified after they are written.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, PngImagePlugin

from artbot.errors import UserError
from storage.faults import explain


class ImageLost(UserError):
    """A stored image's file is gone (deleted by hand, a disk restored without it)."""

    exit_code = 1

    def __init__(self, relative_path: str):
        super().__init__("That image is no longer in the image store (its file was deleted or "
                         "lost); its prompt and seed are kept, so it can be drawn again. "
                         "`artbot doctor` lists lost images.")
        self.path = relative_path


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    path: str  # relative to the store root
    width: int
    height: int


def encode_png(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    """PNG bytes of `image`, with optional text chunks (the job's parameters).

    Deterministic: the same pixels and text always give the same bytes.
    """
    info = None
    if text:
        info = PngImagePlugin.PngInfo()
        for key, value in text.items():
            info.add_itxt(key, value)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, optimize=False, compress_level=6)
    return buf.getvalue()


def content_address(data: bytes) -> str:
    """The name a file's bytes are stored under: their sha256, in hex."""
    return hashlib.sha256(data).hexdigest()


class ImageStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            _raise_fault(exc, self.root)

    def path_for(self, sha256: str, suffix: str = ".png") -> Path:
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}{suffix}"

    def put_bytes(self, data: bytes, suffix: str = ".png") -> tuple[str, Path]:
        """Store `data` under its sha256; return (sha256, absolute path)."""
        digest = content_address(data)
        target = self.path_for(digest, suffix)
        if not target.exists():
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            except OSError as exc:
                _raise_fault(exc, self.root)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException as exc:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                if isinstance(exc, OSError):
                    _raise_fault(exc, self.root)
                raise
        return digest, target

    def put_image(self, image: Image.Image, text: dict[str, str] | None = None,
                  sign: Callable[[bytes], bytes] | None = None) -> StoredImage:
        """Store `image` as a PNG with the text chunks; `sign`, when given, is a last
        step over the encoded bytes (a C2PA manifest: `worker.provenance`)."""
        data = encode_png(image, text)
        digest, target = self.put_bytes(sign(data) if sign else data)
        return StoredImage(
            sha256=digest,
            path=str(target.relative_to(self.root)),
            width=image.width,
            height=image.height,
        )

    def open(self, relative_path: str) -> Image.Image:
        try:
            with Image.open(self.root / relative_path) as im:
                im.load()
                return im
        except FileNotFoundError:
            raise ImageLost(relative_path) from None

    def read_bytes(self, relative_path: str) -> bytes:
        try:
            return (self.root / relative_path).read_bytes()
        except FileNotFoundError:
            raise ImageLost(relative_path) from None

    def by_sha(self, sha256: str) -> Path:
        """Absolute path of a stored PNG, by digest (for inputs referenced by jobs)."""
        path = self.path_for(sha256)
        if not path.exists():
            raise ImageLost(str(path.relative_to(self.root)))
        return path


def _raise_fault(exc: OSError, root: Path) -> None:
    """Raise a full disk or a read-only folder as the `StorageFault` it is (a half-written
    temporary file is already gone); any other OSError as it was."""
    fault = explain(exc, root)
    if fault is None:
        raise exc
    raise fault from exc
