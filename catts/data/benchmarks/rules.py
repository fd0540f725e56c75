"""Answer rules shared by the benchmark tasks: stated precision, lists, open answers, option parsing.

- ``round_half_up(x, p)``: decimal rounding as people do it (0.125 -> 0.13 at 2 places), on the
  number's shortest decimal form, not on its binary value.
- ``number_of(text)``: a number read by catts's number reader (units, thousands separators,
  ``\\frac``, ``1.5 \\times 10^{3}``); a closed-form LaTeX expression (``2\\sqrt{3}``) gives its value.
- ``open_type(gold)``: "number" when the gold reads as a number or a LaTeX expression (then
  ``catts.answers.answers_match`` compares it: tolerance, math-verify), else "text".
- ``inline_options(question)``: options written inside a question, in the two forms the real data
  uses: ``"...\\nOptions: A: x, B: y, C: z, D: w"`` and MathVista's query form ``"Hint: ...\\nQuestion:
  ...\\nChoices:\\n(A) x\\n(B) y"``.
"""

from __future__ import annotations

import ast
import math
import re
from decimal import ROUND_HALF_UP, Decimal

from catts.answers.latex import normalize_text, strip_latex
from catts.answers.numeric import read_number
from catts.data.image import DataError
from catts.data.sample import LETTERS


def round_half_up(x: float, places: int) -> Decimal:
    return Decimal(repr(float(x))).quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def number_of(text) -> float | None:
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return float(text)
    value = read_number(str(text)).as_float()
    return value if value is not None and math.isfinite(value) else None


def same_at_precision(pred: float, gold: float, places: int) -> bool:
    return round_half_up(pred, places) == round_half_up(gold, places)


def open_type(gold: str) -> str:
    return "number" if read_number(gold).ok else "text"


def decimals(text: str) -> int:
    """Digits after the decimal point of a plain number string ("0.13" -> 2, "12" -> 0)."""
    m = re.fullmatch(r"\s*[-+]?\d*\.(\d+)\s*", text)
    return len(m.group(1)) if m else 0


def precision_value(value) -> int | None:
    """MathVista's ``precision``: an int in the repo JSON, a float (2.0) in the HF parquet; None/NaN: none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip() or value.strip().lower() == "nan":
            return None
        try:
            value = float(value)
        except ValueError as e:
            raise DataError(f"precision {value!r} is not a number") from e
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != int(value):
        raise DataError(f"precision {value!r} is not a whole number of decimal places")
    return int(value)


def parse_list(text: str) -> list | None:
    """A list answer ("[0, 2, 1]", "\\[1.2, 3\\]", "1, 2, 3"), elements as numbers or strings; None if unreadable."""
    s = strip_latex(str(text)).replace("\\left", "").replace("\\right", "").strip()
    s = s.replace("\\[", "[").replace("\\]", "]")
    try:
        value = ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        inner = s[1:-1] if s[:1] in "[(" and s[-1:] in "])" else s
        value = [p.strip() for p in inner.split(",")] if inner.strip() else []
    if isinstance(value, tuple):
        value = list(value)
    return value if isinstance(value, list) else None


def lists_match(pred: str, gold: str, places: int | None) -> bool:
    p, g = parse_list(pred), parse_list(gold)
    if p is None or g is None or len(p) != len(g):
        return False
    for a, b in zip(p, g):
        x, y = number_of(a) if not isinstance(a, list) else None, number_of(b) if not isinstance(b, list) else None
        if x is not None and y is not None:
            if not (same_at_precision(x, y, places) if places is not None else math.isclose(x, y, abs_tol=1e-9)):
                return False
        elif normalize_text(str(a)) != normalize_text(str(b)):
            return False
    return True


def choice_letter(options: list[str], *, letter: str | None = None, text: str | None = None) -> str:
    """The option letter of a multiple-choice gold given as a ``letter`` (MMMU, MathVision, MMStar,
    VLMEvalKit's ``answer_option``) or as the ``text`` of one option (MathVista's ``answer``)."""
    valid = tuple(LETTERS[: len(options)])
    if letter is not None:
        if letter.strip() in valid:
            return letter.strip()
        raise DataError(f"answer {letter!r} is not one of the option letters {', '.join(valid)}")
    hits = [i for i, o in enumerate(options) if o == text] or \
           [i for i, o in enumerate(options) if o.strip() == str(text).strip()]
    if len(hits) == 1:
        return LETTERS[hits[0]]
    raise DataError(f"answer {text!r} is not the text of exactly one of the choices {options}")


def check_options(options: list, what: str = "options") -> list[str]:
    if not isinstance(options, list):
        raise DataError(f"{what} must be a list, not {type(options).__name__}")
    if len(options) > len(LETTERS):
        raise DataError(f"{len(options)} {what}: more than {len(LETTERS)}")
    out = []
    for o in options:
        if isinstance(o, bool) or not isinstance(o, (str, int, float)):
            raise DataError(f"an option must be text, not {type(o).__name__}")
        out.append(str(o))
    return out


# ---------------------------------------------------------------------------- options inside a question

_QUERY = re.compile(r"^\s*Hint:\s*(?P<hint>.*?)\n\s*Question:\s*(?P<q>.*)$", re.S)
_CHOICES = re.compile(r"\n\s*Choices:\s*\n(?P<body>(?:[ \t]*\([A-Z]\)[^\n]*(?:\n|$))+)\s*$")
_OPTIONS = re.compile(r"(?:^|\n)[ \t]*Options:[ \t]*(?=A[:.][ \t])")


def split_query(text: str) -> tuple[str, str, list[str]]:
    """MathVista's query form -> (hint, question, choices); text not in that form -> ("", text, [])."""
    hint, q = "", text
    m = _QUERY.match(text)
    if m:
        hint, q = m.group("hint").strip(), m.group("q")
    choices: list[str] = []
    c = _CHOICES.search(q)
    if c:
        lines = [ln.strip() for ln in c.group("body").splitlines() if ln.strip()]
        if [ln[1] for ln in lines] == list(LETTERS[: len(lines)]):
            choices = [ln[3:].strip() for ln in lines]
            q = q[: c.start()]
    return hint, q, choices


def inline_options(question: str) -> tuple[str, list[str], str] | None:
    """(question without its options, options, hint) when ``question`` carries its options, else None."""
    m = None
    for m in _OPTIONS.finditer(question):
        pass
    if m is not None:
        tail = question[m.end():]
        opts, start = [], 2  # past "A:"
        for letter in LETTERS[1:]:
            nxt = re.search(rf",\s*{letter}[:.]\s", tail[start:])
            if nxt is None:
                break
            opts.append(tail[start: start + nxt.start()].strip())
            start += nxt.end()
        opts.append(tail[start:].strip())
        return question[: m.start()].rstrip(), opts, ""
    hint, q, choices = split_query(question)
    if choices:
        return q.rstrip(), choices, hint
    return None
