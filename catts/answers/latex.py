"""Cleaning of answer strings: math delimiters, text wrappers, LaTeX spacing, degree and percent signs."""

from __future__ import annotations

import re

_WRAPPER = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|mbox|operatorname)\s*\{([^{}]*)\}")
# Thin/medium/thick spaces, "\ ", "~", \quad: a space. A thin space between digit groups is a
# thousands separator ("1\,000"). "\!" is a negative space: nothing.
_SPACING = re.compile(r"\\[,;:> ]|\\(?:q?quad|enspace|thinspace)\b|~")
_THIN_THOUSANDS = re.compile(r"(?<=\d)(?:\\[,;: ]|~)(?=\d{3}(?!\d))")
_DEGREE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree\b|\\circ\b")
_PERCENT = re.compile(r"\\?%")


def strip_latex(s: str) -> str:
    """Remove math delimiters (``$``, ``\\(``, ``\\[``), ``\\text{}``-style wrappers and bold markers."""
    s = s.strip()
    for _ in range(3):  # nested wrappers: \text{\textbf{B}}
        s = _WRAPPER.sub(r"\1", s)
    s = s.replace("**", "")
    s = re.sub(r"^\\[(\[]|\\[)\]]$", "", s.strip())
    s = re.sub(r"^\$+|\$+$", "", s.strip())
    return s.strip()


def clean_math(s: str) -> str:
    """:func:`strip_latex`, then LaTeX spacing, ``\\left``/``\\right``, degree, percent and ``\\$`` signs removed."""
    s = strip_latex(s).replace("−", "-").replace("{,}", ",")
    s = _THIN_THOUSANDS.sub("", s)
    s = _SPACING.sub(" ", s).replace("\\!", "")
    s = re.sub(r"\\(?:left|right)\b", "", s)
    s = _DEGREE.sub("", s)
    s = _PERCENT.sub("", s).replace("\\$", "")  # "\$12": a currency sign
    return re.sub(r"\s+", " ", s).strip()


def normalize_text(s: str) -> str:
    """Lowercase, strip ``$`` and ``\\text{}``, drop a trailing period, collapse spaces."""
    s = strip_latex(s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s*\.$", "", s)
    return s.lower()
