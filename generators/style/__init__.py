"""The style-transfer family: Gatys optimisation and AdaIN, on VGG-19 features.

- `vgg.py`: VGG-19's convolutional part in torchvision's layout, and finding
  its ImageNet weights (a configured file, the cache, or one checked download).
- `gatys.py`: optimisation-based transfer (Gatys, Ecker & Bethge 2016),
  coarse to fine.
- `adain.py`: fast arbitrary transfer (Huang & Belongie 2017).
- `generator.py`: the `Generator` that the worker runs (family 'style').

Restyling by text is not here: it is image to image with a diffusion model and
a style prompt (the diffusion families' `stylize`).
"""
