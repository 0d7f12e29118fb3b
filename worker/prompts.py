"""Prompts as the server's blocklist sees them, and the blocklist itself.

A prompt is matched after `normalize`: NFKC (full-width letters become ASCII),
combining marks and invisible format characters (zero-width spaces and
joiners, soft hyphens) removed, and case folded, so 'ＢＡＤ', 'b\u200bad', 'bád'
and 'BAD' are one word to it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

_DROP = {"Mn", "Me", "Cf"}  # combining marks, enclosing marks, invisible format characters


def normalize(text: str) -> str:
    """Text as the blocklist sees it: 'ＢＡＤ', 'b\u200bad', 'bád' and 'BAD' all become 'bad'."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) not in _DROP)
    return unicodedata.normalize("NFC", text.casefold())


def _unspaced(text: str) -> bool:
    """True for scripts written without spaces (Chinese, Japanese, Thai...), where a
    blocked word must match anywhere, not only as a whole word."""
    for c in text:
        name = unicodedata.name(c, "")
        if name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL", "THAI", "LAO", "KHMER")):
            return True
    return False


@dataclass(frozen=True)
class Blocklist:
    """Words (whole words; `word*` also blocks longer words starting with it) and
    regular expressions written `/like this/`, all matched case-insensitively on
    the normalized prompt."""

    entries: tuple[str, ...] = ()

    @staticmethod
    def compile_entry(entry: str) -> re.Pattern:
        if len(entry) >= 2 and entry.startswith("/") and entry.endswith("/"):
            return re.compile(entry[1:-1], re.IGNORECASE)
        word = normalize(entry.strip())
        stem = word.endswith("*")
        word = word.rstrip("*").strip()
        body = r"\s+".join(re.escape(part) for part in word.split())
        if _unspaced(word):
            return re.compile(body)
        return re.compile(rf"(?<!\w){body}" + (r"\w*" if stem else r"(?!\w)"))

    def match(self, prompt: str) -> str | None:
        """The entry that blocks `prompt`, or None."""
        if not self.entries or not prompt:
            return None
        text = normalize(prompt)
        for entry, pattern in _compiled(self.entries):
            if pattern.search(text):
                return entry
        return None


@functools.lru_cache(maxsize=64)
def _compiled(entries: tuple[str, ...]) -> list[tuple[str, re.Pattern]]:
    """A blocklist's patterns, compiled once per version of the list (every job is checked)."""
    return [(entry, Blocklist.compile_entry(entry)) for entry in entries]
