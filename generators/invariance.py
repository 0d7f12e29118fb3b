"""Batch-invariant arithmetic: an image comes out the same whatever shares its call.

The worker runs several users' jobs as one generator call (worker.runner), and each
job must get the bytes it would have got alone. Seeding every image's noise on its
own (as every family does) is not enough: the kernels behind a matrix product or a
convolution choose their blocking, and so the order of their sums, from the shapes
they are given, batch size included. Measured on this project's 2-core CPU
(oneDNN, MKL) with the tiny SD pipeline: the time-embedding layers (a (batch, 32)
matrix product), the small convolutions and the VAE's attention all give different
last bits for an image at batch 1 and at batch 4, and those bits decide some
rounding of the final 8-bit pixels.

`per_image(n)` makes every `nn.Linear` and `nn.Conv2d`, for the length of a call
that makes n images, compute each image's rows as a product of its own: the rows of
image i are `x[i::n]` (a batch's rows come image by image, and classifier-free
guidance puts all the unconditional rows first, so image i's pair is rows i and
n+i, in the order a lone run has them). Linear layers become one batched matrix
product (`torch.baddbmm`, one matrix an image, each of the shape a lone run has,
a single call, so the batch keeps its speed), and a lone run (n = 1) goes through
the same code with one matrix. Convolutions run once an image, each call of the
shape a lone run makes. Everything
else a network does (normalisation, attention, elementwise arithmetic) works row
by row already; the VAE decode is made per image by the caller (diffusers' VAE
slicing). On a GPU the fused products are faster still, so operators there can
turn this off (`exact_batches = false`) and accept images that differ from a lone
run in their last bits.
"""

from __future__ import annotations

import contextlib
import threading

import torch
from torch import nn

_lock = threading.RLock()
_images: list[int] = []  # the n of each active per_image() block, innermost last
_originals: dict[type, object] = {}


def _images_in(x: torch.Tensor) -> int:
    """How many images' rows `x` holds: the call's n, or 1 for a tensor shared by all."""
    n = _images[-1] if _images else 1
    rows = x.shape[0] if x.dim() >= 2 else 0
    return n if rows >= n and rows % n == 0 else 1


def _linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    n = _images_in(x)
    if x.dim() < 2:
        return _originals[nn.Linear](self, x)
    k = x.shape[0] // n
    # (k*n, ..., C) -> (n, k*..., C): matrix i holds image i's rows, in their order.
    mats = x.reshape(k, n, *x.shape[1:]).transpose(0, 1).reshape(n, -1, x.shape[-1])
    weight = self.weight.t().expand(n, *self.weight.t().shape)
    if self.bias is None:
        out = torch.bmm(mats, weight)
    else:
        out = torch.baddbmm(self.bias.expand(n, mats.shape[1], self.out_features), mats, weight)
    out = out.reshape(n, k, *x.shape[1:-1], self.out_features).transpose(0, 1)
    return out.reshape(*x.shape[:-1], self.out_features)


def _conv2d(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    n = _images_in(x)
    original = _originals[nn.Conv2d]
    if n == 1 or x.dim() != 4:
        return original(self, x)
    # One call an image, each of the shape a lone run makes. (A grouped convolution,
    # one group an image, would be one call, but oneDNN computes a grouped 1x1
    # convolution differently from a plain one: measured, the last bits differ.)
    # Each image's rows keep the layout a lone run gives them (channels-last models,
    # generators.diffusion.speed): the kernels that follow sum in a layout's own order.
    parts = [original(self, x[i::n].contiguous(memory_format=_layout(x))) for i in range(n)]
    out = torch.stack(parts, dim=1)  # (k, n, ...): row j*n + i is parts[i][j]
    out = out.reshape(x.shape[0], *out.shape[2:])
    return out.contiguous(memory_format=_layout(parts[0]))


def _layout(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-d tensor stored so (and not also plainly), else the default."""
    stored_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    if stored_last and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


_FORWARDS = {nn.Linear: _linear, nn.Conv2d: _conv2d}


@contextlib.contextmanager
def per_image(images: int, enabled: bool = True):
    """Within the block, linear and convolution layers compute one image at a time,
    for a call that makes `images` images (see the module docstring).

    A lone run must be made inside `per_image(1)` too, to take the same path. It
    patches the two classes' `forward` (so LoRA layers, which call `nn.Linear`
    modules inside, are covered too) and puts them back afterwards; the worker runs
    generation on one device thread, so nothing else runs while it is patched.
    """
    if not enabled:
        yield
        return
    with _lock:
        if not _images:
            for cls, forward in _FORWARDS.items():
                _originals[cls] = cls.forward
                cls.forward = forward
        _images.append(images)
    try:
        yield
    finally:
        with _lock:
            _images.pop()
            if not _images:
                for cls, original in _originals.items():
                    cls.forward = original
                _originals.clear()
