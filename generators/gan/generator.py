"""Drawing emoji with a trained GAN (family "gan"), and varying its own images.

    gen = GANGenerator.load("emoji-gan", torch.device("cpu"), torch.float32)
    result = gen.generate(GenerationRequest(task=Task.DRAW, seeds=[1, 2], prompt="red heart",
                                            width=64, height=64))

draw: the prompt picks a sublabel (`PromptIndex`) and, for a model conditioned
    on colour, a colour (a colour word, else the named emoji's or the
    label's, seeded); each image's z comes from a
    generator seeded by the image's seed, truncated (option "truncation",
    default 0.7: components beyond it are redrawn); the EMA generator draws it.
vary: a GAN cannot encode an arbitrary image, so it varies its own: the
    request carries the seed of the image being varied (options["source_seed"])
    and its prompt, which give back that image's z; the variation's z is
        cos(a) * z_src + sin(a) * z_new,   a = strength * pi / 2,
    with z_new seeded by the variation's own seed: strength 0 is the image
    itself, 0.35 a close cousin, 0.7 a distant one, 1 an unrelated image of
    the same label.

Reproducible: an image depends only on the model, its seed and the parameters
(each image is generated on its own, so not on the rest of its batch).
"""

from __future__ import annotations

import math

import torch
from PIL import Image

from artbot.errors import InvalidRequest
from generators.base import (
    GenerationRequest,
    GenerationResult,
    Generator,
    ProgressCallback,
    UnsupportedTask,
)
from generators.captions import COLOURS, PromptIndex
from generators.datasets import to_image
from generators.gan.model import GANConfig, truncate
from generators.gan.model import Generator as GANNetwork
from generators.training import load_model_folder, model_fingerprint

DEFAULT_TRUNCATION = 0.7




class GANGenerator(Generator):
    family = "gan"

    def __init__(self, net: GANNetwork, index: PromptIndex, label_names: list[str],
                 model_revision: str | None = None):
        super().__init__(model_revision)
        self.net = net.eval()
        self.index = index
        self.label_names = label_names
        self.param = next(net.parameters())  # where and in what dtype the model runs

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype) -> "GANGenerator":
        folder, config, weights = load_model_folder(ref, "gan")
        net = GANNetwork(GANConfig.from_dict(config["model"]["gan"]))
        net.load_state_dict(weights)
        net.to(device=device, dtype=dtype)
        return cls(net, PromptIndex.from_dict(config["model"]["prompt_index"]),
                   list(config.get("sublabels") or []), model_fingerprint(folder))

    @property
    def config(self) -> GANConfig:
        return self.net.config

    # -- helpers --------------------------------------------------------------

    @staticmethod
    def _truncation(request: GenerationRequest) -> float:
        t = float(request.options.get("truncation", DEFAULT_TRUNCATION))
        if not 0.0 < t <= 4.0:
            raise InvalidRequest("The GAN's truncation must be above 0 and at most 4 (4: none).")
        return t

    def latent(self, seed: int, truncation: float) -> torch.Tensor:
        """The z (Z,) of the image with this seed: seeded noise, truncated with the same generator."""
        g = torch.Generator().manual_seed(int(seed))
        return truncate(torch.randn(self.config.z_dim, generator=g), truncation, g)

    @torch.inference_mode()
    def _condition(self, prompt: str, seed: int) -> tuple[int, int | None]:
        """The (label, colour) the image with this seed is drawn with; colour None
        for a model without colours."""
        label = self.index.label_for(prompt, seed)
        if not self.config.n_colours:
            return label, None
        return label, self.index.colour_for(prompt, label, seed)

    def _render(self, z: torch.Tensor, condition: tuple[int, int | None], width: int,
                height: int) -> Image.Image:
        """One z (Z,) and (label, colour) -> one PIL image of width x height."""
        label, colour = condition
        y = torch.tensor([label], device=self.param.device)
        c = None if colour is None else torch.tensor([colour], device=self.param.device)
        x = self.net(z.to(self.param)[None], y, c)[0]  # (3, S, S)
        image = to_image(x.float().cpu())
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        return image

    def _label_name(self, label: int) -> str:
        return self.label_names[label] if label < len(self.label_names) else str(label)

    def _result(self, images, request, conditions, **params) -> GenerationResult:
        def one_or_all(values):
            return values[0] if len(set(values)) == 1 else values

        params["label"] = one_or_all([self._label_name(label) for label, _ in conditions])
        if self.config.n_colours:
            params["colour"] = one_or_all([COLOURS[colour] for _, colour in conditions])
        return GenerationResult(images=images, seeds=list(request.seeds), params=params)

    # -- tasks ----------------------------------------------------------------

    def draw(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        truncation = self._truncation(request)
        images, conditions = [], []
        for seed in request.seeds:
            # 1. The prompt picks the label and colour (seeded choices where it does not say).
            condition = self._condition(request.prompt, seed)
            # 2. z from the seed, truncated; 3. generate.
            images.append(self._render(self.latent(seed, truncation), condition,
                                       request.width, request.height))
            conditions.append(condition)
        progress(1, 1)
        return self._result(images, request, conditions, truncation=truncation)

    def vary(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        source_seed = request.options.get("source_seed")
        if source_seed is None:
            raise UnsupportedTask(
                "The GAN can only vary images it drew itself (it cannot read an uploaded image). "
                "To vary an upload, use the emoji-vae model."
            )
        strength = float(request.strength)
        if not 0.0 <= strength <= 1.0:
            raise InvalidRequest("The strength of a variation must be between 0 and 1.")
        truncation = self._truncation(request)
        # 1. The source image's label, colour and z, as `draw` made them.
        condition = self._condition(request.prompt, int(source_seed))
        z_src = self.latent(int(source_seed), truncation)
        # 2. Turn z towards a new seeded z by an angle set by the strength; generate.
        angle = strength * math.pi / 2
        images = [self._render(math.cos(angle) * z_src + math.sin(angle) * self.latent(seed, truncation),
                               condition, request.width, request.height)
                  for seed in request.seeds]
        progress(1, 1)
        return self._result(images, request, [condition] * len(images), truncation=truncation,
                            strength=strength, source_seed=int(source_seed))
