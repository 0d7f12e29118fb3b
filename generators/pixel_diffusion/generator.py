"""Text to image and image to image with the small pixel diffusion model.

The model draws squares of `image_size` pixels (32 for the bundled
"emoji-diffusion"); they are scaled up with LANCZOS to the size asked for
(64x64 suits it; other aspect ratios are cropped from the middle of the
square scaled to cover).

- draw: DDIM (Song et al. 2021, eta 0 unless options["eta"]) from pure noise
  in `request.steps` steps (at most the schedule's 1000), with classifier-free
  guidance at scale `request.guidance` (1 turns it off); the negative prompt,
  if any, replaces the empty caption as the unconditional branch. Each step's
  x0 estimate is clipped to [-1, 1], which keeps high scales usable, but this
  model is at its best around 3 to 4, well below the 7.5 that suits Stable
  Diffusion; options["guidance"] overrides the request's scale.
- vary: SDEdit (Meng et al. 2022): the image, scaled to the model's size, is
  noised to timestep ≈ strength·T and denoised from there with the prompt
  (or the empty caption), in about strength·steps DDIM steps.

Reproducibility: every image has its own seed; a CPU `torch.Generator` seeded
with it makes the image's starting noise (and any eta noise after it), so the
same seed and parameters give the same image. All images of a request go
through the model as one batch (twice as many rows with guidance).
"""

from __future__ import annotations


import torch
from PIL import Image

from generators.base import GenerationRequest, GenerationResult, Generator, ProgressCallback
from generators.captions import ARTICLES
from generators.datasets import to_image, to_tensor
from generators.pixel_diffusion.model import PixelDiffusion, PixelDiffusionConfig
from generators.pixel_diffusion.sampling import NoiseSchedule, ddim_sample, encode_captions
from generators.training import load_model_folder, model_fingerprint

FAMILY = "pixel-diffusion"




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


class PixelDiffusionGenerator(Generator):
    family = FAMILY

    def __init__(self, model: PixelDiffusion, device: torch.device, model_revision: str | None = None):
        super().__init__(model_revision)
        self.model = model.eval()
        self.device = device
        self.dtype = next(model.parameters()).dtype
        self.schedule = NoiseSchedule.from_config(model.config)

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype) -> "PixelDiffusionGenerator":
        folder, config, weights = load_model_folder(ref, FAMILY)
        model = PixelDiffusion(PixelDiffusionConfig.from_dict(config["model"]["diffusion"]))
        model.load_state_dict(weights)
        if device.type == "cpu":
            dtype = torch.float32  # half precision is slow and inexact on a CPU; the model is small
        return cls(model.to(device=device, dtype=dtype), device, model_fingerprint(folder))

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

    def _captions(self, request: GenerationRequest, guidance: float):
        """Encoded captions: the prompt per image, then (with guidance) the negative or empty caption."""
        captions = [without_articles(request.prompt)] * request.count
        if guidance != 1.0:
            captions += [without_articles(request.negative_prompt)] * request.count
        return encode_captions(self.model, captions, self.device)

    def _denoise(self, x, timesteps, request, guidance, generators, progress) -> torch.Tensor:
        return ddim_sample(
            self.model, self.schedule, x, timesteps, self._captions(request, guidance), guidance,
            progress=progress, eta=float(request.options.get("eta", 0.0)), generators=generators)

    def _result(self, x: torch.Tensor, request: GenerationRequest, **params) -> GenerationResult:
        images = [fit(to_image(img), request.width, request.height) for img in x.float().cpu()]
        params = {"scheduler": "DDIM", "model_size": self.image_size, "width": request.width,
                  "height": request.height, **params}
        return GenerationResult(images=images, seeds=list(request.seeds), params=params)

    # -- tasks ----------------------------------------------------------------

    @torch.inference_mode()
    def draw(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        # 1. Check inputs: steps within the schedule, the guidance scale.
        steps = max(1, min(int(request.steps), self.schedule.timesteps))
        guidance = self._guidance(request)
        # 2. Starting noise, one generator per image.
        generators = self._seeded_generators(request.seeds)
        x = self._noise(generators)  # (B, 3, S, S)
        # 3. Timesteps, from pure noise down.
        timesteps = self.schedule.ddim_timesteps(steps)
        # 4. Denoise (encodes the captions, reports every step).
        x = self._denoise(x, timesteps, request, guidance, generators, progress)
        # 5. To images of the requested size.
        return self._result(x, request, steps=steps, guidance=guidance)

    @torch.inference_mode()
    def vary(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        # 1. Check inputs: the strength sets how many of the steps are redone.
        steps = max(1, min(int(request.steps), self.schedule.timesteps))
        strength = min(max(float(request.strength), 0.0), 1.0)
        guidance = self._guidance(request)
        timesteps = self.schedule.ddim_timesteps(steps)
        n_run = min(steps, int(steps * strength)) or (1 if strength > 0 else 0)
        timesteps = timesteps[steps - n_run:]
        # 2. The image at the model's size, in [-1, 1].
        init = to_tensor(square_crop(request.init_image), self.image_size)  # (3, S, S)
        x0 = init.unsqueeze(0).repeat(request.count, 1, 1, 1).to(self.device)  # (B, 3, S, S)
        if not timesteps:
            return self._result(x0, request, steps=0, guidance=guidance, strength=strength)
        # 3. Noise it to the first timestep, with each image's own generator.
        generators = self._seeded_generators(request.seeds)
        t = torch.full((request.count,), timesteps[0], dtype=torch.long, device=self.device)
        x = self.schedule.add_noise(x0, self._noise(generators), t)
        # 4. Denoise from there.
        x = self._denoise(x, timesteps, request, guidance, generators, progress)
        # 5. To images of the requested size.
        return self._result(x, request, steps=len(timesteps), guidance=guidance, strength=strength)
