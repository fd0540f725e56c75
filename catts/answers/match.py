"""Whether an extracted answer equals the gold answer (None never matches).

- choice: the same letter (``b``, ``(B)`` and ``B.`` are all B);
- number: plain numbers with ``math.isclose`` ("1" never matches "10"); closed-form expressions
  by their numeric value within the same tolerance (``\\sqrt{2}`` matches 1.4142 at rel_tol 1e-4);
  expressions with symbols by math-verify's symbolic equality (``x^2`` never matches 2); a gold
  that is no number or expression ("yes") falls back to normalised text equality;
- text: normalised text equality.
"""

from __future__ import annotations

from typing import Sequence

from catts.answers.extract import Extraction, extract_answer
from catts.answers.latex import normalize_text
from catts.answers.numeric import numbers_match, read_number
from catts.data.sample import ANSWER_TYPES


def _bare_letter(s: str) -> str:
    return s.strip().strip("().").strip().upper()


def answers_match(
    predicted: str | None,
    gold: str,
    answer_type: str,
    *,
    rel_tol: float = 1e-4,
    abs_tol: float = 1e-6,
) -> bool:
    """Whether ``predicted`` equals ``gold`` by the module rules."""
    if predicted is None:
        return False
    if answer_type == "choice":
        return _bare_letter(predicted) == _bare_letter(gold) != ""
    if answer_type == "number":
        gold_reading = read_number(gold)
        if not gold_reading.ok:
            return normalize_text(predicted) == normalize_text(gold)
        return numbers_match(read_number(predicted), gold_reading, rel_tol, abs_tol)
    if answer_type == "text":
        return normalize_text(predicted) == normalize_text(gold)
    raise ValueError(f"unknown answer_type {answer_type!r}, expected one of {ANSWER_TYPES}")


def score(
    text: str, gold: str, answer_type: str, options: Sequence[str] = ()
) -> tuple[Extraction, bool]:
    """Extract the answer from ``text`` and check it against ``gold``."""
    extraction = extract_answer(text, answer_type, options)
    return extraction, answers_match(extraction.answer, gold, answer_type)
