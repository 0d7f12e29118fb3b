"""Training the VAE, for the shared harness (`artbot train vae`).

    trainable = make_trainable(dataset, device=device, seed=0, options={"width": 16})

One step, on a batch x of images (B, 3, S, S):

1. Encode: mu, logvar = encoder(x); z = mu + sigma * eps.
2. Decode: x_hat = decoder(z).
3. Loss per image, averaged over the batch:
       L1(x_hat, x) summed over pixels                     (reconstruction)
     + edge_weight * L1 of the horizontal and vertical pixel differences
                                                           (keeps outlines sharp)
     + beta_t * KL(q(z | x) || N(0, I)) summed over z      (beta_t ramps 0 -> beta
                                                            over kl_warmup_steps)

What it exports: the VAE's weights, and for every sublabel (emoji subcategory)
the mean and standard deviation of the training images' latents. Drawing a
"red heart" samples z near the hearts; `sample_grid` draws from the prior
N(0, I) instead, which shows how well the latent space is filled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from generators.captions import PromptIndex
from generators.datasets import ImageDataset
from generators.training import Batch
from generators.training import split_options as split_trainer_options
from generators.vae.model import VAE, VAEConfig


@dataclass
class VAETrainConfig:
    batch_size: int = 64  # images per step
    lr: float = 1e-3  # Adam learning rate
    beta: float = 1.0  # weight of the KL term once warmed up
    kl_warmup_steps: int = 300  # steps over which the KL weight ramps from 0 to beta
    edge_weight: float = 0.5  # weight of the L1 loss on pixel differences


def split_options(options: dict) -> tuple[VAEConfig, VAETrainConfig]:
    """Options -> (model config, training config); image_size comes from the data."""
    model, train = split_trainer_options(options, VAEConfig, VAETrainConfig, what="VAE",
                                         set_by_data=("image_size",))
    return VAEConfig(**model), train


def steps_taken(optimizer: torch.optim.Optimizer) -> int:
    """Optimisation steps done so far (Adam counts them; a resumed run restores the count)."""
    for state in optimizer.state.values():
        if "step" in state:
            return int(state["step"])
    return 0


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, sigma^2) || N(0, I)) per image: (B, D) -> (B,)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """L1 over pixels plus L1 over pixel differences, per image: (B, 3, S, S) -> (B,)."""
    l1 = (x_hat - x).abs().flatten(1).sum(dim=1)
    if not edge_weight:
        return l1
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    edges = (dx(x_hat) - dx(x)).abs().flatten(1).sum(1) + (dy(x_hat) - dy(x)).abs().flatten(1).sum(1)
    return l1 + edge_weight * edges


@torch.no_grad()
def latent_stats(vae: VAE, images: torch.Tensor, groups: torch.Tensor, n_groups: int,
                 device: torch.device, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Per group: mean and std of the aggregate posterior (the mixture of every q(z | x) in it).

    Each image gives N(mu_i, sigma_i^2); a group's mixture has mean mean(mu_i)
    and variance var(mu_i) + mean(sigma_i^2). A group without images gets the
    statistics of all the images. Returns two (n_groups, D) tensors.
    """
    mus, variances = [], []
    for i in range(0, len(images), batch_size):
        mu, logvar = vae.encode(images[i:i + batch_size].to(device))
        mus.append(mu.float().cpu())
        variances.append(logvar.float().exp().cpu())
    mu, var = torch.cat(mus), torch.cat(variances)  # (N, D) each

    def stats(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m = mu[rows].mean(0)
        v = (mu[rows] - m).pow(2).mean(0) + var[rows].mean(0)
        return m, v.sqrt()

    all_mean, all_std = stats(torch.arange(len(mu)))
    means, stds = all_mean.repeat(n_groups, 1), all_std.repeat(n_groups, 1)
    for g in range(n_groups):
        rows = (groups == g).nonzero().flatten()
        if len(rows):
            means[g], stds[g] = stats(rows)
    return means, stds


class VAETrainable:
    def __init__(self, dataset: ImageDataset, device: torch.device, options: dict):
        config, train_config = split_options(options)
        config.image_size = dataset.size
        self.config, self.train_config = config, train_config
        self.dataset, self.device = dataset, device
        self.vae = VAE(config).to(device)
        self.optimizer = torch.optim.Adam(self.vae.parameters(), lr=train_config.lr)
        self.modules = {"vae": self.vae}
        self.optimizers = {"vae": self.optimizer}
        self.batch_size = train_config.batch_size
        self.index = PromptIndex.build(dataset.captions, dataset.sublabels.tolist(),
                                       len(dataset.sublabel_names))

    def kl_weight(self, step: int) -> float:
        warmup = self.train_config.kl_warmup_steps
        return self.train_config.beta * (min(1.0, step / warmup) if warmup > 0 else 1.0)

    def train_step(self, batch: Batch) -> dict[str, float]:
        x = batch.images  # (B, 3, S, S)
        beta = self.kl_weight(steps_taken(self.optimizer))
        # 1. Encode and sample z.
        mu, logvar = self.vae.encode(x)  # (B, D) each
        z = self.vae.reparameterize(mu, logvar)
        # 2. Decode.
        x_hat = self.vae.decode(z)  # (B, 3, S, S)
        # 3. Loss per image, averaged over the batch.
        recon = reconstruction_loss(x_hat, x, self.train_config.edge_weight).mean()
        kl = kl_divergence(mu, logvar).mean()
        loss = recon + beta * kl
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        pixels = x[0].numel()
        return {"l1": (x_hat - x).abs().mean().item(), "recon": recon.item() / pixels,
                "kl": kl.item(), "beta": beta}

    def sample_grid(self, n: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.config.latent_dim, generator=g).to(self.device)
        return self.vae.decode(z)  # (n, 3, S, S)

    def export(self) -> tuple[dict[str, torch.Tensor], dict]:
        means, stds = latent_stats(self.vae, self.dataset.images, self.dataset.sublabels,
                                   len(self.dataset.sublabel_names), self.device)
        weights = {f"vae.{k}": v for k, v in self.vae.state_dict().items()}
        weights["latent_mean"], weights["latent_std"] = means, stds  # (n_sublabels, D) each
        config = {"vae": self.config.to_dict(), "train": asdict(self.train_config),
                  "prompt_index": self.index.to_dict()}
        return weights, config


def make_trainable(dataset: ImageDataset, *, device: torch.device, seed: int,
                   options: dict) -> VAETrainable:
    return VAETrainable(dataset, device, options)
