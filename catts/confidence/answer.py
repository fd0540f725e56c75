"""Probability-valued confidences of an answer (spec section 2), needed for ECE and reliability diagrams.

- ``answer_prob``: for multiple choice answered with a letter, the letter's probability at the
  answer position, renormalised over the option letters: p(L) / sum_{L' in options} p(L'). Letters
  outside the top-k of that step count as probability 0 (servers give only the top 20). For other
  answers (and options answered by their text): the probability of the answer's tokens inside the
  last ``\\boxed{}``, given everything before them: exp(sum_t log p(y_t)) over the answer span.
- ``nmlp``: the length-normalised probability of the whole trace, exp(mean_t log p(y_t)).

Both work from the trace's token pieces and top-k alternatives, so they apply to every backend.
"""

from __future__ import annotations

import math
import re

import numpy as np

from catts.models.backend import Trace

_LETTER = re.compile(r"[^A-Za-z]")


def boxed_content_span(text: str) -> tuple[int, int] | None:
    """Character range [start, end) of the content of the last balanced ``\\boxed{...}`` in ``text``."""
    start = text.rfind("\\boxed")
    while start != -1:
        k = start + len("\\boxed")
        while k < len(text) and text[k] == " ":
            k += 1
        if k < len(text) and text[k] == "{":
            depth = 0
            for j in range(k, len(text)):
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                if depth == 0:
                    return k + 1, j
        start = text.rfind("\\boxed", 0, start)
    return None


def answer_token_span(tokens: list[str]) -> tuple[int, int] | None:
    """Token range [first, last+1) whose pieces overlap the last boxed content (None if no box)."""
    text = "".join(tokens)
    span = boxed_content_span(text)
    if span is None or span[0] == span[1]:
        return None
    ends = np.cumsum([len(t) for t in tokens])
    starts = ends - np.array([len(t) for t in tokens])
    hit = np.nonzero((starts < span[1]) & (ends > span[0]))[0]
    return (int(hit[0]), int(hit[-1]) + 1) if len(hit) else None


def answer_probability(trace: Trace, answer_type: str, options=(), predicted: str | None = None) -> float | None:
    """Probability of the extracted answer, or None when the trace has no boxed answer."""
    span = answer_token_span(trace.tokens)
    if span is None:
        return None
    content = "".join(trace.tokens[span[0]:span[1]]).strip()
    if answer_type != "choice" or _LETTER.sub("", content).upper() not in letters_of(options):
        # open answers, and options answered by their text: the probability of the boxed tokens
        return float(math.exp(float(np.sum(trace.logprobs[span[0]:span[1]]))))
    letters = letters_of(options)
    for step in range(*span):
        letter = _LETTER.sub("", trace.tokens[step]).upper()
        if letter in letters:
            break
    else:
        return None
    target = (predicted or letter).upper()
    probs = dict.fromkeys(letters, 0.0)
    for piece, lp in zip(trace.top_tokens[step], trace.top_logprobs[step]):
        key = _LETTER.sub("", piece).upper()
        if key in probs and probs[key] == 0.0:  # the first (most likely) spelling of each letter
            probs[key] = math.exp(float(lp))
    total = sum(probs.values())
    return probs.get(target, 0.0) / total if total > 0 else None


def letters_of(options) -> list[str]:
    return [chr(ord("A") + i) for i in range(len(options))]


def nmlp(trace: Trace) -> float:
    """exp(mean log p) of the chosen tokens: the trace's length-normalised probability."""
    return float(math.exp(float(np.mean(trace.logprobs)))) if trace.num_tokens else float("nan")
