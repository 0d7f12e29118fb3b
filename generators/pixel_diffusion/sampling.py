"""The noise schedule and the DDIM sampler (Song et al. 2021) of the pixel diffusion model.

Training noises an image x0 to step t as x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε and
teaches the model to predict v = sqrt(ᾱ_t)·ε - sqrt(1-ᾱ_t)·x0 (or ε). Sampling
walks a few of the T steps back with DDIM, combining the captioned and the
uncaptioned prediction with classifier-free guidance (Ho & Salimans 2022):

    out = uncond + guidance · (cond - uncond)

Each step's x0 estimate is clipped to [-1, 1], as pixel-space DDPMs do; that
also keeps high guidance scales from blowing the colours out.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from generators.pixel_diffusion.model import PixelDiffusion, PixelDiffusionConfig


class NoiseSchedule:
    """ᾱ_t for t = 0..T-1, and the conversions between x_t, x0, ε and v."""

    def __init__(self, timesteps: int = 1000, kind: str = "cosine", prediction: str = "v"):
        if kind == "cosine":  # Nichol & Dhariwal 2021
            s = 0.008
            f = lambda t: math.cos((t / timesteps + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
            betas = [min(1 - f(t + 1) / f(t), 0.999) for t in range(timesteps)]
            betas = torch.tensor(betas, dtype=torch.float64)
        elif kind == "linear":  # Ho et al. 2020
            betas = torch.linspace(1e-4, 0.02, timesteps, dtype=torch.float64)
        else:
            raise ValueError(f"unknown noise schedule {kind!r}")
        if prediction not in ("v", "epsilon"):
            raise ValueError(f"unknown prediction {prediction!r}")
        self.timesteps = timesteps
        self.prediction = prediction
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0).float()  # (T,) ᾱ_t, from ~1 down to ~0

    @classmethod
    def from_config(cls, config: PixelDiffusionConfig) -> "NoiseSchedule":
        return cls(config.timesteps, config.schedule, config.prediction)

    def _coefs(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alphas_cumprod.to(like.device)[t].view(-1, 1, 1, 1)  # (B, 1, 1, 1)
        return ab.sqrt().to(like.dtype), (1 - ab).sqrt().to(like.dtype)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self._coefs(t, x0)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the model is trained to predict at step t."""
        if self.prediction == "epsilon":
            return noise
        a, s = self._coefs(t, x0)
        return a * noise - s * x0

    def split(self, x_t: torch.Tensor, out: torch.Tensor, t: torch.Tensor):
        """(x0, ε), each (B, 3, S, S), from x_t and the model's output.

        x0 is clipped to [-1, 1] and ε recomputed to agree with the clipped x0.
        """
        a, s = self._coefs(t, x_t)
        x0 = a * x_t - s * out if self.prediction == "v" else (x_t - s * out) / a
        x0 = x0.clamp(-1, 1)
        eps = (x_t - a * x0) / s.clamp(min=1e-4)
        return x0, eps

    def ddim_timesteps(self, steps: int) -> list[int]:
        """`steps` timesteps from T-1 down, evenly spaced ('trailing', so sampling starts from pure noise)."""
        steps = max(1, min(int(steps), self.timesteps))
        return [round(self.timesteps - i * self.timesteps / steps) - 1 for i in range(steps)]


def encode_captions(model: PixelDiffusion, captions: list[str], device: torch.device):
    """Captions -> (text (N, L, D), pooled (N, D), mask (N, L)) on `device`."""
    tokens, mask = model.tokenizer(captions)
    tokens, mask = tokens.to(device), mask.to(device)
    text, pooled = model.encode_text(tokens, mask)
    return text, pooled, mask


@torch.no_grad()
def ddim_sample(
    model: PixelDiffusion,
    schedule: NoiseSchedule,
    x: torch.Tensor,
    timesteps: list[int],
    captions: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    guidance: float,
    progress: Callable[[int, int], None] | None = None,
    eta: float = 0.0,
    generators: list[torch.Generator] | None = None,
) -> torch.Tensor:
    """Denoise x (B, 3, S, S), noised to timesteps[0], along `timesteps` -> x0 (B, 3, S, S).

    `captions` are encoded by `encode_captions`: B of them, or with guidance (scale != 1)
    2B, the image's captions and then the unconditional ones (empty or the negative
    prompt); both halves run through the model as one batch. With eta > 0, each image's
    fresh noise comes from its own generator in `generators`.
    """
    B = x.shape[0]
    text, pooled, mask = captions
    guided = text.shape[0] == 2 * B
    dtype = next(model.parameters()).dtype  # the model's; x and the step arithmetic stay float32
    ab = schedule.alphas_cumprod
    n = len(timesteps)
    for i, t in enumerate(timesteps):
        # 1. Predict (v or ε) for the captioned and, with guidance, the unconditional batch.
        t_batch = torch.full((B,), t, dtype=torch.long, device=x.device)
        if guided:
            x_in = torch.cat([x, x]).to(dtype)  # (2B, 3, S, S)
            out = model(x_in, t_batch.repeat(2), mask=mask, text=text, pooled=pooled).float()
            out_cond, out_uncond = out.chunk(2)
            out = out_uncond + guidance * (out_cond - out_uncond)
        else:
            out = model(x.to(dtype), t_batch, mask=mask, text=text, pooled=pooled).float()
        # 2. Split x_t into the clean image estimate and its noise.
        x0, eps = schedule.split(x, out, t_batch)
        # 3. Step to the previous timestep (to x0 itself after the last one).
        prev = timesteps[i + 1] if i + 1 < n else -1
        ab_t = ab[t].item()
        ab_prev = ab[prev].item() if prev >= 0 else 1.0
        sigma = eta * math.sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)) if prev >= 0 else 0.0
        x = math.sqrt(ab_prev) * x0 + math.sqrt(max(1 - ab_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            z = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
            x = x + sigma * z.to(x)
        # 4. Report the step (the callback may raise to stop sampling).
        if progress is not None:
            progress(i + 1, n)
    return x
