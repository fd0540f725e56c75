"""The probe's finding in words and tables: ``summary.md``, ``levels.csv``.

The finding compares the clean level with the strongest diffusion level, like for like:

- over parsed answers (the finding's basis): the accuracy of the answers the model gave against its
  mean answer probability on those same answers. An unparsed answer carries no confidence, so it
  is left out of both sides;
- over all answers (beside it): accuracy counting an unparsed answer wrong, against the mean answer
  probability counting it 0. This pairs a format failure with a perfect "I do not know", which
  makes a model that breaks format under noise look *better* calibrated there.

The bluntness ratio is (drop in mean confidence) / (drop in accuracy): 1 means confidence fell as
much as accuracy, near 0 means it hardly moved. The paper's C (raw, unbounded) is reported with its
AUROC, and the mapped C is shown only when its map is not degenerate (a flat map gives every
answer the same value).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from catts.jobs.summary import PROBABILITIES, RAW, SCOPES

WHY_PARSED = ("stated over parsed answers: an unparsed answer carries no confidence, and counting it as "
              "confidence 0 pairs a format failure with a perfect \"I do not know\"")


def _get(level: dict, *path, default=np.nan):
    x = level
    for p in path:
        if not isinstance(x, dict) or x.get(p) is None:
            return default
        x = x[p]
    return x


def _pair(a: dict, b: dict, *path) -> list[float]:
    return [_get(a, *path), _get(b, *path)]


def _drop(pair: list[float]) -> float:
    return pair[0] - pair[1]


FINDING_CONFIDENCES = ("answer_prob", "trace_prob", "sequence_prob")  # probability-valued, the model's own
CONFIDENCE_WORDS = {"answer_prob": "answer probability", "trace_prob": "trace probability",
                    "sequence_prob": "sequence probability"}


def _confidence_finding(a: dict, b: dict, name: str, scope: str) -> dict:
    acc = _pair(a, b, "accuracy_parsed" if scope == "parsed" else "accuracy")
    conf = _pair(a, b, "confidence", name, scope)
    ratio = _drop(conf) / _drop(acc) if _drop(acc) > 0 and np.isfinite(_drop(conf)) else None
    return {"confidence": conf, "confidence_drop": _drop(conf), "accuracy_drop": _drop(acc), "drop_ratio": ratio,
            "ece": _pair(a, b, "calibration", name, scope, "ece"),
            "auroc": _pair(a, b, "calibration", name, scope, "auroc")}


def finding(levels: list[dict], cmap=None) -> dict | None:
    """Clean (first) vs strongest (last) diffusion level of one dataset, over parsed and all answers."""
    diff = [lv for lv in levels if lv["kind"] == "diffusion" and lv.get("n")]
    if len(diff) < 2:
        return None
    a, b = diff[0], diff[-1]
    out = {"from_level": a["level"], "to_level": b["level"], "n": [a["n"], b["n"]], "uses": "parsed",
           "why": WHY_PARSED, "unparsed_rate": _pair(a, b, "unparsed_rate")}
    for scope, acc_key in (("parsed", "accuracy_parsed"), ("all", "accuracy")):
        acc, conf = _pair(a, b, acc_key), _pair(a, b, "confidence", "answer_prob", scope)
        ratio = _drop(conf) / _drop(acc) if _drop(acc) > 0 and np.isfinite(_drop(conf)) else None
        out[scope] = {"accuracy": acc, "answer_prob": conf, "accuracy_drop": _drop(acc),
                      "answer_prob_drop": _drop(conf), "drop_ratio": ratio,
                      "ece": _pair(a, b, "calibration", "answer_prob", scope, "ece"),
                      "auroc": _pair(a, b, "calibration", "answer_prob", scope, "auroc")}
    out["confidences"] = {name: {scope: _confidence_finding(a, b, name, scope) for scope in SCOPES}
                          for name in FINDING_CONFIDENCES}
    out["C"] = {"mean": _pair(a, b, "confidence", "mean", "parsed"),
                "auroc_parsed": _pair(a, b, "ranking", "mean", "parsed", "auroc")}
    degenerate = cmap is None or cmap.degenerate
    out["c_mapped"] = {"degenerate": degenerate,
                       "mean_parsed": None if degenerate else _pair(a, b, "confidence", "c_mapped", "parsed")}
    return out


def _f(x, digits: int = 3) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


def finding_text(data: str, f: dict, cmap_info: dict | None) -> list[str]:
    p, al = f["parsed"], f["all"]

    def ratio(d):
        return "n/a (accuracy did not fall)" if d["drop_ratio"] is None else f"{d['drop_ratio']:.2f}"

    lines = [f"From diffusion t={f['from_level']} to t={f['to_level']}, over the answers the model gave "
             f"(parsed answers), accuracy went {_f(p['accuracy'][0])} -> {_f(p['accuracy'][1])} "
             f"({-100 * p['accuracy_drop']:+.1f} points) while their mean answer probability went "
             f"{_f(p['answer_prob'][0])} -> {_f(p['answer_prob'][1])} ({-100 * p['answer_prob_drop']:+.1f} points): "
             f"bluntness ratio (confidence drop / accuracy drop) {ratio(p)}.", ""]
    if p["drop_ratio"] is not None and p["drop_ratio"] >= 1:
        lines += ["Here the finding does not hold: confidence fell at least as much as accuracy.", ""]
    elif p["drop_ratio"] is not None and p["accuracy_drop"] > 0.05:
        moved = (f"fell {p['drop_ratio']:.2f} times as much as their accuracy" if p["answer_prob_drop"] > 0 else
                 f"did not fall at all (it rose {-100 * p['answer_prob_drop']:.1f} points) while their accuracy fell")
        lines += ["Perceptual bluntness holds here for the answer probability: on the answers it still gives, the "
                  f"model's confidence {moved}.", ""]
    lines += [f"Over all answers (an unparsed answer counted wrong at confidence 0): accuracy "
              f"{_f(al['accuracy'][0])} -> {_f(al['accuracy'][1])}, mean answer probability "
              f"{_f(al['answer_prob'][0])} -> {_f(al['answer_prob'][1])}, ratio {ratio(al)}. Unparsed answers went "
              f"{_f(f['unparsed_rate'][0])} -> {_f(f['unparsed_rate'][1])}; ECE of the answer probability "
              f"{_f(p['ece'][0])} -> {_f(p['ece'][1])} over parsed answers, {_f(al['ece'][0])} -> {_f(al['ece'][1])} "
              "over all. The finding is " + WHY_PARSED + ".", ""]
    for name, what in (("trace_prob", "exp of the mean token log-probability over the whole answer, rationale "
                                      "included"),
                       ("sequence_prob", "exp of the summed token log-probability: the model's probability of "
                                         "the whole answer")):
        t = (f.get("confidences") or {}).get(name, {}).get("parsed")
        if not t:
            continue
        tr = "n/a" if t["drop_ratio"] is None else f"{t['drop_ratio']:.2f}"
        lines += [f"The {CONFIDENCE_WORDS[name]} ({what}) went {_f(t['confidence'][0])} -> "
                  f"{_f(t['confidence'][1])} over the same parsed answers: ratio {tr}; its ECE {_f(t['ece'][0])} -> "
                  f"{_f(t['ece'][1])}, AUROC {_f(t['auroc'][0])} -> {_f(t['auroc'][1])}.", ""]
    c = f["C"]
    lines += [f"The paper's C (mean top-20 token confidence, raw, higher = surer) went {_f(c['mean'][0], 2)} -> "
              f"{_f(c['mean'][1], 2)}; its AUROC over parsed answers {_f(c['auroc_parsed'][0])} -> "
              f"{_f(c['auroc_parsed'][1])}."]
    if f["c_mapped"]["degenerate"]:
        value = "" if not cmap_info else f" (every answer maps to {_sigmoid(cmap_info.get('b', 0.0)):.3f})"
        lines += [f"The map of C to [0, 1] fitted on clean held-out answers is degenerate{value}: the clean "
                  "answers it was fitted on are (almost) never wrong, so mapped C is not reported."]
    else:
        m = f["c_mapped"]["mean_parsed"]
        lines += [f"Mapped C (Platt map fitted on clean held-out answers) went {_f(m[0])} -> {_f(m[1])}."]
    return lines + [""]


def _sigmoid(b: float) -> float:
    return float(1 / (1 + np.exp(-b)))


def write_markdown(path: Path, summary: dict) -> Path:
    lines = ["# Probe summary", "",
             f"Calibration metrics use {summary['n_bins']} equal-width bins. \"parsed\": over answers that could "
             "be read; \"all\": every answer, an unparsed one counted wrong at confidence 0.", ""]
    for data in dict.fromkeys(lv["data"] for lv in summary["levels"]):
        levels = [lv for lv in summary["levels"] if lv["data"] == data]
        cmap = summary["confidence_maps"].get(data)
        show_mapped = bool(cmap) and not cmap.get("degenerate")
        lines += [f"## {data}", ""]
        f = summary["finding"].get(data)
        if f:
            lines += finding_text(data, f, cmap)
        head = ["kind", "level", "n", "unparsed", "acc (all)", "acc (parsed)", "answer prob (parsed)",
                *(["mapped C (parsed)"] if show_mapped else []), "ECE (parsed)", "ECE (all)", "AUROC (parsed)",
                "AUROC of C (parsed)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for lv in levels:
            if not lv.get("n"):
                lines.append(f"| {lv['kind']} | {lv['level']} | 0 | " + " | ".join(["n/a"] * (len(head) - 3)) + " |")
                continue
            row = [lv["kind"], str(lv["level"]), str(lv["n"]), _f(lv["unparsed_rate"]), _f(lv["accuracy"]),
                   _f(lv["accuracy_parsed"]), _f(_get(lv, "confidence", "answer_prob", "parsed")),
                   *([_f(_get(lv, "confidence", "c_mapped", "parsed"))] if show_mapped else []),
                   _f(_get(lv, "calibration", "answer_prob", "parsed", "ece")),
                   _f(_get(lv, "calibration", "answer_prob", "all", "ece")),
                   _f(_get(lv, "calibration", "answer_prob", "parsed", "auroc")),
                   _f(_get(lv, "ranking", "mean", "parsed", "auroc"))]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    n_err = len(summary.get("errors", []))
    if n_err:
        lines += [f"{n_err} input rows or samples could not be used; each is in summary.json (`errors`) and "
                  "results.jsonl with its reason.", ""]
    t = summary["timing"]
    lines.append(f"Probe time {t['total_seconds']:.1f}s, of which {100 * t['overhead_share']:.1f}% outside "
                 "model calls.")
    path.write_text("\n".join(lines) + "\n")
    return path


BASE_FIELDS = ("data", "kind", "level", "n", "n_errors", "n_parsed", "unparsed_rate", "accuracy", "accuracy_parsed",
               "mean_tokens")
CAL_METRICS = ("ece", "mce", "brier", "auroc", "aurc", "smooth_ece")


def write_levels_csv(path: Path, levels: list[dict]) -> Path:
    """One row per level; confidence means and metrics flattened as NAME_METRIC_SCOPE (empty = undefined)."""
    cols = list(BASE_FIELDS)
    cols += [f"conf_{n}_{s}" for n in (*PROBABILITIES, *RAW) for s in SCOPES]
    cols += [f"{n}_{m}_{s}" for n in PROBABILITIES for m in CAL_METRICS for s in SCOPES]
    cols += [f"C_{n}_{m}_{s}" for n in RAW for m in ("auroc", "aurc") for s in SCOPES]

    def value(lv, col):
        if col in BASE_FIELDS:
            v = lv.get(col)
        elif col.startswith("conf_"):
            name, scope = col[5:].rsplit("_", 1)
            v = _get(lv, "confidence", name, scope, default=None)
        elif col.startswith("C_"):
            name, metric, scope = col[2:].rsplit("_", 2)
            v = _get(lv, "ranking", name, scope, metric, default=None)
        else:
            name, metric, scope = _split_metric(col)
            v = _get(lv, "calibration", name, scope, metric, default=None)
        return "" if v is None or (isinstance(v, float) and not np.isfinite(v)) else v

    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for lv in levels:
            w.writerow([value(lv, c) for c in cols])
    return path


def _split_metric(col: str) -> tuple[str, str, str]:
    rest, scope = col.rsplit("_", 1)
    for m in sorted(CAL_METRICS, key=len, reverse=True):
        if rest.endswith("_" + m):
            return rest[: -len(m) - 1], m, scope
    raise ValueError(col)
