"""Reading a number answer: a plain number by regex, anything else as a whole expression.

Rules (applied to cleaned text: see :func:`catts.answers.latex.clean_math`):

- A plain number: sign, digits with optional thousands separators (``1,000``, ``1{,}000``,
  ``1\\,000``), decimals, scientific notation (``1e5``, ``1.5 \\times 10^{5}``), a fraction ``a/b``
  or ``\\frac{a}{b}`` of plain numbers; degree and percent signs are dropped (``50\\%`` is 50).
- Around it, words and units are allowed: ``12 apples``, ``12 cm^2``, ``3 m/s``, ``x = 2.5``. A unit
  may follow the digits directly or carry an exponent only if it is a known unit (``12cm``, ``cm^2``);
  other words need a space before them and carry no exponent.
- Several numbers: the answer if they are all equal (``12 or 12.0``), else unreadable (``3 or 4``).
- Anything else that holds a digit or a LaTeX command is an expression (``\\sqrt{2}``, ``2\\pi``,
  ``x^2``, ``3!``): read whole by math-verify, never cut down to one of its numbers. A trailing
  known unit is dropped first; an expression that still holds a word is unreadable.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from catts.answers.latex import clean_math
from catts.answers.symbolic import numeric_value, symbolic_equal, to_sympy

# A signed decimal with optional thousands separators ("1,000" but not "1,2") and exponent.
NUM = r"[-+]?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?"
_UNIT_NAME = (r"(?:mm|cm|dm|km|m|in|ft|yd|mi|mg|kg|g|lbs?|oz|ms|sec|s|min|hrs?|h|ml|mL|l|L|cc|"
              r"kN|N|kJ|J|kW|W|mV|V|mA|A|kHz|Hz|kPa|Pa|kcal|cal|rad|deg|px|sq|units?)")
_EXP = r"(?:\^\s*\{?\s*[-+]?\d\s*\}?)"
UNIT = rf"{_UNIT_NAME}{_EXP}?(?:\s*/\s*{_UNIT_NAME}{_EXP}?)*(?![A-Za-z])"
_TOKEN = re.compile(
    rf"\s*(?:(?P<num>{NUM})(?:\s*/\s*(?P<den>{NUM}))?(?!\.?\d)"
    rf"|(?P<unit>{UNIT})"
    rf"|(?<![\d.])(?P<word>[A-Za-z]{{2,}})(?![\w^])"
    rf"|(?P<sep>[,;:]|\.(?!\d)|/(?=\s*[A-Za-z])))"
)
_SCI = re.compile(rf"({NUM})\s*(?:\\times|\\cdot|×|\*)\s*10\s*\^\s*\{{?\s*([-+]?\d+)\s*\}}?")
_FRAC = re.compile(rf"(?<![\d}}])\\[dt]?frac\s*\{{\s*({NUM})\s*\}}\s*\{{\s*({NUM})\s*\}}")  # of plain numbers
_ASSIGN = re.compile(r"^[A-Za-z]\w*\s*=\s*")  # "x = 2.5"
_TRAILING_UNIT = re.compile(rf"(?:(?<=[\d}}])|\s+){UNIT}\s*\.?$")


@dataclass(frozen=True)
class NumberReading:
    """A plain number (``value``), an expression (``expression`` and its sympy form), or a ``reason``."""

    value: float | None = None
    expression: str | None = None
    sympy: object = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.value is not None or self.expression is not None

    def as_float(self) -> float | None:
        return self.value if self.value is not None else numeric_value(self.sympy)


def format_number(x: float) -> str:
    """Canonical string: integers without a decimal point, else 12 significant digits."""
    if x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.12g}"


def _prepare(s: str) -> str:
    s = clean_math(s)
    s = _SCI.sub(r"\1e\2", s)
    s = _FRAC.sub(r"\1/\2", s)
    s = re.sub(r"^(?:\\approx|≈)\s*", "", s)
    return _ASSIGN.sub("", s) if s.count("=") == 1 else s


def _to_float(num: str) -> float:
    return float(num.replace(",", ""))


def plain_number(s: str) -> tuple[float | None, str] | None:
    """(value, reason) when ``s`` is made of numbers, words and units only; None when it is not."""
    values, pos = set(), 0
    while pos < len(s):
        m = _TOKEN.match(s, pos)
        if m is None or m.end() == pos:
            return None if s[pos:].strip() else _summary(values, s)
        pos = m.end()
        if m.group("num") is not None:
            value = _to_float(m.group("num"))
            if m.group("den") is not None:
                den = _to_float(m.group("den"))
                if den == 0:
                    return None, f"division by zero in {s!r}"
                value /= den
            values.add(value)
    return _summary(values, s)


def _summary(values: set[float], s: str) -> tuple[float | None, str]:
    if not values:
        return None, f"no number in {s!r}"
    if len(values) > 1:
        return None, f"several numbers in {s!r}"
    value = values.pop()
    return (value, "") if math.isfinite(value) else (None, f"not a finite number: {s!r}")


def read_number(s: str) -> NumberReading:
    """Read a number answer from ``s`` (a box's content or a sentence) by the module rules."""
    s = _prepare(s)
    plain = plain_number(s)
    if plain is not None:
        value, reason = plain
        return NumberReading(value=value, reason=reason)
    expr = _TRAILING_UNIT.sub("", s).strip()
    if not re.search(r"\d|\\[A-Za-z]", expr):
        return NumberReading(reason=f"no number in {s!r}")
    if re.search(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", " ", expr)):
        return NumberReading(reason=f"not a number or expression: {s!r}")
    parsed = to_sympy(expr)
    if parsed is None:
        return NumberReading(reason=f"unreadable expression {expr!r}")
    return NumberReading(expression=expr, sympy=parsed)


def numbers_match(predicted: NumberReading, gold: NumberReading, rel_tol: float, abs_tol: float) -> bool:
    """Numbers (and closed-form expressions) within tolerance, else symbolic equality."""
    if not (predicted.ok and gold.ok):
        return False
    p, g = predicted.as_float(), gold.as_float()
    if p is not None and g is not None:
        return math.isclose(p, g, rel_tol=rel_tol, abs_tol=abs_tol)
    if predicted.expression is None and gold.expression is None:
        return False
    gold_expr = gold.sympy if gold.sympy is not None else to_sympy(format_number(gold.value))
    pred_expr = predicted.sympy if predicted.sympy is not None else to_sympy(format_number(predicted.value))
    return symbolic_equal(gold_expr, pred_expr)
