"""Text to image and image to image with a diffusers pipeline.

Reproducibility: every image has its own seed, and its starting noise comes
from a CPU `torch.Generator` seeded with it, so the same seed and parameters
give the same image on the same machine, and the same starting noise on any
device. Several jobs that share a batch key run as one pipeline call
(`generate_many`); with `exact` (the default), the layers whose arithmetic
depends on the batch run one image at a time inside it (generators.invariance)
and the VAE decodes image by image, so each image is byte-identical to the one
its job gives alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch
from PIL import Image

from generators.base import (
    GenerationRequest,
    GenerationResult,
    Generator,
    ProgressCallback,
    Task,
    UnsupportedTask,
    check_request,
    no_progress,
)
from generators.diffusion.loading import load_pipeline
from generators.diffusion.lora import applied_loras
from generators.diffusion.prompting import prompt_embeddings
from generators.diffusion.samplers import scheduler_for
from generators.diffusion.speed import apply_speed_switches
from generators.invariance import per_image
from generators.outpaint import (canvas_size, extend_canvas, outpaint_mask, parse_pad, paste_back,
                                 round_pad)
from generators.previews import diffusion_preview, load_preview_vae


# Images larger than this many pixels are decoded by the VAE in tiles, so that the
# decode of a large image (hires, upscales) does not run out of memory; below it the
# VAE decodes in one piece, as the model was made to (tiles blend at their seams).
TILED_ABOVE_PIXELS = 2048 * 1024
# Zooming out by image to image (a model without an inpainting pipeline): the strength when the
# job asks for 1.0, which would throw the extended canvas away.
OUTPAINT_IMG2IMG_STRENGTH = 0.8


class DiffusionGenerator(Generator):
    family = "diffusion"

    def __init__(self, pipe, model_revision: str | None = None, *, allow_offload: bool = False,
                 preview_vae=None):
        super().__init__(model_revision)
        self.pipe = pipe  # text to image
        self.preview_vae = preview_vae  # an AutoencoderTiny for previews; None: linear ones
        self._img2img = None  # built on first use; shares pipe's modules
        self._inpaint = None  # likewise; False: the model has no inpainting pipeline
        self.allow_offload = allow_offload  # the operator's `allow_cpu_offload`
        self.offloaded = False

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype, *,
             config: str | None = None, arch: str | None = None,
             allow_offload: bool = False, preview_vae: str | None = None,
             speed: dict | None = None) -> "DiffusionGenerator":
        """`preview_vae`: the operator's AutoencoderTiny folder for this model's previews;
        `speed`: the catalogue's speed switches (generators.diffusion.speed), applied once."""
        pipe, revision = load_pipeline(ref, device, dtype, config=config, arch=arch)
        if speed:
            apply_speed_switches(pipe, **speed)
        tiny = load_preview_vae(preview_vae, device, dtype, pipe) if preview_vae else None
        return cls(pipe, revision, allow_offload=allow_offload, preview_vae=tiny)

    def use_less_memory(self) -> str | None:
        """CPU offload (each component moves to the GPU only while it runs) and a tiled
        VAE: slower, but a model larger than the GPU still draws."""
        if self.offloaded or not self.allow_offload or self.pipe.device.type != "cuda":
            return None
        self.pipe.enable_model_cpu_offload(device=self.pipe.device)
        if hasattr(self.pipe, "vae") and hasattr(self.pipe.vae, "enable_tiling"):
            self.pipe.vae.enable_tiling()
        self._img2img = self._inpaint = None  # rebuilt from the offloaded pipeline
        self.offloaded = True
        return "the model was offloaded to the CPU between its parts"

    # -- helpers --------------------------------------------------------------

    @staticmethod
    def _seeded_generators(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def _step_callback(self, progress: ProgressCallback, size: tuple[int, int] | None = None):
        """The pipeline's step-end callback: progress, with a lazy preview of the step's
        latents (`size`, the (height, width) drawn, unpacks Flux's latents of any shape).

        No preview while the model's safety checker is on for the call: it judges the
        finished image only, and a preview would show what it may go on to hide."""
        def on_step_end(pipe, step: int, timestep, callback_kwargs):
            total = int(getattr(pipe, "num_timesteps", 0) or step + 1)
            latents = callback_kwargs.get("latents")
            if latents is None or getattr(pipe, "safety_checker", None) is not None:
                progress(step + 1, total)
            else:
                progress(step + 1, total, diffusion_preview(
                    pipe, latents, preview_vae=self.preview_vae, size=size))
            return callback_kwargs

        return on_step_end

    @staticmethod
    def _prompts(request: GenerationRequest) -> tuple[list[str], list[str] | None]:
        n = request.count
        negative = [request.negative_prompt] * n if request.negative_prompt else None
        return [request.prompt] * n, negative

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

    def inpaint_pipeline(self):
        """The model's inpainting pipeline (diffusers' AutoPipelineForInpainting, sharing pipe's
        modules: SD 1.x/2.x, SDXL, SD3, Flux; a 4-channel UNet inpaints by blending latents),
        or None where diffusers has none for it."""
        if self._inpaint is None:
            from diffusers import AutoPipelineForInpainting

            try:
                self._inpaint = AutoPipelineForInpainting.from_pipe(self.pipe)
            except (ValueError, KeyError):
                self._inpaint = False
            else:
                self._inpaint.set_progress_bar_config(disable=True)
        return self._inpaint or None

    def _image_to_image(self, doing: str):
        """The img2img pipeline, or a refusal that says what it was needed for."""
        if self._inpainting_model():
            raise UnsupportedTask(f"This is an inpainting model: it zooms out and pans, but "
                                  f"cannot {doing}.")
        try:
            return self.img2img_pipeline()
        except UnsupportedTask:
            raise UnsupportedTask(f"This model's pipeline ({type(self.pipe).__name__}) has no "
                                  f"image-to-image variant, so it cannot {doing}.") from None

    def _inpainting_model(self) -> bool:
        """An inpainting UNet (9 input channels: latents, mask, masked image) cannot draw or
        vary with the text-to-image or image-to-image pipelines."""
        unet = getattr(self.pipe, "unet", None)
        return getattr(getattr(unet, "config", None), "in_channels", 4) == 9

    def _size_multiple(self) -> int:
        """What the width and height must be multiples of: the VAE's factor times the
        transformer's patch (Flux packs 2x2), at least 8."""
        factor = int(getattr(self.pipe, "vae_scale_factor", 8) or 8)
        denoiser = getattr(self.pipe, "transformer", None)
        patch = int(getattr(getattr(denoiser, "config", None), "patch_size", 1) or 1)
        if type(self.pipe).__name__.startswith("Flux"):
            patch = 2
        return max(8, factor * patch)

    def _rounded(self, width: int, height: int) -> tuple[int, int]:
        m = self._size_multiple()
        return -(-width // m) * m, -(-height // m) * m

    # -- tasks ----------------------------------------------------------------

    def draw(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        if self._inpainting_model():
            raise UnsupportedTask("This is an inpainting model: it zooms out and pans, but "
                                  "cannot draw from a prompt.")
        return self._run(self.pipe, [request], progress)[0]

    def vary(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        return self._run(self._image_to_image("make variations"), [request], progress)[0]

    def upscale(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        """A "hires fix": the image enlarged to width x height with Lanczos, then refined by
        image to image with this model at the job's (low) strength; the VAE decodes in tiles
        when the image is large (`_tiled_vae`)."""
        # 1. Check inputs: a model that varies images, the size a multiple of its latents'.
        pipe = self._image_to_image("upscale by a hires fix; the operator can configure an "
                                    "upscaler model (upscaler in artbot.toml)")
        target = (request.width, request.height)
        work = self._rounded(*target)
        # 2. Enlarge, then refine.
        enlarged = request.init_image.convert("RGB").resize(work, Image.LANCZOS)
        inner = dataclasses.replace(request, task=Task.VARY, init_image=enlarged,
                                    width=work[0], height=work[1])
        result = self._run(pipe, [inner], progress)[0]
        # 3. Back to the size asked for, where the model's multiple made it larger.
        if work != target:
            result.images = [im.resize(target, Image.LANCZOS) for im in result.images]
        scale = request.options.get("scale")
        result.params.update(upscaler="hires fix", strength=float(request.strength))
        if scale:
            result.params["scale"] = scale
        result.params.setdefault("notes", []).append(
            f"Enlarged with Lanczos, then refined by this model (image to image at strength "
            f"{float(request.strength):.2f}).")
        return result

    def outpaint(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        """Zoom out or pan: `options["pad"]` (left, top, right, bottom) pixels added around
        init_image. The new border starts from the image's edges carried outwards and blurred
        (generators.outpaint), is filled by the inpainting pipeline where the model has one
        (else by image to image on the whole canvas), and the original's pixels are pasted back
        unchanged, the seam feathered inside the new area."""
        # 1. Check inputs: the pad; the canvas grown on the right and bottom to the model's
        #    multiple (cropped off again at the end).
        pad = parse_pad(request.options.get("pad"))
        image = request.init_image.convert("RGB")
        size = canvas_size(image.size, pad)
        work = round_pad(image.size, pad, self._size_multiple())
        canvas = extend_canvas(image, work)
        inner = dataclasses.replace(request, init_image=canvas, width=canvas.width,
                                    height=canvas.height)
        # 2. Fill the new border.
        inpaint = self.inpaint_pipeline()
        if inpaint is not None:
            inner.options = {**request.options, "mask": outpaint_mask(image.size, work)}
            result = self._run(inpaint, [inner], progress)[0]
            how = "filled with the inpainting pipeline"
        else:
            pipe = self._image_to_image("zoom out or pan")
            inner.task = Task.VARY
            if inner.strength >= 1.0:
                inner.strength = OUTPAINT_IMG2IMG_STRENGTH
            result = self._run(pipe, [inner], progress)[0]
            how = f"image to image on the extended canvas (strength {inner.strength:.2f})"
        # 3. The original's pixels back, the seam feathered; the canvas asked for.
        result.images = [paste_back(filled, image, work).crop((0, 0, *size))
                         for filled in result.images]
        result.params.update(pad=list(pad), width=size[0], height=size[1],
                             strength=float(inner.strength))
        result.params.setdefault("notes", []).append(f"The new area was {how}.")
        return result

    def blend(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        """The images, each resized to width x height and encoded by the model's VAE, mixed
        by a normalised mean of their latents (the mean, rescaled a channel at a time to the
        inputs' average spread, so the blend keeps their contrast), decoded, and refined by
        image to image at the job's strength with its prompt: one image a seed."""
        # 1. Check inputs: a model that varies images; the size a multiple of its latents'.
        pipe = self._image_to_image("blend images")
        target = (request.width, request.height)
        work = self._rounded(*target)
        # 2. Encode, mix, decode.
        with torch.inference_mode(), self._tiled_vae(pipe, request), _vae_in_float32(pipe.vae):
            latents = [self._encode(pipe, image, work) for image in request.images]
            mixed = normalised_mean(torch.cat(latents))
            blended = self._decode(pipe, mixed)
        # 3. Refine.
        inner = dataclasses.replace(request, task=Task.VARY, init_image=blended,
                                    width=work[0], height=work[1])
        result = self._run(pipe, [inner], progress)[0]
        if work != target:
            result.images = [im.resize(target, Image.LANCZOS) for im in result.images]
        result.params.update(strength=float(request.strength), blended=len(request.images))
        result.params.setdefault("notes", []).append(
            f"{len(request.images)} images blended in the model's latent space, refined by "
            f"image to image at strength {float(request.strength):.2f}.")
        return result

    @staticmethod
    def _encode(pipe, image: Image.Image, size: tuple[int, int]) -> torch.Tensor:
        """An image, resized to `size`, as its VAE latent's mean: (1, C, h, w)."""
        vae = pipe.vae
        image = image.convert("RGB").resize(size, Image.LANCZOS)
        x = pipe.image_processor.preprocess(image, height=size[1], width=size[0])
        encoded = vae.encode(x.to(vae.device, vae.dtype))
        dist = getattr(encoded, "latent_dist", None)
        return (dist.mean if dist is not None else encoded.latents).float()

    @staticmethod
    def _decode(pipe, latents: torch.Tensor) -> Image.Image:
        vae = pipe.vae
        x = vae.decode(latents.to(vae.device, vae.dtype)).sample
        return pipe.image_processor.postprocess(x.float(), output_type="pil")[0]

    def generate_many(self, requests: list[GenerationRequest],
                      progress: ProgressCallback = no_progress) -> list[GenerationResult]:
        """Several jobs' requests in as few pipeline calls as their prompts allow: one
        call for all of them when their encoded prompts have one shape (prompts longer
        than 77 tokens take more chunks; a call holds one length), each image with its
        own seeded generator and, with `exact`, its own arithmetic (module docstring)."""
        for request in requests:
            check_request(request)
        task = requests[0].task
        if task not in (Task.DRAW, Task.VARY) or len(requests) == 1 or self._inpainting_model():
            return super().generate_many(requests, progress)
        pipe = self.pipe if task is Task.DRAW else self.img2img_pipeline()
        return self._run(pipe, requests, progress)

    @staticmethod
    def _task_inputs(request: GenerationRequest) -> dict:
        """The call's task arguments for one request's images. SD and SDXL take the size
        from an input image; SD3 and Flux draw at their own default size unless told."""
        task: dict = {"width": request.width, "height": request.height}
        if request.task in (Task.VARY, Task.OUTPAINT):
            init = request.init_image.convert("RGB")
            if init.size != (request.width, request.height):
                init = init.resize((request.width, request.height), Image.LANCZOS)
            task.update(image=[init] * request.count, strength=request.strength)
        if request.task is Task.OUTPAINT:  # the inpainting pipeline's (DiffusionGenerator.outpaint)
            task["mask_image"] = [request.options["mask"]] * request.count
        return task

    def _run(self, pipe, requests: list[GenerationRequest], progress: ProgressCallback,
             ) -> list[GenerationResult]:
        """Pipeline calls for requests that share a batch key: the sampler, LoRAs and
        safety setting of the batch for these calls only, each prompt encoded on its own
        (weights, long prompts) where the model allows it, then as few calls as the
        prompts' shapes allow (`_calls`). One result a request, in order."""
        first = requests[0]
        accepts = _call_parameters(pipe)
        notes: list[list[str]] = [[] for _ in requests]
        results: list[GenerationResult | None] = [None] * len(requests)
        images = sum(r.count for r in requests)
        with torch.inference_mode(), self._safety(pipe, first), self._tiled_vae(pipe, first), \
                self._sampler(pipe, first), applied_loras(pipe, first.loras), \
                per_image(images, self.exact), self._vae_per_image(pipe):
            texts = [self._text_inputs(pipe, r, accepts, notes[i]) for i, r in enumerate(requests)]
            for group in self._calls(texts):
                calls = [requests[i] for i in group]
                kwargs: dict = {}
                for name, value in self._joined([self._task_inputs(r) for r in calls]).items():
                    if name in accepts:
                        kwargs[name] = value
                kwargs.update(self._joined([texts[i] for i in group]))
                part = progress if len(requests) == 1 else \
                    (lambda step, total, preview=None, _group=group:
                     progress(step, total, preview, requests=list(_group)))
                if "callback_on_step_end" in accepts:
                    kwargs["callback_on_step_end"] = self._step_callback(
                        part, (first.height, first.width))
                else:  # PixArt still has the older per-step callback
                    total = first.steps
                    kwargs["callback"] = lambda step, timestep, latents, _part=part: \
                        _part(step + 1, total)
                    kwargs["callback_steps"] = 1
                seeds = [seed for r in calls for seed in r.seeds]
                with per_image(len(seeds), self.exact):
                    output = pipe(
                        num_inference_steps=first.steps,
                        guidance_scale=first.guidance,
                        generator=self._seeded_generators(seeds),
                        output_type="pil",
                        **kwargs,
                    )
                at = 0
                nsfw = getattr(output, "nsfw_content_detected", None)
                for i, request in zip(group, calls):
                    params: dict = {"scheduler": type(pipe.scheduler).__name__}
                    if nsfw is not None:
                        params["nsfw"] = [bool(x) for x in nsfw[at:at + request.count]]
                    if notes[i]:
                        params["notes"] = notes[i]
                    results[i] = GenerationResult(
                        images=list(output.images[at:at + request.count]),
                        seeds=list(request.seeds), params=params)
                    at += request.count
        return results

    def _calls(self, texts: list[dict]) -> list[list[int]]:
        """Which requests share a pipeline call: those whose encoded prompts have one
        shape. Prompts the pipeline encodes itself (SD3, Flux, PixArt: their T5 is not
        encoded a prompt at a time here) share a call only when `exact` is off."""
        groups: dict = {}
        for i, text in enumerate(texts):
            if "prompt" in text:
                key = ("text",) if not self.exact else ("alone", i)
            else:
                key = tuple((name, tuple(value.shape[1:])) for name, value in sorted(text.items()))
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    @staticmethod
    def _joined(parts: list[dict]) -> dict:
        """Per-request pipeline arguments made into one call's: tensors and lists joined
        image after image; anything else (a size, a strength) is the same for all."""
        joined: dict = {}
        for name, value in parts[0].items():
            if torch.is_tensor(value):
                joined[name] = torch.cat([p[name] for p in parts])
            elif isinstance(value, list):
                joined[name] = [x for p in parts for x in p[name]]
            else:
                joined[name] = value
        return joined

    @contextlib.contextmanager
    def _vae_per_image(self, pipe):
        """With `exact`, the VAE decodes one image at a time (diffusers' VAE slicing),
        as it does for a lone image: its attention's arithmetic depends on the batch."""
        vae = getattr(pipe, "vae", None)
        if not self.exact or vae is None or not hasattr(vae, "use_slicing") or vae.use_slicing:
            yield
            return
        vae.use_slicing = True
        try:
            yield
        finally:
            vae.use_slicing = False

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


def normalised_mean(latents: torch.Tensor) -> torch.Tensor:
    """(N, C, h, w) -> (1, C, h, w): the mean of N latents, each channel shifted and scaled
    to the inputs' average mean and spread (a plain mean of unlike images is flatter, and
    decodes grey and soft)."""
    mean = latents.mean(dim=0, keepdim=True)
    spread = latents.std(dim=(2, 3), keepdim=True).mean(dim=0, keepdim=True)  # (1, C, 1, 1)
    centre = latents.mean(dim=(2, 3), keepdim=True).mean(dim=0, keepdim=True)
    own = mean.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
    return (mean - mean.mean(dim=(2, 3), keepdim=True)) / own * spread + centre


@contextlib.contextmanager
def _vae_in_float32(vae):
    """A VAE that overflows in half precision (SDXL's: `force_upcast`) in float32 for the block."""
    dtype = getattr(vae, "dtype", torch.float32)
    if dtype != torch.float16 or not getattr(vae.config, "force_upcast", False):
        yield
        return
    vae.to(torch.float32)
    try:
        yield
    finally:
        vae.to(dtype)


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
