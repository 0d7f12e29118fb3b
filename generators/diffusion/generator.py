"""Text to image and image to image with a diffusers pipeline.

Reproducibility: every image has its own seed, and its starting noise comes
from a CPU `torch.Generator` seeded with it, so the same seed and parameters
give the same image on the same machine, and the same starting noise on any
device.
"""

from __future__ import annotations

import contextlib
import inspect

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
from generators.diffusion.lora import applied_loras
from generators.diffusion.prompting import prompt_embeddings
from generators.diffusion.samplers import scheduler_for


# Images larger than this many pixels are decoded by the VAE in tiles, so that the
# decode of a large image (hires, upscales) does not run out of memory; below it the
# VAE decodes in one piece, as the model was made to (tiles blend at their seams).
TILED_ABOVE_PIXELS = 2048 * 1024


class DiffusionGenerator(Generator):
    family = "diffusion"

    def __init__(self, pipe, model_revision: str | None = None, *, allow_offload: bool = False):
        super().__init__(model_revision)
        self.pipe = pipe  # text to image
        self._img2img = None  # built on first use; shares pipe's modules
        self.allow_offload = allow_offload  # the operator's `allow_cpu_offload`
        self.offloaded = False

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype, *,
             config: str | None = None, arch: str | None = None,
             allow_offload: bool = False) -> "DiffusionGenerator":
        pipe, revision = load_pipeline(ref, device, dtype, config=config, arch=arch)
        return cls(pipe, revision, allow_offload=allow_offload)

    def use_less_memory(self) -> str | None:
        """CPU offload (each component moves to the GPU only while it runs) and a tiled
        VAE: slower, but a model larger than the GPU still draws."""
        if self.offloaded or not self.allow_offload or self.pipe.device.type != "cuda":
            return None
        self.pipe.enable_model_cpu_offload(device=self.pipe.device)
        if hasattr(self.pipe, "vae") and hasattr(self.pipe.vae, "enable_tiling"):
            self.pipe.vae.enable_tiling()
        self._img2img = None  # rebuilt from the offloaded pipeline
        self.offloaded = True
        return "the model was offloaded to the CPU between its parts"

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
        pipe.scheduler = scheduler_for(name, own, seed=request.seeds[0])
        try:
            yield
        finally:
            pipe.scheduler = own

    @staticmethod
    @contextlib.contextmanager
    def _tiled_vae(pipe, request: GenerationRequest):
        """A tiled VAE for this call when the image is large (and not tiled already)."""
        vae = getattr(pipe, "vae", None)
        large = request.width * request.height > TILED_ABOVE_PIXELS
        if not large or vae is None or not hasattr(vae, "enable_tiling") or \
                getattr(vae, "use_tiling", False):
            yield
            return
        vae.enable_tiling()
        try:
            yield
        finally:
            vae.disable_tiling()

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
        return self._run(self.pipe, request, progress,
                         width=request.width, height=request.height)

    def vary(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        pipe = self.img2img_pipeline()
        init = request.init_image.convert("RGB")
        if init.size != (request.width, request.height):
            init = init.resize((request.width, request.height), Image.LANCZOS)
        # SD and SDXL take the size from the image; SD3 and Flux draw at their own
        # default size unless told, so they are told.
        return self._run(pipe, request, progress, image=[init] * request.count,
                         strength=request.strength, width=request.width, height=request.height)

    def _run(self, pipe, request: GenerationRequest, progress: ProgressCallback,
             **task) -> GenerationResult:
        """One pipeline call: the job's sampler, LoRAs and safety setting for this call
        only, the prompt encoded (weights, long prompts) where the model allows it."""
        accepts = _call_parameters(pipe)
        kwargs = {k: v for k, v in task.items() if k in accepts}
        notes: list[str] = []
        with torch.inference_mode(), self._safety(pipe, request), self._tiled_vae(pipe, request), \
                self._sampler(pipe, request), applied_loras(pipe, request.loras):
            kwargs.update(self._text_inputs(pipe, request, accepts, notes))
            if "callback_on_step_end" in accepts:
                kwargs["callback_on_step_end"] = self._step_callback(progress)
            else:  # PixArt still has the older per-step callback
                total = request.steps
                kwargs["callback"] = lambda step, timestep, latents: progress(step + 1, total)
                kwargs["callback_steps"] = 1
            output = pipe(
                num_inference_steps=request.steps,
                guidance_scale=request.guidance,
                generator=self._seeded_generators(request.seeds),
                output_type="pil",
                **kwargs,
            )
            result = self._result(output, request, pipe)
        if notes:
            result.params["notes"] = notes
        return result

    def _text_inputs(self, pipe, request: GenerationRequest, accepts: set[str],
                     notes: list[str]) -> dict:
        """The prompt as the pipeline takes it: embeddings from compel for CLIP models
        (A1111 weighting, no 77-token cut), else the text itself."""
        prompts, negatives = self._prompts(request)
        # A1111 counts "Clip skip 2" for the second-to-last layer; diffusers counts it 1.
        skip = request.clip_skip - 1 if request.clip_skip and request.clip_skip > 1 else None
        embeds = prompt_embeddings(pipe, prompts, negatives, clip_skip=skip)
        if embeds is not None:
            return embeds
        kwargs: dict = {"prompt": prompts}
        if "negative_prompt" in accepts and "true_cfg_scale" not in accepts:
            # (Flux takes one only for "true CFG", which artbot does not offer.)
            # PixArt encodes the negative prompt even without one: give it the empty text.
            kwargs["negative_prompt"] = negatives or [""] * request.count
        if skip and "clip_skip" in accepts:
            kwargs["clip_skip"] = skip
        reader = _prompt_reader(pipe, accepts)
        if reader is not None:
            tokenizer, limit = reader
            used = len(tokenizer(request.prompt, add_special_tokens=True).input_ids)
            if used > limit:
                notes.append(f"The prompt is {used} tokens long; this model reads the first "
                             f"{limit}.")
        return kwargs


def _call_parameters(pipe) -> set[str]:
    return set(inspect.signature(type(pipe).__call__).parameters)


def _prompt_reader(pipe, accepts: set[str]):
    """(tokenizer, token limit) of the text encoder that reads the most of a prompt,
    for pipelines that cut prompts (T5: SD3, Flux, PixArt; plain CLIP elsewhere)."""
    name = type(pipe).__name__
    limit = None
    if "max_sequence_length" in accepts:
        default = inspect.signature(type(pipe).__call__).parameters["max_sequence_length"].default
        limit = int(default) if isinstance(default, int) else None
    if name.startswith("StableDiffusion3"):
        tokenizer = getattr(pipe, "tokenizer_3", None)
        if tokenizer is None or getattr(pipe, "text_encoder_3", None) is None:
            tokenizer, limit = pipe.tokenizer, pipe.tokenizer.model_max_length
    elif name.startswith("Flux"):
        tokenizer = getattr(pipe, "tokenizer_2", None)
    else:
        tokenizer = getattr(pipe, "tokenizer", None)
        if limit is None and tokenizer is not None:
            limit = tokenizer.model_max_length
    if tokenizer is None or not limit or limit > 100_000:
        return None
    return tokenizer, int(limit)
