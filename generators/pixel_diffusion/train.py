"""Training the pixel diffusion model, for the shared harness (`artbot train diffusion`).

    trainable = make_trainable(dataset, device=device, seed=0, options={"channels": [16, 32]})

Options are the fields of `PixelDiffusionConfig` (the model) and of
`PixelDiffusionTrainConfig` (the training), for example
`{"channels": [16, 32], "lr": 1e-3}`.

One step, on a batch of images (B, 3, 64, 64) and their captions:

1. Images: downsampled to the model's image_size (area average), no flips
   (emoji have text, flags and arrows whose direction matters).
2. Captions: with probability `alias_rate` one comma-separated alias of the
   caption ("red heart, heart" -> "heart"), each word becomes <unk> with
   probability `unk_rate` (so unknown prompt words mean "some word"), and the
   caption is dropped (the start token alone) with probability
   `caption_dropout`, which teaches the unconditional model for guidance.
3. Noise: t ~ U{0..T-1}, ε ~ N(0, I), x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε.
4. Loss: mean squared error between the model's output and v (or ε).
5. AdamW with a linear warm-up (then a constant rate, or with `lr_schedule`
   "cosine" a half cosine down to `min_lr` at the run's last step), gradients
   clipped to norm 1, then an EMA of the weights (decay (1 + n) / (10 + n) after n steps, at most `ema_decay`). The
   EMA weights are what is exported and drawn with.

The defaults are the recipe for the bundled emoji model on a 2-core CPU: about
0.85 s a step on one core (batch 64 at 32x32), so 15-20 minutes is some
1,000-2,000 steps, 20-35 epochs of the 3,781 emoji.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from artbot.errors import UserError
from generators.datasets import ImageDataset
from generators.pixel_diffusion.model import UNK, CaptionTokenizer, PixelDiffusion, PixelDiffusionConfig
from generators.pixel_diffusion.sampling import NoiseSchedule, ddim_sample, encode_captions
from generators.training import Batch
from generators.training import split_options as split_trainer_options

# What the sample grid after each epoch draws; a grid of 32 is these 16 twice (other noise).
GRID_PROMPTS = [
    "red heart", "green apple", "smiling face", "cat face", "pizza", "flag japan", "sun", "rocket",
    "blue heart", "banana", "fire", "ghost", "frog face", "evergreen tree", "crescent moon", "grapes",
]


@dataclass
class PixelDiffusionTrainConfig:
    batch_size: int = 64  # images per step
    lr: float = 2e-3  # AdamW peak learning rate
    weight_decay: float = 0.01  # AdamW weight decay (matrices and kernels only)
    warmup_steps: int = 100  # steps of linear learning-rate warm-up
    lr_schedule: str = "constant"  # after the warm-up: "constant", or "cosine" (down to min_lr at the end)
    min_lr: float = 0.0  # where "cosine" ends, on the run's last step (--epochs)
    ema_decay: float = 0.999  # cap on the EMA decay, which is (1 + n) / (10 + n) after n steps
    caption_dropout: float = 0.12  # share of captions dropped (for classifier-free guidance)
    alias_rate: float = 0.3  # share of captions cut to one of their comma-separated aliases
    unk_rate: float = 0.03  # share of caption words replaced by <unk>
    sample_steps: int = 12  # DDIM steps of the sample grid (a few seconds per epoch)
    sample_guidance: float = 3.0  # guidance scale of the sample grid


def split_options(options: dict) -> tuple[dict, PixelDiffusionTrainConfig]:
    """Options -> (model config overrides, training config); the vocabulary comes from the data."""
    return split_trainer_options(options, PixelDiffusionConfig, PixelDiffusionTrainConfig,
                                 what="pixel diffusion", set_by_data=("vocab",))


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, S, S) -> (B, 3, size, size): area average when S is a multiple of size."""
    if images.shape[-1] == size:
        return images
    if images.shape[-1] % size == 0:
        return F.interpolate(images, size=(size, size), mode="area")
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


class EMA(nn.Module):
    """An exponential moving average of a model's weights, and the number of updates it has had."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        n = int(self.updates)
        decay = min(self.decay, (1 + n) / (10 + n))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p, 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)
        self.updates += 1


class PixelDiffusionTrainable:
    def __init__(self, dataset: ImageDataset, device: torch.device, options: dict):
        model_options, train_config = split_options(options)
        model_options.setdefault("image_size", min(32, dataset.size))
        config = PixelDiffusionConfig(vocab=CaptionTokenizer.build(dataset.captions), **model_options)
        config.channels = [int(c) for c in config.channels]
        factor = config.patch_size * 2 ** (len(config.channels) - 1)
        if config.image_size % factor or config.image_size > dataset.size:
            raise UserError(f"image_size {config.image_size} must divide by {factor} (patch size x "
                            f"2^(levels-1)) and be at most the data's size {dataset.size}.")
        self.config, self.train_config, self.device = config, train_config, device
        self.schedule = NoiseSchedule.from_config(config)
        # Channels-last convolutions are ~8% faster on a CPU (oneDNN); the maths is the same.
        self.memory_format = torch.channels_last if device.type == "cpu" else torch.contiguous_format
        self.model = PixelDiffusion(config).to(device, memory_format=self.memory_format)
        self.ema = EMA(self.model, train_config.ema_decay).to(device)
        decay, no_decay = [], []
        for p in self.model.parameters():
            (decay if p.ndim >= 2 else no_decay).append(p)
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": train_config.weight_decay},
             {"params": no_decay, "weight_decay": 0.0}],
            lr=train_config.lr, betas=(0.9, 0.99), fused=device.type in ("cpu", "cuda"))
        self.modules = {"model": self.model, "ema": self.ema}
        self.optimizers = {"model": self.optimizer}
        self.batch_size = train_config.batch_size
        if train_config.lr_schedule not in ("constant", "cosine"):
            raise UserError(f"lr_schedule must be constant or cosine, not {train_config.lr_schedule!r}.")
        self.total_steps = 0  # set by plan(); the cosine schedule needs it

    def plan(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def learning_rate(self, step: int) -> float:
        """The learning rate of step `step` (0-based, counted over the whole run)."""
        cfg = self.train_config
        if step < cfg.warmup_steps:
            return cfg.lr * (step + 1) / cfg.warmup_steps
        if cfg.lr_schedule == "constant" or self.total_steps <= cfg.warmup_steps:
            return cfg.lr
        done = min(1.0, (step - cfg.warmup_steps) / max(1, self.total_steps - 1 - cfg.warmup_steps))
        return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * done))

    def _captions(self, captions: list[str]) -> list[str]:
        """2. Captions: sometimes one alias, sometimes none (uses the global, seeded RNG)."""
        cfg = self.train_config
        out = []
        for caption in captions:
            r = torch.rand(3).tolist()
            aliases = [a for a in caption.split(", ") if a]
            if r[0] < cfg.caption_dropout:
                caption = ""
            elif r[1] < cfg.alias_rate and len(aliases) > 1:
                caption = aliases[int(r[2] * len(aliases))]
            out.append(caption)
        return out

    def _tokens(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens, mask = self.model.tokenizer(captions)  # (B, L) each
        if self.train_config.unk_rate > 0:
            words = mask.clone()
            words[:, 0] = False  # never the start token
            unk = (torch.rand(tokens.shape) < self.train_config.unk_rate) & words
            tokens = tokens.masked_fill(unk, self.model.tokenizer.index[UNK])
        return tokens.to(self.device), mask.to(self.device)

    def train_step(self, batch: Batch) -> dict[str, float]:
        # 1. Images at the model's size.
        x0 = resize_images(batch.images, self.config.image_size)  # (B, 3, S, S)
        # 2. Captions.
        tokens, mask = self._tokens(self._captions(batch.captions))  # (B, L) each
        # 3. Noise.
        B = x0.shape[0]
        t = torch.randint(0, self.schedule.timesteps, (B,)).to(self.device)
        noise = torch.randn(x0.shape).to(self.device)
        x_t = self.schedule.add_noise(x0, noise, t).contiguous(memory_format=self.memory_format)
        # 4. Loss.
        out = self.model(x_t, t, tokens, mask)
        loss = F.mse_loss(out, self.schedule.target(x0, noise, t))
        # 5. Optimise, then average.
        lr = self.learning_rate(int(self.ema.updates))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.ema.update(self.model)
        return {"loss": loss.item(), "grad": float(grad_norm)}

    @torch.no_grad()
    def sample_grid(self, n: int, seed: int) -> torch.Tensor:
        model = self.ema.model
        g = torch.Generator().manual_seed(seed)
        S = self.config.image_size
        x = torch.randn(n, 3, S, S, generator=g).to(self.device)
        prompts = [GRID_PROMPTS[i % len(GRID_PROMPTS)] for i in range(n)]
        captions = encode_captions(model, prompts + [""] * n, self.device)
        timesteps = self.schedule.ddim_timesteps(self.train_config.sample_steps)
        return ddim_sample(model, self.schedule, x, timesteps, captions, self.train_config.sample_guidance)

    def export(self) -> tuple[dict[str, torch.Tensor], dict]:
        weights = {k: v.detach().clone() for k, v in self.ema.model.state_dict().items()}
        return weights, {"diffusion": self.config.to_dict(), "train": asdict(self.train_config)}


def make_trainable(dataset: ImageDataset, *, device: torch.device, seed: int,
                   options: dict) -> PixelDiffusionTrainable:
    return PixelDiffusionTrainable(dataset, device, options)
