"""Summaries of records, one function for every job (spec section 3).

``summarize(records)`` gives, for a group of records (a dataset, a degradation level, ...):

- counts: ``n`` answers, ``n_errors`` (rows that could not be loaded or asked), ``n_parsed``;
- ``accuracy`` over all answers (an unparsed answer is wrong), ``accuracy_parsed`` over parsed
  answers, ``unparsed_rate``;
- ``confidence``: the mean of every confidence, ``{"all": ..., "parsed": ...}``. Over all answers,
  a probability-valued confidence of an unparsed answer is 0 (it committed to nothing); raw trace
  confidences exist for every answer;
- ``calibration``: for each probability-valued confidence (``answer_prob``, ``trace_prob``,
  ``sequence_prob``, ``c_mapped``), ECE and MCE (``N_BINS`` equal-width bins), Brier, AUROC, AURC and smooth ECE over
  all answers (unparsed = wrong at confidence 0) and over parsed answers, side by side;
- ``ranking``: AUROC and AURC of the raw trace confidences (C and its variants are not
  probabilities, so only ranking metrics apply); over all answers an unparsed answer ranks lowest.

Undefined values (a mean of nothing, AUROC with one class) are NaN here and ``null`` in JSON.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from catts.calibration.metrics import aurc, auroc, bootstrap_ci, brier, ece, mce, smooth_ece

N_BINS = 15
PROBABILITIES = ("answer_prob", "trace_prob", "sequence_prob", "c_mapped")
RAW = ("mean", "tail", "bottom10", "lowest_window")
SCOPES = ("all", "parsed")
NAN = float("nan")


def _values(records: list[dict], name: str) -> np.ndarray:
    return np.array([NAN if r["confidence"].get(name) is None else float(r["confidence"][name]) for r in records])


def _mean(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else NAN


def calibration(c: np.ndarray, z: np.ndarray, n_bins: int = N_BINS, smooth: bool = True) -> dict:
    """Calibration metrics of probabilities ``c`` against correctness ``z`` (NaN where undefined)."""
    if c.size == 0:
        return {"n": 0, "ece": NAN, "mce": NAN, "brier": NAN, "auroc": NAN, "aurc": NAN, "smooth_ece": NAN}
    c = np.clip(c, 0.0, 1.0)
    return {"n": int(c.size), "ece": ece(c, z, n_bins), "mce": mce(c, z, n_bins), "brier": brier(c, z),
            "auroc": auroc(c, z), "aurc": aurc(c, z), "smooth_ece": smooth_ece(c, z) if smooth else NAN}


def ranking(s: np.ndarray, z: np.ndarray) -> dict:
    if s.size == 0:
        return {"n": 0, "auroc": NAN, "aurc": NAN}
    return {"n": int(s.size), "auroc": auroc(s, z), "aurc": aurc(s, z)}


def summarize(records: list[dict], *, n_bins: int = N_BINS, smooth: tuple[str, ...] = ("answer_prob",),
              ci: bool = False, seed: int = 0) -> dict:
    """Accuracy, confidences, calibration and ranking of a group of records (module docstring).

    ``smooth``: the confidences whose smooth ECE is computed (it costs ~15 ms a call).
    ``ci``: add percentile-bootstrap 95% intervals (1000 resamples, ``seed``) of accuracy and of
    the ECE and AUROC of ``answer_prob`` over all answers.
    """
    answered = [r for r in records if "error" not in r]
    out: dict = {"n": len(answered), "n_errors": len(records) - len(answered)}
    if not answered:
        return out | {"n_parsed": 0, "accuracy": NAN, "accuracy_parsed": NAN, "unparsed_rate": NAN,
                      "mean_tokens": NAN, "confidence": {}, "calibration": {}, "ranking": {}}
    z = np.array([bool(r["correct"]) for r in answered], dtype=float)
    parsed = np.array([r["prediction"] is not None for r in answered])
    names = [n for n in PROBABILITIES if any(r["confidence"].get(n) is not None for r in answered)]
    out |= {"n_parsed": int(parsed.sum()), "accuracy": float(z.mean()),
            "accuracy_parsed": float(z[parsed].mean()) if parsed.any() else NAN,
            "unparsed_rate": float(1 - parsed.mean()),
            "mean_tokens": float(np.mean([r["num_tokens"] for r in answered])),
            "confidence": {}, "calibration": {}, "ranking": {}}
    for name in names:
        v = _values(answered, name)
        all_v = np.where(parsed & np.isfinite(v), v, 0.0)
        ok = parsed & np.isfinite(v)
        out["confidence"][name] = {"all": float(all_v.mean()), "parsed": _mean(v[parsed])}
        out["calibration"][name] = {"all": calibration(all_v, z, n_bins, name in smooth),
                                    "parsed": calibration(v[ok], z[ok], n_bins, name in smooth)}
    for name in RAW:
        v = _values(answered, name)
        if not np.isfinite(v).any():
            continue
        floor = np.nanmin(v) - 1.0
        all_v = np.where(parsed & np.isfinite(v), v, floor)
        ok = parsed & np.isfinite(v)
        out["confidence"][name] = {"all": _mean(v), "parsed": _mean(v[parsed])}
        out["ranking"][name] = {"all": ranking(all_v, z), "parsed": ranking(v[ok], z[ok])}
    if ci and "answer_prob" in names:
        p = np.where(parsed, np.nan_to_num(_values(answered, "answer_prob")), 0.0).clip(0, 1)
        out["ci95"] = {
            "accuracy": list(bootstrap_ci(lambda c, zz: float(zz.mean()), p, z, seed=seed)[1:]),
            "answer_prob_ece_all": list(bootstrap_ci(lambda c, zz: ece(c, zz, n_bins), p, z, seed=seed)[1:]),
            "answer_prob_auroc_all": list(bootstrap_ci(auroc, p, z, seed=seed)[1:])}
    return out


def by_field(records: list[dict], field: str) -> dict[str, dict]:
    """Accuracy over all answers per value of ``field`` (e.g. question_type), errors left out."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        if "error" not in r:
            groups[r.get(field) or "all"].append(bool(r["correct"]))
    return {k: {"accuracy": float(np.mean(v)), "n": len(v)} for k, v in sorted(groups.items())}


def errors_of(records: list[dict]) -> list[dict]:
    """Every record that holds an error: its key, id, stage and message (nothing is truncated)."""
    return [{"key": r.get("key"), "id": r.get("id"), "stage": r.get("stage"), "error": r["error"]}
            for r in records if "error" in r]
