"""Token and trace confidence from top-k log-probabilities (spec section 2; higher = more confident).

Token confidence at step t over the k most likely tokens of the raw next-token distribution:

    c_t = -(1/k) * sum_{i=1..k} log p_(i)

A peaked distribution gives a large c_t; its minimum, log k, is reached when the top-k mass is spread
evenly. Trace confidences summarise c_1..c_T:

- ``mean``: the mean of c_t over generated tokens (C in the paper);
- ``tail``: the mean of the last ``tail`` tokens (50);
- ``bottom10``: the mean of the lowest 10% of sliding-window means (window 20);
- ``lowest_window``: the lowest sliding-window mean.

A trace shorter than the window uses one window over the whole trace. Written here because these
are DeepConf-style statistics that no maintained library computes from stored log-probabilities.
"""

from __future__ import annotations

import numpy as np

TAIL = 50
WINDOW = 20
BOTTOM_SHARE = 0.10


def token_confidence(top_logprobs: np.ndarray) -> np.ndarray:
    """[T, k] top-k log-probabilities -> [T] token confidences c_t = -mean_k log p."""
    top = np.asarray(top_logprobs, dtype=np.float64)
    if top.ndim != 2 or top.shape[1] == 0:
        raise ValueError(f"top_logprobs must be [T, k] with k >= 1, got shape {top.shape}")
    if np.any(top > 1e-6) or np.any(np.isnan(top)):
        raise ValueError("top_logprobs must be log-probabilities (<= 0, no NaN)")
    # -inf (a token of zero probability inside the top k) would make c_t infinite; clip to float32's floor
    return -np.maximum(top, np.log(np.finfo(np.float32).tiny)).mean(axis=1)


def window_means(c: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """Means of every contiguous window of ``window`` values (one window if the trace is shorter)."""
    c = np.asarray(c, dtype=np.float64)
    if len(c) <= window:
        return np.array([c.mean()]) if len(c) else np.array([])
    csum = np.concatenate([[0.0], np.cumsum(c)])
    return (csum[window:] - csum[:-window]) / window


def trace_confidences(top_logprobs: np.ndarray, *, tail: int = TAIL, window: int = WINDOW,
                      bottom_share: float = BOTTOM_SHARE) -> dict[str, float]:
    """All trace-level confidences of one trace; NaN for an empty trace."""
    top = np.asarray(top_logprobs)
    if top.size == 0:
        return {"mean": float("nan"), "tail": float("nan"), "bottom10": float("nan"), "lowest_window": float("nan")}
    c = token_confidence(top)
    w = window_means(c, window)
    n_bottom = max(1, int(np.ceil(bottom_share * len(w))))
    return {"mean": float(c.mean()), "tail": float(c[-tail:].mean()),
            "bottom10": float(np.sort(w)[:n_bottom].mean()), "lowest_window": float(w.min())}
