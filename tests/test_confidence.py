"""Trace confidences computed by hand on small arrays of log-probabilities."""

import math

import numpy as np
import pytest

from catts.confidence import token_confidence, trace_confidences, window_means


def test_token_confidence_by_hand():
    # step 1: top-2 probabilities .5 .5 -> c = -(ln .5 + ln .5)/2 = ln 2 (the minimum for k=2)
    # step 2: .9 .05 -> c = -(ln .9 + ln .05)/2
    top = np.log([[0.5, 0.5], [0.9, 0.05]])
    c = token_confidence(top)
    assert c[0] == pytest.approx(math.log(2))
    assert c[1] == pytest.approx(-(math.log(0.9) + math.log(0.05)) / 2)
    assert c[1] > c[0]  # peaked distribution -> more confident


def test_uniform_topk_gives_log_k_minimum():
    k = 20
    assert token_confidence(np.full((3, k), -math.log(k))) == pytest.approx([math.log(k)] * 3)


def test_window_means_and_short_traces():
    assert window_means(np.arange(5.0), window=2) == pytest.approx([0.5, 1.5, 2.5, 3.5])
    assert window_means(np.array([1.0, 3.0]), window=20) == pytest.approx([2.0])


def test_trace_confidences_by_hand():
    # 30 tokens: c_t = t+1 for t=0..29, built from uniform top-1 "distributions": top logprob = -(t+1)
    c = np.arange(1, 31, dtype=float)
    top = -c[:, None]
    conf = trace_confidences(top, tail=5, window=20, bottom_share=0.1)
    assert conf["mean"] == pytest.approx(15.5)
    assert conf["tail"] == pytest.approx(np.mean([26, 27, 28, 29, 30]))
    # 11 windows of 20: means 10.5, 11.5, ..., 20.5; bottom 10% -> ceil(1.1) = 2 windows: (10.5 + 11.5) / 2
    assert conf["bottom10"] == pytest.approx(11.0)
    assert conf["lowest_window"] == pytest.approx(10.5)


def test_empty_trace_and_invalid_input():
    assert math.isnan(trace_confidences(np.zeros((0, 20)))["mean"])
    with pytest.raises(ValueError):
        token_confidence(np.array([0.5, 0.2]))  # not [T, k]
    with pytest.raises(ValueError):
        token_confidence(np.array([[0.3, -1.0]]))  # positive "log-probability"


def test_minus_infinity_stays_finite():
    c = token_confidence(np.array([[0.0, -np.inf]]))
    assert np.isfinite(c).all() and c[0] > 40


# ---- probability-valued confidences ---------------------------------------------------------
from catts.confidence.answer import answer_probability, answer_token_span, boxed_content_span, nmlp  # noqa: E402
from catts.confidence.mapping import ConfidenceMap  # noqa: E402
from catts.models.backend import Trace  # noqa: E402


def _trace(tokens, logprobs, tops):
    """A hand-built trace: tops[t] is a list of (piece, logprob) sorted descending."""
    k = max(len(t) for t in tops)
    top_lp = np.full((len(tokens), k), -30.0)
    for i, row in enumerate(tops):
        top_lp[i, : len(row)] = [lp for _, lp in row]
    return Trace(text="".join(tokens), token_ids=list(range(len(tokens))), logprobs=np.array(logprobs),
                 top_logprobs=top_lp, top_ids=np.zeros_like(top_lp, dtype=int),
                 tokens=list(tokens), top_tokens=[[p for p, _ in row] + ["?"] * (k - len(row)) for row in tops])


def test_boxed_spans():
    text = "x \\boxed{a} y \\boxed{b{c}}"
    start, end = boxed_content_span(text)
    assert text[start:end] == "b{c}"
    assert boxed_content_span("no box") is None
    assert answer_token_span(["I see", " \\boxed", "{", "12", "}"]) == (3, 4)
    assert answer_token_span(["\\boxed{", "}"]) is None  # empty box


def test_choice_answer_prob_renormalised_over_options():
    # at the letter step: p(B)=.6, p(A)=.2, p(C)=.1, p("the")=.1 -> over options A-C: .6/.9
    tops = [[("I", -0.1)], [(" \\boxed{", -0.01)],
            [("B", math.log(0.6)), ("A", math.log(0.2)), ("C", math.log(0.1)), ("the", math.log(0.1))],
            [("}", -0.01)]]
    t = _trace(["I", " \\boxed{", "B", "}"], [-0.1, -0.01, math.log(0.6), -0.01], tops)
    assert answer_probability(t, "choice", ["x", "y", "z"]) == pytest.approx(0.6 / 0.9)
    # an option outside the top-k counts 0: with options A-D, D is absent
    assert answer_probability(t, "choice", ["w", "x", "y", "z"]) == pytest.approx(0.6 / 0.9)
    # the probability of a given predicted letter
    assert answer_probability(t, "choice", ["x", "y", "z"], predicted="A") == pytest.approx(0.2 / 0.9)


def test_open_answer_prob_is_span_probability():
    tops = [[("I", -0.5)], [(" \\boxed{", -0.1)], [("1", math.log(0.5))],
            [("2", math.log(0.8))], [("}", -0.2)]]
    t = _trace(["I", " \\boxed{", "1", "2", "}"], [-0.5, -0.1, math.log(0.5), math.log(0.8), -0.2], tops)
    assert answer_probability(t, "number") == pytest.approx(0.5 * 0.8)
    assert nmlp(t) == pytest.approx(math.exp(np.mean([-0.5, -0.1, math.log(0.5), math.log(0.8), -0.2])))
    no_box = _trace(["I", " think"], [-0.1, -0.1], [[("I", -0.1)], [(" think", -0.1)]])
    assert answer_probability(no_box, "number") is None


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_confidence_map_is_monotone_and_in_unit_interval(method):
    rng = np.random.default_rng(0)
    c = rng.uniform(3, 9, 2000)
    z = rng.random(2000) < 1 / (1 + np.exp(-(c - 6)))  # true p(correct) rises with C
    m = ConfidenceMap(method).fit(c, z)
    grid = np.linspace(0, 12, 200)
    p = m(grid)
    assert np.all(np.diff(p) >= -1e-12) and p.min() >= 0 and p.max() <= 1
    assert m(np.array([6.0]))[0] == pytest.approx(0.5, abs=0.08)
    again = ConfidenceMap.from_dict(m.to_dict())
    np.testing.assert_allclose(again(grid), p)


def test_confidence_map_never_reverses_order():
    c = np.array([1.0, 2.0, 3.0, 4.0])
    m = ConfidenceMap("platt").fit(c, [1, 1, 0, 0])  # anti-correlated data: the map goes flat, not down
    assert np.all(np.diff(m(c)) >= 0)
