"""The shared path's parts by hand: strict JSON, trace shards, the one summariser, progress off a terminal."""

import json
import logging

import numpy as np
import pytest

from catts.jobs.progress import LogProgress
from catts.jobs.rundir import dumps, load_traces, save_traces
from catts.jobs.summary import summarize
from catts.models.backend import Trace


def _trace(text, n=3, k=4, seed=0):
    rng = np.random.default_rng(seed)
    top = -np.sort(rng.random((n, k)) * 5, axis=1).astype(np.float32)
    return Trace(text=text, token_ids=list(range(n)), logprobs=top[:, 0].copy(), top_logprobs=top,
                 top_ids=np.arange(n * k).reshape(n, k), finish_reason="length", tokens=[f"t{i}" for i in range(n)],
                 top_tokens=[[f"p{j}" for j in range(k)] for _ in range(n)])


def test_strict_json_never_writes_nan():
    text = dumps({"a": float("nan"), "b": [np.float32(1.5), float("inf")], "c": np.int64(3)})
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": 3} and "NaN" not in text


def test_trace_shards_round_trip_and_later_shard_wins(tmp_path):
    a, b = _trace("first", 3, seed=1), _trace("second", 5, seed=2)
    save_traces(tmp_path, {"k1": a, "k2": b})
    save_traces(tmp_path, {"k1": _trace("redone", 2, seed=3), "k3": _trace("", 0)})
    got = load_traces(tmp_path)
    assert set(got) == {"k1", "k2", "k3"} and got["k1"].text == "redone" and got["k3"].num_tokens == 0
    g = got["k2"]
    assert g.text == "second" and g.token_ids == b.token_ids and g.tokens == b.tokens and g.top_tokens == b.top_tokens
    np.testing.assert_array_equal(g.top_logprobs, b.top_logprobs)
    np.testing.assert_array_equal(g.top_ids, b.top_ids)
    assert g.finish_reason == "length" and g.logprob_source == "raw"


def test_run_folder_is_created_only_by_rundir(tmp_path):
    from catts.jobs.rundir import check_resumable

    check_resumable(tmp_path / "new", {"task": "eval"})
    assert not (tmp_path / "new").exists()


def _rec(correct, p, parsed=True, c=10.0):
    return {"correct": correct and parsed, "prediction": "A" if parsed else None, "num_tokens": 5,
            "confidence": {"answer_prob": p if parsed else None, "trace_prob": 0.5, "mean": c, "tail": c,
                           "bottom10": c, "lowest_window": c}}


def test_summary_scopes_by_hand():
    # two right answers at 0.9, one wrong at 0.8, one unparsed (its C is the highest)
    recs = [_rec(True, 0.9, c=12), _rec(True, 0.9, c=11), _rec(False, 0.8, c=9), _rec(False, None, False, c=20),
            {"error": "bad image", "correct": False, "prediction": None}]
    s = summarize(recs)
    assert s["n"] == 4 and s["n_errors"] == 1 and s["n_parsed"] == 3
    assert s["accuracy"] == 0.5 and s["accuracy_parsed"] == pytest.approx(2 / 3) and s["unparsed_rate"] == 0.25
    ap = s["confidence"]["answer_prob"]
    assert ap["parsed"] == pytest.approx(2.6 / 3) and ap["all"] == pytest.approx(2.6 / 4)
    parsed, every = s["calibration"]["answer_prob"]["parsed"], s["calibration"]["answer_prob"]["all"]
    # 15 bins: {0.8} and {0.9} fall apart; parsed ECE = (2/3)*0.1 + (1/3)*0.8; all adds the unparsed at 0
    assert parsed["ece"] == pytest.approx(2 / 3 * 0.1 + 1 / 3 * 0.8)
    assert every["ece"] == pytest.approx(2 / 4 * 0.1 + 1 / 4 * 0.8 + 0)
    assert parsed["brier"] == pytest.approx((0.01 + 0.01 + 0.64) / 3)
    assert parsed["auroc"] == 1.0 and every["auroc"] == 1.0
    # raw C: over all answers the unparsed one ranks lowest, so C still separates perfectly
    assert s["ranking"]["mean"]["all"]["auroc"] == 1.0 and s["ranking"]["mean"]["parsed"]["auroc"] == 1.0


def test_log_progress_prints_at_a_steady_interval(caplog):
    now = [0.0]
    p = LogProgress(interval=10, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="catts"):
        p.phase("answering", total=100)
        for _ in range(100):
            now[0] += 1.0
            p.advance(1)
        p.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("answering: started") and lines[-1].startswith("answering: finished")
    ticks = [m for m in lines if "/100" in m]
    assert len(ticks) == 10 and ticks[0].startswith("answering: 10/100 (10%)") and "left" in ticks[0]


def test_log_progress_heartbeat_during_one_long_step(caplog):
    """A phase held by one long call (no advance) still prints a line every interval, off a terminal."""
    import time

    p = LogProgress(interval=0.2)
    with caplog.at_level(logging.INFO, logger="catts"):
        p.phase("sampling", total=4)
        time.sleep(0.7)  # one model call that takes a while
        p.advance(4)
        p.close()
        time.sleep(0.3)  # no beat after the job is over
    lines = [r.getMessage() for r in caplog.records]
    beats = [m for m in lines if m.endswith("(still running)")]
    assert len(beats) >= 2 and beats[0].startswith("sampling: 0/4")
    assert lines[-1].startswith("sampling: finished")
