"""Text to image and image to image with a diffusers pipeline.

Reproducibility: every image has its own seed, and its starting noise comes
from a CPU `torch.Generator` seeded with it, so the same seed and parameters
give the same image on the same machine, and the same starting noise on any
device.
"""

from __future__ import annotations

import contextlib

import torch
from PIL import Image

from generators.base import (
    GenerationRequest,
    GenerationResult,
    Generator,
    ProgressCallback,
    UnsupportedTask,
)
from generators.diffusion.loading import load_pipeline
from generators.diffusion.samplers import scheduler_for


class DiffusionGenerator(Generator):
    family = "diffusion"

    def __init__(self, pipe, model_revision: str | None = None):
        super().__init__(model_revision)
        self.pipe = pipe  # text to image
        self._img2img = None  # built on first use; shares pipe's modules

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype) -> "DiffusionGenerator":
        pipe, revision = load_pipeline(ref, device, dtype)
        return cls(pipe, revision)

    # -- helpers --------------------------------------------------------------

    @staticmethod
    def _seeded_generators(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    @staticmethod
    def _step_callback(progress: ProgressCallback):
        def on_step_end(pipe, step: int, timestep, callback_kwargs):
            progress(step + 1, int(getattr(pipe, "num_timesteps", 0) or step + 1))
            return callback_kwargs

        return on_step_end

    @staticmethod
    def _prompts(request: GenerationRequest) -> tuple[list[str], list[str] | None]:
        n = request.count
        negative = [request.negative_prompt] * n if request.negative_prompt else None
        return [request.prompt] * n, negative

    def _result(self, output, request: GenerationRequest, pipe, **params) -> GenerationResult:
        nsfw = getattr(output, "nsfw_content_detected", None)
        if nsfw is not None:
            params["nsfw"] = [bool(x) for x in nsfw]
        params["scheduler"] = type(pipe.scheduler).__name__
        return GenerationResult(images=list(output.images), seeds=list(request.seeds), params=params)

    @staticmethod
    @contextlib.contextmanager
    def _sampler(pipe, request: GenerationRequest):
        """The job's sampler (an A1111 name) for this call only; the model's own
        scheduler comes back afterwards, so the next job is unaffected."""
        name = request.sampler
        if not name:
            yield
            return
        own = pipe.scheduler
        pipe.scheduler = scheduler_for(name, own)
        try:
            yield
        finally:
            pipe.scheduler = own

    @staticmethod
    @contextlib.contextmanager
    def _safety(pipe, request: GenerationRequest):
        """The model's safety checker stays on unless the job says `safety_checker: False`
        (which the server's rules allow only in age-restricted channels)."""
        checker = getattr(pipe, "safety_checker", None)
        if checker is None or request.options.get("safety_checker", True):
            yield
            return
        pipe.safety_checker = None
        try:
            yield
        finally:
            pipe.safety_checker = checker

    def img2img_pipeline(self):
        if self._img2img is None:
            from diffusers import AutoPipelineForImage2Image

            try:
                self._img2img = AutoPipelineForImage2Image.from_pipe(self.pipe)
            except (ValueError, KeyError) as exc:
                raise UnsupportedTask(
                    f"This model's pipeline ({type(self.pipe).__name__}) has no image-to-image "
                    f"variant, so it cannot make variations."
                ) from exc
            self._img2img.set_progress_bar_config(disable=True)
        return self._img2img

    # -- tasks ----------------------------------------------------------------

    def draw(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        prompts, negatives = self._prompts(request)
        with torch.inference_mode(), self._safety(self.pipe, request), \
                self._sampler(self.pipe, request):
            output = self.pipe(
                prompt=prompts,
                negative_prompt=negatives,
                width=request.width,
                height=request.height,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=self._seeded_generators(request.seeds),
                callback_on_step_end=self._step_callback(progress),
                output_type="pil",
            )
            return self._result(output, request, self.pipe)

    def vary(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        pipe = self.img2img_pipeline()
        init = request.init_image.convert("RGB")
        if init.size != (request.width, request.height):
            init = init.resize((request.width, request.height), Image.LANCZOS)
        prompts, negatives = self._prompts(request)
        with torch.inference_mode(), self._safety(pipe, request), self._sampler(pipe, request):
            output = pipe(
                prompt=prompts,
                negative_prompt=negatives,
                image=[init] * request.count,
                strength=request.strength,
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=self._seeded_generators(request.seeds),
                callback_on_step_end=self._step_callback(progress),
                output_type="pil",
            )
            return self._result(output, request, pipe)
