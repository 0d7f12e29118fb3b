"""models: the model catalogue, as `artbot models` prints it."""

from __future__ import annotations

from artbot.config import Settings
from cli.connect import run_on_queue
from cli.requests import SERVED_WITHIN_S
from worker.catalogue import ModelInfo, catalogue


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return str(n)


def _lines(info: ModelInfo, default: bool) -> list[str]:
    head = f"{info.name}{'  (default)' if default else ''}"
    if info.name != info.source:
        head += f"  <- {info.kind} {info.source}"
    elif info.kind != "hub" or "/" in info.source:
        head += f"  ({info.kind})"
    out = [head]
    if info.description:
        out.append(f"    {info.description}")
    if info.problem:
        out.append(f"    cannot be used: {info.problem}")
        return out
    out.append(f"    architecture: {info.architecture}")
    defaults = [info.size]
    if info.steps is not None:
        defaults.append(f"{info.steps} steps")
    if info.guidance is not None:
        defaults.append(f"guidance {info.guidance:g}")
    if info.family == "diffusion":
        defaults.append(f"sampler {info.sampler}" if info.sampler else "the model's own sampler")
    out.append(f"    defaults: {', '.join(defaults)}")
    if len(info.sizes) > 1:
        out.append(f"    sizes: {', '.join(info.sizes)}")
    if info.can:
        out.append(f"    can: {', '.join(info.can)}")
    if info.loras is not None:
        out.append(f"    LoRAs allowed: {', '.join(info.loras) or 'none'}")
    if info.parameters is None:
        memory = "unknown until it is downloaded" if info.kind == "hub" else "unknown"
    else:
        memory = (f"{_count(info.parameters)} parameters: about {_bytes(info.memory('float16'))} "
                  f"in float16 (GPU), {_bytes(info.memory('float32'))} in float32 (CPU)")
    out.append(f"    memory: {memory}")
    out.append("    loaded: " + (f"yes, on {', '.join(info.loaded_on)}" if info.loaded_on else "no"))
    return out


def cmd_models(settings: Settings, args) -> int:
    loaded = run_on_queue(settings, lambda queue: queue.loaded_models(within_s=SERVED_WITHIN_S))
    infos = catalogue(settings, loaded)
    for i, info in enumerate(infos):
        if i:
            print()
        print("\n".join(_lines(info, default=(i == 0))))
    return 0
