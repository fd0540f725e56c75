"""CDRL rewards (spec section 5) as TRL reward functions.

TRL's ``GRPOTrainer`` calls every reward function as ``func(prompts=..., completions=..., completion_ids=...,
**columns)``, where ``columns`` are the dataset's columns other than ``prompt`` (one value per completion), the
extra fields a ``rollout_func`` returned, and ``trainer_state``, ``log_extra``, ``log_metric``. A function returns
one float per completion (None: not applicable). Completions are strings, or, for conversational prompts, lists of
messages ``[{"role": "assistant", "content": "..."}]`` (content may also be a list of typed text parts).

The reward of rollout j (spec section 5):

    r_j = R_output_j + R_format_j + R_conf_j
    R_conf_j = alpha * tanh(beta * (C_j - C'_j))     perception term
             + (2 * R_output_j - 1) * Cnorm_j         calibration term

- ``format_reward``: R_format = 1 iff the completion has exactly one ``\\boxed{}`` (``catts.answers.scan_boxes``,
  the one box scanner), closed, with non-empty content; else 0.
- ``output_reward``: R_output = 1 iff the answer counts (see "strict" below) and matches the gold answer by
  ``catts.answers.answers_match``; else 0.
- ``perception_reward``: tanh(beta * (C_j - C'_j)), weighted by alpha.
- ``calibration_reward``: the calibration term; ``calibration="brier"`` is a Brier-like variant.
- ``confidence_reward``: R_conf, both terms in one function.
- ``cdrl_rewards(alpha, beta, ...)``: the functions and their weights, for ``GRPOTrainer(reward_funcs=...)`` and
  ``GRPOConfig(reward_weights=...)``.

Confidences are inputs, not computed here: a column ``confidence`` (C_j, one float per completion, computed by the
rollout from the policy's own raw top-k distribution over its completion on the original image) and optionally
``noisy_confidence`` (C'_j: of the paired rollout on the noised image, or, the cheaper option, of the same
completion teacher-forced on the noised image). ``completion_confidence`` maps one completion's log-probabilities to
the chosen confidence with ``catts.confidence``. C (``kind="mean"``, the paper's) is no probability: it lies in
[log k, inf), so the calibration term needs Cnorm.

Choices of catts where the spec is silent (each stated where it applies):

- strict (default): an answer counts only when the format is right (exactly one closed, non-empty box) and
  ``catts.answers.extract_answer`` reads an answer from it. Everything else is *unparsed*: R_output = 0 and the
  worst calibration score, -1 (a loose format check was gamed in a prototype: unparsed answers had C = 0, the best
  min-max score for a wrong answer). ``strict=False`` counts what catts's evaluation counts (the last box, or an
  "Answer: ..." cue without a box).
- groups: Cnorm is computed within each group of rollouts of one prompt, identified by the ``pair_id`` column
  (rollouts sharing a pair id form one group, wherever they stand), or by consecutive blocks of ``num_generations``
  (TRL orders completions in blocks of num_generations per prompt); with both, every block must hold one pair id.
- Cnorm_j = (C_j - min C) / (max C - min C), min and max over the group's answered (not unparsed) rollouts with a
  finite C; 0.5 for all of them when max - min <= ``tie_tol`` (equal confidences: no spurious signal) or when fewer
  than two are answered; 0.5 for an answered rollout without a finite C.
- the perception term applies to every rollout with finite C and C' (unparsed ones included, as the spec writes
  it); without C' it is 0 in ``confidence_reward`` and None in ``perception_reward``.

Multi-GPU: TRL scores each process's slice of the generation batch, so a group is seen whole only when that slice
holds whole groups. Give ``num_generations`` to have a split group raise instead of normalising over part of it.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from catts.answers import answers_match, extract_answer, scan_boxes
from catts.answers.latex import strip_latex
from catts.confidence.answer import answer_probability, sequence_probability, trace_probability
from catts.confidence.trace import trace_confidences
from catts.models.backend import Trace

WORST_CALIBRATION = -1.0   # the calibration score of an unparsed completion (the lowest either variant gives)
TIE_CNORM = 0.5            # Cnorm when a group's confidences are (nearly) equal
TIE_TOL = 1e-6             # max C - min C at or below this counts as equal
CALIBRATIONS = ("spec", "brier")
FORMAT_RULES = ("box", "answer")
NORMALIZATIONS = ("group", "none")
TRACE_KINDS = ("mean", "tail", "bottom10", "lowest_window")
CONFIDENCE_KINDS = (*TRACE_KINDS, "answer_prob", "trace_prob", "sequence_prob")
PROBABILITY_KINDS = ("answer_prob", "trace_prob", "sequence_prob")

# ---------------------------------------------------------------------------- completions


def completion_text(completion: Any) -> str:
    """The text of one completion: a string as it is; a conversational completion (a list of messages, or one
    message dict) by its last assistant message (its last message when none is marked assistant), whose content
    is a string or a list of typed parts (the ``text`` of the text parts, joined)."""
    if isinstance(completion, str):
        return completion
    messages = [completion] if isinstance(completion, dict) else list(completion)
    if not messages:
        return ""
    if not all(isinstance(m, dict) for m in messages):
        raise TypeError(f"a completion must be a string or a list of message dicts, got {type(completion).__name__}")
    assistant = [m for m in messages if m.get("role", "assistant") == "assistant"]
    content = (assistant or messages)[-1].get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content
                   if isinstance(part, dict) and part.get("type", "text") == "text")


def format_ok(text: str) -> bool:
    """Exactly one box (``scan_boxes``: nested boxes are content, an unclosed one counts as a box), closed,
    whose content is non-empty after ``strip_latex`` (``\\boxed{ }`` and ``\\boxed{\\text{}}`` are empty)."""
    boxes = scan_boxes(text)
    return len(boxes) == 1 and boxes[0].closed and bool(strip_latex(boxes[0].content))


@dataclass(frozen=True)
class Graded:
    """One completion judged: the format, whether its answer counts (parsed), and whether it is correct."""

    formatted: bool
    parsed: bool
    correct: bool
    answer: str | None = None


def grade(text: str, answer: Any, answer_type: str, options: Sequence[str] | None = (), *,
          strict: bool = True) -> Graded:
    """Judge one completion text against the gold ``answer`` (see the module's "strict")."""
    formatted = format_ok(text)
    extraction = extract_answer(text, answer_type, list(options or ()))
    parsed = extraction.answer is not None and (formatted or not strict)
    correct = parsed and answers_match(extraction.answer, str(answer), answer_type)
    return Graded(formatted, parsed, correct, extraction.answer if parsed else None)


def _column(name: str, values: Any, n: int) -> list:
    if values is None or isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise ValueError(f"reward column {name!r} must be a list with one value per completion, got {values!r:.80}")
    if len(values) != n:
        raise ValueError(f"reward column {name!r} has {len(values)} values for {n} completions")
    return list(values)


def _grades(completions, answer, answer_type, options, strict: bool) -> list[Graded]:
    n = len(completions)
    answers = _column("answer", answer, n)
    types = _column("answer_type", answer_type, n)
    opts = [()] * n if options is None else _column("options", options, n)
    return [grade(completion_text(c), a, t, o, strict=strict)
            for c, a, t, o in zip(completions, answers, types, opts)]


def _floats(name: str, values: Any, n: int) -> np.ndarray:
    """One float per completion; None -> NaN."""
    return np.array([math.nan if v is None else float(v) for v in _column(name, values, n)], dtype=np.float64)

# ---------------------------------------------------------------------------- groups and Cnorm


def group_indices(n: int, *, pair_id: Sequence | None = None, num_generations: int | None = None) -> list[list[int]]:
    """The groups of ``n`` completions, as index lists.

    - ``num_generations`` G: consecutive blocks of G (n must be a multiple of G); with ``pair_id`` too, each block
      must hold one pair id, else ValueError (a group split across blocks, e.g. a process's slice holding part
      of a group);
    - ``pair_id`` alone: completions with the same pair id form a group, wherever they stand, in the order of
      their first appearance;
    - neither: ValueError.
    """
    if num_generations is not None:
        g = int(num_generations)
        if g < 1 or n % g:
            raise ValueError(f"{n} completions are no whole number of groups of num_generations={g}")
        blocks = [list(range(i, i + g)) for i in range(0, n, g)]
        if pair_id is not None:
            ids = _column("pair_id", pair_id, n)
            for b in blocks:
                if len({ids[i] for i in b}) != 1:
                    raise ValueError(f"completions {b[0]}..{b[-1]} (one block of num_generations={g}) hold several "
                                     f"pair ids {sorted({str(ids[i]) for i in b})}: a group is split; Cnorm needs "
                                     "whole groups in one call")
        return blocks
    if pair_id is None:
        raise ValueError("cannot tell the groups: give a pair_id column or num_generations")
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(_column("pair_id", pair_id, n)):
        groups.setdefault(key, []).append(i)
    return list(groups.values())


def minmax_cnorm(values: Sequence[float], *, tie_tol: float = TIE_TOL) -> np.ndarray:
    """Min-max normalisation of one group: (v - min) / (max - min) over the finite values; every value is 0.5
    when fewer than two are finite or max - min <= ``tie_tol``; a non-finite value gets 0.5."""
    v = np.asarray(values, dtype=np.float64)
    out = np.full(v.shape, TIE_CNORM)
    finite = np.isfinite(v)
    if finite.sum() >= 2:
        lo, hi = v[finite].min(), v[finite].max()
        if hi - lo > tie_tol:
            out[finite] = (v[finite] - lo) / (hi - lo)
    return out


def _probabilities(conf: np.ndarray, grades: list[Graded], groups: list[list[int]], normalize: str,
                   tie_tol: float) -> tuple[np.ndarray, int]:
    """p_j for every answered completion (NaN for unparsed ones) and the number of tied groups."""
    p = np.full(conf.shape, math.nan)
    answered = np.array([g.parsed for g in grades], dtype=bool)
    if normalize == "none":
        bad = answered & np.isfinite(conf) & ((conf < 0) | (conf > 1))
        if bad.any():
            raise ValueError(f"normalize='none' needs probability-valued confidences in [0, 1], got "
                             f"{conf[bad][:3].tolist()}: C (kind 'mean') is no probability, use normalize='group'")
        p[answered] = np.where(np.isfinite(conf[answered]), conf[answered], TIE_CNORM)
        return p, 0
    tied = 0
    for members in groups:
        idx = np.array([i for i in members if answered[i]], dtype=int)
        if not len(idx):
            continue
        p[idx] = minmax_cnorm(conf[idx], tie_tol=tie_tol)
        tied += bool(np.all(p[idx] == TIE_CNORM))
    return p, tied


def calibration_score(p: float, correct: bool, calibration: str = "spec") -> float:
    """The calibration score of one answered completion with probability-like confidence p in [0, 1] and
    correctness z in {0, 1}:

    - ``"spec"``: (2 z - 1) * p, in [-1, 1] (right: +p, wrong: -p);
    - ``"brier"``: 1 - 2 (p - z)^2, in [-1, 1], a strictly proper score: its expectation under a true
      probability q of being right is highest at p = q, where the spec's term pushes p to 0 or 1.

    Both give -1 (``WORST_CALIBRATION``) for a confident wrong answer; an unparsed completion gets -1 directly."""
    z = 1.0 if correct else 0.0
    if calibration == "spec":
        return (2.0 * z - 1.0) * p
    if calibration == "brier":
        return 1.0 - 2.0 * (p - z) ** 2
    raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")


def _calibration(completions, answer, answer_type, options, confidence, pair_id, *, calibration: str,
                 normalize: str, num_generations: int | None, strict: bool, tie_tol: float,
                 log_metric: Callable | None) -> np.ndarray:
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    n = len(completions)
    if confidence is None:
        raise ValueError("the calibration term needs a 'confidence' column (one float per completion)")
    conf = _floats("confidence", confidence, n)
    grades = _grades(completions, answer, answer_type, options, strict)
    groups = group_indices(n, pair_id=pair_id, num_generations=num_generations) if normalize == "group" else []
    p, tied = _probabilities(conf, grades, groups, normalize, tie_tol)
    scores = np.array([calibration_score(p[i], g.correct, calibration) if g.parsed else WORST_CALIBRATION
                       for i, g in enumerate(grades)], dtype=np.float64)
    if callable(log_metric) and n:
        log_metric("cdrl/unparsed", float(np.mean([not g.parsed for g in grades])))
        if groups:
            log_metric("cdrl/tied_groups", tied / len(groups))
    return scores


def _perception(confidence, noisy_confidence, n: int, beta: float) -> np.ndarray | None:
    """tanh(beta * (C - C')) per completion (NaN where either is missing); None without a C' column."""
    if noisy_confidence is None:
        return None
    if confidence is None:
        raise ValueError("the perception term needs a 'confidence' column beside 'noisy_confidence'")
    c, c_noisy = _floats("confidence", confidence, n), _floats("noisy_confidence", noisy_confidence, n)
    return np.tanh(beta * (c - c_noisy))

# ---------------------------------------------------------------------------- reward functions


def format_reward(completions: list, answer: list | None = None, answer_type: list | None = None,
                  options: list | None = None, *, rule: str = "box", **kwargs) -> list[float]:
    """R_format_j = 1 iff completion j holds exactly one ``\\boxed{...}`` (``\\fbox`` counts too), closed, with
    non-empty content; else 0. Two boxes, an unclosed box, an empty box or no box: 0.

    ``rule="answer"`` (a catts extension) also asks that the box hold an answer under the sample's own rules (the
    probe's *parsed*: for a multiple-choice question, one of the options), so a boxed word that is no option scores
    0 here as it is unparsed in the probe."""
    if rule not in FORMAT_RULES:
        raise ValueError(f"rule must be one of {FORMAT_RULES}, got {rule!r}")
    if rule == "box":
        return [1.0 if format_ok(completion_text(c)) else 0.0 for c in completions]
    if answer is None or answer_type is None:
        raise ValueError("the format rule 'answer' needs the answer and answer_type columns")
    return [1.0 if g.parsed else 0.0 for g in _grades(completions, answer, answer_type, options, True)]


def output_reward(completions: list, answer: list, answer_type: list, options: list | None = None, *,
                  strict: bool = True, **kwargs) -> list[float]:
    """R_output_j = 1 iff the answer of completion j counts and ``answers_match(answer_j, gold_j, answer_type_j)``;
    else 0 (unparsed: 0). strict (default): the answer counts only with R_format_j = 1 (see the module)."""
    return [1.0 if g.correct else 0.0 for g in _grades(completions, answer, answer_type, options, strict)]


def perception_reward(completions: list, confidence: list | None = None, noisy_confidence: list | None = None, *,
                      beta: float, **kwargs) -> list[float | None]:
    """P_j = tanh(beta * (C_j - C'_j)): positive when the rollout is more confident on the original image than
    on the noised one (C'_j of the paired rollout, or of the same completion teacher-forced on the noised image).
    Weighted by alpha (``cdrl_rewards``). None (not applicable; TRL counts it 0) where C or C' is missing, and for
    every completion when there is no ``noisy_confidence`` column."""
    term = _perception(confidence, noisy_confidence, len(completions), beta)
    if term is None:
        return [None] * len(completions)
    return [float(t) if math.isfinite(t) else None for t in term]


def calibration_reward(completions: list, answer: list, answer_type: list, options: list | None = None,
                       confidence: list | None = None, pair_id: list | None = None, *, calibration: str = "spec",
                       normalize: str = "group", num_generations: int | None = None, strict: bool = True,
                       tie_tol: float = TIE_TOL, log_metric: Callable | None = None, **kwargs) -> list[float]:
    """The calibration term K_j.

    answered j: K_j = (2 z_j - 1) * p_j (``"spec"``) or 1 - 2 (p_j - z_j)^2 (``"brier"``), z_j = R_output_j;
    unparsed j: K_j = -1, the worst either variant gives.

    p_j = Cnorm_j (``normalize="group"``): (C_j - min C) / (max C - min C) within j's group (``group_indices``),
    min and max over the group's answered rollouts, 0.5 for all when max - min <= ``tie_tol``. With
    ``normalize="none"`` p_j = C_j itself, which must then be a probability (kinds ``answer_prob``,
    ``trace_prob``); a missing C gives p_j = 0.5. Logs ``cdrl/unparsed`` and ``cdrl/tied_groups`` (the share of
    groups whose Cnorm is all 0.5) through TRL's ``log_metric``."""
    return _calibration(completions, answer, answer_type, options, confidence, pair_id, calibration=calibration,
                        normalize=normalize, num_generations=num_generations, strict=strict, tie_tol=tie_tol,
                        log_metric=log_metric).tolist()


def confidence_reward(completions: list, answer: list, answer_type: list, options: list | None = None,
                      confidence: list | None = None, noisy_confidence: list | None = None,
                      pair_id: list | None = None, *, alpha: float, beta: float, calibration: str = "spec",
                      normalize: str = "group", num_generations: int | None = None, strict: bool = True,
                      tie_tol: float = TIE_TOL, log_metric: Callable | None = None, **kwargs) -> list[float]:
    """R_conf_j = alpha * tanh(beta * (C_j - C'_j)) + K_j (spec section 5): the perception term (0 where C' is
    missing) plus the calibration term K_j of ``calibration_reward`` (same options). alpha and beta have no
    defaults: the paper does not disclose them."""
    n = len(completions)
    cal = _calibration(completions, answer, answer_type, options, confidence, pair_id, calibration=calibration,
                       normalize=normalize, num_generations=num_generations, strict=strict, tie_tol=tie_tol,
                       log_metric=log_metric)
    term = _perception(confidence, noisy_confidence, n, beta)
    if term is not None:
        cal = cal + alpha * np.where(np.isfinite(term), term, 0.0)
    return cal.tolist()

# ---------------------------------------------------------------------------- the set for GRPOTrainer


class CDRLRewards(NamedTuple):
    """Reward functions and their weights, for
    ``GRPOTrainer(reward_funcs=funcs, args=GRPOConfig(reward_weights=weights))``."""

    funcs: list[Callable]
    weights: list[float]


def _bound(func: Callable, **options) -> Callable:
    """``func`` with ``options`` fixed, keeping its ``__name__`` (TRL logs rewards/<name>/mean) and picklable."""
    bound = functools.partial(func, **options)
    functools.update_wrapper(bound, func)
    return bound


def cdrl_rewards(alpha: float, beta: float, *, calibration: str = "spec", normalize: str = "group",
                 num_generations: int | None = None, strict: bool = True, tie_tol: float = TIE_TOL,
                 split: bool = True, calibration_weight: float = 1.0, format_weight: float = 1.0,
                 format_rule: str = "box") -> CDRLRewards:
    """The CDRL reward set, r_j = R_output_j + R_format_j + alpha * P_j + K_j.

    ``split=True``: [format_reward, output_reward, perception_reward, calibration_reward] with weights
    [1, 1, alpha, 1], so TRL logs each term; ``split=False``: [format_reward, output_reward, confidence_reward]
    with weights [1, 1, 1]. Both give the same total. ``num_generations`` (TRL's G) makes the groups blocks of G,
    checked against the ``pair_id`` column. ``calibration_weight`` scales the calibration term (1: the spec's sum;
    with ``split=False`` it needs 1, the term being inside ``confidence_reward``); ``format_weight`` scales the
    format term (1: the spec's) and ``format_rule`` picks its rule (``format_reward``)."""
    if calibration not in CALIBRATIONS:
        raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    common = {"calibration": calibration, "normalize": normalize, "num_generations": num_generations,
              "strict": strict, "tie_tol": tie_tol}
    if format_rule not in FORMAT_RULES:
        raise ValueError(f"format_rule must be one of {FORMAT_RULES}, got {format_rule!r}")
    fmt = format_reward if format_rule == "box" else _bound(format_reward, rule=format_rule)
    head = [fmt, _bound(output_reward, strict=strict)]
    if split:
        return CDRLRewards(head + [_bound(perception_reward, beta=beta), _bound(calibration_reward, **common)],
                           [float(format_weight), 1.0, float(alpha), float(calibration_weight)])
    if calibration_weight != 1.0:
        raise ValueError("calibration_weight other than 1 needs split=True")
    return CDRLRewards(head + [_bound(confidence_reward, alpha=alpha, beta=beta, **common)],
                       [float(format_weight), 1.0, 1.0])

# ---------------------------------------------------------------------------- confidences from log-probabilities


def completion_confidence(top_logprobs: np.ndarray | Trace, kind: str = "mean", *, trace: Trace | None = None,
                          answer_type: str = "text", options: Sequence[str] = ()) -> float:
    """The confidence of one completion from its log-probabilities (``catts.confidence``), NaN when unavailable.

    ``top_logprobs``: the [T, k] top-k log-probabilities of the raw next-token distribution at each completion
    token (before temperature / top-k / top-p), or a ``Trace`` holding them.

    - ``"mean"`` (C, the paper's and the default), ``"tail"``, ``"bottom10"``, ``"lowest_window"``: the trace
      confidences of ``trace_confidences``, c_t = -(1/k) sum_i log p_(i), C = mean_t c_t. Not probabilities
      (C >= log k, unbounded above): use them with Cnorm (``normalize="group"``).
    - ``"trace_prob"``: exp(mean_t log p(y_t)) of the chosen tokens (``trace_probability``); needs a Trace.
    - ``"sequence_prob"``: exp(sum_t log p(y_t)), the policy's probability of the whole completion
      (``sequence_probability``); needs a Trace.
    - ``"answer_prob"``: the probability of the extracted answer (``answer_probability``, with ``answer_type`` and
      ``options``); needs a Trace with text and token pieces; NaN when the answer is unparsed.
    """
    if isinstance(top_logprobs, Trace):
        trace = top_logprobs
        top_logprobs = trace.top_logprobs
    if kind in TRACE_KINDS:
        return float(trace_confidences(top_logprobs)[kind])
    if kind not in PROBABILITY_KINDS:
        raise ValueError(f"kind must be one of {CONFIDENCE_KINDS}, got {kind!r}")
    if trace is None:
        raise ValueError(f"kind {kind!r} needs the completion's Trace (chosen tokens' log-probabilities and pieces)")
    if kind == "trace_prob":
        return trace_probability(trace)
    if kind == "sequence_prob":
        return sequence_probability(trace)
    p = answer_probability(trace, answer_type, options)
    return math.nan if p is None else float(p)
