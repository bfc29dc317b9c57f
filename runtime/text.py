"""The one rule for text the tokenizer cannot take, applied where text enters (API, CLI, server).

Refused, with an `InvalidTextError` naming the item: lone or reversed surrogates (not Unicode: bytes decoded
with ``surrogateescape``, UTF-16 cut mid-pair), NUL (binary data, or UTF-16 read as 8-bit text) and texts
longer than `MAX_TEXT_CHARS`. Normalized before tokenization, so they encode: the byte order mark and the
bidi controls are removed (invisible marks that carry no words), the other control characters become a space
(TAB, LF, VT, FF and CR are whitespace and stay). The length limit holds after the tokenizer's NFKC as well.
docs/text-input.md gives the reasons.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from .errors import InvalidTextError

# Past this many characters a text is refused before tokenization: 1 Mi characters take ~1 s and ~100 MB to
# tokenize (docs/text-input.md), about 30 times the longest document the model reads by default.
MAX_TEXT_CHARS = 1 << 20
# The tokenizer normalizes with NFKC (XLM-RoBERTa's precompiled nmt_nfkc map; the toy's NFKC) before it counts
# anything, and NFKC turns one character into up to 18 (U+FDFA): 1 Mi of them took 63 s and 11 GB in the server.
# So the limit holds after NFKC too, checked only on texts long enough to cross it.
NFKC_MAX_EXPANSION = 18

_SURROGATES = "\ud800-\udfff"
_REFUSED = re.compile(f"[\x00{_SURROGATES}]")
# Invisible marks that carry no words: the byte order mark (U+FEFF) and the bidi controls (ALM, LRM, RLM,
# the embeddings and overrides U+202A-U+202E, the isolates U+2066-U+2069).
REMOVED_CHARS = "\ufeff\u061c\u200e\u200f" + "".join(map(chr, range(0x202A, 0x202F))) + "".join(
    map(chr, range(0x2066, 0x206A))
)
# Control characters other than the whitespace ones (TAB, LF, VT, FF, CR), C1 controls included.
SPACED_CHARS = "".join(chr(c) for c in [*range(0x01, 0x09), *range(0x0E, 0x20), *range(0x7F, 0xA0)])
_NORMALIZED = re.compile("[" + re.escape(REMOVED_CHARS + SPACED_CHARS) + "]")
_TABLE = {**dict.fromkeys(map(ord, REMOVED_CHARS)), **dict.fromkeys(map(ord, SPACED_CHARS), " ")}
# JSON Schema of a text field: what the server's OpenAPI schema says of every text (schemas.py).
TEXT_JSON_SCHEMA = {"type": "string", "maxLength": MAX_TEXT_CHARS, "pattern": "^[^\\u0000]*$"}


def nfkc_length(text: str) -> int:
    """How many characters `text` has under NFKC. The whole text at once: NFKC composes and reorders marks across
    any cut, so a count by pieces is off by a few characters at each cut. Ordinary text passes the quick check;
    the worst case (1 Mi x U+FDFA) takes 1.5 s and 115 MB, against 63 s and 11 GB to tokenize it."""
    return len(text) if unicodedata.is_normalized("NFKC", text) else len(unicodedata.normalize("NFKC", text))


def text_problem(text: str) -> str | None:
    """Why `text` is refused (a phrase naming the character and its position), or None when it is usable."""
    if len(text) > MAX_TEXT_CHARS:
        return f"has {len(text):,} characters, over the {MAX_TEXT_CHARS:,} a text may have; split it"
    match = _REFUSED.search(text)
    if match is None:
        if len(text) * NFKC_MAX_EXPANSION > MAX_TEXT_CHARS and nfkc_length(text) > MAX_TEXT_CHARS:
            return (f"has {len(text):,} characters that the tokenizer's Unicode normalization (NFKC) expands past "
                    f"the {MAX_TEXT_CHARS:,} a text may have (U+FDFA alone becomes 18); split it")
        return None
    char, at = match.group(), match.start()
    if char == "\x00":
        return (
            f"holds a NUL character (U+0000) at position {at}: binary data, or UTF-16 read as 8-bit text? "
            "Remove it or decode the source properly"
        )
    return (
        f"holds a lone surrogate U+{ord(char):04X} at position {at}: not Unicode text (bytes decoded with "
        "surrogateescape, or UTF-16 cut mid-pair); decode the source as UTF-8, or replace it"
    )


def check_text(text: str, what: str) -> None:
    """InvalidTextError naming `what` when `text` is refused."""
    problem = text_problem(text)
    if problem is not None:
        raise InvalidTextError(what, None, problem)


def check_texts(texts: Sequence[str], what: str = "texts") -> None:
    """InvalidTextError naming `what[i]` for the first refused text."""
    for i, text in enumerate(texts):
        problem = text_problem(text)
        if problem is not None:
            raise InvalidTextError(what, i, problem)


def normalize_text(text: str) -> str:
    """`text` as the tokenizer gets it: BOM and bidi controls removed, other control characters as spaces."""
    if _NORMALIZED.search(text) is None:
        return text
    return text.translate(_TABLE)
