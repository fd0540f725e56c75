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
