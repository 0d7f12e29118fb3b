"""Choosing the device and dtype a worker runs on.

``auto`` picks CUDA (half precision), then Apple MPS, then the CPU (float32).
Both choices can be overridden (settings `device` and `dtype`, environment
`ARTBOT_DEVICE` and `ARTBOT_DTYPE`).
"""

from __future__ import annotations

import torch

from artbot.errors import UserError

_DTYPES = {
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
}


def pick_device(preference: str = "auto") -> torch.device:
    preference = (preference or "auto").strip().lower()
    if preference == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise UserError(f"Unknown device {preference!r}: use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"Device {preference!r} was asked for, but torch sees no CUDA GPU.")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError("Device 'mps' was asked for, but Apple MPS is not available.")
    return device


def pick_dtype(preference: str, device: torch.device) -> torch.dtype:
    preference = (preference or "auto").strip().lower()
    if preference == "auto":
        # Half precision where it is fast and well supported; float32 on the
        # CPU (slow and inexact in half) and on MPS (some ops lack fp16 kernels).
        return torch.float16 if device.type == "cuda" else torch.float32
    if preference not in _DTYPES:
        raise UserError(f"Unknown dtype {preference!r}: use auto, float16, bfloat16 or float32.")
    return _DTYPES[preference]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says the device (or the host) ran out of memory: CUDA's
    OutOfMemoryError, MPS's and the CPU allocator's RuntimeErrors, MemoryError."""
    if isinstance(exc, (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        words in text for words in ("out of memory", "can't allocate memory",
                                    "not enough memory"))


def free_memory(device: torch.device | None = None) -> None:
    """Give cached blocks back to the device after a failed or finished model."""
    import gc

    gc.collect()
    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()


def memory_report(device: torch.device) -> dict:
    """The device's name and memory, for the fleet view and /metrics: on CUDA the
    GPU's total memory and what torch has allocated and reserved on it now; on a CPU
    the machine's RAM and this process's resident memory."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        return {"device_name": props.name, "memory_total": int(props.total_memory),
                "memory_used": int(torch.cuda.memory_allocated(index)),
                "memory_reserved": int(torch.cuda.memory_reserved(index))}
    import psutil

    return {"device_name": device.type, "memory_total": int(psutil.virtual_memory().total),
            "memory_used": int(psutil.Process().memory_info().rss)}
