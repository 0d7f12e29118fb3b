"""A small convolutional variational autoencoder (Kingma & Welling, 2014).

    x (B, 3, S, S) --encoder--> mu, logvar (B, D) --reparameterize--> z (B, D) --decoder--> x_hat

The encoder halves the image with strided 4x4 convolutions down to 4x4, then a
linear layer gives the mean and log-variance of q(z | x). The decoder mirrors
it with 4x4 transposed convolutions (the DCGAN layout, cheap on a CPU), the
last of which writes the RGB image. No normalisation layers: training and
drawing behave the same, and an image never depends on the rest of its batch.

Sizes at image_size 64, width 32, latent_dim 128: 64 -> 32 (32 ch) -> 16 (64)
-> 8 (128) -> 4 (256) and back; about 3.0M parameters.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from generators.base import halvings


@dataclass
class VAEConfig:
    image_size: int = 64  # S: images are (3, S, S) in [-1, 1]; a multiple of 8
    latent_dim: int = 128  # D: size of z
    width: int = 32  # channels after the first downsampling; doubled at each halving
    max_width_mult: int = 8  # channels stop doubling at width * this

    @property
    def n_levels(self) -> int:
        """How many times the encoder halves the image: down to 4x4 (or as near as halving allows)."""
        return halvings(self.image_size)

    @property
    def bottom(self) -> int:
        """Side of the smallest feature map (4 at S = 64)."""
        return self.image_size // 2**self.n_levels

    def channels(self) -> list[int]:
        """Channels at each level, from the largest resolution (S/2) to the smallest."""
        return [self.width * min(2**i, self.max_width_mult) for i in range(self.n_levels)]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "VAEConfig":
        fields = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in fields})


class Encoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        chs = config.channels()
        layers: list[nn.Module] = []
        c_in = 3
        for c in chs:
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c
        self.convs = nn.Sequential(*layers)
        self.to_stats = nn.Linear(chs[-1] * config.bottom**2, 2 * config.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x)  # (B, C, 4, 4) at S = 64
        mu, logvar = self.to_stats(h.flatten(1)).chunk(2, dim=1)  # (B, D) each
        return mu, logvar.clamp(-30.0, 20.0)


class Decoder(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        chs = config.channels()[::-1]  # from 4x4 up: 256, 128, 64, 32 at S=64, width 32
        self.c0, self.bottom = chs[0], config.bottom
        self.from_z = nn.Linear(config.latent_dim, chs[0] * config.bottom**2)
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chs, chs[1:] + [3]):
            layers += [nn.LeakyReLU(0.2), nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)]
        self.convs = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.from_z(z).view(-1, self.c0, self.bottom, self.bottom)  # (B, C, 4, 4) at S = 64
        return torch.tanh(self.convs(h))  # (B, 3, S, S) in [-1, 1]


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) in [-1, 1] -> mu, logvar of q(z | x), each (B, D)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) -> (B, 3, S, S) in [-1, 1]."""
        return self.decoder(z)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I) (or the `noise` given)."""
        eps = torch.randn_like(mu) if noise is None else noise
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
