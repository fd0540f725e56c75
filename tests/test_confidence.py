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
from catts.answers import extract_answer  # noqa: E402
from catts.confidence.answer import answer_probability, sequence_probability, token_span, trace_probability  # noqa: E402,E501
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


def _sure(tokens, at, letter_probs):
    """Tokens chosen with probability .9, except step ``at``: the letter step with ``letter_probs``."""
    tops = [[(t, math.log(0.9))] for t in tokens]
    tops[at] = sorted(((p, math.log(q)) for p, q in letter_probs.items()), key=lambda x: -x[1])
    logprobs = [math.log(0.9)] * len(tokens)
    logprobs[at] = math.log(letter_probs[tokens[at]])
    return _trace(tokens, logprobs, tops)


def test_token_span():
    assert token_span(["I see", " \\boxed", "{", "12", "}"], (13, 15)) == (3, 4)
    assert token_span(["ab", "cd", "ef"], (1, 3)) == (0, 2)  # partial overlaps count
    assert token_span(["ab"], (1, 1)) is None


def test_choice_answer_prob_renormalised_over_options():
    # at the letter step: p(B)=.6, p(A)=.2, p(C)=.1, p("the")=.1 -> over options A-C: .6/.9
    tops = [[("I", -0.1)], [(" \\boxed{", -0.01)],
            [("B", math.log(0.6)), ("A", math.log(0.2)), ("C", math.log(0.1)), ("the", math.log(0.1))],
            [("}", -0.01)]]
    t = _trace(["I", " \\boxed{", "B", "}"], [-0.1, -0.01, math.log(0.6), -0.01], tops)
    assert answer_probability(t, "choice", ["x", "y", "z"]) == pytest.approx(0.6 / 0.9)
    # an option outside the top-k counts 0: with options A-D, D is absent
    assert answer_probability(t, "choice", ["w", "x", "y", "z"]) == pytest.approx(0.6 / 0.9)
    # another letter's probability at the same position
    assert answer_probability(t, "choice", ["x", "y", "z"], letter="A") == pytest.approx(0.2 / 0.9)
    # the extraction may be passed in (as the graders do): same result
    ext = extract_answer(t.text, "choice", ["x", "y", "z"])
    assert answer_probability(t, "choice", ["x", "y", "z"], ext) == pytest.approx(0.6 / 0.9)


def test_open_answer_prob_is_span_probability():
    tops = [[("I", -0.5)], [(" \\boxed{", -0.1)], [("1", math.log(0.5))],
            [("2", math.log(0.8))], [("}", -0.2)]]
    t = _trace(["I", " \\boxed{", "1", "2", "}"], [-0.5, -0.1, math.log(0.5), math.log(0.8), -0.2], tops)
    assert answer_probability(t, "number") == pytest.approx(0.5 * 0.8)
    assert trace_probability(t) == pytest.approx(math.exp(np.mean([-0.5, -0.1, math.log(0.5), math.log(0.8), -0.2])))
    # the whole completion's probability: the product, not the geometric mean
    assert sequence_probability(t) == pytest.approx(math.exp(-0.5 - 0.1 - 0.2) * 0.5 * 0.8)
    no_box = _trace(["I", " think"], [-0.1, -0.1], [[("I", -0.1)], [(" think", -0.1)]])
    assert answer_probability(no_box, "number") is None  # unparsed: no probability


def test_newline_between_boxed_and_brace_gets_a_probability():
    t = _sure(["So", " \\boxed", "\n", "{", "A", "}"], 4, {"A": 0.7, "B": 0.2, "C": 0.1})
    assert extract_answer(t.text, "choice", ["x", "y", "z"]).answer == "A"
    assert answer_probability(t, "choice", ["x", "y", "z"]) == pytest.approx(0.7)


def test_unclosed_last_box_same_verdict_for_extraction_and_probability():
    t = _sure(["\\boxed{", "A", "}", " no", " \\boxed{", "B"], 1, {"A": 0.9, "B": 0.1})
    assert extract_answer(t.text, "choice", ["x", "y"]).answer is None
    assert answer_probability(t, "choice", ["x", "y"]) is None


def test_unboxed_letter_gets_the_probability_of_its_span():
    t = _sure(["It", " is", " red", ".", " The", " answer", " is", " C", "."], 7,
              {" C": 0.95, " B": 0.03, " A": 0.02})
    assert extract_answer(t.text, "choice", ["x", "y", "z"]).answer == "C"
    assert answer_probability(t, "choice", ["x", "y", "z"]) == pytest.approx(0.95)


def test_unboxed_number_gets_the_probability_of_its_digits():
    t = _sure(["Answer", ":", " 1", "2", " apples"], 2, {" 1": 0.5, " 2": 0.5})
    assert answer_probability(t, "number") == pytest.approx(0.5 * 0.9)  # " 1" and "2", not " apples"


def test_boxed_option_text_gets_the_probability_of_its_tokens():
    t = _sure([" \\boxed{", "bl", "ue", "}"], 1, {"bl": 0.5, "red": 0.5})
    assert answer_probability(t, "choice", ["red", "blue"]) == pytest.approx(0.5 * 0.9)


def test_letter_found_inside_a_wrapped_box():
    t = _sure([" \\boxed{", "\\text", "{", "(B", ")", " blue", "}}"], 3, {"(B": 0.8, "(A": 0.2})
    assert answer_probability(t, "choice", ["red", "blue"]) == pytest.approx(0.8)


def test_pieces_that_do_not_spell_the_text_are_realigned():
    t = _sure(["The", " answer", " is", " B", "."], 3, {" B": 0.6, " A": 0.4})
    t.text = "  " + t.text  # e.g. a decoder that adds leading spaces: the span is found again in the pieces
    assert answer_probability(t, "choice", ["x", "y"]) == pytest.approx(0.6)


def test_worked_ece_boxed_and_unboxed_answers_alike():
    """Two correct answers, one boxed and one not, each with letter probability .98: ECE about 0.

    Before, the unboxed one had no probability and was scored at confidence 0: ECE 0.5.
    """
    opts = ["x", "y", "z", "w"]
    boxed = _sure(["Red", ".", " \\boxed{", "C", "}"], 3, {"C": 0.98, "A": 0.01, "B": 0.01})
    unboxed = _sure(["Red", ".", " The", " answer", " is", " C", "."], 5, {" C": 0.98, " D": 0.02})
    probs = [answer_probability(t, "choice", opts) for t in (boxed, unboxed)]
    assert probs == pytest.approx([0.98, 0.98])
    correct = [1, 1]
    ece_one_bin = abs(np.mean(correct) - np.mean(probs))  # both fall in the top bin
    assert ece_one_bin == pytest.approx(0.02)


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
