"""From a free-text prompt to one of the labels a small model was trained on.

The GAN and the VAE cannot read: they are conditioned on (or sample near) a
label, the emoji subcategory. `PromptIndex` turns the training captions into a
small table, saved in the model's config.json, that picks a label for a prompt:

    index = PromptIndex.build(data.captions, data.sublabels.tolist(), len(data.sublabel_names))
    config["prompt_index"] = index.to_dict()
    ...
    index = PromptIndex.from_dict(config["prompt_index"])
    label = index.label_for("a red heart", seed=7)   # the subcategory 'heart'

How a label is picked:

1. The prompt is cut into words: lowercased, plural 's' dropped, stop words
   ("a", "the", "with", ...) left out.
2. If those words are exactly one of the names in the captions (a caption
   such as "cat, cat2" has the names "cat" and "cat2"), the label that most
   often carries that name wins: "cat" is the cat, not a cat face.
3. Otherwise each label scores sum(idf(word) * share of its captions holding
   the word): rare words count more than common ones ("red" more than
   "face"), and a label whose captions all say "heart" beats a large label
   where a few do.
4. If no word is known, the label is a random choice seeded by the image's
   seed, so the same seed always gives the same label.

The GAN is also conditioned on a colour, one of `COLOURS` (each training
image's dominant colour). `colour_for` picks it: a colour word in the prompt
("a blue heart"), else a seeded draw among the colours of the images the
prompt names exactly ("cat": the cat's), else among those of the label.

Torch-free: only the standard library.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field

# Articles: people write them, emoji captions have none.
ARTICLES = frozenset({"a", "an", "the"})
# Words that say nothing about which emoji is meant.
STOP_WORDS = ARTICLES | frozenset(
    "of with and or in on at to for by from as is are be this that it its "
    "my your some very please make draw picture image emoji icon style".split()
)
# Added to each label's caption count when a word's share of a label is taken,
# so that a word in 1 of 1 captions does not outweigh a word in 24 of 25.
_SMOOTHING = 3.0

# What an exact name adds per caption holding it: more than any word score can reach.
_EXACT_NAME_BONUS = 1000.0

_WORD = re.compile(r"[a-z]+|[0-9]+")

# The colours a model may be conditioned on, by index, and the words that name them.
COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "grey", "white")
_COLOUR_WORDS = {c: i for i, c in enumerate(COLOURS)} | {
    "gray": 9, "silver": 9, "gold": 2, "golden": 2, "violet": 5, "cyan": 4, "navy": 4,
    "scarlet": 0, "crimson": 0, "lime": 3,
}


def colour_in(prompt: str) -> int | None:
    """The index in COLOURS of the last colour word of the prompt, or None."""
    found = [_COLOUR_WORDS[w] for w in words_of(prompt) if w in _COLOUR_WORDS]
    return found[-1] if found else None


def _seeded_pick(counts: dict[int, int], seed: int) -> int | None:
    """A draw from {choice: weight}, the same for the same seed; None if empty."""
    if not counts:
        return None
    rng = random.Random(f"colour:{int(seed)}")  # a string seed: its own stream, not label_for's
    r = rng.random() * sum(counts.values())
    for choice, weight in sorted(counts.items()):
        r -= weight
        if r < 0:
            return choice
    return max(counts)


def words_of(text: str) -> list[str]:
    """Lowercased word tokens, a plural 's' dropped, stop words left out."""
    out = []
    for word in _WORD.findall(text.lower()):
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        if word not in STOP_WORDS:
            out.append(word)
    return out


def names_of(caption: str) -> list[str]:
    """The names in a caption ("slice of pizza, pizza" -> ["slice pizza", "pizza"])."""
    names = []
    for part in re.split(r"[,:;]", caption):
        name = " ".join(words_of(part))
        if name and name not in names:
            names.append(name)
    return names


@dataclass
class PromptIndex:
    # word -> {label: number of distinct training captions of that label holding the word}
    words: dict[str, dict[int, int]]
    # name (a caption part, as words) -> {label: number of distinct captions with that name}
    names: dict[str, dict[int, int]]
    # label -> number of distinct training captions of that label (0: the label has none)
    label_sizes: list[int]
    # label -> {colour: distinct (caption, colour) pairs}, and the same per name; empty when
    # the model is not conditioned on colour
    label_colours: list[dict[int, int]] = field(default_factory=list)
    name_colours: dict[str, dict[int, int]] = field(default_factory=dict)

    @property
    def n_labels(self) -> int:
        return len(self.label_sizes)

    # -- building and saving -----------------------------------------------------

    @classmethod
    def build(cls, captions: list[str], labels: list[int], n_labels: int,
              colours: list[int] | None = None) -> "PromptIndex":
        """`colours`, if given, holds each image's index in COLOURS."""
        # Each (caption, label) pair counts once: the emoji set repeats a caption
        # for every skin tone, which must not make people outweigh hearts.
        pairs = sorted({(caption, int(label)) for caption, label in zip(captions, labels)})
        label_colours: list[dict[int, int]] = []
        name_colours: dict[str, dict[int, int]] = {}
        if colours is not None:
            # Skin tones do count here, once per colour they give the caption.
            label_colours = [defaultdict(int) for _ in range(n_labels)]
            name_colours = defaultdict(lambda: defaultdict(int))
            for caption, label, colour in sorted(set(zip(captions, map(int, labels), map(int, colours)))):
                label_colours[label][colour] += 1
                for name in names_of(caption):
                    name_colours[name][colour] += 1
            label_colours = [dict(sorted(c.items())) for c in label_colours]
            name_colours = {name: dict(sorted(c.items())) for name, c in sorted(name_colours.items())}
        words: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        names: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        sizes = [0] * n_labels
        for caption, label in pairs:
            sizes[label] += 1
            for word in set(words_of(caption)):
                words[word][label] += 1
            for name in names_of(caption):
                names[name][label] += 1
        def freeze(table):
            return {key: dict(sorted(counts.items())) for key, counts in sorted(table.items())}

        return cls(words=freeze(words), names=freeze(names), label_sizes=sizes,
                   label_colours=label_colours, name_colours=name_colours)

    def to_dict(self) -> dict:
        """JSON-able and compact: each word's counts as one string "label:count label:count"."""
        def pack(table):
            return {key: " ".join(f"{label}:{n}" for label, n in counts.items())
                    for key, counts in table.items()}

        data = {"words": pack(self.words), "names": pack(self.names), "label_sizes": self.label_sizes}
        if self.label_colours:
            data["colours"] = list(COLOURS)
            data["label_colours"] = list(pack(dict(enumerate(self.label_colours))).values())
            data["name_colours"] = pack(self.name_colours)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "PromptIndex":
        def unpack(table):
            return {key: {int(label): int(n) for label, n in (pair.split(":") for pair in packed.split())}
                    for key, packed in table.items()}

        return cls(words=unpack(data["words"]), names=unpack(data.get("names", {})),
                   label_sizes=[int(n) for n in data["label_sizes"]],
                   label_colours=list(unpack(dict(enumerate(data.get("label_colours", [])))).values()),
                   name_colours=unpack(data.get("name_colours", {})))

    # -- choosing a label ----------------------------------------------------------

    def scores(self, prompt: str) -> list[float]:
        """One score per label; all zero when no word of the prompt is known."""
        scores = [0.0] * self.n_labels
        prompt_words = words_of(prompt)
        n_captions = sum(self.label_sizes)
        for word in set(prompt_words):
            per_label = self.words.get(word)
            if not per_label:
                continue
            idf = math.log(1.0 + n_captions / sum(per_label.values()))
            for label, count in per_label.items():
                scores[label] += idf * count / (self.label_sizes[label] + _SMOOTHING)
        # An exact name ("cat", "green apple", "pizza") outranks any word score;
        # between labels sharing the name, the word scores decide.
        for label, count in self.names.get(" ".join(prompt_words), {}).items():
            scores[label] += _EXACT_NAME_BONUS * count
        return scores

    def label_for(self, prompt: str, seed: int) -> int:
        """The best-scoring label; ties and unknown prompts are settled by `seed`."""
        scores = self.scores(prompt)
        best = max(scores)
        if best > 0:
            candidates = [i for i, s in enumerate(scores) if s >= best - 1e-9]
        else:
            candidates = [i for i, n in enumerate(self.label_sizes) if n > 0] or list(range(self.n_labels))
        if len(candidates) == 1:
            return candidates[0]
        return candidates[random.Random(int(seed)).randrange(len(candidates))]

    def colour_for(self, prompt: str, label: int, seed: int) -> int:
        """The colour (index in COLOURS) to draw `label` in for this prompt and seed."""
        named = colour_in(prompt)
        if named is not None:
            return named
        exact = self.name_colours.get(" ".join(words_of(prompt)))
        pick = _seeded_pick(exact or self.label_colours[label], seed)
        return pick if pick is not None else _seeded_pick(
            {c: 1 for counts in self.label_colours for c in counts} or {0: 1}, seed)
