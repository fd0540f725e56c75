"""Pure voting logic of CA-TTS (spec sections 6-7) and its baselines; no models involved.

A *trace* is one sampled answer ``A_i`` (a ``str``, or ``None`` when the answer could not be parsed)
with a score ``C_i``. Unparsed traces take no part anywhere, and their scores are not checked (a
failed trace may carry ``None`` or NaN). Invalid inputs raise ``ValueError`` naming the culprit.

Tie rules, chosen so that results never depend on dict order:

* :func:`final_vote` - largest ``V``; then largest ``V_int``; then the smallest answer string.
* :func:`majority_vote`, :func:`deepconf_offline` - the answer whose first trace comes earliest.
* :func:`best_of_n` - the earliest trace among those with the highest score.

Sums that agree within ``TIE_TOL`` (absolute) count as tied, so float rounding cannot pick a winner.
Only numpy is needed at run time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Real

import numpy as np

__all__ = [
    "DECISIVE_RULE", "DEEPCONF_HIGH", "DEEPCONF_LOW", "TIE_TOL", "VoteResult", "best_of_n",
    "decisive", "deepconf_offline", "final_vote", "internal_vote", "majority_vote",
    "paired_bootstrap", "scaling_slope",
]

TIE_TOL = 1e-9
DEEPCONF_LOW = 0.1   # DeepConf-low: keep the top 10% of traces
DEEPCONF_HIGH = 0.9  # DeepConf-high: keep the top 90% of traces
DECISIVE_RULE = "leader-share"

Score = float | None


@dataclass(frozen=True)
class VoteResult:
    """Outcome of a vote: the chosen ``answer`` (``None`` when nothing could vote), its
    ``confidence`` (see each function) and the full ``table`` answer -> value it was chosen from."""

    answer: str | None
    confidence: float
    table: dict[str, float] = field(default_factory=dict)


def _to_float(value: object, name: str) -> float:
    if isinstance(value, (str, bytes)) or not isinstance(value, Real):
        raise ValueError(f"{name} must be a real number, got {type(value).__name__}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out!r}")
    return out


def _check_seq(arg: object, name: str) -> None:
    if isinstance(arg, (str, bytes, Mapping)) or not hasattr(arg, "__len__"):
        raise ValueError(f"{name} must be a sequence, got {type(arg).__name__}")


def _parsed(answers: Sequence[str | None], scores: Sequence[Score], name: str, *,
            missing_as_zero: bool, nonnegative: bool) -> list[tuple[int, str, float]]:
    """Validate traces and return ``(index, answer, score)`` for the parsed ones, in order."""
    _check_seq(answers, "answers")
    _check_seq(scores, name)
    if len(answers) != len(scores):
        raise ValueError(f"length mismatch: {len(answers)} answers but {len(scores)} {name}")
    items = []
    for i, (answer, score) in enumerate(zip(answers, scores)):
        if answer is None:
            continue
        if not isinstance(answer, str):
            raise ValueError(f"answers[{i}] must be a str or None, got {type(answer).__name__}")
        if score is None:
            if not missing_as_zero:
                raise ValueError(f"{name}[{i}] is None but answers[{i}] was parsed")
            score = 0.0
        value = _to_float(score, f"{name}[{i}]")
        if nonnegative and value < 0:
            raise ValueError(f"{name}[{i}] must be >= 0, got {value!r}")
        items.append((i, answer, value))
    return items


def _tally(items: list[tuple[int, str, float]]) -> dict[str, float]:
    """Normalised weighted vote in first-occurrence order; all-zero weights count equally."""
    totals: dict[str, float] = {}
    for _, answer, weight in items:
        totals[answer] = totals.get(answer, 0.0) + weight
    total = sum(totals.values())
    if not math.isfinite(total):
        raise ValueError("weights are too large: their sum overflows")
    if total == 0.0 and items:
        return _tally([(i, answer, 1.0) for i, answer, _ in items])
    return {answer: value / total for answer, value in totals.items()}


def _earliest_leader(shares: dict[str, float]) -> VoteResult:
    """Leader of a first-occurrence-ordered share table; ties go to the earliest answer."""
    if not shares:
        return VoteResult(None, 0.0, {})
    best = max(shares.values())
    answer = next(k for k, v in shares.items() if v >= best - TIE_TOL)
    return VoteResult(answer, shares[answer], shares)


def _check_table(table: Mapping[str, float], name: str) -> dict[str, float]:
    if not isinstance(table, Mapping):
        raise ValueError(f"{name} must be a mapping answer -> value, got {type(table).__name__}")
    out = {}
    for key, value in table.items():
        if not isinstance(key, str):
            raise ValueError(f"{name} keys must be str, got {key!r}")
        out[key] = _to_float(value, f"{name}[{key!r}]")
        if out[key] < 0:
            raise ValueError(f"{name}[{key!r}] must be >= 0, got {out[key]!r}")
    return out


def internal_vote(answers: Sequence[str | None], weights: Sequence[Score]) -> dict[str, float]:
    """Self-consistency vote ``V_int[k] = sum_i w_i 1[A_i = k] / sum_i w_i`` over parsed traces.

    Unparsed answers (``None``) take no part. Weights of parsed answers must be finite and >= 0; a
    ``None`` weight counts as 0. If every parsed weight is 0 the vote falls back to equal weights
    (``V_int[k] = count_k / n_parsed``). Returns shares summing to 1, keyed in order of first
    occurrence, or ``{}`` when no answer parsed.
    """
    return _tally(_parsed(answers, weights, "weights", missing_as_zero=True, nonnegative=True))


def final_vote(v_int: Mapping[str, float], voter: Mapping[str, float] | None = None,
               reflect: str | None = None, check: str | None = None,
               taus: Sequence[float] = (0.5, 0.5, 0.5)) -> VoteResult:
    """CA-TTS final vote ``V = V_int + tau1 c + tau2 1[A_reflect] + tau3 1[A_check]``.

    ``v_int`` is normally :func:`internal_vote`'s output (finite, >= 0). ``voter`` maps candidates
    of ``v_int`` to probabilities ``c_k`` (finite, >= 0); it is divided by its sum, and an empty or
    all-zero voter contributes nothing, as does ``None`` (failed or not run). ``reflect`` and
    ``check`` are the answers of self-reflection and visual self-check, or ``None`` (failed,
    unparsed or not run: contributes nothing); they may be new candidates. ``taus`` are three
    finite values >= 0. ``answer = argmax_k V[k]`` (ties: larger ``V_int``, then the smaller
    string); ``confidence = V[answer] / sum_k V[k]``. When ``V`` is empty or sums to 0 the answer
    is ``None`` with confidence 0.
    """
    base = _check_table(v_int, "v_int")
    _check_seq(taus, "taus")
    if len(taus) != 3:
        raise ValueError(f"taus must be three numbers (tau1, tau2, tau3), got {taus!r}")
    tau = [_to_float(t, f"taus[{j}]") for j, t in enumerate(taus)]
    if min(tau) < 0:
        raise ValueError(f"taus must be >= 0, got {taus!r}")
    table = dict(base)
    if voter is not None:
        probs = _check_table(voter, "voter")
        unknown = sorted(k for k in probs if k not in base)
        if unknown:
            raise ValueError(f"voter names answers that are not candidates of v_int: {unknown}")
        mass = sum(probs.values())
        if mass > 0:
            for key, p in probs.items():
                table[key] += tau[0] * p / mass
    for name, answer, weight in (("reflect", reflect, tau[1]), ("check", check, tau[2])):
        if answer is None:
            continue
        if not isinstance(answer, str):
            raise ValueError(f"{name} must be a str or None, got {type(answer).__name__}")
        table[answer] = table.get(answer, 0.0) + weight
    total = sum(table.values())
    if not table or total <= 0:
        return VoteResult(None, 0.0, table)
    best = max(table.values())
    tied = [k for k, v in table.items() if v >= best - TIE_TOL]
    best_int = max(base.get(k, 0.0) for k in tied)
    answer = min(k for k in tied if base.get(k, 0.0) >= best_int - TIE_TOL)
    return VoteResult(answer, table[answer] / total, table)


def majority_vote(answers: Sequence[str | None]) -> VoteResult:
    """Plain majority over parsed answers: ``table[k] = count_k / n_parsed``; ``confidence`` is the
    winner's share. Ties go to the answer whose first occurrence is earliest."""
    _check_seq(answers, "answers")
    return _earliest_leader(internal_vote(answers, [1.0] * len(answers)))


def best_of_n(answers: Sequence[str | None], confidences: Sequence[Score]) -> VoteResult:
    """Answer of the most confident parsed trace, ``A_{i*}`` with ``i* = argmax_i C_i``.

    Parsed traces need a finite real confidence (any scale; only the order matters). Ties go to
    the earliest trace. ``table[k] = max_{i: A_i = k} C_i``; ``confidence`` is ``C_{i*}`` itself
    (a raw score, not a share). No parsed trace: ``VoteResult(None, 0.0, {})``.
    """
    items = _parsed(answers, confidences, "confidences", missing_as_zero=False, nonnegative=False)
    if not items:
        return VoteResult(None, 0.0, {})
    table: dict[str, float] = {}
    for _, answer, score in items:
        table[answer] = max(table.get(answer, -math.inf), score)
    _, answer, score = max(items, key=lambda item: (item[2], -item[0]))
    return VoteResult(answer, score, table)


def deepconf_offline(answers: Sequence[str | None], confidences: Sequence[Score],
                     keep: float = DEEPCONF_LOW) -> VoteResult:
    """DeepConf offline (Fu et al. 2025): filter by trace confidence, then confidence-weighted vote.

    Among the ``n`` parsed traces keep the ``m = ceil(keep * n)`` (at least 1) with the highest
    confidence ``C_i`` (the caller's bottom-10% group or tail confidence; finite, >= 0); ties at the
    cut keep the earlier trace, so exactly ``m`` are kept. ``keep`` is in (0, 1]: 0.1 is
    DeepConf-low, 0.9 DeepConf-high. Then ``table[k] = sum_{kept} C_i 1[A_i = k] / sum_{kept} C_i``
    (equal weights if all kept ``C_i`` are 0); ``confidence`` is the winner's share; ties go to the
    answer whose first kept trace comes earliest. No parsed trace: ``VoteResult(None, 0.0, {})``.
    """
    keep = _to_float(keep, "keep")
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must be in (0, 1], got {keep!r}")
    items = _parsed(answers, confidences, "confidences", missing_as_zero=False, nonnegative=True)
    if not items:
        return VoteResult(None, 0.0, {})
    m = max(1, math.ceil(keep * len(items) - 1e-9))  # 1e-9: 0.7 * 10 must keep 7, not 8
    ranked = sorted(range(len(items)), key=lambda j: (-items[j][2], j))[:m]
    return _earliest_leader(_tally([items[j] for j in sorted(ranked)]))


def _binary(values: Sequence[float], name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {arr.shape}")
    try:
        arr = arr.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must contain only 0/1 or booleans") from exc
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0/1 or booleans")
    return arr


def paired_bootstrap(correct_a: Sequence[float], correct_b: Sequence[float], n_boot: int = 2000,
                     seed: int = 0) -> dict[str, float]:
    """Accuracy difference of method a over method b on the same questions, with a 95% interval.

    ``diff = mean(z_a) - mean(z_b)``. Each of ``n_boot`` resamples draws the n questions with
    replacement (the same indices for both methods, so the pairing is kept) from
    ``numpy.random.default_rng(seed)``; ``ci_low``/``ci_high`` are the 2.5th and 97.5th
    percentiles of the resampled differences. Values are fractions (x100 for points).
    """
    a, b = _binary(correct_a, "correct_a"), _binary(correct_b, "correct_b")
    if a.size != b.size:
        raise ValueError(f"length mismatch: {a.size} questions in correct_a but {b.size} in correct_b")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    diff = a - b
    rng = np.random.default_rng(seed)
    chunk = max(1, 4_000_000 // diff.size)  # bound the index matrix to ~32 MB
    stats = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        stats[start:stop] = diff[rng.integers(0, diff.size, size=(stop - start, diff.size))].mean(axis=1)
    low, high = np.percentile(stats, [2.5, 97.5])
    return {"diff": float(diff.mean()), "ci_low": float(low), "ci_high": float(high)}


def scaling_slope(ns: Sequence[float], accuracies: Sequence[float]) -> float:
    """Least-squares slope ``s`` of ``accuracy = a + s log2(N)``.

    ``s = sum_j (x_j - x_bar)(y_j - y_bar) / sum_j (x_j - x_bar)^2`` with ``x_j = log2 N_j``: the
    gain per doubling of N. The paper reports a slope "against log N" without naming the base;
    catts uses log2. To convert: per natural-log unit ``s / ln 2``, per decade ``s * log2(10)``;
    multiply by 100 when accuracies are fractions and points are wanted.
    """
    x = np.asarray(ns, dtype=float)
    y = np.asarray(accuracies, dtype=float)
    if x.ndim != 1 or y.ndim != 1 or x.size != y.size:
        raise ValueError(f"ns and accuracies must be 1-D of equal length, got {x.shape} and {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("ns and accuracies must be finite")
    if np.any(x <= 0):
        raise ValueError("ns must be > 0")
    x = np.log2(x)
    if x.size < 2 or np.ptp(x) == 0:
        raise ValueError("need at least two distinct values of N")
    dx = x - x.mean()
    return float(np.dot(dx, y - y.mean()) / np.dot(dx, dx))


def decisive(answers: Sequence[str | None], weights: Sequence[Score] | None = None, *,
             threshold: float, min_agreeing: int = 2) -> bool:
    """Gate for confidence-gated compute (spec section 7), rule ``DECISIVE_RULE = "leader-share"``.

    True when the leader ``k*`` of ``V_int`` (:func:`internal_vote` with ``weights``; equal weights
    when ``None``) is unique, holds ``V_int[k*] >= threshold`` (``threshold`` in (0, 1]), and at
    least ``min_agreeing`` parsed samples answer ``k*``. A tie for the lead is never decisive; no
    parsed answer is not decisive. Use it to stop sampling waves; pass calibrated weights to gate
    on a calibrated share.
    """
    threshold = _to_float(threshold, "threshold")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if isinstance(min_agreeing, bool) or not isinstance(min_agreeing, (int, np.integer)) \
            or min_agreeing < 1:
        raise ValueError(f"min_agreeing must be a positive integer, got {min_agreeing!r}")
    _check_seq(answers, "answers")
    shares = internal_vote(answers, [1.0] * len(answers) if weights is None else weights)
    if not shares:
        return False
    best = max(shares.values())
    leaders = [k for k, v in shares.items() if v >= best - TIE_TOL]
    if len(leaders) > 1:
        return False
    agreeing = sum(1 for a in answers if a == leaders[0])
    return best >= threshold - TIE_TOL and agreeing >= min_agreeing
