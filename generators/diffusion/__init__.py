"""The diffusion family: Stable Diffusion and friends, through diffusers.

- `loading.load_pipeline` turns a model reference (hub id, local folder or
  single `.safetensors` checkpoint) into a pipeline on a device;
- `generator.DiffusionGenerator` runs text to image and image to image on it;
- `samplers`: the sampler names people know from A1111 and ComfyUI, and the
  diffusers scheduler each one means.

Nothing is imported here, so that `generators.diffusion.samplers` (which the
request builders use to check a sampler's name) loads without torch.
"""
