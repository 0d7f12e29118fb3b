"""Fast arbitrary style transfer with adaptive instance normalisation
(Huang & Belongie, ICCV 2017).

The content and style images go through VGG-19 up to `relu4_1`; AdaIN gives
the content features the channel-wise mean and standard deviation of the
style's; a decoder trained for this turns the result back into an image. One
forward pass: milliseconds on a GPU.

The decoder mirrors the encoder (reflection padding, nearest upsampling), in
the layout of the reference PyTorch implementation, so a state dict of that
shape loads as is. A decoder only fits the encoder it was trained with: this
one expects torchvision's ImageNet VGG-19 with ImageNet normalisation.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from generators.style.vgg import VGG19Features


def build_decoder() -> nn.Sequential:
    def conv(c_in, c_out):
        return [nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3), nn.ReLU()]

    up = nn.Upsample(scale_factor=2, mode="nearest")
    layers: list[nn.Module] = [
        *conv(512, 256), up,
        *conv(256, 256), *conv(256, 256), *conv(256, 256), *conv(256, 128), up,
        *conv(128, 128), *conv(128, 64), up,
        *conv(64, 64), nn.ReflectionPad2d(1), nn.Conv2d(64, 3, 3),
    ]
    return nn.Sequential(*layers)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(B, C, H, W) content features with the per-channel mean/std of the style features."""
    c_mean, c_std = content.mean((2, 3), keepdim=True), content.std((2, 3), keepdim=True) + eps
    s_mean, s_std = style.mean((2, 3), keepdim=True), style.std((2, 3), keepdim=True) + eps
    return (content - c_mean) / c_std * s_std + s_mean


class AdaIN(nn.Module):
    def __init__(self, encoder: VGG19Features, decoder: nn.Sequential):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    @torch.no_grad()
    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Content (B, 3, H, W) and style (B, 3, h, w) in [0, 1] -> (B, 3, H, W) in [0, 1]."""
        fc = self.encoder(content, ["relu4_1"])["relu4_1"]
        fs = self.encoder(style, ["relu4_1"])["relu4_1"]
        t = alpha * adain(fc, fs) + (1 - alpha) * fc
        out = self.decoder(t)
        return out[..., : content.shape[-2], : content.shape[-1]].clamp(0, 1)
