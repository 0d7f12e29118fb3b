"""Text to image and image to image with the small pixel diffusion model.

The model draws squares of `image_size` pixels (32 for the bundled
"emoji-diffusion"); they are scaled up with LANCZOS to the size asked for
(64x64 suits it; other aspect ratios are cropped from the middle of the
square scaled to cover).

- draw: from pure noise in `request.steps` steps (at most the schedule's
  1000), with classifier-free guidance at scale `request.guidance` (1 turns it
  off); the negative prompt, if any, replaces the empty caption as the
  unconditional branch. Each step's x0 estimate is clipped to [-1, 1], which
  keeps high scales usable, but this model is at its best around 3 to 4, well
  below the 7.5 that suits Stable Diffusion; options["guidance"] overrides the
  request's scale.
- vary: SDEdit (Meng et al. 2022): the image, scaled to the model's size, is
  noised to timestep ≈ strength·T and denoised from there with the prompt
  (or the empty caption), in about strength·steps steps.

The sampler is options["sampler"], else the one the model's config.json names
(`"sampling": {"sampler": ...}`), else DDIM:

- "ddim": DDIM (Song et al. 2021), steps evenly spaced in t; eta 0 unless
  options["eta"] (which alone also picks DDIM);
- "dpmpp_2m": DPM-Solver++(2M) (Lu et al. 2022), steps evenly spaced in
  log-SNR. The bundled emoji-diffusion names it, with 15 steps in its
  "defaults": closer to a 250-step DDIM result than DDIM in 30 steps (12
  steps are about as close; its model card has the figures).

The job's parameters record the sampler ("scheduler") and the steps it ran.

Speed: on a CPU the model runs (and loads) on one torch thread. Its layers (at
most 96 channels at 32x32) are too small to split well, and on a busy machine
(the bot, a second worker, a training run on the other core) torch's threads
spin waiting for each other: on a loaded 2-core machine one 15-step image took
0.20 s (median) on one thread and 0.90 s on two (docs/benchmarks.md); with the
other core idle two threads were about 1.3 times faster. One thread also makes
the bytes independent of the machine's core count.

Reproducibility: every image has its own seed; a CPU `torch.Generator` seeded
with it makes the image's starting noise (and any eta noise after it), so the
same seed and parameters give the same image. All images of a request go
through the model as one batch (twice as many rows with guidance).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager

import torch
from PIL import Image

from artbot.errors import InvalidRequest
from generators.base import (GenerationRequest, GenerationResult, Generator, ProgressCallback, Task,
                             check_request, no_progress)
from generators.invariance import per_image
from generators.captions import ARTICLES
from generators.datasets import to_image, to_tensor
from generators.pixel_diffusion.model import PixelDiffusion, PixelDiffusionConfig
from generators.pixel_diffusion.sampling import NoiseSchedule, ddim_sample, dpmpp_2m_sample, encode_captions
from generators.training import load_model_folder, model_fingerprint

FAMILY = "pixel-diffusion"
# The samplers by the names options["sampler"] and config.json use, and the name each job's
# parameters record ("scheduler").
SAMPLERS = {"ddim": "DDIM", "dpmpp_2m": "DPM++ 2M"}
DEFAULT_SAMPLER = "ddim"  # for a model whose config.json names none




def without_articles(prompt: str) -> str:
    """The prompt without "a", "an" and "the" (a trailing "a" stays: "letter a").

    Emoji captions have no articles, so the model knows "a" only from the few
    captions that hold it, the red "A" button among them: "a red heart" would
    draw a heart on the A button's base. People write articles; the model
    should not see them.
    """
    words = prompt.split()
    kept = [w for i, w in enumerate(words)
            if w.lower() not in ARTICLES or (w.lower() == "a" and i == len(words) - 1)]
    return " ".join(kept) if kept else prompt


def square_crop(image: Image.Image) -> Image.Image:
    """The largest centred square of an image."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return image.crop((left, top, left + side, top + side))


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale a square image to cover width x height (LANCZOS), then crop the middle."""
    side = max(width, height)
    if image.size != (side, side):
        image = image.resize((side, side), Image.LANCZOS)
    left, top = (side - width) // 2, (side - height) // 2
    return image.crop((left, top, left + width, top + height))


@contextmanager
def one_cpu_thread(device: torch.device):
    """Run the block on one torch thread when `device` is a CPU (see the module docstring)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class PixelDiffusionGenerator(Generator):
    family = FAMILY

    def __init__(self, model: PixelDiffusion, device: torch.device, model_revision: str | None = None,
                 sampler: str = DEFAULT_SAMPLER):
        super().__init__(model_revision)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown pixel diffusion sampler {sampler!r} (known: {', '.join(SAMPLERS)})")
        self.model = model.eval()
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.schedule = NoiseSchedule.from_config(model.config)
        self.sampler = sampler  # the model's own; a request's options["sampler"] overrides it

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype) -> "PixelDiffusionGenerator":
        with one_cpu_thread(device):  # small copies: 0.04 s on one thread, 0.5 s on two when busy
            folder, config, weights = load_model_folder(ref, FAMILY)
            model = PixelDiffusion(PixelDiffusionConfig.from_dict(config["model"]["diffusion"]))
            model.load_state_dict(weights)
            if device.type == "cpu":
                dtype = torch.float32  # half precision is slow and inexact on a CPU; the model is small
            model = model.to(device=device, dtype=dtype)
        sampler = (config.get("sampling") or {}).get("sampler", DEFAULT_SAMPLER)
        return cls(model, device, model_fingerprint(folder), sampler)

    # -- helpers --------------------------------------------------------------

    @property
    def image_size(self) -> int:
        return self.model.config.image_size

    @staticmethod
    def _seeded_generators(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator(device="cpu").manual_seed(int(s)) for s in seeds]

    def _noise(self, generators: list[torch.Generator]) -> torch.Tensor:
        """Each image's own N(0, I) noise from its own generator: (B, 3, S, S) float32."""
        S = self.image_size
        return torch.stack([torch.randn(3, S, S, generator=g) for g in generators]).to(self.device)

    @staticmethod
    def _guidance(request: GenerationRequest) -> float:
        return float(request.options.get("guidance", request.guidance))

    def _sampler(self, request: GenerationRequest) -> str:
        """options["sampler"], else DDIM where options["eta"] asks for its noise, else the model's."""
        eta = float(request.options.get("eta", 0.0))
        sampler = request.options.get("sampler") or ("ddim" if eta else self.sampler)
        if sampler not in SAMPLERS:
            raise InvalidRequest(f"Unknown sampler {sampler!r} for this model; it takes "
                                 f"{' or '.join(SAMPLERS)}.")
        if eta and sampler != "ddim":
            raise InvalidRequest("eta (fresh noise at each step) applies to the ddim sampler only.")
        return sampler

    def _timesteps(self, sampler: str, steps: int) -> list[int]:
        """The sampler's `steps` timesteps from pure noise down: evenly spaced in t for DDIM,
        in log-SNR for DPM-Solver++."""
        if sampler == "ddim":
            return self.schedule.ddim_timesteps(steps)
        return self.schedule.logsnr_timesteps(steps)

    def _captions(self, request: GenerationRequest, guidance: float):
        """Encoded captions: the prompt per image, then (with guidance) the negative or
        empty caption; encoded a request at a time, image by image (generators.invariance),
        so that a request encodes alike alone and in a batch."""
        captions = [without_articles(request.prompt)] * request.count
        if guidance != 1.0:
            captions += [without_articles(request.negative_prompt)] * request.count
        with per_image(request.count, self.exact):
            return encode_captions(self.model, captions, self.device)

    def _caption_length(self, request: GenerationRequest, guidance: float) -> int:
        """Tokens the request's captions are padded to (a call holds one length)."""
        texts = [request.prompt] + ([request.negative_prompt] if guidance != 1.0 else [])
        return max(len(self.model.tokenizer.encode(without_articles(t))) for t in texts)

    def _joined_captions(self, requests: list[GenerationRequest], guidance: float):
        """Several requests' captions as one call's: every image's prompt, then (with
        guidance) every image's unconditional caption, in the order of the images."""
        parts = [self._captions(r, guidance) for r in requests]
        if len(parts) == 1:
            return parts[0]
        halves = [[], []]
        for r, part in zip(requests, parts):
            halves[0].append([t[:r.count] for t in part])
            halves[1].append([t[r.count:] for t in part])
        rows = halves[0] + (halves[1] if guidance != 1.0 else [])
        return tuple(torch.cat([row[k] for row in rows]) for k in range(3))

    def _denoise(self, x, sampler, timesteps, requests, guidance, generators, progress) -> torch.Tensor:
        captions = self._joined_captions(requests, guidance)
        with per_image(x.shape[0], self.exact):
            if sampler == "ddim":
                return ddim_sample(
                    self.model, self.schedule, x, timesteps, captions, guidance,
                    progress=progress, eta=float(requests[0].options.get("eta", 0.0)),
                    generators=generators)
            return dpmpp_2m_sample(self.model, self.schedule, x, timesteps, captions, guidance,
                                   progress=progress)

    def _result(self, x: torch.Tensor, request: GenerationRequest, sampler: str, **params) -> GenerationResult:
        images = [fit(to_image(img), request.width, request.height) for img in x.float().cpu()]
        params = {"scheduler": SAMPLERS[sampler], "model_size": self.image_size, "width": request.width,
                  "height": request.height, **params}
        return GenerationResult(images=images, seeds=list(request.seeds), params=params)

    # -- tasks ----------------------------------------------------------------

    def generate(self, request: GenerationRequest, progress: ProgressCallback = no_progress
                 ) -> GenerationResult:
        with one_cpu_thread(self.device):  # the whole call: a stray op on two threads costs ms
            return super().generate(request, progress)

    def generate_many(self, requests: list[GenerationRequest],
                      progress: ProgressCallback = no_progress) -> list[GenerationResult]:
        """Several members' draws (one batch key: steps, guidance, size, sampler) in as few
        calls as their captions' lengths allow, each image with its own seed and, with
        `exact`, its own arithmetic, so it is the image its job makes alone."""
        if len(requests) == 1 or any(r.task is not Task.DRAW for r in requests):
            return super().generate_many(requests, progress)
        for request in requests:
            check_request(request)
        guidance = self._guidance(requests[0])
        groups: dict[int, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(self._caption_length(request, guidance), []).append(i)
        results: list[GenerationResult] = [None] * len(requests)  # type: ignore[list-item]
        with one_cpu_thread(self.device), torch.inference_mode():
            for group in groups.values():
                def part(step, total, preview=None, _group=group):
                    progress(step, total, preview, requests=list(_group))

                made = self._draw([requests[i] for i in group], part)
                for i, result in zip(group, made):
                    results[i] = result
        return results

    @torch.inference_mode()
    def draw(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        return self._draw([request], progress)[0]

    def _draw(self, requests: list[GenerationRequest], progress) -> list[GenerationResult]:
        """Draw the requests' images in one call; one result a request."""
        # 1. Check inputs: steps within the schedule, the guidance scale, the sampler.
        first = requests[0]
        steps = max(1, min(int(first.steps), self.schedule.timesteps))
        guidance = self._guidance(first)
        sampler = self._sampler(first)
        # 2. Starting noise, one generator per image.
        generators = self._seeded_generators([s for r in requests for s in r.seeds])
        x = self._noise(generators)  # (B, 3, S, S)
        # 3. Timesteps, from pure noise down.
        timesteps = self._timesteps(sampler, steps)
        # 4. Denoise (encodes the captions, reports every step).
        x = self._denoise(x, sampler, timesteps, requests, guidance, generators, progress)
        # 5. To images of the requested size, a result a request.
        results, at = [], 0
        for request in requests:
            results.append(self._result(x[at:at + request.count], request, sampler,
                                        steps=len(timesteps), guidance=guidance))
            at += request.count
        return results

    @torch.inference_mode()
    def blend(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        """The pixel mean of the images (each the middle square at the model's size, as vary
        sees it), then varied at the request's strength with its prompt (SDEdit)."""
        mean = torch.stack([to_tensor(square_crop(image), self.image_size)
                            for image in request.images]).mean(dim=0)  # (3, S, S)
        inner = dataclasses.replace(request, task=Task.VARY, init_image=to_image(mean))
        result = self.vary(inner, progress)
        result.params["blended"] = len(request.images)
        return result

    @torch.inference_mode()
    def vary(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        # 1. Check inputs: the strength sets how many of the steps are redone (the last n_run
        #    of DDIM's `steps`, from timestep ≈ strength·T); DPM-Solver++ spaces as many
        #    from the same start in log-SNR.
        steps = max(1, min(int(request.steps), self.schedule.timesteps))
        strength = min(max(float(request.strength), 0.0), 1.0)
        guidance = self._guidance(request)
        sampler = self._sampler(request)
        n_run = min(steps, int(steps * strength)) or (1 if strength > 0 else 0)
        timesteps = self.schedule.ddim_timesteps(steps)[steps - n_run:]
        if timesteps and sampler == "dpmpp_2m":
            timesteps = self.schedule.logsnr_timesteps(n_run, start=timesteps[0])
        # 2. The image at the model's size, in [-1, 1].
        init = to_tensor(square_crop(request.init_image), self.image_size)  # (3, S, S)
        x0 = init.unsqueeze(0).repeat(request.count, 1, 1, 1).to(self.device)  # (B, 3, S, S)
        if not timesteps:
            return self._result(x0, request, sampler, steps=0, guidance=guidance, strength=strength)
        # 3. Noise it to the first timestep, with each image's own generator.
        generators = self._seeded_generators(request.seeds)
        t = torch.full((request.count,), timesteps[0], dtype=torch.long, device=self.device)
        x = self.schedule.add_noise(x0, self._noise(generators), t)
        # 4. Denoise from there.
        x = self._denoise(x, sampler, timesteps, [request], guidance, generators, progress)
        # 5. To images of the requested size.
        return self._result(x, request, sampler, steps=len(timesteps), guidance=guidance,
                            strength=strength)
