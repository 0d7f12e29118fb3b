"""Drawing and varying emoji with a trained VAE (family "vae").

    gen = VAEGenerator.load("emoji-vae", torch.device("cpu"), torch.float32)
    result = gen.generate(GenerationRequest(task=Task.DRAW, seeds=[1, 2], prompt="red heart",
                                            width=64, height=64))

draw: the prompt picks a sublabel (`PromptIndex`); each image's latent is
    z = mean[label] + std[label] * temperature * eps,  eps ~ N(0, I) from a
    generator seeded by the image's seed; the decoder turns z into the image.
vary: any image (an upload too) is encoded to mu; each variation decodes
    z = mu + strength * eps: strength 0 gives the reconstruction, 1 a jump of
    about one prior standard deviation in every direction.
interpolate: decodes evenly spaced points on the line between two images' mu.

Reproducible: an image depends only on the model, its seed and the parameters
(each image is decoded on its own, so not on the rest of its batch).
"""

from __future__ import annotations


import torch
from PIL import Image

from artbot.errors import InvalidRequest
from generators.base import GenerationRequest, GenerationResult, Generator, ProgressCallback
from generators.captions import PromptIndex
from generators.datasets import to_image, to_tensor
from generators.training import load_model_folder, model_fingerprint
from generators.vae.model import VAE, VAEConfig

DEFAULT_TEMPERATURE = 0.8
# blend: how far (in prior standard deviations, at strength 1) each seed's image moves off the
# mean of the blended images' latents.
BLEND_NOISE = 0.3




class VAEGenerator(Generator):
    family = "vae"

    def __init__(self, vae: VAE, latent_mean: torch.Tensor, latent_std: torch.Tensor,
                 index: PromptIndex, label_names: list[str], model_revision: str | None = None):
        super().__init__(model_revision)
        self.vae = vae.eval()
        self.latent_mean = latent_mean  # (n_labels, D)
        self.latent_std = latent_std  # (n_labels, D)
        self.index = index
        self.label_names = label_names
        self.param = next(vae.parameters())  # where and in what dtype the model runs

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype) -> "VAEGenerator":
        folder, config, weights = load_model_folder(ref, "vae")
        vae = VAE(VAEConfig.from_dict(config["model"]["vae"]))
        vae.load_state_dict({k[len("vae."):]: v for k, v in weights.items() if k.startswith("vae.")})
        vae.to(device=device, dtype=dtype)
        return cls(vae, weights["latent_mean"], weights["latent_std"],
                   PromptIndex.from_dict(config["model"]["prompt_index"]),
                   list(config.get("sublabels") or []), model_fingerprint(folder))

    @property
    def image_size(self) -> int:
        return self.vae.config.image_size

    # -- helpers --------------------------------------------------------------

    def _noise(self, seed: int) -> torch.Tensor:
        """eps ~ N(0, I) of shape (D,), from a CPU generator seeded by `seed`."""
        g = torch.Generator().manual_seed(int(seed))
        return torch.randn(self.vae.config.latent_dim, generator=g)

    @torch.inference_mode()
    def _decode(self, z: torch.Tensor, width: int, height: int) -> Image.Image:
        """One latent (D,) -> one PIL image of width x height."""
        x = self.vae.decode(z.to(self.param)[None])[0]  # (3, S, S)
        image = to_image(x.float().cpu())
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        return image

    @torch.inference_mode()
    def encode(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """An image (any size; transparency on white) -> mu, logvar of its latent, each (D,)."""
        x = to_tensor(image, self.image_size)[None].to(self.param)  # (1, 3, S, S)
        mu, logvar = self.vae.encode(x)
        return mu[0].float().cpu(), logvar[0].float().cpu()

    def _label_name(self, label: int) -> str:
        return self.label_names[label] if label < len(self.label_names) else str(label)

    # -- tasks ----------------------------------------------------------------

    def draw(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        temperature = float(request.options.get("temperature", DEFAULT_TEMPERATURE))
        if not 0.0 <= temperature <= 3.0:
            raise InvalidRequest("The VAE's temperature must be between 0 and 3.")
        images, labels = [], []
        for seed in request.seeds:
            # 1. The prompt picks the label (a seeded choice if no word is known).
            label = self.index.label_for(request.prompt, seed)
            # 2. A latent near that label's images, seeded by the image's seed.
            z = self.latent_mean[label] + self.latent_std[label] * temperature * self._noise(seed)
            # 3. Decode.
            images.append(self._decode(z, request.width, request.height))
            labels.append(self._label_name(label))
        progress(1, 1)
        label_param = labels[0] if len(set(labels)) == 1 else labels
        return GenerationResult(images=images, seeds=list(request.seeds),
                                params={"label": label_param, "temperature": temperature})

    def vary(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        strength = float(request.strength)
        if not 0.0 <= strength <= 1.0:
            raise InvalidRequest("The strength of a variation must be between 0 and 1.")
        # 1. Encode the image to vary.
        mu, _ = self.encode(request.init_image)
        # 2. Move away from it by seeded noise, as far as the strength says; decode.
        images = [self._decode(mu + strength * self._noise(seed), request.width, request.height)
                  for seed in request.seeds]
        progress(1, 1)
        return GenerationResult(images=images, seeds=list(request.seeds),
                                params={"strength": strength})

    def blend(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        """The mean of the images' latent means, decoded at the request's size; each image
        moved off it by its own seeded noise, `BLEND_NOISE` x strength prior standard
        deviations (so seeds differ a little; strength 0 gives the plain mean)."""
        strength = float(request.strength)
        if not 0.0 <= strength <= 1.0:
            raise InvalidRequest("The strength of a blend must be between 0 and 1.")
        # 1. Encode each image; 2. the mean of their latents.
        mean = torch.stack([self.encode(image)[0] for image in request.images]).mean(dim=0)
        # 3. Each seed's image near it; decode.
        noise = BLEND_NOISE * strength
        images = [self._decode(mean + noise * self._noise(seed), request.width, request.height)
                  for seed in request.seeds]
        progress(1, 1)
        return GenerationResult(images=images, seeds=list(request.seeds),
                                params={"strength": strength, "blend_noise": noise,
                                        "blended": len(request.images)})

    def interpolate(self, image_a: Image.Image, image_b: Image.Image, steps: int = 8,
                    width: int | None = None, height: int | None = None) -> list[Image.Image]:
        """`steps` images from a to b along the line between their latents (both ends included)."""
        if steps < 2:
            raise InvalidRequest("An interpolation needs at least 2 steps.")
        width, height = width or self.image_size, height or self.image_size
        mu_a, _ = self.encode(image_a)
        mu_b, _ = self.encode(image_b)
        return [self._decode(torch.lerp(mu_a, mu_b, i / (steps - 1)), width, height)
                for i in range(steps)]
