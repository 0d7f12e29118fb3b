"""Pixel diffusion: a small text-to-image diffusion model trained from scratch (`artbot train diffusion`).

    model.py       the config, the caption tokenizer, the text encoder and the UNet
    sampling.py    the noise schedule and the samplers (DDIM, DPM-Solver++(2M))
    train.py       one training step, the sample grid and the export, for generators.training
    generator.py   PixelDiffusionGenerator: draw and vary for the worker
"""
