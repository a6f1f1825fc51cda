"""Cleaning one document's text: the same input always gives the same output.

    clean_text(text) -> str

In order:

1. Unicode NFC; line endings (CRLF, CR, U+2028/U+2029, form feed) become ``\\n``.
2. Control characters other than newline go (a tab becomes a space): stray bytes such as
   the U+0002 in one State of the Union file carry nothing a model should learn.
3. Boilerplate goes: a Project Gutenberg header (everything up to its ``*** START OF ...``
   line or the old ``*END*THE SMALL PRINT`` line), its footer (from ``*** END OF ...`` or
   ``End of [the] Project Gutenberg ...`` to the end), and page markers such as ``[Page 12]``,
   ``[pg 12]`` or ``{12}`` on a line of their own or inline.
4. Each line loses leading and trailing spaces; runs of spaces become one space.
5. Runs of blank lines become one blank line; the text loses leading and trailing blank lines.

The caller drops what is shorter than ``processing.min_chars`` afterwards (:func:`is_short`).
"""

from __future__ import annotations

import re
import unicodedata

_NEWLINES = re.compile(r"\r\n|[\r\u2028\u2029\x0b\x0c\x85]")
# C0 and C1 controls except \t and \n (tab is turned into a space below).
_CONTROLS = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")

_GUTENBERG_START = re.compile(
    r"^[^\n]*?(?:\*{3}\s*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*"
    r"|\*END\*THE SMALL PRINT![^\n]*)\n",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^[^\n]*?(?:\*{3}\s*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK"
    r"|End of (?:the )?Project Gutenberg'?s? )",
    re.IGNORECASE | re.MULTILINE,
)
_PAGE_LINE = re.compile(r"^[ \t]*(?:\[\s*(?:page|pg\.?|p\.)\s*[0-9ivxlcdm]+\s*\]|\{\s*[0-9]+\s*\})[ \t]*$",
                        re.IGNORECASE | re.MULTILINE)
_PAGE_INLINE = re.compile(r"\[\s*(?:page|pg\.?)\s*[0-9ivxlcdm]+\s*\]", re.IGNORECASE)
_SPACES = re.compile(r" {2,}")
_LINE_EDGES = re.compile(r"^ +| +$", re.MULTILINE)
_BLANK_RUNS = re.compile(r"\n{3,}")


def remove_boilerplate(text: str) -> str:
    """Drop Project Gutenberg header/footer/license blocks and page markers, where present."""
    if "gutenberg" in text[:20000].lower() or "small print" in text[:20000].lower():
        start = _GUTENBERG_START.search(text)
        if start is not None:
            text = text[start.end() :]
    if "gutenberg" in text.lower():
        end = _GUTENBERG_END.search(text)
        if end is not None:
            text = text[: end.start()]
    text = _PAGE_LINE.sub("", text)
    return _PAGE_INLINE.sub("", text)


def clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    text = _NEWLINES.sub("\n", text)
    text = _CONTROLS.sub("", text.replace("\t", " "))
    text = remove_boilerplate(text)
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGES.sub("", text)
    text = _BLANK_RUNS.sub("\n\n", text)
    return text.strip("\n")


def is_short(text: str, min_chars: int) -> bool:
    return len(text) < min_chars
