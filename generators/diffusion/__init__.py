"""The diffusion family: Stable Diffusion and friends, through diffusers.

`loading.load_pipeline` turns a model reference (hub id, local folder or
single `.safetensors` checkpoint) into a pipeline on a device;
`generator.DiffusionGenerator` runs text to image and image to image on it.
"""

from generators.diffusion.generator import DiffusionGenerator
from generators.diffusion.loading import load_pipeline

__all__ = ["DiffusionGenerator", "load_pipeline"]
