"""GAN: a small class-conditional DCGAN trained from scratch (`artbot train gan`).

    model.py       the config, the generator, the projection discriminator, truncation
    train.py       one training step (hinge loss, DiffAugment, EMA), the sample grid and the export
    generator.py   GANGenerator: draw, and vary its own images, for the worker
"""
