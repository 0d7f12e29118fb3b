"""VAE: a small convolutional variational autoencoder trained from scratch (`artbot train vae`).

    model.py       the config, the encoder and the decoder
    train.py       one training step, the sample grid and the export (with per-label latent stats)
    generator.py   VAEGenerator: draw, vary any image, interpolate, for the worker
"""
