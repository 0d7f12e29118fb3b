"""Two disguises a blocklist must see through, as plain text functions: letters
from another script that look like Latin ones, and words spelt apart.

- `fold`: 'bаd' with a Cyrillic а, 'nοt' with a Greek ο, 'соре' written wholly
  in Cyrillic look-alikes become Latin ('bad', 'not', 'cope'), after Unicode's
  confusables data (UTS #39, the data behind its "skeleton") as the
  `confusable-homoglyphs` library ships it. Only non-ASCII characters are folded,
  each to the ASCII letters it is confusable with.

  Folding every letter would turn real words of other scripts into Latin
  nonsense (Russian 'сор' reads as 'cop'), so a word is folded only where it
  is a disguise: a word that mixes Latin letters with look-alikes (no real word
  does), a word of Latin-script look-alikes ('ɑss'), or a word made wholly of
  another script's look-alikes in a prompt that is otherwise Latin ('a photo of
  аѕѕ'). In a prompt written in that script ('кот на сор') such a word stays
  as it is. The blocklist matches the plain text as well as the folded one,
  so folding can only add refusals, never hide a blocked word of any script.

- `spelt_apart`: 'b a d', 'b.a.d', 'b-a-d', 'b_a_d', 'b*a*d' and 'b-ad' joined
  up into 'bad'. Two spellings are joins: single letters (or characters of
  scripts without spaces) separated by spaces or punctuation, and pieces of a
  word glued by punctuation with no space ('b.ad', 'well-done'). Whole words
  next to each other are never joined: 'class assignment' stays two words, and
  so does 'a ss'.
"""

from __future__ import annotations

import functools
import unicodedata

from confusable_homoglyphs import categories, confusables

# Characters that are part of a word as `fold` reads it: besides letters and digits,
# the marks and invisible format characters that `worker.prompts.normalize` drops.
_IN_WORD = {"Mn", "Me", "Cf"}
# Scripts that are no other language's letters: Latin itself, and the symbols and
# marks every script shares.
_NEUTRAL = {"LATIN", "COMMON", "INHERITED"}
# Glue that splits a word without a space: 'b.a.d', 'b-ad', 'b_a_d', 'b*a*d', 'b~a~d'.
_GLUE = frozenset(".-_*·•'’~+|/\\:‐‑‒–—=^")
# Between spaced-out single letters, also: white space and commas ('b a d', 'b, a, d').
_SPACING = _GLUE | {","}
_MAX_SEPARATOR = 3  # characters between two pieces that are still one word


@functools.lru_cache(maxsize=8192)
def latin_of(char: str) -> str | None:
    """The ASCII letters a non-ASCII character can be mistaken for ('а' Cyrillic -> 'a',
    'Ѕ' -> 'S', 'ɑ' -> 'a'); None for ASCII and for characters like no Latin letter."""
    if char.isascii():
        return None
    found = confusables.is_confusable(char, greedy=True, preferred_aliases=[])
    if not found:
        return None
    latin = sorted({h["c"] for h in found[0]["homoglyphs"]
                    if h["c"].isascii() and h["c"].isalpha()}, key=lambda s: (len(s), s))
    if not latin:
        return None
    # Unicode's prototype of every I-like glyph is 'l'; a capital (Cyrillic І, Greek Ι)
    # stands for a capital I in a word written in capitals.
    return "I" if latin[0] == "l" and char.isupper() else latin[0]


def _script(char: str) -> str:
    return categories.alias(char)


def _words(text: str) -> list[tuple[int, int]]:
    """(start, end) of each word: a run of letters, digits, marks and format characters."""
    spans, start = [], None
    for i, c in enumerate(text):
        inside = c.isalnum() or unicodedata.category(c) in _IN_WORD
        if inside and start is None:
            start = i
        elif not inside and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


def fold(text: str) -> str:
    """`text` with its disguised words in Latin letters (see the module's docstring).
    Expects NFKC text (full-width and mathematical letters already ASCII); keeps
    case, marks and everything that is not a disguise."""
    words = [(start, end, text[start:end]) for start, end in _words(text)]
    kinds = [_kind(word) for _, _, word in words]
    if not any(kind != "plain" for kind in kinds):
        return text
    # Is the prompt written in Latin letters, or in another script? Counted over the
    # words that are not wholly look-alike, which are the ones in question.
    latin = foreign = 0
    for (_, _, word), kind in zip(words, kinds):
        if kind == "lookalike":
            continue
        for c in word:
            if not c.isalpha() or latin_of(c) is not None:
                continue
            if _script(c) == "LATIN":
                latin += 1
            elif _script(c) not in _NEUTRAL:
                foreign += 1
    out, last = [], 0
    for (start, end, word), kind in zip(words, kinds):
        if kind == "disguised" or (kind == "lookalike" and latin >= foreign):
            out += [text[last:start], "".join(latin_of(c) or c for c in word)]
            last = end
    out.append(text[last:])
    return "".join(out)


def _kind(word: str) -> str:
    """'plain' (nothing to fold), 'disguised' (fold it wherever it stands: look-alikes
    mixed with Latin letters, or only Latin-script and symbol look-alikes), or
    'lookalike' (wholly look-alikes of another script: a disguise in a Latin prompt,
    maybe a real word in a prompt of that script)."""
    lookalikes = [c for c in word if latin_of(c) is not None]
    if not lookalikes:
        return "plain"
    letters = [c for c in word if c.isalpha() and latin_of(c) is None]
    if any(_script(c) == "LATIN" for c in letters):
        return "disguised"
    if any(_script(c) not in _NEUTRAL for c in letters):
        return "plain"  # a word of that script with a letter like a Latin one: 'дом'
    if all(_script(c) in _NEUTRAL for c in lookalikes):
        return "disguised"
    return "lookalike"


def spelt_apart(text: str) -> tuple[str, list[str]]:
    """`text` with every word spelt apart joined up ('b.a.d dog' -> 'bad dog'), and
    the runs of single letters that were joined. A blocked word may start anywhere in
    a run: in 'a b a d dog' the article is a single letter too, and the run is 'abad'."""
    tokens = _tokens(text)
    if len(tokens) < 2:
        return text, []
    groups: list[list[tuple[int, int]]] = [[tokens[0]]]
    for prev, cur in zip(tokens, tokens[1:]):
        if _joined(text, prev, cur):
            groups[-1].append(cur)
        else:
            groups.append([cur])
    out, runs, last = [], [], 0
    for group in groups:
        if len(group) == 1:
            continue
        out += [text[last:group[0][0]], "".join(text[s:e] for s, e in group)]
        last = group[-1][1]
        run: list[str] = []
        for s, e in group + [(0, 0)]:  # a sentinel ends the last run
            if e - s == 1:
                run.append(text[s:e])
                continue
            if len(run) >= 2:
                runs.append("".join(run))
            run = []
    out.append(text[last:])
    return "".join(out), runs


def _tokens(text: str) -> list[tuple[int, int]]:
    """(start, end) of each run of letters and digits (underscores are glue, not letters)."""
    spans, start = [], None
    for i, c in enumerate(text):
        if c.isalnum() and start is None:
            start = i
        elif not c.isalnum() and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(text)))
    return spans


def _joined(text: str, a: tuple[int, int], b: tuple[int, int]) -> bool:
    """Whether two neighbouring pieces are one word spelt apart."""
    between = text[a[1]:b[0]]
    if len(between) > _MAX_SEPARATOR:
        return False
    if all(c in _GLUE for c in between):
        return True
    singles = a[1] - a[0] == 1 and b[1] - b[0] == 1
    return singles and all(c in _SPACING or c.isspace() for c in between)
