"""Answer extraction and matching for model outputs on VQA benchmarks.

Models are prompted to reason step by step and put the final answer inside one
``\\boxed{}``. Extraction never guesses: when no answer can be read without
ambiguity, the result has ``answer=None`` and a ``reason``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

ANSWER_TYPES = ("choice", "number", "text")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Extraction:
    """An extracted answer, or the reason why none could be read."""

    answer: str | None
    method: str  # "boxed", "boxed_option_text", "option_letter", "number", "text" or "none"
    reason: str = ""
    raw: str = ""


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` in ``text`` (nested braces allowed).

    Returns None if there is no ``\\boxed{`` or the last one is never closed.
    """
    starts = list(re.finditer(r"\\boxed\s*\{", text))
    if not starts:
        return None
    begin = starts[-1].end()
    depth = 1
    for i in range(begin, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[begin:i]
    return None


def _strip_latex(s: str) -> str:
    """Remove math delimiters, ``\\text{}``-style wrappers and bold markers."""
    s = s.strip()
    s = re.sub(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}", r"\1", s)
    s = s.replace("**", "")
    s = re.sub(r"^\$+|\$+$", "", s.strip())
    return s.strip()


def normalize_text(s: str) -> str:
    """Lowercase, strip ``$`` and ``\\text{}``, drop a trailing period, collapse spaces."""
    s = _strip_latex(s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s*\.$", "", s)
    return s.lower()


# A signed decimal with optional thousands separators ("1,000" but not "1,2").
_NUM = r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
_NUM_RE = re.compile(rf"(?<![\w.])({_NUM})(?:\s*/\s*({_NUM}))?")


def _parse_number(s: str) -> tuple[float | None, str]:
    """Parse exactly one distinct number from ``s``; return (value, reason)."""
    s = _strip_latex(s).replace("−", "-").replace("{,}", ",")
    s = re.sub(r"\\[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}", r"(\1)/(\2)", s)
    s = re.sub(r"\((\s*[-+]?[\d.,]+\s*)\)", r"\1", s)  # "(3)/(4)" -> "3/4"
    values = set()
    for m in _NUM_RE.finditer(s):
        num = float(m.group(1).replace(",", ""))
        if m.group(2) is not None:
            den = float(m.group(2).replace(",", ""))
            if den == 0:
                return None, f"division by zero in {s!r}"
            num /= den
        values.add(num)
    if not values:
        return None, f"no number in {s!r}"
    if len(values) > 1:
        return None, f"several numbers in {s!r}"
    return values.pop(), ""


def _format_number(x: float) -> str:
    """Canonical string: integers without a decimal point, else 12 significant digits."""
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.12g}"


_PAREN_LETTER = re.compile(r"^(?:(?:option|choice)\s*)?\(([a-z])\)\s*[.:]?\s*(.*)$", re.I | re.S)
_BARE_LETTER = re.compile(r"^(?:(?:option|choice)\s*)?([a-z])(?:\s*[.:)]\s*(.*))?$", re.I | re.S)


def _check_letter(letter: str, options: Sequence[str], method: str, raw: str) -> Extraction:
    """Accept ``letter`` if it names one of ``options`` (any letter when there are none)."""
    letter = letter.upper()
    if options and letter not in _LETTERS[: len(options)]:
        return Extraction(None, "none", f"letter {letter} is not an option", raw)
    return Extraction(letter, method, "", raw)


def _parse_choice(content: str, options: Sequence[str]) -> Extraction:
    """Read an option letter (or an option's text) from boxed content."""
    c = _strip_latex(content)
    if options:
        norm = normalize_text(c)
        hits = [i for i, opt in enumerate(options) if normalize_text(opt) == norm]
        if len(hits) == 1:
            return Extraction(_LETTERS[hits[0]], "boxed_option_text", "", content)
    m = _PAREN_LETTER.match(c) or _BARE_LETTER.match(c)
    if m:
        letter, rest = m.group(1).upper(), normalize_text(m.group(2) or "")
        if rest and options:
            # "B. blue" where blue is option C: the box contradicts itself.
            named = [_LETTERS[i] for i, o in enumerate(options) if normalize_text(o) == rest]
            if named and letter not in named:
                return Extraction(None, "none", f"letter {letter} contradicts option text {rest!r}", content)
        return _check_letter(letter, options, "boxed", content)
    if len(set(re.findall(r"\b[A-Z]\b", c))) > 1:
        return Extraction(None, "none", f"ambiguous choice in \\boxed{{{content}}}", content)
    return Extraction(None, "none", f"no option letter in \\boxed{{{content}}}", content)


# "Answer: B", "the answer is (B)", "Final answer: **B**." (the letter must be uppercase
# and stand alone, so "the answer is a dog" and "Answer: Both" are not read as letters).
_CHOICE_CUE = re.compile(
    r"(?i:\banswer(?:\s+is)?\s*[:=]?\s*(?:option\s+)?)(?:\*\*)?"
    r"(?:\(([A-Z])\)|([A-Z])(?=\**(?:[ \t]*$|[.,;:!)])))",
    re.M,
)
_NUMBER_CUE = re.compile(r"(?i)\banswer\s*(?:is\b|[:=])\s*(.*)")
_TEXT_CUE = re.compile(r"(?i)^\W*(?:final\s+)?answer\s*[:=]\s*(.+)$")


def _sentence(s: str) -> str:
    """Cut ``s`` at the end of its first sentence (a period not inside a number)."""
    return re.split(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|[;!?\n]", s, maxsplit=1)[0]


def _fallback(text: str, answer_type: str, options: Sequence[str], why: str) -> Extraction:
    """Unambiguous "answer is ..." patterns, used only when there is no usable box."""
    if answer_type == "choice":
        matches = list(_CHOICE_CUE.finditer(text))
        if matches:
            m = matches[-1]
            return _check_letter(m.group(1) or m.group(2), options, "option_letter", m.group(0))
    elif answer_type == "number":
        matches = list(_NUMBER_CUE.finditer(text))
        if matches:
            seg = _sentence(matches[-1].group(1))
            value, reason = _parse_number(seg)
            if value is None:
                return Extraction(None, "none", f"{why}; answer cue unreadable: {reason}", seg)
            return Extraction(_format_number(value), "number", "", seg)
    else:
        # Only a last line of the form "Answer: ..." counts; prose is never mined.
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        m = _TEXT_CUE.match(lines[-1]) if lines else None
        if m and normalize_text(m.group(1)):
            return Extraction(normalize_text(m.group(1)), "text", "", m.group(1))
    return Extraction(None, "none", why)


def extract_answer(text: str, answer_type: str, options: Sequence[str] = ()) -> Extraction:
    """Extract the final answer of ``answer_type`` ("choice", "number" or "text").

    The last ``\\boxed{}`` wins; without one, only unambiguous "answer is X"
    patterns are accepted. ``options`` are the option texts in letter order.
    """
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}, expected one of {ANSWER_TYPES}")
    content = last_boxed(text)
    if content is None:
        why = "unbalanced \\boxed{" if re.search(r"\\boxed\s*\{", text) else "no \\boxed{} in output"
        return _fallback(text, answer_type, options, why)
    if not _strip_latex(content):
        return Extraction(None, "none", "empty \\boxed{}", content)
    if answer_type == "choice":
        return _parse_choice(content, options)
    if answer_type == "number":
        value, reason = _parse_number(content)
        if value is None:
            return Extraction(None, "none", reason, content)
        return Extraction(_format_number(value), "boxed", "", content)
    return Extraction(normalize_text(content), "boxed", "", content)


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
    """Whether ``predicted`` equals ``gold``; None never matches.

    Numbers are compared with ``math.isclose``; a non-numeric gold for a
    "number" question falls back to normalised text equality.
    """
    if predicted is None:
        return False
    if answer_type == "choice":
        return _bare_letter(predicted) == _bare_letter(gold) != ""
    if answer_type == "number":
        gold_value, _ = _parse_number(gold)
        if gold_value is None:
            return normalize_text(predicted) == normalize_text(gold)
        pred_value, _ = _parse_number(predicted)
        if pred_value is None:
            return False
        return math.isclose(pred_value, gold_value, rel_tol=rel_tol, abs_tol=abs_tol)
    if answer_type == "text":
        return normalize_text(predicted) == normalize_text(gold)
    raise ValueError(f"unknown answer_type {answer_type!r}, expected one of {ANSWER_TYPES}")


def score(
    text: str, gold: str, answer_type: str, options: Sequence[str] = ()
) -> tuple[Extraction, bool]:
    """Extract the answer from ``text`` and check it against ``gold``."""
    extraction = extract_answer(text, answer_type, options)
    return extraction, answers_match(extraction.answer, gold, answer_type)
