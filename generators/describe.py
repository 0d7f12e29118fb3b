"""Describing an image in a few prompts to draw from (family "describe").

    gen = load_generator("describe", "emoji-classifier", torch.device("cpu"), torch.float32)
    result = gen.generate(GenerationRequest(task=Task.DESCRIBE, seeds=[0], init_image=image))
    result.params["prompts"]      # ["a red heart", "a red heart suit", ...]
    result.params["notes"]        # what it could and could not tell

Two kinds of model describe:

- the bundled emoji classifier (`emoji-classifier`, or a folder this module's
  `train` wrote): a small CNN that reads a picture as one of the emoji set's
  subcategories (the labels the bundled emoji models draw by) and its category.
  The top labels become prompts in the words of the emoji set's names, with the
  image's dominant colour (`generators.gan.model.dominant_colours`, the colour
  each training image was given): "a red heart", "a yellow grinning face". A
  picture it cannot place (a photo) is said to be one, with the closest labels.
- any other reference is a transformers image-to-text model (a hub id or a
  folder, BLIP or a vision encoder-decoder): its captions (beam search, then
  sampling seeded by the request's seed if the beams repeat) become the prompts.

Training the classifier (a few minutes on 2 CPU cores; see its model card):

    python -m generators.describe train OUT [--epochs 30] [--seed 0] [--holdout 0.1]
    python -m generators.describe evaluate OUT     # accuracy on the bundled models' samples
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from artbot.errors import ModelNotFound
from generators.base import GenerationRequest, GenerationResult, Generator, ProgressCallback
from generators.captions import COLOURS, colour_in
from generators.datasets import to_tensor

CLASSIFIER = "emoji-classifier"
IMAGE_SIZE = 64
# The extra subcategory the classifier learns from made-up pictures that are no emoji.
NOT_EMOJI = "not an emoji"
# A picture is not read as an emoji when NOT_EMOJI outscores every label or the best label
# has less than this probability: 2.6% of held-out emoji and none of the made-up pictures
# (the model card; 0.25 turned away 14% of held-out emoji).
MIN_CONFIDENCE = 0.1
N_PROMPTS = 4


# -- the classifier ---------------------------------------------------------------


class EmojiClassifier(nn.Module):
    """(B, 3, 64, 64) in [-1, 1] -> (subcategory logits (B, S), category logits (B, C)).

    Four stride-2 convolutions (the benchmark's CategoryNet, a block wider), a mean
    over positions, and a head per label level."""

    def __init__(self, n_sub: int, n_cat: int, widths: tuple[int, ...] = (32, 64, 128, 160)):
        super().__init__()
        layers, c = [], 3
        for width in widths:
            layers += [nn.Conv2d(c, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.sub_head = nn.Linear(c, n_sub)
        self.cat_head = nn.Linear(c, n_cat)
        self.widths = tuple(widths)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.dropout(self.features(x).mean(dim=(2, 3)))  # (B, C)
        return self.sub_head(h), self.cat_head(h)


def _with_article(words: str) -> str:
    last = words.split()[-1] if words.split() else ""
    if last.endswith("s") and not last.endswith("ss"):  # "blue paw prints"
        return words
    return ("an " if words[:1] in "aeiou" else "a ") + words


def prompt_for(prompts: list[list[str]], sub: int, colour: int) -> str:
    """The prompt that draws subcategory `sub` in colour `colour` (indices in the config's
    tables), chosen when the classifier was trained (`_prompt_table`)."""
    return prompts[sub][colour]


class EmojiDescriber:
    def __init__(self, net: EmojiClassifier, config: dict, revision: str):
        self.net = net.eval()
        self.config = config
        self.sublabels: list[str] = config["sublabels"]  # the last is NOT_EMOJI
        self.labels: list[str] = config["labels"]
        self.sub_category: list[int] = config["sub_category"]
        self.prompts = config["prompts"]
        self.revision = revision
        self.param = next(net.parameters())

    @classmethod
    def load(cls, folder: Path, device, dtype) -> "EmojiDescriber":
        from safetensors.torch import load_file

        from generators.training import model_fingerprint

        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        model = config["model"]
        net = EmojiClassifier(len(config["sublabels"]), len(config["labels"]), tuple(model["widths"]))
        weights = {k: v.float() for k, v in load_file(str(folder / "model.safetensors")).items()}
        net.load_state_dict(weights)
        net.to(device=device, dtype=dtype)
        return cls(net, config, model_fingerprint(folder))

    @torch.inference_mode()
    def probabilities(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(subcategory probabilities, category probabilities, dominant colour) of a picture."""
        from generators.gan.model import dominant_colours

        x = to_tensor(image, IMAGE_SIZE)[None]
        sub, cat = self.net(x.to(self.param))
        return (sub.float().softmax(1)[0].cpu(), cat.float().softmax(1)[0].cpu(),
                int(dominant_colours(x)[0]))

    def describe(self, image: Image.Image) -> dict:
        p_sub, p_cat, colour = self.probabilities(image)
        none = len(self.sublabels) - 1
        emoji = p_sub[:none] / p_sub[:none].sum().clamp_min(1e-12)  # the emoji labels alone
        order = emoji.argsort(descending=True).tolist()
        prompts: list[str] = []
        for sub in order:
            prompt = prompt_for(self.prompts, sub, colour)
            if prompt not in prompts:
                prompts.append(prompt)
            if len(prompts) == N_PROMPTS:
                break
        top = [{"label": self.sublabels[s], "category": self.labels[self.sub_category[s]],
                "p": round(float(emoji[s]), 3)} for s in order[:N_PROMPTS]]
        closest = ", ".join(f"{t['label']} ({t['p']:.0%})" for t in top[:3])
        notes = []
        not_emoji = bool(_not_read(p_sub[None])[0])
        if not_emoji:
            notes.append(f"This does not look like an emoji; the closest labels were {closest}. The "
                         f"bundled classifier knows only the emoji set's {none} subcategories and their "
                         f"colours, so it cannot describe photos, scenes or styles; the operator can "
                         f"configure a captioning model (captioner in artbot.toml).")
        else:
            category = self.labels[int(p_cat.argmax())]
            notes.append(f"Read as an emoji: {closest}; category {category}; main colour "
                         f"{COLOURS[colour]}.")
            notes.append("It names the kind of emoji and its main colour only: not its details, "
                         "any text or count in it, or a style.")
        return {"prompts": prompts, "notes": notes, "labels": top, "colour": COLOURS[colour],
                "not_emoji": not_emoji}


# -- a transformers captioner -------------------------------------------------------


_CAPTION_JUNK = ("arafed ", "araffe ", "arafly ", "there is a ", "there is an ", "this is a ",
                 "this is an ")


def caption_to_prompt(caption: str) -> str:
    text = " ".join(caption.replace("\n", " ").split()).strip(" .,;:")
    lowered = text.lower()
    for junk in _CAPTION_JUNK:
        if lowered.startswith(junk):
            text = text[len(junk):]
            lowered = text.lower()
    return text


def offline() -> bool:
    return any(os.environ.get(name, "").strip() not in ("", "0", "false", "False")
               for name in ("ARTBOT_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


class Captioner:
    """A transformers image-to-text model: processor (or image processor + tokenizer) and model."""

    def __init__(self, ref: str, model, image_processor, tokenizer, device, dtype):
        self.ref = ref
        self.model = model.eval()
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.device, self.dtype = device, dtype

    @classmethod
    def load(cls, ref: str, device, dtype) -> "Captioner":
        import transformers

        local = offline()
        kw = {"local_files_only": True} if local else {}
        try:
            auto = getattr(transformers, "AutoModelForVision2Seq", None) or transformers.AutoModelForImageTextToText
            try:
                model = auto.from_pretrained(ref, **kw)
            except ValueError:  # a vision encoder-decoder the auto class does not map
                model = transformers.VisionEncoderDecoderModel.from_pretrained(ref, **kw)
            try:
                processor = transformers.AutoProcessor.from_pretrained(ref, **kw)
                image_processor = getattr(processor, "image_processor", None)
                tokenizer = getattr(processor, "tokenizer", None)
            except (OSError, ValueError, KeyError, TypeError):
                image_processor = tokenizer = None
            image_processor = image_processor or transformers.AutoImageProcessor.from_pretrained(ref, **kw)
            tokenizer = tokenizer or transformers.AutoTokenizer.from_pretrained(ref, **kw)
        except Exception as exc:  # transformers raises many kinds; the user gets one line
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            where = " (offline: only models already downloaded are found)" if local else ""
            raise ModelNotFound(f"Could not load the captioner {ref!r} as a transformers "
                                f"image-to-text model{where}: {reason}") from None
        model.to(device=device, dtype=dtype if dtype in (torch.float16, torch.bfloat16, torch.float32)
                 else torch.float32)
        return cls(ref, model, image_processor, tokenizer, device, dtype)

    @torch.inference_mode()
    def captions(self, image: Image.Image, seed: int, n: int = N_PROMPTS) -> list[str]:
        pixels = self.image_processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        pixels = pixels.to(self.device, dtype=next(self.model.parameters()).dtype)
        kw = {"max_new_tokens": 30}
        if getattr(self.model.config, "decoder_start_token_id", None) is None and \
                getattr(self.tokenizer, "bos_token_id", None) is not None:
            kw["decoder_start_token_id"] = self.tokenizer.bos_token_id
        beams = self.model.generate(pixel_values=pixels, num_beams=n, num_return_sequences=n, **kw)
        found = self._unique(self.tokenizer.batch_decode(beams, skip_special_tokens=True))
        for k in range(2 * n):  # beams that repeat: sampled captions, seeded
            if len(found) >= n:
                break
            torch.manual_seed(int(seed) + k)
            sampled = self.model.generate(pixel_values=pixels, do_sample=True, top_p=0.9, **kw)
            found = self._unique(found + self.tokenizer.batch_decode(sampled, skip_special_tokens=True))
        return found[:n]

    @staticmethod
    def _unique(captions: list[str]) -> list[str]:
        out, seen = [], set()
        for caption in captions:
            prompt = caption_to_prompt(caption)
            if prompt and prompt.lower() not in seen:
                seen.add(prompt.lower())
                out.append(prompt)
        return out


# -- the family -------------------------------------------------------------------------


def _classifier_folder(ref: str) -> Path | None:
    from generators.bundled import classifier_path

    if ref == CLASSIFIER:
        folder = classifier_path()
        if folder is None:
            raise ModelNotFound("The bundled emoji classifier is not installed "
                                "(generators/bundled/emoji-classifier).")
        return folder
    folder = Path(ref).expanduser()
    config = folder / "config.json"
    if folder.is_dir() and config.is_file() and (folder / "model.safetensors").is_file():
        try:
            if json.loads(config.read_text(encoding="utf-8")).get("family") == "describe":
                return folder
        except (OSError, ValueError):
            return None
    return None


class DescribeGenerator(Generator):
    family = "describe"

    def __init__(self, classifier: EmojiDescriber | None = None, captioner: Captioner | None = None,
                 described_by: str = "", model_revision: str | None = None):
        super().__init__(model_revision)
        self.classifier = classifier
        self.captioner = captioner
        self.described_by = described_by

    @classmethod
    def load(cls, ref: str, device, dtype) -> "DescribeGenerator":
        folder = _classifier_folder(ref)
        if folder is not None:
            classifier = EmojiDescriber.load(folder, device, dtype)
            return cls(classifier=classifier, described_by=ref, model_revision=classifier.revision)
        return cls(captioner=Captioner.load(ref, device, dtype), described_by=ref)

    def describe(self, request: GenerationRequest, progress: ProgressCallback) -> GenerationResult:
        image = request.init_image
        if self.classifier is not None:
            found = self.classifier.describe(image)
            params = {"prompts": found["prompts"], "described_by": self.described_by,
                      "notes": found["notes"], "labels": found["labels"], "colour": found["colour"]}
        else:
            prompts = self.captioner.captions(image, request.seeds[0])
            notes = [] if prompts else ["The captioner gave no words for this image."]
            if 0 < len(prompts) < 3:
                notes.append(f"The captioner gave only {len(prompts)} different caption(s).")
            params = {"prompts": prompts, "described_by": self.described_by, "notes": notes}
        progress(1, 1)
        return GenerationResult(images=[], seeds=[], params=params)


# -- training and measuring the classifier -------------------------------------------------


def _group_split(captions: list[str], holdout: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, held-out) image indices; all skin tones of one emoji fall on the same side,
    so the held-out emoji are ones the classifier never saw."""
    distinct = sorted(set(captions))
    random.Random(seed).shuffle(distinct)
    held = set(distinct[:max(1, int(len(distinct) * holdout))])
    train = [i for i, c in enumerate(captions) if c not in held]
    return train, [i for i, c in enumerate(captions) if c in held]


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small random scales (0.75-1.15), shifts (up to 8 px), mirror images, blur (as the
    32x32 diffusion model's upscaled samples and the VAE's are) and colour jitter; the
    background stays white."""
    b = x.shape[0]
    scale = torch.empty(b).uniform_(0.75, 1.15, generator=g)
    shift = torch.empty(b, 2).uniform_(-0.25, 0.25, generator=g)  # of half the side: 8 px
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = flip / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    # White outside: grid_sample pads with 0, which is white once the image is shifted by -1.
    out = F.grid_sample(x - 1, grid, padding_mode="zeros", align_corners=False) + 1
    blur = torch.rand(b, generator=g) < 0.4
    if blur.any():
        small = F.interpolate(out[blur], size=int(torch.randint(16, 40, (1,), generator=g)),
                              mode="bilinear", antialias=True, align_corners=False)
        out[blur] = F.interpolate(small, size=x.shape[-1], mode="bilinear", align_corners=False)
    gain = torch.empty(b, 3, 1, 1).uniform_(0.9, 1.1, generator=g)
    return ((out + 1) * gain - 1).clamp(-1, 1)


def _not_emoji(n: int, size: int, g: torch.Generator) -> torch.Tensor:
    """n made-up pictures that are no emoji: photo-like fields of smooth noise at random
    scales, gradients and blocks of colour filling the frame, pixel noise."""
    kinds = torch.randint(0, 4, (n,), generator=g)
    out = torch.empty(n, 3, size, size)
    for i, kind in enumerate(kinds.tolist()):
        if kind == 0:  # pixel noise
            img = torch.rand(3, size, size, generator=g)
        elif kind == 1:  # smooth noise at a random scale, with grain
            side = int(torch.randint(2, 17, (1,), generator=g))
            img = F.interpolate(torch.rand(1, 3, side, side, generator=g), size=size, mode="bicubic",
                                align_corners=False)[0]
            img = img + 0.08 * torch.randn(3, size, size, generator=g)
        elif kind == 2:  # a gradient between two colours, with grain
            a, b = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
            angle = float(torch.rand(1, generator=g)) * math.tau
            ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
            t = ((xs * math.cos(angle) + ys * math.sin(angle)) % 1.0)[None]
            img = a * (1 - t) + b * t + 0.05 * torch.randn(3, size, size, generator=g)
        else:  # blocks of colour filling the frame (a scene of flat regions)
            img = torch.rand(3, 1, 1, generator=g).expand(3, size, size).clone()
            for _ in range(int(torch.randint(3, 9, (1,), generator=g))):
                x0, y0 = torch.randint(0, size, (2,), generator=g).tolist()
                w, h = torch.randint(8, size, (2,), generator=g).tolist()
                img[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=g)
            img = img + 0.05 * torch.randn(3, size, size, generator=g)
        out[i] = img.clamp(0, 1) * 2 - 1
    return out


def _name_parts(caption: str) -> list[str]:
    """The names in a caption as one would write them ("flag: japan, jp" -> "flag japan", "jp")."""
    parts = [" ".join(part.replace(":", " ").split()) for part in caption.split(",")]
    return [p for p in dict.fromkeys(parts) if p and not any(ch.isdigit() for ch in p)]


def _prompt_table(data, colours: list[int]) -> list[list[str]]:
    """For each subcategory and each colour of COLOURS, the prompt to draw it by.

    The candidates are the names of that subcategory's emoji in that colour (all its
    emoji where none has the colour), never one naming another colour ("heavy black
    heart" is red). A candidate must lead the emoji set's `PromptIndex` (what the GAN and
    the VAE choose a label by) back to the subcategory, with the colour word added; among
    those, names without cryptic short words ("flag jp") first, then the most typical: the
    highest mean share, over its words, of the candidates' captions holding the word
    ("heart" over "broken heart"), then the shortest."""
    from collections import defaultdict

    from generators.captions import PromptIndex, words_of

    subs = data.sublabels.tolist()
    index = PromptIndex.build(data.captions, subs, len(data.sublabel_names))
    groups: dict[tuple[int, int], set[str]] = defaultdict(set)
    for caption, sub, colour in zip(data.captions, subs, colours):
        groups[sub, colour].add(caption)
        groups[sub, -1].add(caption)

    def leads_back(prompt: str, sub: int) -> bool:
        scores = index.scores(prompt)
        best = max(scores)
        return best > 0 and scores[sub] >= best - 1e-9 and sum(s >= best - 1e-9 for s in scores) == 1

    table = []
    for sub in range(len(data.sublabel_names)):
        row = []
        for colour, word in enumerate(COLOURS):
            captions = sorted(groups.get((sub, colour)) or groups[sub, -1])
            caption_words = [set(words_of(c)) for c in captions]
            candidates = []
            for name in sorted({n for c in captions for n in _name_parts(c)}):
                named = colour_in(name)
                if named is not None and named != colour:
                    continue
                prompt = _with_article(name if named is not None else f"{word} {name}")
                words = words_of(name) or [name]
                share = sum(sum(w in cw for cw in caption_words) for w in words) / (len(words) * len(captions))
                cryptic = any(len(w) <= 2 for w in name.split())  # short names: "flag jp"
                candidates.append((not leads_back(prompt, sub), cryptic, -share, len(prompt), prompt))
            if not candidates:  # every name names another colour
                candidates = [(True, True, 0, 0, _with_article(f"{word} {data.sublabel_names[sub].replace('-', ' ')}"))]
            row.append(min(candidates)[-1])
        table.append(row)
    return table


def _accuracy(net: EmojiClassifier, images: torch.Tensor, subs: torch.Tensor, cats: torch.Tensor,
              batch: int = 256) -> dict:
    net.eval()
    top1 = top3 = cat_ok = 0
    with torch.no_grad():
        for i in range(0, len(images), batch):
            sub_logits, cat_logits = net(images[i:i + batch])
            s, c = subs[i:i + batch], cats[i:i + batch]
            top1 += int((sub_logits.argmax(1) == s).sum())
            top3 += int((sub_logits.topk(3, dim=1).indices == s[:, None]).any(1).sum())
            cat_ok += int((cat_logits.argmax(1) == c).sum())
    n = max(1, len(images))
    return {"subcategory_top1": round(top1 / n, 3), "subcategory_top3": round(top3 / n, 3),
            "category_top1": round(cat_ok / n, 3), "images": len(images)}


def _not_read(p_sub: torch.Tensor, min_confidence: float = MIN_CONFIDENCE) -> torch.Tensor:
    """(B, S) subcategory probabilities -> (B,) whether each picture is not read as an emoji."""
    best = p_sub[:, :-1].max(1).values
    return (p_sub[:, -1] > best) | (best < min_confidence)


def _rejection_rates(net: EmojiClassifier, held: torch.Tensor, seed: int) -> tuple[float, float]:
    """(share of 256 made-up non-emoji pictures not read as emoji, share of held-out emoji not
    read as emoji)."""
    net.eval()
    with torch.no_grad():
        noise = _not_emoji(256, IMAGE_SIZE, torch.Generator().manual_seed(seed + 1))
        rejected = _not_read(net(noise)[0].softmax(1)).float().mean()
        false_reject = _not_read(net(held)[0].softmax(1)).float().mean()
    return round(float(rejected), 3), round(float(false_reject), 3)


def train(out: str | Path, epochs: int = 30, seed: int = 0, holdout: float = 0.1,
          threads: int = 2, batch_size: int = 64) -> dict:
    """Train the emoji classifier on the emoji set and write it to `out` (config.json,
    model.safetensors in float16). Returns the config written."""
    from safetensors.torch import save_file

    from generators.datasets import load_dataset
    from generators.gan.model import dominant_colours

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    start = time.time()
    data = load_dataset("emoji", IMAGE_SIZE)
    colours = dominant_colours(data.images).tolist()
    train_idx, held_idx = _group_split(data.captions, holdout, seed)
    none = len(data.sublabel_names)  # the NOT_EMOJI label
    net = EmojiClassifier(none + 1, len(data.label_names))
    images, subs, cats = data.images, data.sublabels, data.labels
    x_train, s_train, c_train = images[train_idx], subs[train_idx], cats[train_idx]
    steps_per_epoch = len(train_idx) // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=total, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    n_none = max(1, batch_size // 8)
    for epoch in range(epochs):
        net.train()
        order = torch.randperm(len(train_idx), generator=g)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = torch.cat([_augment(x_train[idx], g), _not_emoji(n_none, IMAGE_SIZE, g)])
            s = torch.cat([s_train[idx], torch.full((n_none,), none)])
            sub_logits, cat_logits = net(x)
            # The category is learned from emoji only; NOT_EMOJI pictures have none.
            loss = F.cross_entropy(sub_logits, s, label_smoothing=0.05) + \
                F.cross_entropy(cat_logits[:len(idx)], c_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        held = _accuracy(net, images[held_idx], subs[held_idx], cats[held_idx])
        print(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.3f}, held-out {held}", flush=True)
    seconds = time.time() - start
    net.eval()
    held = _accuracy(net, images[held_idx], subs[held_idx], cats[held_idx])
    rejected, false_reject = _rejection_rates(net, images[held_idx], seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "family": "describe",
        "labels": data.label_names,
        "sublabels": [*data.sublabel_names, NOT_EMOJI],
        "sub_category": [int(cats[(subs == s).nonzero()[0, 0]]) for s in range(none)] + [-1],
        "prompts": _prompt_table(data, colours),
        "colours": list(COLOURS),
        "model": {"widths": list(net.widths), "image_size": IMAGE_SIZE, "min_confidence": MIN_CONFIDENCE},
        "data": {**data.source, "holdout": holdout, "split": "by emoji (all skin tones of an emoji "
                 "on one side), seed %d" % seed, "train_images": len(train_idx),
                 "held_out_images": len(held_idx)},
        "training": {"epochs": epochs, "seed": seed, "batch_size": batch_size, "steps": total,
                     "threads": threads, "seconds": round(seconds, 1), "torch": torch.__version__,
                     "command": f"python -m generators.describe train OUT --epochs {epochs} "
                                f"--seed {seed} --holdout {holdout}"},
        "metrics": {"held_out": held, "noise_pictures_rejected": rejected,
                    "held_out_emoji_rejected": false_reject},
        "weights_dtype": "float16",
    }
    save_file({k: v.detach().half().contiguous() for k, v in net.state_dict().items()
               if v.is_floating_point()} | {k: v for k, v in net.state_dict().items()
                                             if not v.is_floating_point()},
              str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(config["metrics"]), f"{seconds:.0f} s", flush=True)
    return config


MODELS = (("pixel-diffusion", "emoji-diffusion"), ("gan", "emoji-gan"), ("vae", "emoji-vae"))


def evaluate(folder: str | Path, per_sub: int = 2, threads: int = 2) -> dict:
    """Accuracy on pictures the bundled emoji models draw: for up to `per_sub` emoji names
    of each subcategory (chosen at random, seed 0), one sample each (seed 1000 + j); the
    truth is the subcategory of the emoji named. Written to the config's "metrics"."""
    from generators.base import Task
    from generators.bundled import bundled_path
    from generators.datasets import load_dataset
    from generators.registry import load_generator

    torch.set_num_threads(threads)
    folder = Path(folder)
    describer = EmojiDescriber.load(folder, torch.device("cpu"), torch.float32)
    data = load_dataset("emoji", IMAGE_SIZE)
    rng = random.Random(0)
    picks: list[tuple[str, int]] = []
    for sub in range(len(data.sublabel_names)):
        names = sorted({data.captions[i].split(",")[0].replace(":", " ")
                        for i in (data.sublabels == sub).nonzero()[:, 0].tolist()})
        picks += [(" ".join(n.split()), sub) for n in rng.sample(names, min(per_sub, len(names)))]
    results = {}
    for family, name in MODELS:
        if bundled_path(name) is None:
            continue
        gen = load_generator(family, name, torch.device("cpu"), torch.float32)
        top1 = top3 = cat_ok = not_read = 0
        for j, (prompt, sub) in enumerate(picks):
            request = GenerationRequest(task=Task.DRAW, seeds=[1000 + j], prompt=prompt, width=64,
                                        height=64, guidance=3.0)
            image = gen.generate(request).images[0]
            p_sub, p_cat, _ = describer.probabilities(image)
            ranked = p_sub[:-1].argsort(descending=True)[:3].tolist()
            top1 += ranked[0] == sub
            top3 += sub in ranked
            cat_ok += int(p_cat.argmax()) == describer.sub_category[sub]
            not_read += bool(_not_read(p_sub[None])[0])
        n = len(picks)
        results[name] = {"subcategory_top1": round(top1 / n, 3), "subcategory_top3": round(top3 / n, 3),
                         "category_top1": round(cat_ok / n, 3), "not_read_as_emoji": round(not_read / n, 3),
                         "samples": n}
        print(name, results[name], flush=True)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["metrics"]["bundled_samples"] = results
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return results


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m generators.describe")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the emoji classifier into OUT")
    t.add_argument("out")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--holdout", type=float, default=0.1)
    t.add_argument("--threads", type=int, default=2)
    e = sub.add_parser("evaluate", help="measure a trained classifier on the bundled models' samples")
    e.add_argument("folder")
    e.add_argument("--per-sub", type=int, default=2)
    args = ap.parse_args(argv)
    if args.command == "train":
        train(args.out, epochs=args.epochs, seed=args.seed, holdout=args.holdout, threads=args.threads)
    else:
        evaluate(args.folder, per_sub=args.per_sub)


if __name__ == "__main__":
    main()
