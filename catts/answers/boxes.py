"""The one scanner of ``\\boxed{...}`` answers; extraction, answer probability and rewards all use it.

Rules:

- A box opens with ``\\boxed`` or ``\\fbox``, optional whitespace (newlines included), then ``{``.
- Its content runs to the matching ``}``; nested braces are allowed and escaped braces (``\\{``,
  ``\\}``) do not count.
- A box that is never closed runs to the end of the text (``closed=False``), so an unclosed box is
  always the last one.
- Boxes inside a box's content are part of that content, not boxes of their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


@dataclass(frozen=True)
class Box:
    """One ``\\boxed{...}`` in a text: character ranges are [start, end) in that text."""

    span: tuple[int, int]          # the whole box, from the backslash to past the closing brace
    content_span: tuple[int, int]  # the content between the braces
    content: str
    closed: bool


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the ``}`` closing a group whose content starts at ``start`` (None if never closed)."""
    depth, i = 1, start
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{, \}, \\) never opens or closes a group
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def scan_boxes(text: str) -> list[Box]:
    """Every top-level box of ``text`` in order (see the module rules)."""
    boxes: list[Box] = []
    pos = 0
    while (m := _OPEN.search(text, pos)) is not None:
        close = _closing_brace(text, m.end())
        if close is None:
            boxes.append(Box((m.start(), len(text)), (m.end(), len(text)), text[m.end():], False))
            break
        boxes.append(Box((m.start(), close + 1), (m.end(), close), text[m.end():close], True))
        pos = close + 1
    return boxes


def last_boxed(text: str) -> str | None:
    """Content of the last box, or None when there is none or the last one is never closed."""
    boxes = scan_boxes(text)
    return boxes[-1].content if boxes and boxes[-1].closed else None
