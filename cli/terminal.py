"""Text from the database or from other people, made safe to print on a terminal.

Prompts, model names, worker names, preset names and errors reach the shell from
the jobs table, from Discord and from remote workers. Requests are cleaned when
they are built (`worker.prompts.clean_prompt`), but rows written before that, and
names that are not prompts, may still hold control characters: an ESC sequence
that clears the screen, sets the window title or hides the text after it, or a
bidirectional override that prints the rest of the line backwards. `safe` writes
each such character as its escape (\\x1b, \\u202e), so it shows instead of acting.
"""

from __future__ import annotations

import re

# C0 and C1 controls (ESC, BEL, NUL, backspace, carriage return...), DEL, the
# bidirectional marks, embeddings, overrides and isolates, the line and paragraph
# separators, and lone surrogates (which cannot even be written as UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
                     "\u2028\u2029\ud800-\udfff]")
_UNSAFE_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                                 "\u2066-\u2069\u2028\u2029\ud800-\udfff]")


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, *, newlines: bool = False) -> str:
    """`text` as it may be printed: every control, bidirectional control and lone
    surrogate written as an escape. `newlines=True` keeps line breaks (a message
    of two lines)."""
    return (_UNSAFE_BUT_NEWLINE if newlines else _UNSAFE).sub(_escape, str(text))
