"""Speed switches an operator turns on per model (`[models.NAME]` in artbot.toml).

    notes = apply_speed_switches(pipe, channels_last=True, fuse_projections=True)

Each is applied once, right after the pipeline is loaded, and each is skipped,
with the reason logged and returned, where the model or the device lacks it:

- `channels_last`: the UNet's and the VAE's weights in NHWC order, which the
  convolution kernels of GPUs (tensor cores) and of oneDNN prefer. The arithmetic
  is the same; the kernels' order of sums is not, so images differ from those of
  the default layout in their last bits.
- `fuse_projections`: each attention's query, key and value projections made one
  matrix product (`to_qkv`; `to_kv` for cross-attention), diffusers'
  `fuse_qkv_projections`, on the denoiser and the VAE. The fused layer is a plain
  `nn.Linear`, so exact batches (generators.invariance) cover it. The unfused
  projections are kept (diffusers can undo the fusion), so the attention weights
  take twice their memory. LoRAs adapt the unfused projections, which the fused
  attention no longer reads: the catalogue accepts this switch only for a model
  that allows no LoRAs (`loras = []`).
- `compile`: `torch.compile` of the denoiser (the UNet or transformer, in place),
  warmed up at load with one small call at the model's own size, so the first
  job does not wait for the compiler. A later call of another image size or
  batch size compiles once more (then with dynamic shapes, which serve the rest).
  It needs a compiler backend on the device: a C++ compiler on a CPU, triton on
  CUDA; MPS is not offered. It is refused while `exact_batches` is on: exact
  batches swap the linear and convolution layers' code for every call
  (generators.invariance), and the compiled graph would be traced again for
  every batch size, or fall back to running uncompiled, so turn `exact_batches`
  off to use it. LoRAs change the compiled modules (peft wraps their layers), so
  expect a recompile when a call's LoRAs change (not measured).

What each switch gains is measured in benchmarks/bench_speed_switches.py; the
figures are in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import time

import torch

log = logging.getLogger(__name__)

# The steps of the warm-up call that compiles the denoiser at load.
WARM_UP_STEPS = 2


def apply_speed_switches(pipe, *, compile: bool = False, channels_last: bool = False,
                         fuse_projections: bool = False, exact_batches: bool = True,
                         compile_backend: str = "inductor") -> list[str]:
    """Turn the asked switches on for `pipe`, in place. Returns one line a switch
    asked for, saying what was applied or why it was skipped (each also logged).

    `exact_batches` is the worker's setting (compile is refused while it is on);
    `compile_backend` is torch.compile's backend ("eager" traces without
    generating code, which is how the tests check the wiring in seconds)."""
    notes: list[str] = []
    if fuse_projections:
        notes.append(_fuse_projections(pipe))
    if channels_last:
        notes.append(_channels_last(pipe))
    if compile:
        notes.append(_compile(pipe, exact_batches=exact_batches, backend=compile_backend))
    for note in notes:
        log.info("speed switch %s", note)
    return notes


def _denoiser(pipe):
    """(name, module) of the pipeline's denoising network."""
    for name in ("unet", "transformer"):
        module = getattr(pipe, name, None)
        if module is not None:
            return name, module
    return None, None


def _channels_last(pipe) -> str:
    done = []
    for name in ("unet", "vae"):
        module = getattr(pipe, name, None)
        if isinstance(module, torch.nn.Module) and any(
                isinstance(m, torch.nn.Conv2d) for m in module.modules()):
            module.to(memory_format=torch.channels_last)
            done.append(name)
    if not done:
        return "channels_last: skipped, the pipeline has no UNet or VAE with convolutions"
    return f"channels_last: applied to the {' and '.join(done)}"


def _fuse_projections(pipe) -> str:
    done, skipped = [], []
    name, denoiser = _denoiser(pipe)
    for name, module in ((name, denoiser), ("vae", getattr(pipe, "vae", None))):
        if module is None:
            continue
        if not hasattr(module, "fuse_qkv_projections"):
            skipped.append(f"the {name} ({type(module).__name__}) has no fused form")
            continue
        try:
            with torch.no_grad():
                module.fuse_qkv_projections()
        except (ValueError, NotImplementedError, AttributeError) as exc:
            skipped.append(f"the {name} cannot fuse them ({_first_line(exc)})")
            continue
        done.append(name)
    if not done:
        return "fuse_projections: skipped, " + ("; ".join(skipped) or "no denoiser or VAE")
    note = f"fuse_projections: applied to the {' and '.join(done)}"
    return note + (f" (skipped: {'; '.join(skipped)})" if skipped else "")


def compile_unavailable(device: torch.device, backend: str = "inductor") -> str | None:
    """Why torch.compile cannot run on `device` here, or None when it can."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    import torch._dynamo as dynamo

    if not dynamo.is_dynamo_supported():
        return "torch.compile does not support this Python"
    if backend != "inductor":
        return None
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        return "triton is not installed (torch.compile needs it on CUDA)"
    if device.type == "cpu" and not (shutil.which("g++") or shutil.which("c++")
                                     or shutil.which("clang++")):
        return "no C++ compiler found (torch.compile needs one on a CPU)"
    if device.type not in ("cuda", "cpu"):
        return f"torch.compile is not offered on {device.type}"
    return None


def _compile(pipe, *, exact_batches: bool, backend: str) -> str:
    name, denoiser = _denoiser(pipe)
    if denoiser is None:
        return "compile: skipped, the pipeline has no UNet or transformer"
    if exact_batches:
        return ("compile: skipped, exact_batches is on (exact batches change the layers' code "
                "every call, which a compiled graph cannot follow); turn exact_batches off "
                "to compile")
    why = compile_unavailable(pipe.device, backend)
    if why:
        return f"compile: skipped, {why}"
    denoiser.compile(backend=backend)
    started = time.monotonic()
    try:
        _warm_up(pipe)
    except Exception as exc:  # noqa: BLE001 - any compiler failure: run the model uncompiled
        denoiser._compiled_call_impl = None  # what nn.Module.compile set; back to eager
        return f"compile: skipped, compiling the {name} failed ({_first_line(exc)})"
    return (f"compile: applied to the {name} (backend {backend}), warmed up in "
            f"{time.monotonic() - started:.1f}s")


def _warm_up(pipe) -> None:
    """One call at the model's own size, guidance on (as most jobs have it), so the
    compiled denoiser is traced and built before the first job."""
    with torch.inference_mode():
        pipe(prompt="", num_inference_steps=WARM_UP_STEPS, guidance_scale=5.0,
             generator=torch.Generator("cpu").manual_seed(0), output_type="latent")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:160]
