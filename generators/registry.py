"""Which family loads a model, and loading it.

The worker asks `load_generator(family, model, device, dtype)`; this module
imports the family lazily so that importing it costs nothing.
"""

from __future__ import annotations

import importlib

from artbot.errors import UserError

# family name -> "module:Class" whose `load(ref, device, dtype)` builds a Generator.
FAMILIES: dict[str, str] = {
    "diffusion": "generators.diffusion.generator:DiffusionGenerator",
    "gan": "generators.gan.generator:GANGenerator",
    "vae": "generators.vae.generator:VAEGenerator",
    "pixel-diffusion": "generators.pixel_diffusion.generator:PixelDiffusionGenerator",
    "style": "generators.style.generator:StyleGenerator",
    "describe": "generators.describe:DescribeGenerator",
    "upscaler": "generators.upscale:UpscalerGenerator",
}


def load_generator(family: str, model: str, device, dtype, **options):
    """Load `model` with its family's class; `options` are the family's own (diffusion:
    `config` and `arch` of a single checkpoint file, from the operator's catalogue)."""
    try:
        target = FAMILIES[family]
    except KeyError:
        raise UserError(
            f"Unknown generator family {family!r}; known: {', '.join(sorted(FAMILIES))}."
        ) from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.load(model, device, dtype, **options)
