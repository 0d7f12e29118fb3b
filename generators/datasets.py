"""Training images: the emoji set, or a folder of the user's own images.

    data = load_dataset("emoji", size=64)          # fetched with npm when absent
    data = load_dataset("/path/to/images", size=64)

`ImageDataset` holds every image as one tensor (N, 3, size, size) in [-1, 1]
(transparency composited on white), a caption per image, and two label
levels: `labels` (coarse: the emoji category, 9 of them) and `sublabels`
(fine: the emoji subcategory, about 100). A folder of images gets captions
from file names and a single label; a folder with subfolders uses each
subfolder as a label.

The emoji set is the npm package `emoji-datasource-google` (Noto Emoji
images: Apache-2.0; metadata: MIT), pinned to `EMOJI_VERSION`. It is fetched
with `npm pack` into the cache folder once (`$ARTBOT_CACHE`, else
~/.cache/artbot), then read from there with no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from artbot.errors import UserError

EMOJI_PACKAGE = "emoji-datasource-google"
EMOJI_VERSION = "16.0.0"
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


@dataclass
class ImageDataset:
    images: torch.Tensor  # (N, 3, S, S) float32 in [-1, 1]
    captions: list[str]
    labels: torch.Tensor  # (N,) int64, index into label_names
    label_names: list[str]
    sublabels: torch.Tensor  # (N,) int64, index into sublabel_names
    sublabel_names: list[str]
    source: dict = field(default_factory=dict)  # what it was made from (name, version, count)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def size(self) -> int:
        return self.images.shape[-1]

    def split(self, holdout: float = 0.1, seed: int = 0) -> tuple["ImageDataset", "ImageDataset"]:
        """A deterministic (train, held-out) split."""
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self), generator=g)
        n_hold = max(1, int(len(self) * holdout))
        return self.subset(order[n_hold:]), self.subset(order[:n_hold])

    def subset(self, index: torch.Tensor) -> "ImageDataset":
        return ImageDataset(
            images=self.images[index], captions=[self.captions[i] for i in index.tolist()],
            labels=self.labels[index], label_names=self.label_names,
            sublabels=self.sublabels[index], sublabel_names=self.sublabel_names,
            source=dict(self.source),
        )


def cache_dir() -> Path:
    root = os.environ.get("ARTBOT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "artbot")
    return Path(root)


def to_tensor(image: Image.Image, size: int) -> torch.Tensor:
    """RGB(A) image -> (3, size, size) in [-1, 1], transparency on white."""
    rgba = image.convert("RGBA")
    if rgba.size != (size, size):
        rgba = rgba.resize((size, size), Image.LANCZOS)
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    arr = np.asarray(rgb, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def to_image(tensor: torch.Tensor) -> Image.Image:
    """(3, H, W) in [-1, 1] -> PIL RGB."""
    arr = ((tensor.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return Image.fromarray(arr.permute(1, 2, 0).cpu().numpy(), "RGB")


def image_grid(images: torch.Tensor, nrow: int = 8) -> Image.Image:
    """(N, 3, H, W) in [-1, 1] -> one PIL image, `nrow` per row, 2 px gaps."""
    n, _, h, w = images.shape
    rows = (n + nrow - 1) // nrow
    sheet = Image.new("RGB", (nrow * (w + 2) + 2, rows * (h + 2) + 2), (255, 255, 255))
    for i in range(n):
        sheet.paste(to_image(images[i]), (2 + (i % nrow) * (w + 2), 2 + (i // nrow) * (h + 2)))
    return sheet


# -- the emoji set ---------------------------------------------------------------


def fetch_emoji_package(version: str = EMOJI_VERSION) -> Path:
    """The unpacked npm package, fetched with `npm pack` if not cached yet."""
    target = cache_dir() / f"{EMOJI_PACKAGE}-{version}"
    if (target / "package" / "emoji.json").is_file():
        return target / "package"
    npm = shutil.which("npm")
    if npm is None:
        raise UserError(
            f"The emoji data set comes from the npm package {EMOJI_PACKAGE}@{version}, and npm is "
            f"not installed. Install Node.js (which has npm), or train on a folder of images."
        )
    target.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "pack", f"{EMOJI_PACKAGE}@{version}", "--silent"],
        cwd=target, capture_output=True, text=True, timeout=600,
    )
    tarballs = sorted(target.glob(f"{EMOJI_PACKAGE}-*.tgz"))
    if done.returncode != 0 or not tarballs:
        raise UserError(
            f"Could not fetch {EMOJI_PACKAGE}@{version} with npm: "
            f"{(done.stderr or done.stdout).strip().splitlines()[-1:] or ['no output']}"
        )
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(target, filter="data")
    tarballs[0].unlink()
    return target / "package"


def _caption(entry: dict) -> str:
    name = (entry.get("name") or entry.get("short_name") or "").lower()
    name = re.sub(r"^flag of ", "flag ", name)
    words = [name]
    for short in entry.get("short_names", []):
        short = short.replace("_", " ").replace("-", " ")
        if short not in words:
            words.append(short)
    return ", ".join(w for w in words if w)


def load_emoji(size: int = 64, version: str = EMOJI_VERSION, skin_tones: bool = True) -> ImageDataset:
    package = fetch_emoji_package(version)
    entries = json.loads((package / "emoji.json").read_text(encoding="utf-8"))
    img_dir = package / "img" / "google" / "64"
    rows: list[tuple[Path, str, str, str]] = []
    for e in sorted(entries, key=lambda e: e.get("sort_order", 0)):
        if e.get("category") == "Component" or not e.get("has_img_google"):
            continue
        caption = _caption(e)
        rows.append((img_dir / e["image"], caption, e["category"], e["subcategory"]))
        if skin_tones:
            for var in (e.get("skin_variations") or {}).values():
                if var.get("has_img_google"):
                    rows.append((img_dir / var["image"], caption, e["category"], e["subcategory"]))
    rows = [r for r in rows if r[0].is_file()]
    cats = sorted({r[2] for r in rows})
    subs = sorted({r[3] for r in rows})
    images = torch.stack([to_tensor(Image.open(r[0]), size) for r in rows])
    return ImageDataset(
        images=images,
        captions=[r[1] for r in rows],
        labels=torch.tensor([cats.index(r[2]) for r in rows]),
        label_names=cats,
        sublabels=torch.tensor([subs.index(r[3]) for r in rows]),
        sublabel_names=subs,
        source={"name": "emoji", "package": f"{EMOJI_PACKAGE}@{version}", "images": len(rows),
                "license": "images Apache-2.0 (Noto Emoji), metadata MIT"},
    )


# -- a folder of the user's images ------------------------------------------------


def load_folder(folder: str | Path, size: int = 64) -> ImageDataset:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"Training data {folder} is not a folder (or say 'emoji').")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    tensors, captions, groups = [], [], []
    skipped = 0
    for path in files:
        try:
            with Image.open(path) as im:
                tensors.append(to_tensor(im, size))
        except (OSError, ValueError):
            skipped += 1
            continue
        captions.append(re.sub(r"[_\-]+", " ", path.stem).strip().lower())
        groups.append(path.parent.relative_to(folder).as_posix() if path.parent != folder else "all")
    if len(tensors) < 2:
        raise UserError(f"Found {len(tensors)} readable image(s) in {folder}; training needs at least 2.")
    names = sorted(set(groups))
    labels = torch.tensor([names.index(g) for g in groups])
    digest = hashlib.sha256("\n".join(str(p) for p in files).encode()).hexdigest()[:12]
    return ImageDataset(
        images=torch.stack(tensors), captions=captions, labels=labels, label_names=names,
        sublabels=labels.clone(), sublabel_names=list(names),
        source={"name": str(folder), "images": len(tensors), "skipped": skipped, "files": digest},
    )


def load_dataset(data: str, size: int = 64) -> ImageDataset:
    if data == "emoji":
        return load_emoji(size)
    return load_folder(data, size)
