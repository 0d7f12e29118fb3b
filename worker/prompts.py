"""Prompts as the server's blocklist sees them, and the blocklist itself.

A prompt is matched after `normalize`: NFKC (full-width letters become ASCII),
combining marks and invisible format characters (zero-width spaces and
joiners, soft hyphens) removed, and case folded, so 'ＢＡＤ', 'b\u200bad', 'bád'
and 'BAD' are one word to it. The blocklist also reads it with look-alike
letters of other scripts folded to Latin and with words spelt apart joined up
(`worker.lookalikes`; `Blocklist`), and runs its patterns under a time limit.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import unicodedata
from dataclasses import dataclass

import regex

from worker.lookalikes import fold, spelt_apart

_DROP = {"Mn", "Me", "Cf"}  # combining marks, enclosing marks, invisible format characters


def normalize(text: str) -> str:
    """Text as the blocklist sees it: 'ＢＡＤ', 'b\u200bad', 'bád' and 'BAD' all become 'bad'."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) not in _DROP)
    return unicodedata.normalize("NFC", text.casefold())


# Removed from every prompt before anything else reads it (see `clean_prompt`):
# C0 and C1 control characters other than white space (NUL, ESC, BEL, DEL...);
# bidirectional embeddings, overrides, isolates and marks, which reorder how the text
# around them is shown (a prompt that prints backwards in a terminal, a log or a chat);
# lone surrogates (not text; they cannot even be written as UTF-8) and noncharacters.
_UNWANTED = re.compile(
    "[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f"
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff\ufdd0-\ufdef"
    + "".join(chr(plane << 16 | 0xFFFE) + chr(plane << 16 | 0xFFFF) for plane in range(17))
    + "]")
# Characters that take up no ink: white space, combining and enclosing marks, format
# characters (zero-width spaces and joiners), controls. And letters that show as
# nothing: the Hangul fillers and the Braille blank, favourites for "invisible" text.
_INKLESS_CATEGORIES = {"Zs", "Zl", "Zp", "Mn", "Me", "Cf", "Cc", "Cs"}
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def clean_prompt(text: str) -> str:
    """A prompt as it is stored, drawn and shown: control characters, bidirectional
    controls, lone surrogates and noncharacters removed; tabs, newlines and every
    other run of white space made one space; none at either end. Joiners stay (an
    emoji family is one picture through them; Persian needs the non-joiner).

    'a\\tred\\x00 fox\\u202e\\n' -> 'a red fox'."""
    return " ".join(_UNWANTED.sub("", text).split())


def has_controls(text: str) -> bool:
    """Whether `text` holds anything `clean_prompt` removes, or a tab or a line break:
    for names (models, files), which are refused rather than cleaned."""
    return bool(_UNWANTED.search(text)) or any(unicodedata.category(c) == "Cc" for c in text)


def has_visible(text: str) -> bool:
    """Whether `text` shows anything: False for text made only of spaces, zero-width
    characters, combining marks, controls and blank letters."""
    return any(c not in _BLANK_LETTERS and unicodedata.category(c) not in _INKLESS_CATEGORIES
               for c in text)


def _unspaced(text: str) -> bool:
    """True for scripts written without spaces (Chinese, Japanese, Thai...), where a
    blocked word must match anywhere, not only as a whole word."""
    for c in text:
        name = unicodedata.name(c, "")
        if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER")):
            return True
    return False


# How long the blocklist may take over one prompt, all its patterns together: the gate
# checks inside the transaction that queues the job, holding the database's write lock.
CHECK_TIME_S = 0.25
# When an admin sets a regular expression it is tried on long probe strings, each for at
# most this long; one that backtracks without end ((a+)+$ on 'aaa…a!') is refused then.
PROBE_TIME_S = 0.1
PROBE_CHARS = 2000  # twice the longest prompt (worker.requests.MAX_PROMPT_CHARS)
MAX_ENTRY_CHARS = 200

log = logging.getLogger(__name__)


class Unchecked(Exception):
    """The blocklist ran out of time on a prompt; `entry` is the pattern it was running.
    The gate refuses the prompt as one that could not be checked (`worker.policy`)."""

    def __init__(self, entry: str):
        super().__init__(entry)
        self.entry = entry


def is_regex(entry: str) -> bool:
    return len(entry) >= 2 and entry.startswith("/") and entry.endswith("/")


@dataclass(frozen=True)
class _Compiled:
    """A blocklist ready to match: its words as one pattern (one search a reading, where
    a pattern each would take hundreds), their letters for runs of spaced-out letters,
    and the regular expressions, each searched on its own."""

    words: regex.Pattern | None  # every word entry, as the named group w0, w1...
    word_entries: dict[str, str]  # group name -> entry
    letters: list[tuple[str, str]]  # (a word's letters run together: 'badword', entry)
    regexes: list[tuple[str, regex.Pattern]]  # (entry, pattern)


@dataclass(frozen=True)
class Blocklist:
    """Words (whole words; `word*` also blocks longer words starting with it) and
    regular expressions written `/like this/`, all matched case-insensitively.

    A prompt is read several ways (`readings`), and an entry that matches any of
    them blocks it: normalized; with look-alike letters of other scripts folded to
    Latin (`worker.lookalikes.fold`: 'bаd' with a Cyrillic а); and each of those
    with words spelt apart joined up (`worker.lookalikes.spelt_apart`: 'b.a.d',
    'b a d', 'b-ad'). In runs of spaced-out single letters a word matches anywhere
    ('a b a d' holds 'bad'); whole words are never joined ('class assignment').

    Every pattern runs in the `regex` module, under one time limit for the whole
    prompt (`CHECK_TIME_S`): past it, `match` raises `Unchecked` rather than
    stalling the gate. Regular expressions that backtrack without end are refused
    when they are set (`entry_problem`), so that is for the rare prompt they still
    choke on.
    """

    entries: tuple[str, ...] = ()

    @staticmethod
    def compile_entry(entry: str) -> regex.Pattern:
        """The pattern of one entry (raises regex.error for a bad regular expression)."""
        if is_regex(entry):
            return regex.compile(entry[1:-1], regex.IGNORECASE)
        return regex.compile(_word_pattern(entry))

    def match(self, prompt: str, *, time_limit: float = CHECK_TIME_S) -> str | None:
        """The entry that blocks `prompt`, or None; raises `Unchecked` when the
        patterns take longer than `time_limit` seconds in all."""
        if not self.entries or not prompt:
            return None
        compiled = _compiled(self.entries)  # before the clock starts: once per list
        deadline = time.monotonic() + time_limit
        views, runs = readings(prompt)
        # Words first: quick, and the clearer answer.
        for letters, entry in compiled.letters:
            if any(letters in run for run in runs):
                return entry
        if compiled.words is not None:
            for view in views:
                found = _search(compiled.words, view, deadline, "the blocklist's words")
                if found is not None:
                    return compiled.word_entries[found.lastgroup]
        for entry, pattern in compiled.regexes:
            if any(_search(pattern, view, deadline, entry) is not None for view in views):
                return entry
        return None


def _word_pattern(entry: str) -> str:
    """A word entry as a pattern on normalized text: the whole word ('cat' is not in
    'category'), or a word starting with it ('gore*'); anywhere in scripts written
    without spaces."""
    word = normalize(entry.strip())
    stem = word.endswith("*")
    word = word.rstrip("*").strip()
    body = r"\s+".join(regex.escape(part) for part in word.split())
    if _unspaced(word):
        return body
    return rf"(?<!\w){body}" + (r"\w*" if stem else r"(?!\w)")


def readings(prompt: str) -> tuple[list[str], list[str]]:
    """The texts the blocklist matches for a prompt (normalized; look-alikes folded;
    each with words spelt apart joined up), and the runs of spaced-out single letters."""
    plain = normalize(prompt)
    folded = plain if prompt.isascii() else normalize(fold(unicodedata.normalize("NFKC", prompt)))
    views: list[str] = []
    runs: list[str] = []
    for text in dict.fromkeys((plain, folded)):
        joined, found = spelt_apart(text)
        views += [text, joined]
        runs += found
    return list(dict.fromkeys(views)), list(dict.fromkeys(runs))


def _search(pattern: regex.Pattern, text: str, deadline: float, entry: str) -> regex.Match | None:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Unchecked(entry)
    try:
        return pattern.search(text, timeout=left)
    except TimeoutError:
        raise Unchecked(entry) from None


def entry_problem(entry: str) -> str | None:
    """What is wrong with a blocklist entry as an admin typed it, in one line that
    names it; None if it can be used."""
    if len(entry) > MAX_ENTRY_CHARS:
        return f"Blocklist entry {entry[:40]}… is longer than {MAX_ENTRY_CHARS} characters."
    try:
        pattern = Blocklist.compile_entry(entry)
    except regex.error as exc:
        return f"Blocklist entry {entry} is not a valid regular expression: {exc}."
    if not normalize(entry).strip("*/ "):
        return f"Blocklist entry {entry!r} is empty once normalized."
    if not is_regex(entry):
        return None
    try:
        for text in ("", " ", "a"):  # /x?/, /^/, /\b/: a match that needs no text at all
            found = pattern.search(text, timeout=PROBE_TIME_S)
            if found is not None and found.start() == found.end():
                return (f"Blocklist entry {entry} matches empty text, so it would block "
                        "every prompt.")
        for probe in _probes(entry[1:-1]):
            pattern.search(probe, timeout=PROBE_TIME_S)
    except TimeoutError:
        return (f"Blocklist entry {entry} takes too long on a long prompt (nested repeats "
                "such as (a+)+ backtrack without end); rewrite it without them.")
    return None


def _probes(body: str) -> list[str]:
    """Long strings that make a backtracking pattern show itself: each letter or digit
    of the pattern repeated, then a character that ends the match; words; a prompt."""
    n = PROBE_CHARS
    chars = [c for c in dict.fromkeys(body.casefold()) if c.isalnum()][:12]
    probes = [c * n + "!" for c in dict.fromkeys(chars + ["a", "0"])]
    if len(chars) > 1:
        probes.append(("".join(chars) * n)[:n] + "!")
    probes += [" " * n + "!", ("a " * n)[:n] + "!", ("a photo of a cat, " * n)[:n] + "!"]
    return probes


@functools.lru_cache(maxsize=64)
def _compiled(entries: tuple[str, ...]) -> _Compiled:
    """A blocklist compiled once per version of the list (every job is checked). A
    regular expression that does not compile (set before entries were checked when
    set) is logged and left out."""
    words: dict[str, str] = {}
    alternatives, letters, regexes = [], [], []
    for entry in entries:
        if not is_regex(entry):
            name = f"w{len(words)}"
            words[name] = entry
            alternatives.append(f"(?P<{name}>{_word_pattern(entry)})")
            run = "".join(normalize(entry).rstrip("*").split())
            if len(run) >= 2:
                letters.append((run, entry))
            continue
        try:
            regexes.append((entry, Blocklist.compile_entry(entry)))
        except regex.error as exc:
            log.warning("blocklist entry %r is not a valid regular expression (%s); "
                        "it is ignored until an admin replaces it", entry, exc)
    combined = regex.compile("|".join(alternatives)) if alternatives else None
    return _Compiled(combined, words, letters, regexes)
