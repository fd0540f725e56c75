"""Probability-valued confidences of an answer (spec section 2), needed for ECE and reliability diagrams.

- ``answer_probability``: the probability of the extracted answer, read off the characters it was
  extracted from (``Extraction.span``: a box's content, or the letter / number after an "answer is"
  cue), so a boxed and an unboxed answer are scored alike.

  * A choice answered by a letter: the letter's probability at the first token of the span whose
    piece is that letter (``B``, `` B``, ``(B``), renormalised over the option letters:
    p(L) / sum_{L' in options} p(L'). Each letter counts with its most likely spelling in the
    top-k of that step; letters outside the top-k count 0 (servers give only the top 20), except
    the chosen token itself, whose own log-probability is known.
  * Everything else (numbers, text, options answered by their text, a choice without options):
    exp(sum_t log p(y_t)) over the tokens that overlap the span.
  * None when the extraction is unparsed, or the span cannot be located in the token pieces.

- ``trace_probability``: exp(mean_t log p(y_t)) over the chosen tokens, the trace's length-normalised
  probability. (Not the paper's NMLP: that is C, the mean top-k token confidence; see
  ``catts.confidence.trace``.)

Both use only the trace's token pieces and top-k alternatives, so they apply to every backend.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np

from catts.answers import Extraction, extract_answer
from catts.data.sample import LETTERS
from catts.models.backend import Trace

_NON_LETTER = re.compile(r"[^A-Za-z]")


def token_span(tokens: Sequence[str], char_span: tuple[int, int]) -> tuple[int, int] | None:
    """Token range [first, last+1) whose pieces overlap the character range ``char_span`` of their join."""
    start, end = char_span
    if start >= end:
        return None
    lengths = np.array([len(t) for t in tokens], dtype=int)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    hit = np.nonzero((starts < end) & (ends > start))[0]
    return (int(hit[0]), int(hit[-1]) + 1) if len(hit) else None


def _char_span(trace: Trace, extraction: Extraction, answer_type: str, options: Sequence[str]):
    """The extraction's span in the joined token pieces (they normally spell ``trace.text`` exactly)."""
    joined = "".join(trace.tokens)
    if joined == trace.text:
        return extraction.span
    again = extract_answer(joined, answer_type, options)
    return again.span if again.answer == extraction.answer else None


def _letter_probability(trace: Trace, steps: tuple[int, int], read: str, target: str, letters: str):
    """p(target) / sum of p(option letters) at the first step in ``steps`` whose piece is ``read``."""
    for step in range(*steps):
        if _NON_LETTER.sub("", trace.tokens[step]).upper() == read:
            break
    else:
        return None
    probs = dict.fromkeys(letters, 0.0)
    for piece, lp in zip(trace.top_tokens[step], trace.top_logprobs[step]):
        key = _NON_LETTER.sub("", piece).upper()
        if key in probs and probs[key] == 0.0:  # the first (most likely) spelling of each letter
            probs[key] = math.exp(float(lp))
    if probs[read] == 0.0:  # the chosen token fell outside the top-k: its own probability is known
        probs[read] = math.exp(float(trace.logprobs[step]))
    total = sum(probs.values())
    return probs.get(target, 0.0) / total if total > 0 else None


def answer_token_steps(trace: Trace, answer_type: str, options: Sequence[str] = (),
                       extraction: Extraction | None = None) -> tuple[int, int] | None:
    """[start, end) of the completion tokens that spell the extracted answer; None when it is unparsed or its
    characters cannot be placed on the tokens."""
    if extraction is None:
        extraction = extract_answer(trace.text, answer_type, options)
    if extraction.answer is None or extraction.span is None:
        return None
    char_span = _char_span(trace, extraction, answer_type, options)
    return token_span(trace.tokens, char_span) if char_span else None


def answer_probability(trace: Trace, answer_type: str, options: Sequence[str] = (),
                       extraction: Extraction | str | None = None, *, letter: str | None = None) -> float | None:
    """Probability of the extracted answer by the module rules.

    ``extraction`` must come from ``trace.text``; when it is not an ``Extraction`` (None, or the
    predicted answer string that older callers pass) the answer is extracted here. ``letter``
    asks for another option letter's probability at the same position (choice answers only).
    """
    if not isinstance(extraction, Extraction):
        extraction = extract_answer(trace.text, answer_type, options)
    steps = answer_token_steps(trace, answer_type, options, extraction)
    if steps is None:
        return None
    letters = LETTERS[: len(options)]
    if answer_type == "choice" and letters and extraction.method in ("boxed", "option_letter"):
        read = extraction.answer.upper()
        return _letter_probability(trace, steps, read, (letter or read).upper(), letters)
    return float(math.exp(float(np.sum(trace.logprobs[steps[0]:steps[1]]))))


def sequence_probability(trace: Trace) -> float:
    """exp(sum log p) of the chosen tokens: the probability the model gives its whole completion (NaN for an empty
    trace). Unlike the per-token means it is not diluted by the tokens that carry no choice (a template, a copied
    answer), so it is the policy's own probability of answering exactly this way; it shrinks with length, so it
    compares completions of similar length only (short answers, the tiny models)."""
    return float(math.exp(float(np.sum(trace.logprobs)))) if trace.num_tokens else float("nan")


def trace_probability(trace: Trace) -> float:
    """exp(mean log p) of the chosen tokens: the trace probability (NaN for an empty trace)."""
    return float(math.exp(float(np.mean(trace.logprobs)))) if trace.num_tokens else float("nan")
