"""Upscaling by a super-resolution network (family "upscaler").

    gen = load_generator("upscaler", "models/4x-UltraSharp.pth", torch.device("cuda"),
                         torch.float16)
    result = gen.generate(GenerationRequest(task=Task.UPSCALE, seeds=[seed], init_image=image,
                                            width=2 * w, height=2 * h, options={"scale": 2}))

The network is a file the operator names (`upscaler` in artbot.toml): an
ESRGAN-family `.pth`, `.safetensors` or `.ckpt` (Real-ESRGAN, its Compact
variant, SwinIR, HAT, DAT, SPAN, ...), read by spandrel, which finds the
architecture and its sizes from the tensors' names and shapes. A file it cannot
read, or a network that does not enlarge (denoisers, face restorers,
inpainters), is refused in one line when loaded.

The image runs through the network in tiles (`TILE` input pixels with
`OVERLAP` on each side, the overlap cut off again), so the memory a 4x of a
large image needs stays bounded; progress is reported a tile at a time. The
scale asked for (2 or 4) is reached exactly: a network of a larger scale than
asked (a 4x asked for 2x) is run once and its output reduced with Lanczos; a
smaller one (a 2x asked for 4x) is run again on its own output. The output is
resized to the request's width x height where the network's arithmetic leaves
it a pixel off. Transparency is enlarged with Lanczos beside the network.

The network is deterministic: the seed is kept for the result's record only.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from artbot.errors import InvalidRequest, ModelNotFound, UserError
from generators.base import GenerationRequest, GenerationResult, Generator, ProgressCallback

# Input pixels a tile (of side TILE, plus OVERLAP of context on each side that is cut off again).
TILE = 256
OVERLAP = 16
SUFFIXES = (".pth", ".safetensors", ".ckpt", ".pt")
SCALES = (2, 4)


class UpscalerGenerator(Generator):
    family = "upscaler"

    def __init__(self, descriptor, device: torch.device, dtype: torch.dtype,
                 model_revision: str | None = None, name: str = ""):
        super().__init__(model_revision)
        self.net = descriptor  # a spandrel ImageModelDescriptor (holds .model, the nn.Module)
        self.model = descriptor.model  # so that memory_bytes counts its weights
        self.device = device
        self.dtype = dtype
        self.name = name

    @classmethod
    def load(cls, ref: str, device: torch.device, dtype: torch.dtype) -> "UpscalerGenerator":
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ModelNotFound(f"Upscaler model {ref} is not a file; the upscaler setting names a "
                                f"super-resolution network file (.pth or .safetensors).")
        if path.suffix.lower() not in SUFFIXES:
            raise UserError(f"{path.name} is not a super-resolution network file: an upscaler is "
                            f"a .pth, .safetensors or .ckpt file.")
        spandrel = _spandrel()
        try:
            descriptor = spandrel.ModelLoader(device="cpu").load_from_file(str(path))
        except spandrel.UnsupportedModelError:
            raise UserError(f"{path.name} is not a super-resolution network spandrel knows: no "
                            f"architecture it reads has these weights.") from None
        except Exception as exc:  # noqa: BLE001 - a broken file fails in torch.load or safetensors
            raise UserError(f"{path.name} is not a model file spandrel can read "
                            f"({_short(exc)}).") from None
        arch = descriptor.architecture.name
        if not isinstance(descriptor, spandrel.ImageModelDescriptor) or \
                descriptor.purpose not in ("SR", "FaceSR") or descriptor.scale < 2:
            raise UserError(f"{path.name} is a {arch} {descriptor.purpose.lower()} model of scale "
                            f"{descriptor.scale}, not a super-resolution (upscaling) network.")
        if descriptor.input_channels != 3 or descriptor.output_channels != 3:
            raise UserError(f"{path.name} is a {arch} network for {descriptor.input_channels}-"
                            f"channel images, not colour (RGB) ones.")
        if device.type == "cpu" or (dtype == torch.float16 and not descriptor.supports_half) or \
                (dtype == torch.bfloat16 and not descriptor.supports_bfloat16):
            dtype = torch.float32
        descriptor.to(device).to(dtype).eval()
        return cls(descriptor, device, dtype, file_fingerprint(path), arch)

    @property
    def scale(self) -> int:
        """The network's own scale (2, 4, ...)."""
        return int(self.net.scale)

    def upscale(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        # 1. Check inputs: the scale asked for, and the size it makes.
        scale = int(request.options.get("scale", round(request.width / request.init_image.width)))
        if scale not in SCALES:
            raise InvalidRequest(f"An upscale is 2x or 4x, not {scale}x.")
        image = request.init_image
        target = (request.width, request.height)
        # 2. The passes: a network of smaller scale than asked runs again on its own output.
        passes = max(1, math.ceil(math.log(scale, self.scale) - 1e-9))
        rgb = image.convert("RGB")
        sizes = [rgb.size]
        for _ in range(passes - 1):
            sizes.append((sizes[-1][0] * self.scale, sizes[-1][1] * self.scale))
        total = sum(len(_tiles(w, h)) for w, h in sizes)
        done = [0]

        def tile_done():
            done[0] += 1
            progress(done[0], total)

        # 3. Run the network, tile by tile, pass by pass.
        for _ in range(passes):
            rgb = self._enlarge(rgb, tile_done)
        notes = []
        reached = self.scale ** passes
        # 4. To the size asked for: Lanczos down from a larger scale (and any stray pixel).
        if rgb.size != target:
            rgb = rgb.resize(target, Image.LANCZOS)
            if reached != scale:
                notes.append(f"The {reached}x result of the {self.scale}x network was reduced to "
                             f"{scale}x with Lanczos.")
        if passes > 1:
            notes.insert(0, f"The {self.scale}x network ran {passes} times for {scale}x.")
        # 5. Transparency beside it.
        if "A" in image.getbands():
            rgb = rgb.convert("RGBA")
            rgb.putalpha(image.getchannel("A").resize(target, Image.LANCZOS))
        params = {"upscaler": self.name, "upscaler_scale": self.scale, "scale": scale,
                  "width": target[0], "height": target[1]}
        if notes:
            params["notes"] = notes
        return GenerationResult(images=[rgb.copy() for _ in request.seeds],
                                seeds=list(request.seeds), params=params)

    @torch.inference_mode()
    def _enlarge(self, image: Image.Image, tile_done) -> Image.Image:
        """One pass of the network over an RGB image, in overlapping tiles."""
        s = self.scale
        x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
        _, _, h, w = x.shape  # (1, 3, H, W) in [0, 1]
        out = torch.zeros(1, 3, h * s, w * s)
        for x0, y0, x1, y1 in _tiles(w, h):
            # The tile with OVERLAP of context on each side, where the image has it.
            cx0, cy0 = max(0, x0 - OVERLAP), max(0, y0 - OVERLAP)
            cx1, cy1 = min(w, x1 + OVERLAP), min(h, y1 + OVERLAP)
            part = self.net(x[:, :, cy0:cy1, cx0:cx1].to(self.device, self.dtype)).float().cpu()
            ox, oy = (x0 - cx0) * s, (y0 - cy0) * s
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = \
                part[:, :, oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
            tile_done()
        arr = (out[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
        return Image.fromarray(arr, "RGB")


def _tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) of the TILE x TILE tiles covering an image, row by row."""
    return [(x, y, min(x + TILE, width), min(y + TILE, height))
            for y in range(0, height, TILE) for x in range(0, width, TILE)]


def file_fingerprint(path: Path) -> str:
    """What exactly was loaded: the file's bytes, hashed (networks are small: 1 to 200 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"file-{h.hexdigest()[:12]}-{path.stat().st_size}"


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:120]


def _spandrel():
    """spandrel, imported. It imports torchvision for two architectures that do not upscale
    (LaMa inpainting, RestoreFormer face restoration); where torchvision is missing or does not
    load (the CUDA wheel beside a CPU torch), those two get a stand-in while spandrel imports,
    which is taken away again so that nothing else sees it."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        spec = importlib.util.find_spec("spandrel")
    except ValueError:
        spec = None
    if spec is None:
        raise UserError("Upscaler models need the spandrel package: pip install spandrel.")
    with contextlib.ExitStack() as stack:
        if not _torchvision_loads():
            stack.enter_context(_torchvision_stand_in())
        import spandrel
    return spandrel


def _torchvision_loads() -> bool:
    if "torchvision" in sys.modules:
        return True
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision")
    except Exception:  # noqa: BLE001 - a torchvision built for another torch raises RuntimeError
        return False
    return True


@contextlib.contextmanager
def _torchvision_stand_in():
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional")
    before = {name: sys.modules.get(name) for name in names}
    functional = types.ModuleType("torchvision.transforms.functional")

    def unavailable(*args, **kwargs):
        raise UserError("This network needs torchvision, which is not installed here.")

    functional.rotate = functional.normalize = unavailable
    functional.InterpolationMode = types.SimpleNamespace(BILINEAR="bilinear", NEAREST="nearest",
                                                         BICUBIC="bicubic")
    transforms = types.ModuleType("torchvision.transforms")
    transforms.functional = functional
    package = types.ModuleType("torchvision")
    package.transforms = transforms
    sys.modules.update({names[0]: package, names[1]: transforms, names[2]: functional})
    try:
        yield
    finally:
        for name, module in before.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
