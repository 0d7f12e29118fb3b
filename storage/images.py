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

from PIL import Image, PngImagePlugin


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
        self.root.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str, suffix: str = ".png") -> Path:
        return self.root / sha256[:2] / sha256[2:4] / f"{sha256}{suffix}"

    def put_bytes(self, data: bytes, suffix: str = ".png") -> tuple[str, Path]:
        """Store `data` under its sha256; return (sha256, absolute path)."""
        digest = content_address(data)
        target = self.path_for(digest, suffix)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
        return digest, target

    def put_image(self, image: Image.Image, text: dict[str, str] | None = None) -> StoredImage:
        digest, target = self.put_bytes(encode_png(image, text))
        return StoredImage(
            sha256=digest,
            path=str(target.relative_to(self.root)),
            width=image.width,
            height=image.height,
        )

    def open(self, relative_path: str) -> Image.Image:
        with Image.open(self.root / relative_path) as im:
            im.load()
            return im

    def read_bytes(self, relative_path: str) -> bytes:
        return (self.root / relative_path).read_bytes()

    def by_sha(self, sha256: str) -> Path:
        """Absolute path of a stored PNG, by digest (for inputs referenced by jobs)."""
        path = self.path_for(sha256)
        if not path.exists():
            raise FileNotFoundError(f"image {sha256} is not in the store at {self.root}")
        return path
