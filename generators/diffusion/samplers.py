"""Samplers by the names people use, and the diffusers scheduler each one is.

A1111 and Civitai write "DPM++ 2M Karras"; ComfyUI writes `dpmpp_2m` with the
scheduler `karras`; diffusers has `DPMSolverMultistepScheduler` with
`use_karras_sigmas=True`. `canonical(name)` accepts any of the first two
spellings (case, spaces, underscores and "+" do not matter) and returns the
A1111 name, which is what a job stores and what its PNG says;
`scheduler_for(name, current)` builds that scheduler from the model's own
scheduler config, so the model's training schedule (betas, prediction type,
timestep spacing) is kept and only the sampling method changes.

The table follows diffusers' own list of A1111 equivalents. LMS needs scipy and
DPM++ SDE torchsde, both installed. DPM++ SDE draws its noise from a Brownian
tree, which diffusers seeds from the global RNG unless told; `scheduler_for`
seeds it with the job's first seed, so the same seed gives the same image.

This module imports torch and diffusers only inside `scheduler_for`, so the
request builders can check names without them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from artbot.errors import InvalidRequest, UserError


@dataclass(frozen=True)
class Sampler:
    name: str  # as A1111 writes it
    scheduler: str  # the diffusers class
    config: dict[str, Any] = field(default_factory=dict)  # what differs from the model's config
    aliases: tuple[str, ...] = ()  # ComfyUI's spellings


SAMPLERS: dict[str, Sampler] = {s.name: s for s in [
    Sampler("Euler", "EulerDiscreteScheduler", aliases=("euler",)),
    Sampler("Euler a", "EulerAncestralDiscreteScheduler", aliases=("euler_ancestral",)),
    Sampler("Heun", "HeunDiscreteScheduler", aliases=("heun",)),
    Sampler("LMS", "LMSDiscreteScheduler", aliases=("lms",)),
    Sampler("LMS Karras", "LMSDiscreteScheduler", {"use_karras_sigmas": True},
            aliases=("lms_karras",)),
    Sampler("DPM2", "KDPM2DiscreteScheduler", aliases=("dpm_2",)),
    Sampler("DPM2 a", "KDPM2AncestralDiscreteScheduler", aliases=("dpm_2_ancestral",)),
    Sampler("DPM++ 2M", "DPMSolverMultistepScheduler", aliases=("dpmpp_2m",)),
    Sampler("DPM++ 2M Karras", "DPMSolverMultistepScheduler", {"use_karras_sigmas": True},
            aliases=("dpmpp_2m_karras",)),
    Sampler("DPM++ 2M SDE", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++"}, aliases=("dpmpp_2m_sde",)),
    Sampler("DPM++ 2M SDE Karras", "DPMSolverMultistepScheduler",
            {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True},
            aliases=("dpmpp_2m_sde_karras",)),
    Sampler("DPM++ SDE", "DPMSolverSDEScheduler", aliases=("dpmpp_sde",)),
    Sampler("DPM++ SDE Karras", "DPMSolverSDEScheduler", {"use_karras_sigmas": True},
            aliases=("dpmpp_sde_karras",)),
    Sampler("DPM++ 2S", "DPMSolverSinglestepScheduler", aliases=("dpmpp_2s",)),
    Sampler("DPM++ 2S Karras", "DPMSolverSinglestepScheduler", {"use_karras_sigmas": True},
            aliases=("dpmpp_2s_karras",)),
    Sampler("DEIS", "DEISMultistepScheduler", aliases=("deis",)),
    Sampler("UniPC", "UniPCMultistepScheduler", aliases=("uni_pc",)),
    Sampler("DDIM", "DDIMScheduler", aliases=("ddim",)),
    Sampler("PLMS", "PNDMScheduler", {"skip_prk_steps": True}, aliases=("pndm",)),
    Sampler("LCM", "LCMScheduler", aliases=("lcm",)),
]}


def _key(text: str) -> str:
    return re.sub(r"[\s_+\-]", "", text.lower().replace("++", "pp"))


_BY_KEY = {_key(spelling): s.name for s in SAMPLERS.values()
           for spelling in (s.name, *s.aliases)}


def canonical(name: str | None) -> str | None:
    """The A1111 name of a sampler however it was written; None for none given.
    An unknown name raises InvalidRequest that lists the known ones."""
    if name is None or not str(name).strip():
        return None
    found = _BY_KEY.get(_key(str(name)))
    if found is None:
        raise InvalidRequest(f"Unknown sampler {name!r}; samplers: {', '.join(SAMPLERS)}.")
    return found


class UnsupportedSampler(UserError):
    """The model's scheduler cannot be swapped for the sampler asked for."""


def scheduler_for(name: str, current, seed: int | None = None):
    """A new scheduler for sampler `name`, built from the model's scheduler `current`;
    `seed` seeds the noise of samplers that draw their own (DPM++ SDE).

    Raises UnsupportedSampler when the model's scheduler is of a kind the
    sampler cannot replace: flow-matching models (Flux, SD3) sample with their
    own scheduler, not with these. LCM is offered for SD-style models because
    that is how an LCM LoRA is used.
    """
    import diffusers

    sampler = SAMPLERS[canonical(name)]
    own = type(current).__name__
    if own.startswith("FlowMatch"):
        # Flow matching (Flux, SD3) predicts a velocity along a straight path; the
        # samplers here integrate a noise-prediction model and would draw garbage.
        raise UnsupportedSampler(
            f"This model samples with {own} (flow matching); the sampler {sampler.name} "
            f"does not apply to it. Leave the sampler out to use the model's own.")
    cls = getattr(diffusers, sampler.scheduler)
    extra = {"noise_sampler_seed": int(seed)} if seed is not None and \
        sampler.scheduler == "DPMSolverSDEScheduler" else {}
    return cls.from_config(current.config, **sampler.config, **extra)
