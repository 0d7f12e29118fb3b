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

Colour (config n_colours > 0): the image's dominant colour c (one of
`COLOURS`, see `dominant_colours`) conditions both networks too: in G its
embedding is added to the class's (zero at first, so a model trained without
colour can be trained further with it) and it shifts each batch norm's gamma
and beta; D adds <embed_c(c), phi(x)>. So "a red heart" can be asked for.

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
from generators.captions import COLOURS


@dataclass
class GANConfig:
    image_size: int = 64  # S: images are (3, S, S) in [-1, 1]; a multiple of 8
    z_dim: int = 128  # Z: size of the noise vector
    n_classes: int = 1  # classes the generator is conditioned on (emoji subcategories)
    width: int = 32  # G's channels just below S x S; doubled at each halving (D likewise)
    max_width_mult: int = 8  # channels stop doubling at width * this
    d_width: int = 32  # D's channels after its first halving
    n_colours: int = 0  # colours (COLOURS) both networks are conditioned on besides the class; 0: none

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


WHITE = COLOURS.index("white")
# Hue bands in degrees (start, colour) for saturated pixels, in order; the last runs to 360.
_HUES = [(0, "red"), (15, "orange"), (38, "yellow"), (68, "green"), (170, "blue"), (255, "purple"),
         (315, "pink"), (345, "red")]


def pixel_colours(rgb: torch.Tensor) -> torch.Tensor:
    """Each pixel's colour name, as an index in COLOURS: (..., 3) in [0, 1] -> (...).

    By hue, saturation and value: dark pixels are black; greyish ones grey or white;
    the rest fall in a hue band, except that dark or dull reds, oranges and yellows are brown
    and pale reds pink.
    """
    value, _ = rgb.max(dim=-1)
    chroma = value - rgb.min(dim=-1).values
    sat = chroma / value.clamp(min=1e-6)
    r, g, b = rgb.unbind(-1)
    safe = chroma.clamp(min=1e-6)
    hue = torch.where(value == r, ((g - b) / safe) % 6,
                      torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4)) * 60  # degrees
    out = torch.zeros(value.shape, dtype=torch.long, device=rgb.device)
    for start, name in _HUES:
        out = torch.where(hue >= start, COLOURS.index(name), out)
    warm = hue < 68
    out = torch.where(warm & ((value < 0.6) | ((value < 0.8) & (sat < 0.6))), COLOURS.index("brown"), out)
    out = torch.where((out == COLOURS.index("red")) & (sat < 0.5) & (value > 0.8), COLOURS.index("pink"), out)
    out = torch.where(sat < 0.18, torch.where(value > 0.8, WHITE, COLOURS.index("grey")), out)
    return torch.where(value < 0.25, COLOURS.index("black"), out)


def dominant_colours(x: torch.Tensor) -> torch.Tensor:
    """Each image's dominant colour, an index in COLOURS: (B, 3, S, S) in [-1, 1] -> (B,).

    Every pixel that is not background (near white) votes for its colour name
    (`pixel_colours`); the most votes win. An image that is almost all near-white
    (under 2% of its pixels otherwise) is white.
    """
    rgb = ((x.float() + 1) / 2).clamp(0, 1).flatten(2).transpose(1, 2)  # (B, S*S, 3)
    foreground = rgb.amin(dim=2) < 0.9  # (B, S*S)
    votes = rgb.new_zeros(len(rgb), len(COLOURS)).scatter_add_(1, pixel_colours(rgb), foreground.float())
    colours = votes.argmax(dim=1)  # (B,), from votes (B, K)
    return torch.where(foreground.float().mean(dim=1) < 0.02, WHITE, colours)


class ConditionalBatchNorm(nn.Module):
    """BatchNorm without its own affine; each class has a gamma and beta instead, and
    each colour (if any) a shift of both, zero at first."""

    def __init__(self, channels: int, n_classes: int, n_colours: int = 0):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma = nn.Embedding(n_classes, channels)
        self.beta = nn.Embedding(n_classes, channels)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)
        if n_colours:
            self.colour_gamma = nn.Embedding(n_colours, channels)
            self.colour_beta = nn.Embedding(n_colours, channels)
            nn.init.zeros_(self.colour_gamma.weight)
            nn.init.zeros_(self.colour_beta.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, C, H, W), y (B,), c (B,) or None -> (B, C, H, W)
        gamma, beta = self.gamma(y), self.beta(y)  # (B, C) each
        if c is not None:
            gamma, beta = gamma + self.colour_gamma(c), beta + self.colour_beta(c)
        return self.norm(x) * gamma[:, :, None, None] + beta[:, :, None, None]


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
        if config.n_colours:
            self.colour = nn.Embedding(config.n_colours, config.z_dim)  # added to the class's
            nn.init.zeros_(self.colour.weight)
        self.norms = nn.ModuleList([ConditionalBatchNorm(c, config.n_classes, config.n_colours) for c in chs])
        # Doubling: nearest-neighbour upsampling and a 3x3 convolution (no checkerboard
        # artifacts), except the last, to RGB, a 4x4 transposed convolution (cheaper there).
        self.ups = nn.ModuleList([UpConv(c_in, c_out) for c_in, c_out in zip(chs, chs[1:])])
        self.ups.append(nn.ConvTranspose2d(chs[-1], 3, 4, stride=2, padding=1))

    def forward(self, z: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        # z (B, Z), y (B,), c (B,) (colour models only) -> (B, 3, S, S) in [-1, 1]
        _check_colour(self.config, c)
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)  # unit RMS: only z's direction counts
        condition = self.embed(y) if c is None else self.embed(y) + self.colour(c)  # (B, Z)
        h = self.from_z(torch.cat([z, condition], dim=1))  # (B, C * 4 * 4) at S = 64
        h = h.view(-1, self.c0, self.bottom, self.bottom)  # (B, C, 4, 4)
        for norm, up in zip(self.norms, self.ups):
            h = up(F.relu(norm(h, y, c)))  # each: (B, C, H, W) -> (B, C', 2H, 2W)
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
        self.config = config
        chs = config.channels(config.d_width)  # 32, 64, 128, 256 at S = 64
        self.convs = nn.ModuleList([spectral_norm(nn.Conv2d(c_in, c_out, 4, stride=2, padding=1))
                                    for c_in, c_out in zip([3] + chs[:-1], chs)])
        # phi: the whole 4x4 map (and its minibatch-std channel), flattened, so that D judges
        # the layout and not only patches.
        features = (chs[-1] + 1) * config.bottom**2
        self.psi = spectral_norm(nn.Linear(features, 1))
        self.embed = spectral_norm(nn.Embedding(config.n_classes, features))
        if config.n_colours:
            self.colour = spectral_norm(nn.Embedding(config.n_colours, features))

    def forward(self, x: torch.Tensor, y: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        # x (B, 3, S, S), y (B,), c (B,) (colour models only) -> (B,); score real and fake
        # images in separate calls, so that the minibatch std never mixes them.
        _check_colour(self.config, c)
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)  # (B, C, H/2, W/2)
        phi = minibatch_std(h).flatten(1)  # (B, (C + 1) * 4 * 4)
        condition = self.embed(y) if c is None else self.embed(y) + self.colour(c)  # (B, F)
        return self.psi(phi).squeeze(1) + (condition * phi).sum(dim=1)


def _check_colour(config: GANConfig, c: torch.Tensor | None) -> None:
    if (c is None) != (config.n_colours == 0):
        raise ValueError("a colour model needs colours c, and a model without colours takes none")


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
