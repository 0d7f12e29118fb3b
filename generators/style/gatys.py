"""Neural style transfer by optimisation (Gatys, Ecker & Bethge, CVPR 2016).

The output image is optimised directly so that its VGG-19 features match the
content image's at `relu4_2` and the Gram matrices of its features match the
style image's at `relu1_1 … relu5_1`, with a total-variation term against
noise. Adam (or L-BFGS) does the optimising, coarse to fine: a few scales up to the
target size, each starting from the previous result upsampled, so the large
structure is settled where it is cheap.

Each loss term is divided by the size of its target (so the same weights work
for ImageNet and for random VGG weights, whose feature scales differ).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from generators.style.vgg import VGG19Features

STYLE_LAYERS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]
CONTENT_LAYER = "relu4_2"


@dataclass
class GatysConfig:
    steps: int = 300  # optimiser iterations over all scales together
    scales: int = 3  # coarse-to-fine levels (each half the size of the next); 1 = single scale
    content_weight: float = 1.0
    style_weight: float = 1e3  # times `strength`
    tv_weight: float = 1e-3
    # "adam" or "lbfgs". Measured here (docs/benchmarks.md), coarse-to-fine Adam reached
    # lower losses than L-BFGS in the same time; L-BFGS stays available.
    optimizer: str = "adam"
    adam_lr: float = 0.05
    init: str = "content"  # start from the content image, or "noise"
    seed: int = 0  # for init="noise"


@dataclass
class GatysResult:
    image: torch.Tensor  # (1, 3, H, W) in [0, 1]
    losses: list[float] = field(default_factory=list)  # total loss after each step, all scales
    style_losses: list[float] = field(default_factory=list)  # style term at the final scale
    seconds: float = 0.0
    first_style_loss: float = 0.0  # style term of the starting image at the final scale


def gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C), normalised by C*H*W."""
    b, c, h, w = features.shape
    f = features.reshape(b, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def _scale_sizes(h: int, w: int, scales: int, smallest: int = 64) -> list[tuple[int, int]]:
    sizes = []
    for k in range(scales - 1, -1, -1):
        f = 2 ** k
        if min(h, w) // f >= smallest or k == 0:
            sizes.append((max(8, h // f), max(8, w // f)))
    return sizes


class _Objective:
    """The loss at one scale, against fixed content and style targets."""

    def __init__(self, vgg: VGG19Features, content: torch.Tensor, style: torch.Tensor,
                 cfg: GatysConfig, strength: float):
        self.vgg, self.cfg, self.strength = vgg, cfg, strength
        with torch.no_grad():
            self.content_target = vgg(content, [CONTENT_LAYER])[CONTENT_LAYER]
            feats = vgg(style, STYLE_LAYERS)
            self.style_targets = {name: gram(f) for name, f in feats.items()}
        self.content_norm = self.content_target.pow(2).mean().clamp_min(1e-12)
        self.style_norms = {k: g.pow(2).mean().clamp_min(1e-12) for k, g in self.style_targets.items()}

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.vgg(x, STYLE_LAYERS + [CONTENT_LAYER])
        content = F.mse_loss(feats[CONTENT_LAYER], self.content_target) / self.content_norm
        style = sum(F.mse_loss(gram(feats[k]), t) / self.style_norms[k]
                    for k, t in self.style_targets.items()) / len(STYLE_LAYERS)
        total = (self.cfg.content_weight * content
                 + self.cfg.style_weight * self.strength * style
                 + self.cfg.tv_weight * total_variation(x))
        return total, style


def stylize(
    vgg: VGG19Features,
    content: torch.Tensor,
    style: torch.Tensor,
    cfg: GatysConfig,
    *,
    strength: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> GatysResult:
    """Content (1, 3, H, W) and style (1, 3, h, w) in [0, 1] -> the stylised image."""
    started = time.perf_counter()
    h, w = content.shape[-2:]
    sizes = _scale_sizes(h, w, max(1, cfg.scales))
    # 1. Split the iterations over the scales: more where they are cheap.
    weights = [2 ** (len(sizes) - 1 - i) for i in range(len(sizes))]
    budget = [max(1, round(cfg.steps * wt / sum(weights))) for wt in weights]
    budget[-1] = max(1, cfg.steps - sum(budget[:-1]))
    result = GatysResult(image=content)
    x = None
    done = 0
    total_steps = sum(budget)
    for level, ((sh, sw), n_steps) in enumerate(zip(sizes, budget)):
        # 2. Targets at this scale (the style image keeps its aspect, scaled like the content).
        c = _resize(content, (sh, sw))
        s_scale = sh / h
        s = _resize(style, (max(8, int(style.shape[-2] * s_scale)), max(8, int(style.shape[-1] * s_scale))))
        objective = _Objective(vgg, c, s, cfg, strength)
        # 3. Start from the content (or noise), or from the previous scale's result.
        if x is None:
            if cfg.init == "noise":
                g = torch.Generator().manual_seed(cfg.seed)
                start = torch.rand(c.shape, generator=g).to(c.device)
            else:
                start = c.clone()
        else:
            start = _resize(x.detach(), (sh, sw))
        x = start.clone().requires_grad_(True)
        final = level == len(sizes) - 1
        if final:
            with torch.no_grad():
                result.first_style_loss = objective(x)[1].item()
        # 4. Optimise. Progress counts objective evaluations (one per Adam step;
        #    L-BFGS runs as one call per scale and may evaluate a little more often).
        last: dict[str, float] = {}

        def evaluate() -> torch.Tensor:
            nonlocal done
            total, style_term = objective(x)
            last["total"], last["style"] = total.item(), style_term.item()
            done += 1
            result.losses.append(last["total"])
            if final:
                result.style_losses.append(last["style"])
            if progress is not None:
                progress(min(done, total_steps), total_steps)
            return total

        if cfg.optimizer == "adam":
            opt = torch.optim.Adam([x], lr=cfg.adam_lr)
            for _ in range(n_steps):
                opt.zero_grad()
                evaluate().backward()
                opt.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
        else:
            # No clamping between iterations: it would break L-BFGS's curvature history.
            opt = torch.optim.LBFGS([x], lr=1.0, max_iter=n_steps, max_eval=n_steps,
                                    history_size=50, tolerance_grad=0.0, tolerance_change=0.0)

            def closure() -> torch.Tensor:
                opt.zero_grad()
                total = evaluate()
                total.backward()
                return total

            opt.step(closure)
            with torch.no_grad():
                x.clamp_(0, 1)
    result.image = x.detach()
    result.seconds = time.perf_counter() - started
    return result


def final_losses(vgg: VGG19Features, image: torch.Tensor, content: torch.Tensor,
                 style: torch.Tensor, cfg: GatysConfig, strength: float = 1.0) -> tuple[float, float]:
    """(total, style) loss of `image` at its own size: a fair yardstick between methods."""
    with torch.no_grad():
        total, style_term = _Objective(vgg, content, style, cfg, strength)(image)
    return total.item(), style_term.item()
