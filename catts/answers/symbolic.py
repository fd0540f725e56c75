"""Symbolic reading and comparison of LaTeX expressions through ``math-verify`` (safe in any thread).

math-verify guards parsing and comparison with ``signal.alarm``, which works only in the main
thread; elsewhere it raises. So the main thread keeps its timeout (``TIMEOUT_S``) and any other
thread (graders run in worker pools) calls it with the timeout disabled, on inputs capped at
``MAX_CHARS`` characters. Errors and timeouts read as "not parsed" / "not equal", never raise.
Closed forms are evaluated with Python floats node by node (no exact big-integer arithmetic), and
an expression with a numeric exponent, factorial or exp argument beyond ``_LIMIT`` (1000) is never
evaluated or compared (a power tower such as ``10^{10^{10}}!`` would exhaust memory): it matches
nothing. math-verify (and sympy) are imported on first use, so plain numbers never pay for them.
"""

from __future__ import annotations

import logging
import math
import threading
from functools import lru_cache

TIMEOUT_S = 5
MAX_CHARS = 200

# math-verify warns once that its timeout is off; in worker threads that is by design (see above).
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _timeout() -> int | None:
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=4096)
def to_sympy(latex: str):
    """The sympy object of one LaTeX expression (without ``$``), or None if it cannot be read."""
    if not latex.strip() or len(latex) > MAX_CHARS:
        return None
    from math_verify import LatexExtractionConfig, parse
    from sympy import Basic, MatrixBase

    try:
        parsed = parse(f"${latex}$", extraction_config=[LatexExtractionConfig()],
                       fallback_mode="no_fallback", parsing_timeout=_timeout())
    except Exception:  # math-verify's own timeout exception and anything sympy raises
        return None
    return next((p for p in parsed if isinstance(p, (Basic, MatrixBase))), None)


class _TooLarge(Exception):
    pass


_LIMIT = 1000.0  # the largest exponent or factorial argument that is evaluated or compared
_FUNCS = {"sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
          "atan": math.atan, "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh, "exp": math.exp,
          "Abs": abs, "floor": math.floor, "ceiling": math.ceil, "factorial": lambda x: math.gamma(x + 1),
          "gamma": math.gamma, "log": math.log}
_BOUNDED = ("exp", "factorial", "gamma")  # functions whose argument must stay within _LIMIT


def _float(expr) -> float | None:
    """The value of a closed-form sympy expression with Python floats, node by node (None: unsupported).

    Overflow gives inf; an exponent or factorial argument beyond ``_LIMIT`` raises ``_TooLarge``, so
    power towers such as ``10^{10^{10}}!`` are never computed exactly.
    """
    if expr.is_Number:
        try:
            return float(expr)
        except OverflowError:
            return math.inf
    if expr.is_NumberSymbol:  # pi, E, ...
        return float(expr.evalf(20))
    args = [_float(a) for a in expr.args]
    if not args or any(a is None or math.isnan(a) for a in args):
        return None
    name = type(expr).__name__
    if expr.is_Pow or name in _BOUNDED:
        if abs(args[-1]) > _LIMIT:
            raise _TooLarge
    try:
        if expr.is_Add:
            return math.fsum(args)
        if expr.is_Mul:
            return math.prod(args)
        if expr.is_Pow:
            return math.pow(*args)
        return _FUNCS[name](*args) if name in _FUNCS else None
    except OverflowError:
        return math.inf
    except (ValueError, ZeroDivisionError, TypeError):  # complex results, poles
        return None


def is_tame(expr) -> bool:
    """Whether every numeric exponent / factorial / exp argument in ``expr`` is within ``_LIMIT``."""
    from sympy import Basic, preorder_traversal

    if not isinstance(expr, Basic):
        return True  # a matrix: left to math-verify (its entries are not checked)
    for node in preorder_traversal(expr):
        name = type(node).__name__
        if not (getattr(node, "is_Pow", False) or name in _BOUNDED) or node.args[-1].free_symbols:
            continue
        try:
            bound = _float(node.args[-1])
        except _TooLarge:
            return False
        if bound is not None and not abs(bound) <= _LIMIT:
            return False
    return True


def numeric_value(expr) -> float | None:
    """The value of a closed-form expression (no free symbols) as a finite real float, else None."""
    if not hasattr(expr, "is_Number") or expr.free_symbols or not is_tame(expr):
        return None
    try:
        value = _float(expr)
    except _TooLarge:
        return None
    return value if value is not None and math.isfinite(value) else None


def symbolic_equal(gold, predicted) -> bool:
    """Whether two sympy objects are equal according to ``math_verify.verify`` (False on error)."""
    if gold is None or predicted is None or not (is_tame(gold) and is_tame(predicted)):
        return False
    from math_verify import verify

    try:
        return bool(verify(gold, predicted, timeout_seconds=_timeout()))
    except Exception:
        return False
