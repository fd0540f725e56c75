"""Tests for catts.calibration.metrics and catts.calibration.plots."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import brier_score_loss, roc_auc_score

from catts.calibration.metrics import (
    aurc, auroc, bootstrap_ci, brier, ece, mce, reliability_bins, risk_coverage, smooth_ece,
)
from catts.calibration.plots import reliability_diagram


def _synthetic(n: int, acc_fn, seed: int, low: float = 0.0):
    rng = np.random.default_rng(seed)
    c = rng.uniform(low, 1.0, n)
    z = (rng.uniform(size=n) < acc_fn(c)).astype(int)
    return c, z


# ---------------------------------------------------------------- binned ECE / MCE

def test_ece_hand_computed_uniform():
    c = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9, 1.0]
    z = [0, 1, 0, 1, 1, 0, 1]
    # 4 bins [0,.25) [.25,.5) [.5,.75) [.75,1]:
    #   {.1,.2}: conf .15, acc .5, gap .35, n 2
    #   {.3}:    conf .30, acc 0,  gap .30, n 1
    #   {.6,.7}: conf .65, acc 1,  gap .35, n 2
    #   {.9,1}:  conf .95, acc .5, gap .45, n 2
    expected = (2 * 0.35 + 1 * 0.30 + 2 * 0.35 + 2 * 0.45) / 7
    assert ece(c, z, n_bins=4) == pytest.approx(expected, abs=1e-12)
    assert mce(c, z, n_bins=4) == pytest.approx(0.45, abs=1e-12)
    bins = reliability_bins(c, z, n_bins=4)
    np.testing.assert_array_equal(bins.counts, [2, 1, 2, 2])
    np.testing.assert_allclose(bins.mean_confidence, [0.15, 0.30, 0.65, 0.95])
    np.testing.assert_allclose(bins.accuracy, [0.5, 0.0, 1.0, 0.5])
    np.testing.assert_allclose(bins.edges, [0, 0.25, 0.5, 0.75, 1.0])


def test_ece_hand_computed_quantile():
    # 2 equal-mass bins: {.1,.2} conf .15 acc 0; {.3,.4} conf .35 acc 1 -> .5*.15 + .5*.65
    assert ece([0.4, 0.1, 0.3, 0.2], [1, 0, 1, 0], n_bins=2, strategy="quantile") == \
        pytest.approx(0.4, abs=1e-12)


def test_boundary_confidences_binned_correctly():
    bins = reliability_bins([0.0, 1.0, 0.5, 0.3], [1, 1, 0, 0], n_bins=10)
    np.testing.assert_array_equal(np.flatnonzero(bins.counts), [0, 3, 5, 9])
    assert bins.counts.sum() == 4
    # exactly 0.0 and exactly 1.0, alone: bottom and top bin
    assert reliability_bins([0.0], [1], n_bins=15).counts[0] == 1
    assert reliability_bins([1.0], [1], n_bins=15).counts[14] == 1
    # a perfectly confident, always-right model is perfectly calibrated
    assert ece([1.0, 1.0, 0.0], [1, 1, 0]) == 0.0
    # left-closed bins: 0.5 with 2 bins is in the upper bin
    np.testing.assert_array_equal(reliability_bins([0.5], [1], n_bins=2).counts, [0, 1])


def test_quantile_bins_equal_counts_without_ties():
    rng = np.random.default_rng(3)
    c = rng.uniform(size=100)
    bins = reliability_bins(c, rng.integers(0, 2, 100), n_bins=10, strategy="quantile")
    np.testing.assert_array_equal(bins.counts, np.full(10, 10))
    c = rng.uniform(size=103)
    counts = reliability_bins(c, np.ones(103), n_bins=10, strategy="quantile").counts
    assert counts.sum() == 103 and counts.min() >= 10 and counts.max() <= 11


def test_quantile_bins_keep_ties_together():
    c = np.array([0.2] * 7 + [0.5] * 2 + [0.9] * 1)
    bins = reliability_bins(c, np.ones(10), n_bins=5, strategy="quantile")
    # interior edges = sorted c at ranks 2, 4, 6, 8 = [.2, .2, .2, .5]: the seven 0.2s fill bin 3
    # (bins 0-2 collapse and stay empty); 0.5 and 0.9 share the top bin
    np.testing.assert_array_equal(bins.counts, [0, 0, 0, 7, 3])
    np.testing.assert_allclose(bins.accuracy[3:], [1.0, 1.0])
    np.testing.assert_allclose(bins.mean_confidence[3:], [0.2, (0.5 + 0.5 + 0.9) / 3])
    assert np.all(np.diff(bins.edges) >= 0) and bins.edges[0] == 0 and bins.edges[-1] == 1


def test_calibrated_vs_miscalibrated_ece():
    c, z = _synthetic(200_000, lambda p: p, seed=0)
    assert ece(c, z, 15) < 0.01
    assert ece(c, z, 15, "quantile") < 0.01
    c3, z3 = _synthetic(200_000, lambda p: p ** 3, seed=1)
    # E|c - c^3| for c ~ U(0, 1) is 1/4
    assert ece(c3, z3, 15) == pytest.approx(0.25, abs=0.01)
    assert mce(c3, z3, 15) > 0.3


# ---------------------------------------------------------------- Brier / AUROC / AURC

def test_brier_matches_sklearn():
    c, z = _synthetic(1000, lambda p: p ** 2, seed=4)
    assert brier(c, z) == pytest.approx(brier_score_loss(z, c), abs=1e-12)
    assert brier([1.0, 0.0], [True, False]) == 0.0


def test_auroc_matches_sklearn_with_ties_and_raw_scores():
    rng = np.random.default_rng(5)
    z = rng.integers(0, 2, 500)
    tied = np.round(rng.uniform(size=500) + 0.3 * z, 1)  # many ties
    assert auroc(tied, z) == pytest.approx(roc_auc_score(z, tied), abs=1e-12)
    raw = rng.normal(size=500) * 100 - 40 + 30 * z  # unbounded
    assert auroc(raw, z) == pytest.approx(roc_auc_score(z, raw), abs=1e-12)
    assert auroc(np.exp(raw / 100), z) == pytest.approx(auroc(raw, z), abs=1e-12)
    assert auroc([1.0, 1.0, 1.0], [0, 1, 1]) == 0.5
    assert auroc([3.0, 2.0, 1.0], [1, 1, 0]) == 1.0


def test_auroc_one_class_is_nan():
    assert np.isnan(auroc([0.1, 0.9], [1, 1]))
    assert np.isnan(auroc([0.1, 0.9], [0, 0]))


def _aurc_loop(scores, correct):
    """Independent O(n^2) reference: mean over answers of the risk at threshold s_i."""
    scores, correct = list(scores), list(correct)
    total = 0.0
    for s_i in scores:
        kept = [1 - zj for sj, zj in zip(scores, correct) if sj >= s_i]
        total += sum(kept) / len(kept)
    return total / len(scores)


def test_aurc_matches_loop():
    rng = np.random.default_rng(6)
    z = rng.integers(0, 2, 200)
    s = rng.normal(size=200) + z
    assert aurc(s, z) == pytest.approx(_aurc_loop(s, z), abs=1e-12)
    # without ties: mean over k of the error rate of the top-k answers
    order = np.argsort(-s)
    errs = 1 - z[order]
    by_k = np.mean([errs[:k].mean() for k in range(1, 201)])
    assert aurc(s, z) == pytest.approx(by_k, abs=1e-12)
    tied = np.round(s)
    assert aurc(tied, z) == pytest.approx(_aurc_loop(tied, z), abs=1e-12)


def test_risk_coverage_curve():
    cov, risk = risk_coverage([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0])
    np.testing.assert_allclose(cov, [0.25, 0.75, 1.0])  # the tied 0.8 pair enters together
    np.testing.assert_allclose(risk, [0.0, 1 / 3, 0.5])
    assert aurc([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]) == pytest.approx(0.25 * 0 + 0.5 / 3 + 0.25 * 0.5)
    # perfect ranking beats reversed ranking
    z = np.array([1, 1, 1, 0, 0])
    s = np.array([5.0, 4, 3, 2, 1])
    assert aurc(s, z) < aurc(-s, z)


# ---------------------------------------------------------------- smooth ECE

def _smooth_ece_brute(c, z, sigma):
    """Direct numerical integral of |(1/n) sum_i K(t, c_i) r_i| with explicit reflections."""
    t = np.linspace(0.0, 1.0, 20001)
    acc = np.zeros_like(t)
    for k in range(-3, 4):
        for ci, ri in zip(c, z - c):
            acc += ri * (np.exp(-0.5 * ((t - ci - 2 * k) / sigma) ** 2)
                         + np.exp(-0.5 * ((t + ci - 2 * k) / sigma) ** 2))
    vals = np.abs(acc) / (sigma * np.sqrt(2 * np.pi) * len(c))
    return float(np.sum((vals[1:] + vals[:-1]) / 2) * (t[1] - t[0]))


def test_smooth_ece_fixed_bandwidth_matches_definition():
    c, z = _synthetic(30, lambda p: p ** 2, seed=7)
    c[:2] = [0.0, 1.0]
    for sigma in (0.03, 0.1, 0.4):
        assert smooth_ece(c, z, bandwidth=sigma) == pytest.approx(
            _smooth_ece_brute(c, z, sigma), abs=2e-4)


def test_smooth_ece_calibrated_and_offset():
    c, z = _synthetic(200_000, lambda p: p, seed=8)
    assert smooth_ece(c, z) < 0.01
    c, z = _synthetic(50_000, lambda p: p - 0.2, seed=9, low=0.3)
    binned = ece(c, z, 15)
    assert binned == pytest.approx(0.2, abs=0.01)
    assert smooth_ece(c, z) == pytest.approx(binned, abs=0.01)
    assert smooth_ece([0.7] * 10, [0] * 10) == pytest.approx(0.7, abs=1e-6)


# ---------------------------------------------------------------- bootstrap / summary

def test_bootstrap_ci_contains_point_and_is_deterministic():
    c, z = _synthetic(500, lambda p: p ** 2, seed=10)
    point, low, high = bootstrap_ci(brier, c, z, n_boot=300, seed=1)
    assert point == brier(c, z)
    assert low < point < high
    assert bootstrap_ci(brier, c, z, n_boot=300, seed=1) == (point, low, high)
    assert bootstrap_ci(brier, c, z, n_boot=300, seed=2) != (point, low, high)
    # raw, unbounded scores are fine for a ranking metric
    p, lo, hi = bootstrap_ci(auroc, 50 * c - 10, z, n_boot=200, seed=0)
    assert lo <= p <= hi
    with pytest.raises(ValueError, match="alpha"):
        bootstrap_ci(brier, c, z, alpha=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci(brier, c, z, n_boot=0)


@pytest.mark.parametrize("fn", [ece, mce, brier, smooth_ece, reliability_bins])
def test_validation_errors_confidences(fn):
    with pytest.raises(ValueError, match="length mismatch"):
        fn([0.1, 0.2], [1])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn([0.1, 1.2], [1, 0])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn([-0.1, 0.2], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="0/1"):
        fn([0.1, 0.2], [1, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        fn([0.1, float("nan")], [1, 0])
    with pytest.raises(ValueError, match="1-D"):
        fn([[0.1, 0.2]], [[1, 0]])


@pytest.mark.parametrize("fn", [auroc, aurc, risk_coverage])
def test_validation_errors_scores(fn):
    fn([-5.0, 7.0], [0, 1])  # unbounded scores are allowed
    with pytest.raises(ValueError, match="length mismatch"):
        fn([0.1, 0.2, 0.3], [1, 0])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="infinite"):
        fn([0.1, np.inf], [1, 0])


def test_validation_errors_bins():
    with pytest.raises(ValueError, match="strategy"):
        ece([0.5], [1], strategy="equal")
    with pytest.raises(ValueError, match="n_bins"):
        ece([0.5], [1], n_bins=0)
    with pytest.raises(ValueError, match="bandwidth"):
        smooth_ece([0.5], [1], bandwidth=-1.0)


# ---------------------------------------------------------------- plot

def test_reliability_diagram_writes_png(tmp_path):
    import matplotlib.image as mpimg

    c, z = _synthetic(3000, lambda p: p ** 2, seed=12)
    target = tmp_path / "sub" / "rel.png"
    out = reliability_diagram(c, z, target, n_bins=15, title="test")
    assert out == target and target.is_file()
    data = target.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000
    img = mpimg.imread(target)
    assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 300
    assert img[..., :3].std() > 0.05  # not a blank canvas
