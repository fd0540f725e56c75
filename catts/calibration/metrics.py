"""Calibration metrics for per-question confidences ``c`` in [0, 1] and correctness ``z`` in {0, 1}.

Every public function validates its inputs and raises ``ValueError`` with a plain message on
mismatched lengths, empty input, non-finite values, confidences outside [0, 1] or correctness
outside {0, 1}. Ranking metrics (:func:`auroc`, :func:`risk_coverage`, :func:`aurc`) take any finite
real score (higher = more confident), so raw trace confidences work without mapping to [0, 1].
Only numpy is needed at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Sequence, Union

import numpy as np

ArrayLike = Union[Sequence[float], Sequence[bool], np.ndarray]
Strategy = Literal["uniform", "quantile"]

__all__ = [
    "ReliabilityBins", "reliability_bins", "ece", "mce", "brier", "auroc", "risk_coverage",
    "aurc", "smooth_ece", "bootstrap_ci",
]


def _as_1d(values: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    try:
        arr = arr.astype(float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric") from exc
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_correct(correct: ArrayLike, n: int) -> np.ndarray:
    z = _as_1d(correct, "correct")
    if z.size != n:
        raise ValueError(f"length mismatch: {n} scores/confidences but {z.size} correctness values")
    if not np.all((z == 0) | (z == 1)):
        raise ValueError("correct must contain only 0/1 or booleans")
    return z


def _check_scores(scores: ArrayLike, correct: ArrayLike,
                  name: str = "scores") -> tuple[np.ndarray, np.ndarray]:
    s = _as_1d(scores, name)
    return s, _check_correct(correct, s.size)


def _check_conf(confidences: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    c, z = _check_scores(confidences, correct, "confidences")
    if c.min() < 0.0 or c.max() > 1.0:
        raise ValueError(f"confidences must lie in [0, 1], got range [{c.min():g}, {c.max():g}]")
    return c, z


@dataclass(frozen=True)
class ReliabilityBins:
    """Per-bin statistics. Bin ``b`` is ``[edges[b], edges[b+1])``; the last bin also holds 1.0.

    ``mean_confidence`` and ``accuracy`` are NaN for empty bins (``counts == 0``).
    """

    edges: np.ndarray
    counts: np.ndarray
    mean_confidence: np.ndarray
    accuracy: np.ndarray
    strategy: str

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @property
    def gaps(self) -> np.ndarray:  # |acc_b - conf_b| per bin, NaN for empty bins
        return np.abs(self.accuracy - self.mean_confidence)

    @property
    def nonempty(self) -> np.ndarray:
        return self.counts > 0


def reliability_bins(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 15,
                     strategy: Strategy = "uniform") -> ReliabilityBins:
    """Bin confidences and return edges, counts, mean confidence and accuracy per bin.

    ``uniform``: edges ``b / n_bins`` for ``b = 0..n_bins``; bin ``b`` is ``[b/B, (b+1)/B)`` and the
    top bin is closed, so c = 1.0 lands in bin ``B-1`` and c = 0.0 in bin 0.

    ``quantile`` (equal mass): sort the confidences ``s_0 <= ... <= s_{n-1}``; interior edges are
    ``e_b = s_{floor(b n / B)}`` for ``b = 1..B-1``, with ``e_0 = 0`` and ``e_B = 1``. A sample goes to the
    last bin whose lower edge is ``<= c``. Without ties, bin ``b`` holds exactly the ranks
    ``floor(b n/B) .. floor((b+1) n/B) - 1`` (counts differ by at most one). Tied values are never
    split: all samples with one value share one bin, and the bins whose edges collapsed onto that
    value stay empty (they get weight 0 in ECE and are ignored by MCE).
    """
    c, z = _check_conf(confidences, correct)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy == "uniform":
        edges = np.arange(n_bins + 1, dtype=float) / n_bins
    elif strategy == "quantile":
        s = np.sort(c)
        interior = s[(np.arange(1, n_bins) * c.size) // n_bins]
        edges = np.concatenate([[0.0], interior, [1.0]])
    else:
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")
    idx = np.searchsorted(edges[1:-1], c, side="right")  # number of interior edges <= c
    counts = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=c, minlength=n_bins) / counts
        acc = np.bincount(idx, weights=z, minlength=n_bins) / counts
    return ReliabilityBins(edges, counts, mean_conf, acc, strategy)


def ece(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 15,
        strategy: Strategy = "uniform") -> float:
    """Expected calibration error ``sum_b (n_b / n) |acc_b - conf_b|`` over the bins of
    :func:`reliability_bins` (``acc_b``: mean of z in bin b, ``conf_b``: mean of c in bin b)."""
    bins = reliability_bins(confidences, correct, n_bins, strategy)
    ok = bins.nonempty
    return float(np.sum(bins.counts[ok] / bins.n * bins.gaps[ok]))


def mce(confidences: ArrayLike, correct: ArrayLike, n_bins: int = 15,
        strategy: Strategy = "uniform") -> float:
    """Maximum calibration error ``max_b |acc_b - conf_b|`` over the non-empty bins."""
    bins = reliability_bins(confidences, correct, n_bins, strategy)
    return float(np.max(bins.gaps[bins.nonempty]))


def brier(confidences: ArrayLike, correct: ArrayLike) -> float:
    """Brier score ``mean((c_i - z_i)^2)``; 0 is perfect, lower is better."""
    c, z = _check_conf(confidences, correct)
    return float(np.mean((c - z) ** 2))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``; tied values get the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.flatnonzero(np.concatenate([[True], xs[1:] != xs[:-1]]))
    ends = np.concatenate([starts[1:], [x.size]])
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auroc(scores: ArrayLike, correct: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for telling correct (z=1) from wrong (z=0) answers.

    Mann-Whitney form: ``AUROC = (R_1 - n_1 (n_1 + 1) / 2) / (n_1 n_0)``, with ``R_1`` the sum of the
    (tie-averaged) ranks of the correct answers' scores. Equals P(s_correct > s_wrong) +
    P(tie) / 2. Only the order of the scores matters, so any finite real scores work.

    Returns NaN (it does not raise) when only one class is present: AUROC is undefined there, and a
    NaN lets batch evaluations and bootstrap resamples carry on.
    """
    s, z = _check_scores(scores, correct)
    n1 = int(z.sum())
    n0 = z.size - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    r1 = _average_ranks(s)[z == 1].sum()
    return float((r1 - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def risk_coverage(scores: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Risk-coverage curve of selective prediction that keeps the answers with ``score >= tau``.

    One point per distinct score ``tau``, in descending order of ``tau`` (tied scores are accepted
    or rejected together). ``coverage = k / n`` with ``k`` the number of answers kept, and
    ``risk = (number of wrong answers kept) / k``. The last point has coverage 1 and risk equal to
    the overall error rate.

    Returns ``(coverages, risks)``, both increasing in coverage.
    """
    s, z = _check_scores(scores, correct)
    order = np.argsort(-s, kind="mergesort")
    ss, errors = s[order], 1.0 - z[order]
    last_of_group = np.concatenate([ss[1:] != ss[:-1], [True]])
    kept = np.arange(1, s.size + 1)[last_of_group]
    wrong = np.cumsum(errors)[last_of_group]
    return kept / s.size, wrong / kept


def aurc(scores: ArrayLike, correct: ArrayLike) -> float:
    """Area under the risk-coverage curve (lower is better).

    Definition used: ``AURC = sum_g (cov_g - cov_{g-1}) * risk_g`` over the points of
    :func:`risk_coverage` (``cov_0 = 0``), i.e. a right-endpoint step integral over coverage in
    [0, 1]. Equivalently, each answer ``i`` contributes ``1/n`` times the selective risk at the
    threshold ``tau = s_i``: ``AURC = (1/n) sum_i risk(s >= s_i)``. Without ties this is the usual mean
    of the selective risk over the n coverage points ``k/n``, ``k = 1..n``.
    """
    cov, risk = risk_coverage(scores, correct)
    return float(np.sum(np.diff(cov, prepend=0.0) * risk))


_SMECE_GRID = 2048  # grid intervals on [0, 1] for the smoothed residual


def _smoothed_abs_integral(mass_f: np.ndarray, sigma: float) -> float:
    """``int_0^1 |sum_j mass_j K_sigma(t, g_j)| dt`` for a reflected Gaussian kernel K.

    ``mass_f`` is the real FFT of the mass on the 2M nodes ``j/M`` of a circle of length 2 that
    already holds each point and its mirror image at ``-c``; circular convolution with the wrapped
    Gaussian then equals reflecting the kernel at both 0 and 1. (The FFT is taken once by the
    caller: the bandwidth search calls this function many times on the same mass.)
    """
    m2 = 2 * (mass_f.size - 1)
    h = 2.0 / m2
    d = np.minimum(np.arange(m2), m2 - np.arange(m2)) * h  # circular distance to node 0
    wraps = np.arange(-(int(4 * sigma / 2.0) + 2), int(4 * sigma / 2.0) + 3)
    kern = np.exp(-0.5 * ((d[:, None] + 2.0 * wraps[None, :]) / sigma) ** 2).sum(axis=1)
    kern /= kern.sum() * h  # a density on the circle (exact mass even when sigma ~ h)
    smooth = np.fft.irfft(mass_f * np.fft.rfft(kern), n=m2)
    vals = np.abs(smooth[: m2 // 2 + 1])  # nodes 0, h, ..., 1
    return float(h * (vals.sum() - 0.5 * (vals[0] + vals[-1])))  # trapezoid rule


def smooth_ece(confidences: ArrayLike, correct: ArrayLike,
               bandwidth: float | None = None) -> float:
    """Smooth ECE (Blasiok & Nakkiran, 2023), implemented here from its definition.

    With residuals ``r_i = z_i - c_i`` and a Gaussian kernel ``K_sigma`` reflected at 0 and 1,
    the kernel-smoothed residual is ``r(t) = sum_i K(t, c_i) r_i / sum_i K(t, c_i)`` and the kernel
    density is ``delta(t) = (1/n) sum_i K(t, c_i)``; then

        smECE_sigma = int_0^1 |r(t)| delta(t) dt = int_0^1 |(1/n) sum_i K(t, c_i) r_i| dt.

    ``K(t, c) = sum_k [phi_sigma(t - c - 2k) + phi_sigma(t + c - 2k)]`` keeps all kernel mass in [0, 1].
    Bandwidth: ``bandwidth=None`` uses the paper's parameter-free choice, the fixed point
    ``sigma*`` with ``smECE_sigma* = sigma*`` (smECE_sigma decreases in sigma), found by bisection;
    a float uses that sigma. Numerics: the residual mass is linearly interpolated onto a grid of
    2048 intervals on [0, 1] and convolved by FFT; sigma is kept >= half a grid step.
    (The ``relplot`` package was not wrapped: it pulls in pandas and seaborn.)
    """
    c, z = _check_conf(confidences, correct)
    if bandwidth is not None and not (np.isfinite(bandwidth) and bandwidth > 0):
        raise ValueError(f"bandwidth must be a positive float or None, got {bandwidth!r}")
    m = _SMECE_GRID
    h = 1.0 / m
    r = (z - c) / c.size
    mass = np.zeros(2 * m)
    for pos in (c, -c):  # the point and its mirror image at -c on the circle [-1, 1)
        x = np.mod(pos, 2.0) / h
        lo = np.minimum(np.floor(x).astype(int), 2 * m - 1)
        frac = x - lo
        np.add.at(mass, lo, r * (1 - frac))
        np.add.at(mass, (lo + 1) % (2 * m), r * frac)
    sigma_min = 0.5 * h
    mass = np.fft.rfft(mass)
    if bandwidth is not None:
        return _smoothed_abs_integral(mass, max(float(bandwidth), sigma_min))
    lo_s, hi_s = sigma_min, 1.0
    if _smoothed_abs_integral(mass, lo_s) <= lo_s:  # (near-)zero residuals: fixed point below grid
        return _smoothed_abs_integral(mass, lo_s)
    while hi_s - lo_s > 1e-6:  # bisection on the decreasing smECE_sigma - sigma
        mid = 0.5 * (lo_s + hi_s)
        if _smoothed_abs_integral(mass, mid) > mid:
            lo_s = mid
        else:
            hi_s = mid
    return _smoothed_abs_integral(mass, 0.5 * (lo_s + hi_s))


def bootstrap_ci(metric_fn: Callable[[np.ndarray, np.ndarray], float], confidences: ArrayLike,
                 correct: ArrayLike, n_boot: int = 1000, alpha: float = 0.05,
                 seed: int = 0) -> tuple[float, float, float]:
    """Percentile bootstrap: ``(metric_fn(c, z), q_{alpha/2}, q_{1-alpha/2})``.

    Each of ``n_boot`` resamples draws n indices with replacement (``numpy.random.default_rng(seed)``,
    so the result is deterministic given ``seed``); the bounds are quantiles of the resampled metric.
    Resamples where the metric is NaN (e.g. AUROC with one class) are dropped. ``confidences`` may be
    unbounded scores when ``metric_fn`` accepts them. For biased metrics such as binned ECE the
    resampled values sit above the point estimate, and the interval need not contain it.
    """
    c, z = _check_scores(confidences, correct, "confidences")
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    point = float(metric_fn(c, z))
    rng = np.random.default_rng(seed)
    n = c.size
    chunk = max(1, 4_000_000 // n)  # bound the index matrix to ~32 MB
    stats = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for j, row in enumerate(idx):
            stats[start + j] = metric_fn(c[row], z[row])
    if np.all(np.isnan(stats)):
        return point, float("nan"), float("nan")
    low, high = np.nanquantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return point, float(low), float(high)
