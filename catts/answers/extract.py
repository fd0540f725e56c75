"""Extraction of the final answer from a model's output (spec: one ``\\boxed{}``; unparsed is never guessed).

Rules:

- Boxes come from :func:`catts.answers.boxes.scan_boxes`. The last box is the answer; if it is
  never closed the output is unparsed ("unclosed \\boxed{"), whatever came before it.
- Without any box, only strict cues are read: "answer is (B)" / "Answer: B" for a choice (an
  uppercase letter standing alone), "answer is / Answer: <number>" up to the end of that sentence
  for a number, and a last line "Answer: ..." for text. Prose is never mined.
- ``span`` is the [start, end) range of ``text`` that the answer was read from (the box content
  without surrounding spaces, or the letter / number after a cue), so that the answer's
  probability can be read off the same characters (``catts.confidence.answer``).
- Number answers: see :mod:`catts.answers.numeric` (a plain number is canonicalised, an expression
  is kept whole with method "expression"). Choice answers: see :mod:`catts.answers.choice`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from catts.answers.boxes import Box, scan_boxes
from catts.answers.choice import read_choice
from catts.answers.latex import normalize_text, strip_latex
from catts.answers.numeric import NUM, format_number, read_number
from catts.data.sample import ANSWER_TYPES, LETTERS

METHODS = ("boxed", "boxed_option_text", "expression", "option_letter", "number", "text", "none")


@dataclass(frozen=True)
class Extraction:
    """An extracted answer, or the reason why none could be read."""

    answer: str | None
    method: str  # one of METHODS; "none" when unparsed
    reason: str = ""
    raw: str = ""
    span: tuple[int, int] | None = None  # characters of the output the answer was read from
    n_boxes: int = 0                     # boxes in the output (an unclosed one included)


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    """[start, end) without surrounding whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _from_box(text: str, box: Box, answer_type: str, options: Sequence[str], n: int) -> Extraction:
    content, span = box.content, _trimmed(text, *box.content_span)
    if not strip_latex(content):
        return Extraction(None, "none", "empty \\boxed{}", content, None, n)
    if answer_type == "choice":
        letter, method, reason = read_choice(content, options)
        return Extraction(letter, method, reason, content, span if letter else None, n)
    if answer_type == "number":
        reading = read_number(content)
        if reading.value is not None:
            return Extraction(format_number(reading.value), "boxed", "", content, span, n)
        if reading.expression is not None:
            return Extraction(reading.expression, "expression", "", content, span, n)
        return Extraction(None, "none", reading.reason, content, None, n)
    return Extraction(normalize_text(content), "boxed", "", content, span, n)


# "Answer: B", "the answer is (B)", "Final answer: **B**." (the letter must be uppercase
# and stand alone, so "the answer is a dog" and "Answer: Both" are not read as letters).
_CHOICE_CUE = re.compile(
    r"(?i:\banswer(?:\s+is)?\s*[:=]?\s*(?:option\s+)?)(?:\*\*)?"
    r"(?:\(([A-Z])\)|([A-Z])(?=\**(?:[ \t]*$|[.,;:!)])))",
    re.M,
)
_NUMBER_CUE = re.compile(r"(?i)\banswer\s*(?:is\b|[:=])\s*(.*)")
_TEXT_CUE = re.compile(r"(?i)^\W*(?:final\s+)?answer\s*[:=]\s*(.+)$", re.M)
_SENTENCE_END = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[;!?\n]")
_NUM_IN_TEXT = re.compile(rf"(?<![\w.]){NUM}(?:\s*/\s*{NUM})?")


def _choice_cue(text: str, options: Sequence[str], why: str) -> Extraction:
    matches = list(_CHOICE_CUE.finditer(text))
    if not matches:
        return Extraction(None, "none", why)
    m = matches[-1]
    group = 1 if m.group(1) else 2
    letter = m.group(group)
    if options and letter not in LETTERS[: len(options)]:
        return Extraction(None, "none", f"letter {letter} is not an option", m.group(0))
    return Extraction(letter, "option_letter", "", m.group(0), m.span(group))


def _number_cue(text: str, why: str) -> Extraction:
    """The number (or expression) after the last "answer is" / "answer:", up to the end of that sentence."""
    matches = list(_NUMBER_CUE.finditer(text))
    if not matches:
        return Extraction(None, "none", why)
    start = matches[-1].start(1)
    stop = _SENTENCE_END.search(text, start)
    end = stop.start() if stop else len(text)
    seg = text[start:end]
    reading = read_number(seg)
    if reading.value is not None:
        nums = list(_NUM_IN_TEXT.finditer(seg))
        span = (start + nums[0].start(), start + nums[-1].end()) if nums else _trimmed(text, start, end)
        return Extraction(format_number(reading.value), "number", "", seg, span)
    if reading.expression is not None:
        return Extraction(reading.expression, "expression", "", seg, _trimmed(text, start, end))
    return Extraction(None, "none", f"{why}; answer cue unreadable: {reading.reason}", seg)


def _text_cue(text: str, why: str) -> Extraction:
    """Only a last line of the form "Answer: ..." counts."""
    lines = list(re.finditer(r"[^\n]*\S[^\n]*", text))
    m = _TEXT_CUE.match(text, lines[-1].start(), lines[-1].end()) if lines else None
    if m and normalize_text(m.group(1)):
        return Extraction(normalize_text(m.group(1)), "text", "", m.group(1), _trimmed(text, *m.span(1)))
    return Extraction(None, "none", why)


def extract_answer(text: str, answer_type: str, options: Sequence[str] = ()) -> Extraction:
    """Extract the final answer of ``answer_type`` ("choice", "number" or "text") by the module rules.

    ``options`` are the option texts in letter order.
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}, expected one of {ANSWER_TYPES}")
    boxes = scan_boxes(text)
    if boxes:
        last = boxes[-1]
        if not last.closed:
            return Extraction(None, "none", "unclosed \\boxed{", last.content, None, len(boxes))
        return _from_box(text, last, answer_type, options, len(boxes))
    why = "no \\boxed{} in output"
    if answer_type == "choice":
        return _choice_cue(text, options, why)
    if answer_type == "number":
        return _number_cue(text, why)
    return _text_cue(text, why)
