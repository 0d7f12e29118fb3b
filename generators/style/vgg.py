"""VGG-19's feature layers, in torchvision's layout, and its ImageNet weights.

The network is defined here (torchvision is not needed): `features.N.weight`
keys match torchvision's `vgg19` state dict, so its ImageNet file loads as is.
Weights are looked for in this order:

1. a configured file (setting `vgg19_weights`, `ARTBOT_VGG19_WEIGHTS`);
2. the cache: `<cache>/vgg19-dcbb9e9d.pth` (`$ARTBOT_CACHE`, else ~/.cache/artbot);
3. a download of torchvision's file into the cache, its sha256 checked against
   the prefix in its name, when the download host can be reached (and
   `ARTBOT_OFFLINE` is not set).

With none of these, `load_vgg19` returns a VGG whose weights are drawn from a
fixed seed and says so: random convolutional features still carry texture
statistics (He, Wang & Hopcroft, NeurIPS 2016), so Gatys-style transfer works
on them, if less well.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from pathlib import Path

import torch
import torch.nn as nn

log = logging.getLogger(__name__)

VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG19_URL = f"https://download.pytorch.org/models/{VGG19_FILE}"
VGG19_SHA256_PREFIX = "dcbb9e9d"

# torchvision's configuration "E": channel counts, "M" for max-pooling.
_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
        512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]

# ReLU outputs by their usual names -> index in `features`.
LAYERS: dict[str, int] = {}
_i, _block, _n = 0, 1, 1
for _c in _CFG:
    if _c == "M":
        _i += 1
        _block, _n = _block + 1, 1
    else:
        LAYERS[f"relu{_block}_{_n}"] = _i + 1
        _i += 2
        _n += 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGG19Features(nn.Module):
    """VGG-19's `features` (16 convolutions, 5 max-pools); returns chosen ReLU outputs.

    Inputs are RGB in [0, 1], (B, 3, H, W); ImageNet normalisation happens inside.
    """

    def __init__(self, pooling: str = "max"):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for c in _CFG:
            if c == "M":
                layers.append(nn.AvgPool2d(2, 2) if pooling == "avg" else nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(inplace=False)]
                c_in = c
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        #: "imagenet" or "random-seed-N": what the weights are, stored with each job.
        self.weights_name = "uninitialised"

    def forward(self, x: torch.Tensor, layers: list[str]) -> dict[str, torch.Tensor]:
        wanted = {LAYERS[name]: name for name in layers}
        last = max(wanted)
        out: dict[str, torch.Tensor] = {}
        h = (x - self.mean) / self.std
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in wanted:
                out[wanted[i]] = h
            if i >= last:
                break
        return out

    def randomize(self, seed: int = 0) -> "VGG19Features":
        """He-initialised weights from a fixed seed (torchvision's init for VGG)."""
        g = torch.Generator().manual_seed(seed)
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                with torch.no_grad():
                    m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_out) ** 0.5)
                    m.bias.zero_()
        self.weights_name = f"random-seed-{seed}"
        return self


def cache_dir() -> Path:
    root = os.environ.get("ARTBOT_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "artbot")
    return Path(root)


def _reachable(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def find_vgg19_weights(configured: str | None = None, *, download: bool = True) -> Path | None:
    """The ImageNet weights file, if one is configured, cached or can be downloaded."""
    configured = configured or os.environ.get("ARTBOT_VGG19_WEIGHTS")
    if configured:
        path = Path(configured).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"VGG-19 weights file {path} does not exist.")
        return path
    cached = cache_dir() / VGG19_FILE
    if cached.is_file():
        return cached
    offline = os.environ.get("ARTBOT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if download and not offline and _reachable("download.pytorch.org"):
        cached.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading VGG-19 ImageNet weights to %s", cached)
        torch.hub.download_url_to_file(VGG19_URL, str(cached), hash_prefix=VGG19_SHA256_PREFIX,
                                       progress=False)
        return cached
    return None


def load_vgg19(configured: str | None = None, *, pooling: str = "max", download: bool = True,
               random_seed: int = 0) -> VGG19Features:
    """VGG-19 features with ImageNet weights if at hand, else fixed-seed random ones."""
    net = VGG19Features(pooling=pooling)
    path = find_vgg19_weights(configured, download=download)
    if path is None:
        log.info("no VGG-19 ImageNet weights at hand and no network: using random weights "
                 "(seed %d)", random_seed)
        net.randomize(random_seed)
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        features = {k: v for k, v in state.items() if k.startswith("features.")}
        missing, _ = net.load_state_dict(features, strict=False)
        missing = [k for k in missing if k not in ("mean", "std")]
        if missing:
            raise ValueError(f"{path} is not a VGG-19 state dict (missing {missing[:3]}...)")
        net.weights_name = f"imagenet-{sha256_of(path)[:8]}"
    return net.eval().requires_grad_(False)
