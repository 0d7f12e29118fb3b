"""Training the GAN, for the shared harness (`artbot train gan`).

    trainable = make_trainable(dataset, device=device, seed=0, options={"width": 16})

One step, on a batch of real images x with their sublabels y and dominant
colours c (`dominant_colours`, computed once from the pixels of the whole
data set at start-up and looked up by the batch's indices; the condition is the
pair y, c, written y below):

1. Discriminator: fake = G(z, y) for fresh z; real and fake images alike
   get random, differentiable augmentations (DiffAugment, Zhao et al. 2020:
   shifts, brightness, saturation, contrast), so that D cannot memorise 3.8k
   emoji, while G is not taught to draw the augmentations; hinge loss
       mean(relu(1 - D(aug(x), y))) + mean(relu(1 + D(aug(fake), y))).
2. Generator: new z, and labels in pairs (image i and i + B/2 share one);
       loss -mean(D(aug(G(z, y)), y)) + mode_seeking / mean(|G_i - G_j| / |z_i - z_j|)
   The second term (mode seeking, Mao et al. 2019) asks that two z of one
   label give two different images: without it a class tends to collapse
   to one image; too much of it and z drowns out the class.
3. EMA: an exponential moving average of G's weights (decay ramping up to
   ema_decay) is kept; it draws cleaner images than G itself and is what
   `export` ships and `sample_grid` shows.

The fake images are conditioned on the real batch's sublabels, so classes
are drawn as often as they occur in the data.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from generators.captions import COLOURS, PromptIndex
from generators.datasets import ImageDataset
from generators.gan.model import Discriminator, GANConfig, Generator, dominant_colours
from generators.training import Batch
from generators.training import split_options as split_trainer_options


@dataclass
class GANTrainConfig:
    batch_size: int = 32  # images per step (on a CPU, more steps of 32 beat fewer of 64)
    g_lr: float = 2e-4  # generator learning rate (Adam)
    d_lr: float = 2e-4  # discriminator learning rate (Adam)
    beta1: float = 0.5  # Adam betas (beta1, beta2): the DCGAN / SNGAN setting
    beta2: float = 0.999
    mode_seeking: float = 0.1  # weight of the mode-seeking term (0: off; 1 drowns out the class)
    ema_decay: float = 0.999  # final decay of the EMA generator's weights
    augment: str = "translation,color"  # DiffAugment policy on D's inputs ("": none)
    shift: float = 0.125  # largest translation, as a share of the image side


def split_options(options: dict) -> tuple[GANConfig, GANTrainConfig]:
    """Options -> (model config, training config); image_size and n_classes come from the data."""
    model, train = split_trainer_options(options, GANConfig, GANTrainConfig, what="GAN",
                                         set_by_data=("image_size", "n_classes", "n_colours"))
    return GANConfig(**model), train


def steps_taken(optimizer: torch.optim.Optimizer) -> int:
    """Optimisation steps done so far (Adam counts them; a resumed run restores the count)."""
    for state in optimizer.state.values():
        if "step" in state:
            return int(state["step"])
    return 0


# -- DiffAugment ---------------------------------------------------------------------


def augment(x: torch.Tensor, policy: str = "translation,color", shift: float = 0.125) -> torch.Tensor:
    """Random changes of each image, differentiable: (B, 3, S, S) -> same.

    `policy` names the changes: "color" (brightness, saturation, contrast) and
    "translation" (shifts of up to `shift` of the side; the uncovered border is
    white, the emoji background). Drawn from torch's global generator, which
    the harness seeds and checkpoints.
    """
    b = x.shape[0]
    if "color" in policy:
        x = x + (torch.rand(b, 1, 1, 1, device=x.device) - 0.5)
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) * 2) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device) + 0.5) + mean
    s = x.shape[-1]
    pad = int(s * shift + 0.5)
    if "translation" in policy and pad:
        padded = F.pad(x, (pad, pad, pad, pad), value=1.0)  # (B, 3, S + 2p, S + 2p)
        dx, dy = torch.randint(0, 2 * pad + 1, (2, b)).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + s, dx[i]:dx[i] + s] for i in range(b)])
    return x


# -- the trainable ---------------------------------------------------------------------


class GANTrainable:
    def __init__(self, dataset: ImageDataset, device: torch.device, options: dict):
        config, train_config = split_options(options)
        config.image_size = dataset.size
        config.n_classes = max(1, len(dataset.sublabel_names))
        config.n_colours = len(COLOURS)
        self.config, self.train_config = config, train_config
        self.dataset, self.device = dataset, device
        self.G = Generator(config).to(device)
        self.D = Discriminator(config).to(device)
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
        betas = (train_config.beta1, train_config.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=train_config.g_lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=train_config.d_lr, betas=betas)
        self.modules = {"G": self.G, "D": self.D, "G_ema": self.G_ema}
        self.optimizers = {"G": self.opt_G, "D": self.opt_D}
        self.batch_size = train_config.batch_size
        self.colours = dominant_colours(dataset.images)  # (N,): each training image's colour
        self.index = PromptIndex.build(dataset.captions, dataset.sublabels.tolist(),
                                       len(dataset.sublabel_names), self.colours.tolist())

    def _d_input(self, x: torch.Tensor) -> torch.Tensor:
        return augment(x, self.train_config.augment, self.train_config.shift)

    @torch.no_grad()
    def _update_ema(self, step: int) -> None:
        # The decay ramps up (0.18 at step 1, 0.9 at step 80, 0.99 at step 890, ...) so that
        # the random initial weights fade fast.
        decay = min(self.train_config.ema_decay, (1 + step) / (10 + step))
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p, 1.0 - decay)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)  # batch-norm statistics

    def train_step(self, batch: Batch) -> dict[str, float]:
        x, y = batch.images, batch.sublabels  # (B, 3, S, S), (B,)
        c = self.colours[batch.indices].to(self.device)  # (B,)
        b = x.shape[0]
        # 1. Discriminator: hinge loss on augmented real and fake images.
        with torch.no_grad():
            fake = self.G(torch.randn(b, self.config.z_dim, device=self.device), y, c)
        d_real = self.D(self._d_input(x), y, c)  # (B,)
        d_fake = self.D(self._d_input(fake), y, c)  # (B,)
        d_loss = F.relu(1.0 - d_real).mean() + F.relu(1.0 + d_fake).mean()
        self.opt_D.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_D.step()
        # 2. Generator: make D score its (augmented) images as real. Images i and i + B/2
        #    share a label, and the mode-seeking term (Mao et al., 2019) asks that their
        #    different z give different images: it fights a class collapsing to one image.
        #    D's weights are frozen for this pass, which skips computing their gradients.
        half = (b + 1) // 2
        y_pairs, c_pairs = y[:half].repeat(2)[:b], c[:half].repeat(2)[:b]
        z = torch.randn(b, self.config.z_dim, device=self.device)
        fake = self.G(z, y_pairs, c_pairs)
        self.D.requires_grad_(False)
        g_adv = -self.D(self._d_input(fake), y_pairs, c_pairs).mean()
        self.D.requires_grad_(True)
        n = b - half  # pairs (i, i + half)
        image_gap = (fake[:n] - fake[half:]).abs().mean(dim=(1, 2, 3))  # (n,)
        z_gap = (z[:n] - z[half:]).abs().mean(dim=1)  # (n,)
        mode_seeking = 1.0 / ((image_gap / z_gap).mean() + 1e-5) if n else fake.new_zeros(())
        g_loss = g_adv + self.train_config.mode_seeking * mode_seeking
        self.opt_G.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_G.step()
        # 3. The EMA generator follows G.
        self._update_ema(steps_taken(self.opt_G))
        return {"d_loss": d_loss.item(), "g_loss": g_adv.item(), "ms": mode_seeking.item(),
                "d_real": d_real.mean().item(), "d_fake": d_fake.mean().item()}

    def grid_labels(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n (label, colour) pairs: labels spread evenly over the sublabels the data has,
        each in its most common colour."""
        present = torch.unique(self.dataset.sublabels)  # sorted
        labels = present[torch.linspace(0, len(present) - 1, n).round().long()]
        colours = [max(self.index.label_colours[y], key=self.index.label_colours[y].get)
                   for y in labels.tolist()]
        return labels, torch.tensor(colours)

    def sample_grid(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.config.z_dim, generator=g).to(self.device)
        labels, colours = self.grid_labels(n)
        return self.G_ema(z, labels.to(self.device), colours.to(self.device))  # (n, 3, S, S)

    def export(self) -> tuple[dict[str, torch.Tensor], dict]:
        weights = dict(self.G_ema.state_dict())
        config = {"gan": self.config.to_dict(), "train": asdict(self.train_config),
                  "prompt_index": self.index.to_dict()}
        return weights, config


def make_trainable(dataset: ImageDataset, *, device: torch.device, seed: int,
                   options: dict) -> GANTrainable:
    return GANTrainable(dataset, device, options)
