"""The one interface every generator family implements.

A family is handed a request and returns images plus what reproduces them:

    result = generator.generate(request, progress)

`request.task` says what is asked for:

- ``draw``: text to image (prompt, negative prompt, size, steps, guidance);
- ``vary``: a variation of `init_image` (strength 0..1; a new prompt is optional);
- ``stylize``: `init_image` (the content) in the style of `style_image` or of
  a style prompt;
- ``upscale``: `init_image` enlarged to width x height (`options["scale"]`, 2 or 4),
  by a super-resolution network (the 'upscaler' family) or by a "hires fix" of the
  job's own diffusion model (image to image at a low `strength`);
- ``outpaint``: `init_image` on a larger canvas (zoom out, pan): `options["pad"]` is
  [left, top, right, bottom] pixels added around it, width x height the canvas; the
  new border is filled and the old pixels are kept;
- ``blend``: `images` (2 to 5) made into one picture of width x height;
- ``describe``: `init_image` put into words: no images, and `params["prompts"]` of the
  result holds a few prompts to draw from.

A family that cannot do a task raises `UnsupportedTask` with a message for the
user. `progress(step, total)` is called as work advances; it may raise (the
worker raises to cancel or time out a job) and the exception must propagate.
A family that can show the image forming passes a third argument,
`progress(step, total, preview)`: `preview(i)` returns a small RGB picture of
image i of the call as it stands now. It is called lazily, only when the worker
will show one (at most once every 1.5 s a job), so a step costs nothing extra
when nobody looks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from PIL import Image

from artbot.errors import InvalidRequest, UserError

# preview(i) -> image i of the call as it stands now (see the module docstring).
PreviewFn = Callable[[int], Image.Image]
ProgressCallback = Callable[..., None]  # (step, total) or (step, total, preview)


def no_progress(step: int, total: int, preview: PreviewFn | None = None, **_) -> None:
    pass


def halvings(size: int, smallest: int = 4) -> int:
    """How many times a convolutional network (the GAN's, the VAE's) can halve a size x size
    image while the side stays whole and at least `smallest`: 4 at 64 (64 -> 4), 3 at 40 (-> 5)."""
    n = 0
    while size % 2 ** (n + 1) == 0 and size // 2 ** (n + 1) >= smallest:
        n += 1
    return n


class Task(str, enum.Enum):
    DRAW = "draw"
    VARY = "vary"
    STYLIZE = "stylize"
    UPSCALE = "upscale"
    OUTPAINT = "outpaint"
    BLEND = "blend"
    DESCRIBE = "describe"


class UnsupportedTask(UserError):
    """This family (or this model) cannot do what was asked."""


@dataclass
class GenerationRequest:
    task: Task
    # One seed per image; the number of images is len(seeds).
    seeds: list[int]
    prompt: str = ""
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 30
    guidance: float = 7.5
    # vary: the image to vary; stylize: the content image.
    init_image: Image.Image | None = None
    # vary/stylize: how far to move from init_image, 0..1.
    strength: float = 0.6
    # stylize: the style image, if the style is given as an image; draw: a style reference.
    style_image: Image.Image | None = None
    # blend: the images to blend, in order.
    images: list[Image.Image] = field(default_factory=list)
    # diffusers models: the sampler, by its A1111 name ("DPM++ 2M Karras"); None: the model's own.
    sampler: str | None = None
    # diffusers models: LoRAs as (name, file, weight), applied to this request only.
    loras: list[tuple[str, str, float]] = field(default_factory=list)
    # diffusers CLIP models: A1111's "Clip skip" (1: all layers; 2: from the second-to-last).
    clip_skip: int | None = None
    # Family-specific options (for example the style-transfer method).
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.seeds)


@dataclass
class GenerationResult:
    images: list[Image.Image]
    # The seed of each image, in order.
    seeds: list[int]
    # Parameters as actually used, merged into the job's stored parameters
    # (for example the scheduler's name or the size an input was rounded to).
    params: dict[str, Any] = field(default_factory=dict)


def check_request(request: GenerationRequest) -> None:
    """What every family needs of a request, refused in words."""
    if not isinstance(request.task, Task):
        raise UnsupportedTask(f"Unknown task {request.task!r}.")
    if not request.seeds:
        raise InvalidRequest("A request must ask for at least one image.")
    needs = {Task.VARY: "A variation needs an image to vary.",
             Task.STYLIZE: "Style transfer needs a content image.",
             Task.UPSCALE: "Upscaling needs an image to enlarge.",
             Task.OUTPAINT: "Zooming out or panning needs an image to extend.",
             Task.DESCRIBE: "Describing needs an image."}
    if request.task in needs and request.init_image is None:
        raise InvalidRequest(needs[request.task])
    if request.task is Task.BLEND and not 2 <= len(request.images) <= 5:
        raise InvalidRequest("A blend needs 2 to 5 images.")


class Generator:
    """Base class of the families. Subclasses override the tasks they support."""

    #: The family's name as stored with each job: 'diffusion', 'gan', 'vae', 'style'.
    family: str = ""
    #: Batched images come out byte-identical to a lone run (generators.invariance);
    #: the worker sets it from the operator's `exact_batches`.
    exact: bool = True

    def __init__(self, model_revision: str | None = None):
        #: What exactly was loaded (a hub commit, a file fingerprint), stored with each job.
        self.model_revision = model_revision

    def generate(
        self, request: GenerationRequest, progress: ProgressCallback = no_progress
    ) -> GenerationResult:
        check_request(request)
        return getattr(self, request.task.value)(request, progress)

    def generate_many(
        self, requests: list[GenerationRequest], progress: ProgressCallback = no_progress
    ) -> list[GenerationResult]:
        """Several jobs' requests that share a batch key (worker.requests.JobSpec.batch_key:
        the same task, size, steps, sampler, guidance and LoRAs), one result each.

        A family that can makes them in one call (the diffusion family does); this
        default makes them one after another. Progress is reported with a keyword
        more than `generate` gives: `progress(step, total, preview, requests=[...])`,
        the indices of the requests the current call is making, and `preview(i)`
        counts the images of that call only."""
        results = []
        for index, request in enumerate(requests):
            def part(step, total, preview=None, _index=index):
                progress(step, total, preview, requests=[_index])

            results.append(self.generate(request, part))
        return results

    def memory_bytes(self) -> int:
        """The bytes its weights take (parameters and buffers of every torch module it
        holds, a diffusers pipeline's components included, shared ones counted once):
        what the worker's model cache budgets by."""
        import torch

        seen: set[int] = set()
        total = 0

        def modules(value):
            if isinstance(value, torch.nn.Module):
                yield value
            for part in getattr(value, "components", {}).values() if not isinstance(
                    value, torch.nn.Module) else ():
                if isinstance(part, torch.nn.Module):
                    yield part

        for value in vars(self).values():
            for module in modules(value):
                for tensor in [*module.parameters(), *module.buffers()]:
                    if id(tensor) not in seen:
                        seen.add(id(tensor))
                        total += tensor.numel() * tensor.element_size()
        return total

    def use_less_memory(self) -> str | None:
        """After running out of memory even one image at a time: switch to a slower
        mode that needs less (diffusers: CPU offload), if the family has one and the
        operator allows it. Returns what was done, for the job's note; None: nothing."""
        return None

    def draw(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        raise UnsupportedTask(f"The {self.family} generator cannot draw from a prompt.")

    def vary(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        raise UnsupportedTask(f"The {self.family} generator cannot make variations.")

    def upscale(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        raise UnsupportedTask(f"The {self.family} generator cannot upscale; the operator can "
                              f"configure an upscaler model (upscaler in artbot.toml).")

    def outpaint(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        raise UnsupportedTask(f"The {self.family} generator cannot zoom out or pan.")

    def blend(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        raise UnsupportedTask(f"The {self.family} generator cannot blend images.")

    def describe(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        raise UnsupportedTask(f"The {self.family} generator cannot describe images.")

    def stylize(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        """Restyle by text: image to image with the style prompt, for families that vary images.

        A family that transfers the style of an image (the 'style' family) overrides this.
        """
        if request.style_image is not None or not request.prompt:
            raise UnsupportedTask(
                f"The {self.family} generator restyles by text: give a style prompt, not a style image."
            )
        # As a variation in every respect (a family's vary reads the task to pass the image on).
        return self.vary(replace(request, task=Task.VARY), progress)
