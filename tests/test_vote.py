"""Hand-worked examples for catts.tts.vote; the arithmetic is written out in comments."""

import math

import numpy as np
import pytest

from catts.tts.vote import (
    DEEPCONF_HIGH,
    DEEPCONF_LOW,
    VoteResult,
    best_of_n,
    decisive,
    deepconf_offline,
    final_vote,
    internal_vote,
    majority_vote,
    paired_bootstrap,
    scaling_slope,
)

# --- internal_vote ---------------------------------------------------------------------------

def test_internal_vote_weighted_shares():
    # A: 0.9 + 0.6 = 1.5, B: 0.3; total 1.8 -> A = 1.5/1.8 = 0.8333, B = 0.3/1.8 = 0.1667
    v = internal_vote(["A", "A", "B"], [0.9, 0.6, 0.3])
    assert v == pytest.approx({"A": 5 / 6, "B": 1 / 6})
    assert list(v) == ["A", "B"]


def test_internal_vote_unparsed_and_none_weight():
    # None answer is dropped whatever its weight (even NaN); a None weight of a parsed answer is 0:
    # A: 0.5, B: 0 + 1.5 = 1.5; total 2.0 -> A = 0.25, B = 0.75
    v = internal_vote(["A", None, "B", "B"], [0.5, float("nan"), None, 1.5])
    assert v == pytest.approx({"A": 0.25, "B": 0.75})


def test_internal_vote_all_zero_weights_fall_back_to_counts():
    # weights all 0 -> equal weights: A 2/3, B 1/3
    assert internal_vote(["A", "B", "A", None], [0, 0, 0.0, 7]) == pytest.approx({"A": 2 / 3, "B": 1 / 3})


def test_internal_vote_empty():
    assert internal_vote([], []) == {}
    assert internal_vote([None, None], [1.0, 1.0]) == {}


@pytest.mark.parametrize("answers, weights, message", [
    (["A", "B"], [1.0], "length mismatch"),
    (["A", "B"], [1.0, -0.1], r"weights\[1\] must be >= 0"),
    (["A", "B"], [1.0, float("inf")], r"weights\[1\] must be finite"),
    (["A", "B"], [1.0, float("nan")], r"weights\[1\] must be finite"),
    (["A", "B"], [1.0, "0.5"], r"weights\[1\] must be a real number"),
    (["A", 3], [1.0, 1.0], r"answers\[1\] must be a str or None"),
    ("AB", [1.0, 1.0], "answers must be a sequence"),
    (["A", "B"], [1e308, 1e308], "overflows"),
])
def test_internal_vote_invalid(answers, weights, message):
    with pytest.raises(ValueError, match=message):
        internal_vote(answers, weights)


# --- final_vote ------------------------------------------------------------------------------

def test_final_vote_paper_example():
    # V_int: A 0.8333, B 0.1667. Voter {A 0.2, B 0.8} * tau1 0.5 -> +0.1, +0.4.
    # reflect B -> +0.5; check None -> nothing.
    # V: A = 0.8333 + 0.1 = 0.9333; B = 0.1667 + 0.4 + 0.5 = 1.0667; total 2.0
    # -> B wins, confidence 1.0667 / 2.0 = 0.5333
    v_int = internal_vote(["A", "A", "B"], [0.9, 0.6, 0.3])
    result = final_vote(v_int, voter={"A": 0.2, "B": 0.8}, reflect="B", check=None)
    assert isinstance(result, VoteResult)
    assert result.answer == "B"
    assert result.table == pytest.approx({"A": 5 / 6 + 0.1, "B": 1 / 6 + 0.9})
    assert result.confidence == pytest.approx((1 / 6 + 0.9) / 2.0)


def test_final_vote_internal_only_and_new_candidate():
    # no modules: V = V_int -> A with confidence 0.8333
    v_int = {"A": 5 / 6, "B": 1 / 6}
    result = final_vote(v_int)
    assert (result.answer, result.confidence) == ("A", pytest.approx(5 / 6))
    # self-check brings new answer C: +0.5; reflect A +0.5. V: A 1.3333, B 0.1667, C 0.5; total 2
    result = final_vote(v_int, reflect="A", check="C")
    assert result.table == pytest.approx({"A": 5 / 6 + 0.5, "B": 1 / 6, "C": 0.5})
    assert result.answer == "A" and result.confidence == pytest.approx((5 / 6 + 0.5) / 2)


def test_final_vote_voter_renormalised_and_zero_voter_ignored():
    # voter {A 1, B 3} -> {0.25, 0.75}; tau1 = 1: V A 0.5 + 0.25, B 0.5 + 0.75 -> B, 1.25/2
    result = final_vote({"A": 0.5, "B": 0.5}, voter={"A": 1.0, "B": 3.0}, taus=(1.0, 0.5, 0.5))
    assert result.answer == "B" and result.confidence == pytest.approx(0.625)
    # all-zero voter contributes nothing: V = V_int
    result = final_vote({"A": 0.6, "B": 0.4}, voter={"A": 0.0, "B": 0.0})
    assert result.table == {"A": 0.6, "B": 0.4}


def test_final_vote_ties_by_v_int_then_string():
    # V_int A 0.6, B 0.4; reflect B -> +0.2 (tau2 0.2): V A 0.6, B 0.6 tied -> larger V_int: A
    result = final_vote({"B": 0.4, "A": 0.6}, reflect="B", taus=(0.5, 0.2, 0.5))
    assert result.answer == "A" and result.confidence == pytest.approx(0.5)
    # V_int tied too (0.5 each), no modules -> smaller string, whatever the dict order
    assert final_vote({"b": 0.5, "a": 0.5}).answer == "a"
    assert final_vote({"a": 0.5, "b": 0.5}).answer == "a"
    # float rounding must not break a tie: 0.1 + 0.2 vs 0.3 (V_int 0.1/0.3 -> check on "x")
    result = final_vote({"x": 0.1, "y": 0.3}, check="x", taus=(0.5, 0.5, 0.2))
    assert result.answer == "y"  # tied at 0.3 within TIE_TOL, y has the larger V_int


def test_final_vote_empty():
    assert final_vote({}) == VoteResult(None, 0.0, {})
    # no samples parsed and every module failed
    assert final_vote({}, voter=None, reflect=None, check=None).answer is None
    # but reflection alone can still answer: V = {C: 0.5} -> C with confidence 1
    assert final_vote({}, reflect="C") == VoteResult("C", 1.0, {"C": 0.5})


@pytest.mark.parametrize("kwargs, message", [
    ({"v_int": {"A": -0.1}}, r"v_int\['A'\] must be >= 0"),
    ({"v_int": {"A": float("nan")}}, "must be finite"),
    ({"v_int": {1: 0.5}}, "keys must be str"),
    ({"v_int": [0.5]}, "must be a mapping"),
    ({"v_int": {"A": 1.0}, "voter": {"A": 0.5, "Z": 0.5}}, r"not candidates of v_int: \['Z'\]"),
    ({"v_int": {"A": 1.0}, "voter": {"A": -1.0}}, r"voter\['A'\] must be >= 0"),
    ({"v_int": {"A": 1.0}, "reflect": 3}, "reflect must be a str or None"),
    ({"v_int": {"A": 1.0}, "taus": (0.5, 0.5)}, "three numbers"),
    ({"v_int": {"A": 1.0}, "taus": (0.5, -0.5, 0.5)}, "taus must be >= 0"),
])
def test_final_vote_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        final_vote(**kwargs)


# --- baselines -------------------------------------------------------------------------------

def test_majority_vote():
    # B, A, A, B, None: 2 each -> tie to earliest first occurrence (B at index 0); share 2/4
    result = majority_vote(["B", "A", "A", "B", None])
    assert (result.answer, result.confidence) == ("B", 0.5)
    assert result.table == {"B": 0.5, "A": 0.5}
    # A A B C -> A with 2/4
    assert majority_vote(["A", "A", "B", "C"]).confidence == 0.5
    assert majority_vote([None, None]) == VoteResult(None, 0.0, {})
    assert majority_vote([]) == VoteResult(None, 0.0, {})


def test_best_of_n():
    # parsed: A -1.2, B -0.4, A -0.9; unparsed trace (score 5.0) is ignored -> B with -0.4
    result = best_of_n(["A", None, "B", "A"], [-1.2, 5.0, -0.4, -0.9])
    assert (result.answer, result.confidence) == ("B", -0.4)
    assert result.table == {"A": -0.9, "B": -0.4}
    # tie on the top score -> earliest trace
    assert best_of_n(["C", "D"], [0.7, 0.7]).answer == "C"
    assert best_of_n([None], [None]) == VoteResult(None, 0.0, {})
    with pytest.raises(ValueError, match=r"confidences\[0\] is None but answers\[0\] was parsed"):
        best_of_n(["A"], [None])


def test_deepconf_offline_keep_fractions():
    answers = ["A", "B", "B", "B", "A", "C", "B", "B", "A", "C"]
    conf = [9.0, 1.0, 2.0, 3.0, 8.0, 0.5, 4.0, 5.0, 7.0, 0.0]
    # keep 0.1 of 10 -> ceil(1.0) = 1 trace: the 9.0 one -> A with share 1
    low = deepconf_offline(answers, conf, keep=DEEPCONF_LOW)
    assert (low.answer, low.confidence) == ("A", 1.0)
    # keep 0.3 -> 3 traces (9, 8, 7), all A
    assert deepconf_offline(answers, conf, keep=0.3).table == {"A": 1.0}
    # keep 0.7 -> 7 traces: 9,8,7,5,4,3,2 -> A 24, B 14; total 38
    mid = deepconf_offline(answers, conf, keep=0.7)
    assert mid.table == pytest.approx({"A": 24 / 38, "B": 14 / 38})
    # keep 0.9 -> 9 traces (drops the 0.0 C): A 24, B 15, C 0.5; total 39.5
    high = deepconf_offline(answers, conf, keep=DEEPCONF_HIGH)
    assert high.table == pytest.approx({"A": 24 / 39.5, "B": 15 / 39.5, "C": 0.5 / 39.5})
    # keep 1.0 = confidence-weighted vote over all; plain majority would pick B (5 of 10)
    assert deepconf_offline(answers, conf, keep=1.0).answer == "A"
    assert majority_vote(answers).answer == "B"


def test_deepconf_offline_keep_count_survives_float_error():
    # 0.14 * 50 = 7.000000000000001 in floats; ceil must still keep 7 traces, not 8.
    # 7 traces of A with confidence 1.0 first, then 43 of B with 0.5: keeping 7 -> all A
    answers = ["A"] * 7 + ["B"] * 43
    conf = [1.0] * 7 + [0.5] * 43
    assert deepconf_offline(answers, conf, keep=0.14).table == {"A": 1.0}


def test_deepconf_offline_ties_unparsed_and_at_least_one():
    # unparsed traces are dropped before the cut: parsed = 3 -> keep 0.5 -> ceil(1.5) = 2
    # ties at the cut keep the earlier trace: (A 1.0, B 1.0) kept, C 1.0 dropped
    result = deepconf_offline(["A", None, "B", "C"], [1.0, 99.0, 1.0, 1.0], keep=0.5)
    assert result.table == {"A": 0.5, "B": 0.5}
    assert result.answer == "A"  # weighted tie -> earliest first occurrence
    # a tiny keep still keeps one trace
    assert deepconf_offline(["A", "B"], [0.1, 0.2], keep=0.01).answer == "B"
    # all kept confidences 0 -> equal weights
    assert deepconf_offline(["A", "B", "B"], [0, 0, 0], keep=1.0).table == pytest.approx({"A": 1 / 3, "B": 2 / 3})
    assert deepconf_offline([None], [None]) == VoteResult(None, 0.0, {})


@pytest.mark.parametrize("keep, conf, message", [
    (0.0, [1.0], r"keep must be in \(0, 1\]"),
    (1.5, [1.0], r"keep must be in \(0, 1\]"),
    (0.5, [-1.0], r"confidences\[0\] must be >= 0"),
    (0.5, [None], "is None"),
])
def test_deepconf_offline_invalid(keep, conf, message):
    with pytest.raises(ValueError, match=message):
        deepconf_offline(["A"], conf, keep=keep)


# --- paired_bootstrap ------------------------------------------------------------------------

def test_paired_bootstrap_identical_is_zero():
    z = [1, 0, 1, 1, 0, 1]
    assert paired_bootstrap(z, z) == {"diff": 0.0, "ci_low": 0.0, "ci_high": 0.0}


def test_paired_bootstrap_always_better_and_deterministic():
    rng = np.random.default_rng(1)
    b = rng.random(200) < 0.5
    a = np.ones(200, dtype=bool)  # right wherever b is, and on ~100 more questions
    out = paired_bootstrap(a, b, n_boot=500, seed=3)
    assert out["diff"] == pytest.approx(1 - b.mean())
    assert 0 < out["ci_low"] <= out["diff"] <= out["ci_high"]
    assert paired_bootstrap(a, b, n_boot=500, seed=3) == out
    assert paired_bootstrap(b, a, n_boot=500, seed=3)["ci_high"] < 0


@pytest.mark.parametrize("a, b, kwargs, message", [
    ([1, 0], [1], {}, "length mismatch"),
    ([], [], {}, "non-empty"),
    ([1, 0.5], [1, 0], {}, "only 0/1"),
    ([1, 0], [1, 0], {"n_boot": 0}, "n_boot must be a positive integer"),
])
def test_paired_bootstrap_invalid(a, b, kwargs, message):
    with pytest.raises(ValueError, match=message):
        paired_bootstrap(a, b, **kwargs)


# --- scaling_slope ---------------------------------------------------------------------------

def test_scaling_slope():
    # x = log2 [1, 2, 4] = [0, 1, 2]; y = [0.5, 0.6, 0.7]: +0.1 per doubling
    assert scaling_slope([1, 2, 4], [0.5, 0.6, 0.7]) == pytest.approx(0.1)
    # x = [0, 1, 2, 3], y = [0, 1, 1, 2]: x_bar 1.5, y_bar 1; Sxy = 1.5 + 0 + 0 + 1.5 = 3; Sxx = 5
    assert scaling_slope([1, 2, 4, 8], [0, 1, 1, 2]) == pytest.approx(0.6)
    # per natural-log unit: 0.1 / ln 2
    assert scaling_slope([1, 2, 4], [0.5, 0.6, 0.7]) / math.log(2) == pytest.approx(0.1442695)


@pytest.mark.parametrize("ns, acc, message", [
    ([1, 2], [0.5], "equal length"),
    ([4], [0.5], "two distinct"),
    ([4, 4], [0.5, 0.6], "two distinct"),
    ([0, 2], [0.5, 0.6], "ns must be > 0"),
    ([1, 2], [0.5, float("nan")], "finite"),
])
def test_scaling_slope_invalid(ns, acc, message):
    with pytest.raises(ValueError, match=message):
        scaling_slope(ns, acc)


# --- decisive --------------------------------------------------------------------------------

def test_decisive():
    # A A A B: share 0.75, 3 agree
    assert decisive(["A", "A", "A", "B"], threshold=0.75)
    assert not decisive(["A", "A", "A", "B"], threshold=0.8)
    # weighted: A 0.9 + 0.6 = 1.5 of 1.8 = 0.833 >= 0.8
    assert decisive(["A", "A", "B"], [0.9, 0.6, 0.3], threshold=0.8)
    # one sample has share 1.0 but only 1 agrees
    assert not decisive(["A", None], threshold=0.5)
    assert decisive(["A", None], threshold=0.5, min_agreeing=1)
    # a tie for the lead is never decisive, even at a low threshold
    assert not decisive(["A", "A", "B", "B"], threshold=0.4)
    assert not decisive([None, None], threshold=0.5)
    # 2 of 3 at threshold 2/3 counts
    assert decisive(["A", "B", "A"], threshold=2 / 3)
    # (0.3 + 0.3) / 0.8 = 0.75 exactly, but floats give 0.7499999999999999: tolerance keeps it decisive
    assert decisive(["A", "A", "B"], [0.3, 0.3, 0.2], threshold=0.75)


@pytest.mark.parametrize("kwargs, message", [
    ({"threshold": 0.0}, "threshold must be in"),
    ({"threshold": 1.2}, "threshold must be in"),
    ({"threshold": 0.5, "min_agreeing": 0}, "min_agreeing must be a positive integer"),
])
def test_decisive_invalid(kwargs, message):
    with pytest.raises(ValueError, match=message):
        decisive(["A", "A"], **kwargs)
