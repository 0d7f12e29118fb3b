"""The generator families: diffusion, GAN, VAE and neural style transfer.

Every family implements `generators.base.Generator`: it is handed a
`GenerationRequest` and returns a `GenerationResult` with the images, the seed
of each image and the parameters that reproduce them. This package uses torch
and never discord or SQL. Import `generators.base` and `generators.registry`;
the families import torch when loaded.
"""
