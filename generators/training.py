"""The training harness shared by the trainable families (GAN, VAE, pixel diffusion).

    artbot train gan|vae|diffusion --data DIR|emoji --out DIR [--epochs N] [--size 64] [--resume] [--seed N]

A family supplies a `Trainable` (its networks, optimisers, one training step,
a sample grid, and the weights to ship); this module does the rest the same
way for all of them: the data, the epoch loop in a seeded order, a progress
bar, a sample grid PNG after every epoch, and after every epoch a checkpoint
that `--resume` continues from.

What lands in the output folder:

    config.json          family, its model config, labels, how it was trained
    model.safetensors    the weights used for drawing (for a GAN: the EMA generator)
    training-state.pt    everything else --resume needs (all networks, optimisers, RNG)
    samples/epoch-0003.png

The folder is a model: `artbot draw PROMPT --model DIR`.

Determinism: the same data, seed and command give the same weights on the
same machine (seeded initialisation, seeded batch order, deterministic
algorithms where torch has them).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from artbot.errors import UserError
from generators.datasets import ImageDataset, image_grid, load_dataset

log = logging.getLogger(__name__)

# `artbot train` family name -> "module:function" returning a Trainable.
TRAINERS = {
    "gan": "generators.gan.train:make_trainable",
    "vae": "generators.vae.train:make_trainable",
    "diffusion": "generators.pixel_diffusion.train:make_trainable",
}
# The family name stored in config.json (and with each job) for each trainer.
FAMILY_OF_TRAINER = {"gan": "gan", "vae": "vae", "diffusion": "pixel-diffusion"}
# Request defaults a trained model carries in its config.json ("defaults"), used when a
# request leaves them unset: the small diffusion model is at its best at guidance 3 to 4.
DEFAULTS_OF_TRAINER = {"diffusion": {"guidance": 3.5}}


@dataclass
class Batch:
    images: torch.Tensor  # (B, 3, S, S) in [-1, 1], on the training device
    captions: list[str]
    labels: torch.Tensor  # (B,) coarse labels (emoji category)
    sublabels: torch.Tensor  # (B,) fine labels (emoji subcategory)
    indices: torch.Tensor  # (B,) the images' places in the dataset, on the CPU (for per-image tables)


class Trainable(Protocol):
    #: Every network training updates, by name (all are checkpointed).
    modules: dict[str, torch.nn.Module]
    #: Every optimiser, by name (all are checkpointed).
    optimizers: dict[str, torch.optim.Optimizer]
    #: Images per training step.
    batch_size: int

    def train_step(self, batch: Batch) -> dict[str, float]:
        """One optimisation step; returns a few numbers for the progress bar."""

    def sample_grid(self, n: int, seed: int) -> torch.Tensor:
        """(n, 3, S, S) in [-1, 1]: samples for the grid saved after each epoch."""

    def export(self) -> tuple[dict[str, torch.Tensor], dict]:
        """The weights used for drawing and the model config (JSON-able) that loads them."""

    # Optional: `plan(total_steps)`, called before the first step with the number of
    # steps the whole run (all --epochs, counted from its first epoch) will take, for
    # trainers whose learning rate follows a schedule over the run.


def split_options(options: dict, model_cls: type, train_cls: type, *, what: str,
                  set_by_data: Iterable[str] = ()) -> tuple[dict[str, Any], Any]:
    """A trainer's options -> (model config overrides, training config).

    `model_cls` and `train_cls` are the family's config dataclasses; the fields in
    `set_by_data` (the image size, the classes...) come from the data set, not the
    user. An unknown option is the user's mistake, named with the known ones.
    """
    model_keys = {f.name for f in dataclasses.fields(model_cls)} - set(set_by_data)
    train_keys = {f.name for f in dataclasses.fields(train_cls)}
    unknown = set(options) - model_keys - train_keys
    if unknown:
        raise UserError(f"Unknown {what} option(s): {', '.join(sorted(unknown))}; "
                        f"known: {', '.join(sorted(model_keys | train_keys))}.")
    return ({k: v for k, v in options.items() if k in model_keys},
            train_cls(**{k: v for k, v in options.items() if k in train_keys}))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def _load_trainer(kind: str) -> Callable[..., Trainable]:
    try:
        target = TRAINERS[kind]
    except KeyError:
        raise UserError(f"Cannot train {kind!r}: choose one of {', '.join(TRAINERS)}.") from None
    module, _, fn = target.partition(":")
    return getattr(importlib.import_module(module), fn)


def save_model(out: Path, family: str, weights: dict[str, torch.Tensor], model_config: dict,
               dataset: ImageDataset, training: dict, half: bool = False) -> None:
    """Write config.json and model.safetensors (optionally in float16) atomically."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.detach().to(torch.float16) if half and v.is_floating_point() else v.detach())
               .cpu().contiguous() for k, v in weights.items()}
    tmp = out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"family": family})
    tmp.replace(out / "model.safetensors")
    config = {
        "family": family,
        "model": model_config,
        "labels": dataset.label_names,
        "sublabels": dataset.sublabel_names,
        "data": dataset.source,
        "training": training,
        "defaults": DEFAULTS_OF_TRAINER.get(training.get("trainer"), {}),
    }
    tmp = out / "config.json.tmp"
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(out / "config.json")


def load_model_files(folder: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config, weights as float32) of a model folder written by `save_model`."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    weights = {k: (v.float() if v.is_floating_point() else v)
               for k, v in load_file(str(folder / "model.safetensors")).items()}
    return config, weights


def model_fingerprint(folder: Path) -> str:
    """A short id of exactly what was loaded: the config's and the weights' bytes."""
    import hashlib

    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors"):
        h.update((folder / name).read_bytes())
    return "local-" + h.hexdigest()[:12]


def load_model_folder(ref: str, family: str) -> tuple[Path, dict, dict[str, torch.Tensor]]:
    """(folder, config, float32 weights) of an artbot model of `family`: a bundled name or a folder."""
    from artbot.errors import ModelNotFound
    from generators.bundled import bundled_path

    folder = bundled_path(ref) or Path(ref).expanduser()
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise ModelNotFound(f"{ref} is not a trained {family} model (a folder with config.json and "
                            f"model.safetensors, as written by `artbot train`).")
    config, weights = load_model_files(folder)
    if config.get("family") != family:
        raise ModelNotFound(f"{ref} holds a {config.get('family')!r} model, not a {family} model.")
    return folder, config, weights


def warm_start(trainable: Trainable, weights: dict[str, torch.Tensor], source: str) -> list[str]:
    """Load exported weights into every network they fit (by parameter names and
    shapes; an EMA wrapper's networks sit under `model.`). Returns the names loaded.

    A network fits when the weights cover all its parameters, or when all the
    weights have a place in it: a network that has grown new parts since (the
    GAN's colour embeddings, which start at zero) keeps those parts as they are."""
    loaded = []
    for name, module in trainable.modules.items():
        params = dict(module.named_parameters())
        state = module.state_dict()
        for prefix in ("", "model."):
            mapped = {prefix + k: v for k, v in weights.items()}
            covers = params and all(k in mapped and mapped[k].shape == p.shape for k, p in params.items())
            fits = all(k in state and state[k].shape == v.shape for k, v in mapped.items())
            if covers or fits:
                module.load_state_dict({k: v for k, v in mapped.items() if k in state}, strict=False)
                new = sorted(set(params) - set(mapped))
                if new:
                    log.info("%s: %s start afresh (not in %s)", name, ", ".join(new), source)
                loaded.append(name)
                break
    if not loaded:
        raise UserError(f"{source} does not fit this model: it was trained with other options "
                        f"or on other data (another caption vocabulary or set of labels).")
    log.info("started %s from %s", ", ".join(loaded), source)
    return loaded


def train(
    kind: str,
    data: str,
    out: str | Path,
    *,
    epochs: int,
    size: int = 64,
    seed: int = 0,
    resume: bool = False,
    device: str | torch.device = "cpu",
    options: dict | None = None,
    progress: bool = True,
    dataset: ImageDataset | None = None,
    holdout: float = 0.0,
    init: str | None = None,
) -> Path:
    """Train a `kind` model on `data` into the folder `out`. Returns the folder.

    `init` (a trained model folder or a bundled model's name) starts the networks
    from that model's weights instead of at random; the optimisers start afresh.
    It needs the same architecture and data set (for the caption vocabulary and
    the labels); that is how the bundled models can be trained further, since they
    ship without their training state."""
    out = Path(out)
    if epochs < 1:
        raise UserError("--epochs must be at least 1.")
    if size % 8 or not 16 <= size <= 256:
        raise UserError("--size must be a multiple of 8 between 16 and 256.")
    state_path = out / "training-state.pt"
    if out.exists() and any(out.iterdir()) and not resume and state_path.exists():
        raise UserError(f"{out} already holds a training run: add --resume to continue it, "
                        f"or choose another --out.")
    if resume and not state_path.exists():
        raise UserError(f"Nothing to resume in {out} (no training-state.pt).")

    device = torch.device(device)
    _seed_everything(seed)
    dataset = dataset if dataset is not None else load_dataset(data, size)
    if holdout:
        # Keep a fixed slice out of training (split seed 0), for held-out metrics.
        dataset, _ = dataset.split(holdout, seed=0)
        dataset.source["holdout"] = holdout
    options = dict(options or {})
    trainable = _load_trainer(kind)(dataset, device=device, seed=seed, options=options)
    start_epoch, step = 0, 0
    init_training = None  # how the model we start from was trained (its provenance)
    if init is not None:
        _, init_config, weights = load_model_folder(init, FAMILY_OF_TRAINER[kind])
        init_training = init_config.get("training")
        if not resume:
            warm_start(trainable, weights, init)
    if resume:
        state = torch.load(state_path, map_location=device, weights_only=False)
        for name, module in trainable.modules.items():
            module.load_state_dict(state["modules"][name])
        for name, opt in trainable.optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        start_epoch, step = state["epoch"], state["step"]
        torch.set_rng_state(state["rng"])
        if start_epoch >= epochs:
            log.info("%s has already trained %d epochs", out, start_epoch)
            return out
    (out / "samples").mkdir(parents=True, exist_ok=True)

    n = len(dataset)
    bs = min(trainable.batch_size, n)
    steps_per_epoch = n // bs
    if hasattr(trainable, "plan"):
        trainable.plan(epochs * steps_per_epoch)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=(epochs - start_epoch) * steps_per_epoch, unit="step", file=sys.stderr,
                   desc=f"train {kind}", dynamic_ncols=True)
    started = time.time()
    for epoch in range(start_epoch, epochs):
        for module in trainable.modules.values():
            module.train()
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        metrics: dict[str, float] = {}
        for b in range(steps_per_epoch):
            idx = order[b * bs:(b + 1) * bs]
            batch = Batch(
                images=dataset.images[idx].to(device),
                captions=[dataset.captions[i] for i in idx.tolist()],
                labels=dataset.labels[idx].to(device),
                sublabels=dataset.sublabels[idx].to(device),
                indices=idx,
            )
            metrics = trainable.train_step(batch)
            step += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.3f}" for k, v in metrics.items()}, refresh=False)
        for module in trainable.modules.values():
            module.eval()
        with torch.no_grad():
            grid = trainable.sample_grid(32, seed)
        image_grid(grid.cpu(), nrow=8).save(out / "samples" / f"epoch-{epoch + 1:04d}.png")
        weights, model_config = trainable.export()
        training = {
            "trainer": kind, "epochs": epoch + 1, "steps": step, "seed": seed, "size": size,
            "batch_size": bs, "device": str(device), "options": options,
            **({"init": init, "init_training": init_training} if init else {}),
            "seconds": round(time.time() - started, 1) + (state.get("seconds", 0) if resume else 0),
            "last_metrics": metrics,
        }
        save_model(out, FAMILY_OF_TRAINER[kind], weights, model_config, dataset, training)
        torch.save({
            "modules": {k: m.state_dict() for k, m in trainable.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in trainable.optimizers.items()},
            "epoch": epoch + 1, "step": step, "rng": torch.get_rng_state(),
            "seconds": training["seconds"],
        }, out / "training-state.pt.tmp")
        (out / "training-state.pt.tmp").replace(state_path)
        log.info("epoch %d/%d done: %s", epoch + 1, epochs, metrics)
    if bar is not None:
        bar.close()
    return out
