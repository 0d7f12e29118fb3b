"""A small class-conditional DCGAN (Radford et al., 2016) with a projection
discriminator (Miyato & Koyama, 2018).

    z (B, Z), y (B,) --Generator--> x (B, 3, S, S) in [-1, 1]
    x (B, 3, S, S), y (B,) --Discriminator--> score (B,)  (high: real)

Generator: z, scaled to unit RMS (only its direction matters, so a
truncated z does not fade the image), and the class's embedding go through
a linear layer to a 4x4 feature map, which is doubled up to S x S: by
nearest-neighbour upsampling and a 3x3 convolution (smoother than
transposed convolutions, which leave a checkerboard texture), and for the
last step, to RGB, by a 4x4 transposed convolution (cheaper). Before each
doubling a conditional batch norm normalises the features and then scales
and shifts them by the class's own gamma and beta. The class (the emoji
subcategory) thus steers both the layout and the colours.

Discriminator: 4x4 strided convolutions halve the image down to 4x4; a
minibatch-std channel is added (it lets D notice a generator that draws one
image over and over); the whole 4x4 map, flattened, is phi(x) (not its sum
over space: D must judge the layout, not only patches); the score is
    psi(phi(x)) + <embed(y), phi(x)>
i.e. "is this a real image" plus "is it a real image of class y". Every layer
is spectrally normalised, which keeps D's gradients tame without a penalty term.

Sizes at image_size 64, width 32, z_dim 128, 98 classes: G 4x4 (256 ch) -> 8
(128) -> 16 (64) -> 32 (32) -> 64 (RGB), about 1.55M parameters (1.05M of
them the first linear layer); D 64 -> 32 (32 ch) -> 16 (64) -> 8 (128) -> 4
(256), about 1.1M (0.4M of them the class embedding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from generators.base import halvings


@dataclass
class GANConfig:
    image_size: int = 64  # S: images are (3, S, S) in [-1, 1]; a multiple of 8
    z_dim: int = 128  # Z: size of the noise vector
    n_classes: int = 1  # classes the generator is conditioned on (emoji subcategories)
    width: int = 32  # G's channels just below S x S; doubled at each halving (D likewise)
    max_width_mult: int = 8  # channels stop doubling at width * this
    d_width: int = 32  # D's channels after its first halving

    @property
    def n_levels(self) -> int:
        """How many times the image is halved: down to 4x4 (or as near as halving allows)."""
        return halvings(self.image_size)

    @property
    def bottom(self) -> int:
        """Side of the smallest feature map (4 at S = 64)."""
        return self.image_size // 2**self.n_levels

    def channels(self, width: int) -> list[int]:
        """Channels from the largest feature map (S/2) to the smallest."""
        return [width * min(2**i, self.max_width_mult) for i in range(self.n_levels)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "GANConfig":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own affine; each class has a gamma and beta instead."""

    def __init__(self, channels: int, n_classes: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Embedding(n_classes, channels)
        self.beta = nn.Embedding(n_classes, channels)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x (B, C, H, W), y (B,) -> (B, C, H, W)
        return self.norm(x) * self.gamma(y)[:, :, None, None] + self.beta(y)[:, :, None, None]


class UpConv(nn.Module):
    """Double the size (nearest neighbour), then a 3x3 convolution: (B, C, H, W) -> (B, C', 2H, 2W)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        self.config = config
        chs = config.channels(config.width)[::-1]  # 256, 128, 64, 32 at S = 64, width 32
        self.c0, self.bottom = chs[0], config.bottom
        self.embed = nn.Embedding(config.n_classes, config.z_dim)  # the class, as the layout sees it
        self.from_z = nn.Linear(2 * config.z_dim, chs[0] * config.bottom**2)
        self.norms = nn.ModuleList([ConditionalBatchNorm(c, config.n_classes) for c in chs])
        # Doubling: nearest-neighbour upsampling and a 3x3 convolution (no checkerboard
        # artifacts), except the last, to RGB, a 4x4 transposed convolution (cheaper there).
        self.ups = nn.ModuleList([UpConv(c_in, c_out) for c_in, c_out in zip(chs, chs[1:])])
        self.ups.append(nn.ConvTranspose2d(chs[-1], 3, 4, stride=2, padding=1))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # z (B, Z), y (B,) -> (B, 3, S, S) in [-1, 1]
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # unit RMS: only z's direction counts
        h = self.from_z(torch.cat([z, self.embed(y)], dim=1))  # (B, C * 4 * 4) at S = 64
        h = h.view(-1, self.c0, self.bottom, self.bottom)  # (B, C, 4, 4)
        for norm, up in zip(self.norms, self.ups):
            h = up(F.relu(norm(h, y)))  # each: (B, C, H, W) -> (B, C', 2H, 2W)
        return torch.tanh(h)


def minibatch_std(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append one channel: how much the images of each group of `group` consecutive images
    differ (Karras et al., 2018). A generator that draws the same image over and over
    is easy to spot this way. (B, C, H, W) -> (B, C + 1, H, W)."""
    b, _, height, width = h.shape
    g = next(n for n in (group, 2, 1) if b % n == 0)
    std = h.view(b // g, g, -1).std(dim=1, unbiased=False).mean(dim=1)  # (B / g,)
    return torch.cat([h, std.repeat_interleave(g)[:, None, None, None].expand(b, 1, height, width)], dim=1)


class Discriminator(nn.Module):
    def __init__(self, config: GANConfig):
        super().__init__()
        chs = config.channels(config.d_width)  # 32, 64, 128, 256 at S = 64
        self.convs = nn.ModuleList([spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
                                    for c_in, c_out in zip([3] + chs[:-1], chs)])
        # phi: the whole 4x4 map (and its minibatch-std channel), flattened, so that D judges
        # the layout and not only patches.
        features = (chs[-1] + 1) * config.bottom**2
        self.psi = spectral_norm(nn.Linear(features, 1))
        self.embed = spectral_norm(nn.Embedding(config.n_classes, features))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # x (B, 3, S, S), y (B,) -> (B,); score real and fake images in separate calls,
        # so that the minibatch std never mixes them.
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)  # (B, C, H/2, W/2)
        phi = minibatch_std(h).flatten(1)  # (B, (C + 1) * 4 * 4)
        return self.psi(phi).squeeze(1) + (self.embed(y) * phi).sum(dim=1)


def truncate(z: torch.Tensor, threshold: float | None, generator: torch.Generator) -> torch.Tensor:
    """The truncation trick: redraw every component of z beyond +-threshold.

    z without extreme components (the generator normalises its length) gives
    more typical, cleaner images at the cost of variety. Redrawing uses
    `generator`, so the result is as reproducible as z. None (or a threshold
    of 4 or more) leaves z as it is.
    """
    if threshold is None or threshold >= 4.0:
        return z
    z = z.clone()
    for _ in range(1000):
        outside = z.abs() > threshold
        if not outside.any():
            return z
        z[outside] = torch.randn(int(outside.sum()), generator=generator, dtype=z.dtype)
    return z.clamp(-threshold, threshold)
