"""The probe's report: ``levels.csv``, the Figure-1 plots, reliability diagrams and ``summary.md``.

Figure 1 (spec section 1): x = degradation level, y = accuracy and mean confidence, with a strip
of one degraded image under the axis so the reader sees what each level looks like.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from catts.calibration.plots import draw_reliability
from catts.perception.degrade import degrade

CSV_FIELDS = ("data", "kind", "level", "n", "n_errors", "accuracy", "unparsed_rate", "ece", "ece_c_mapped", "brier",
              "auroc", "auroc_c", "mean_tokens")
AXES_WIDTH = 0.55
PLOTTED = (("answer_prob", "answer probability", "#C44E52"), ("c_mapped", "mapped trace confidence C", "#DD8452"),
           ("nmlp", "normalised trace probability", "#8172B3"))


def _slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)


def write_levels_csv(path: Path, levels: list[dict]) -> Path:
    conf_names = sorted({k for lv in levels for k in lv.get("confidence", {})})
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*CSV_FIELDS, *[f"conf_{c}" for c in conf_names]])
        for lv in levels:
            w.writerow([lv.get(k, "") for k in CSV_FIELDS] + [lv.get("confidence", {}).get(c, "") for c in conf_names])
    return path


def figure_one(path: Path, levels: list[dict], kind: str, data: str, example, seed: int) -> Path:
    """Accuracy and mean confidences against level, with the degraded example image along the axis."""
    xs = np.arange(len(levels))
    fig = Figure(figsize=(1.1 * len(levels) + 4.5, 5.2), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([0.08, 0.36, AXES_WIDTH, 0.56])
    ax.plot(xs, [lv["accuracy"] for lv in levels], "o-", color="#4C72B0", linewidth=2.2, label="accuracy")
    for name, label, color in PLOTTED:
        ys = [lv.get("confidence", {}).get(name, np.nan) for lv in levels]
        if np.isfinite(ys).any():
            ax.plot(xs, ys, "s--", color=color, linewidth=1.6, label=f"mean {label}")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.5, len(levels) - 0.5)
    ax.set_xticks(xs, [str(lv["level"]) for lv in levels])
    ax.set_ylabel("accuracy / confidence")
    ax.set_title(f"{data}: {kind} (n = {levels[0]['n']} per level)", fontsize=10)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
    if example is not None:
        width = AXES_WIDTH / len(levels)
        for i, lv in enumerate(levels):
            img = degrade(example.load_images()[0], kind, lv["level"], seed=seed, key=example.id)
            iax = fig.add_axes([0.08 + i * width + width * 0.05, 0.06, width * 0.9, 0.2])
            iax.imshow(np.asarray(img))
            iax.set_axis_off()
        fig.text(0.08, 0.28, f"{kind} level (image: {example.id})", fontsize=8)
    fig.savefig(path, format="png")
    return path


def reliability_grid(path: Path, records_by_level: list[tuple[dict, list[dict]]], kind: str, data: str) -> Path:
    """One reliability diagram of answer_prob per level, side by side."""
    n = len(records_by_level)
    fig = Figure(figsize=(2.6 * n, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, n, squeeze=False, gridspec_kw={"height_ratios": [3, 1]})
    for i, (lv, recs) in enumerate(records_by_level):
        ok = [r for r in recs if "error" not in r]
        if not ok:
            continue
        c = np.clip([r["confidence"]["answer_prob"] for r in ok], 0, 1)
        z = np.array([r["correct"] for r in ok], dtype=float)
        draw_reliability(axes[0, i], axes[1, i], c, z, n_bins=10, title=f"{kind} {lv['level']}", legend=False)
    fig.suptitle(f"{data}: reliability of the answer probability", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    return path


def bluntness(levels: list[dict]) -> dict | None:
    """Clean (first) vs strongest (last) diffusion level: the drops in accuracy and answer probability."""
    diff = [lv for lv in levels if lv["kind"] == "diffusion" and lv.get("n")]
    if len(diff) < 2:
        return None
    a, b = diff[0], diff[-1]
    acc_drop = a["accuracy"] - b["accuracy"]
    conf_drop = a["confidence"]["answer_prob"] - b["confidence"]["answer_prob"]
    return {"from_level": a["level"], "to_level": b["level"], "accuracy": [a["accuracy"], b["accuracy"]],
            "answer_prob": [a["confidence"]["answer_prob"], b["confidence"]["answer_prob"]],
            "accuracy_drop": acc_drop, "answer_prob_drop": conf_drop,
            "drop_ratio": conf_drop / acc_drop if acc_drop > 0 else None}


def write_markdown(path: Path, summary: dict) -> Path:
    lines = ["# Probe summary", ""]
    for data in dict.fromkeys(lv["data"] for lv in summary["levels"]):
        levels = [lv for lv in summary["levels"] if lv["data"] == data]
        b = bluntness(levels)
        lines += [f"## {data}", ""]
        if b:
            ratio = f"{b['drop_ratio']:.2f}" if b["drop_ratio"] is not None else "n/a"
            lines += [f"From diffusion t={b['from_level']} to t={b['to_level']}, accuracy went "
                      f"{b['accuracy'][0]:.3f} -> {b['accuracy'][1]:.3f} ({-100 * b['accuracy_drop']:+.1f} points) "
                      f"while the mean answer probability went {b['answer_prob'][0]:.3f} -> {b['answer_prob'][1]:.3f} "
                      f"({-100 * b['answer_prob_drop']:+.1f} points): confidence fell {ratio} times as much as "
                      "accuracy.", ""]
        lines += ["| kind | level | n | accuracy | answer prob | mapped C | ECE | AUROC | unparsed |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for lv in levels:
            if not lv.get("n"):
                continue
            conf = lv["confidence"]
            lines.append(f"| {lv['kind']} | {lv['level']} | {lv['n']} | {lv['accuracy']:.3f} | "
                         f"{conf.get('answer_prob', float('nan')):.3f} | {conf.get('c_mapped', float('nan')):.3f} | "
                         f"{lv['ece']:.3f} | {lv['auroc']:.3f} | {lv['unparsed_rate']:.3f} |")
        lines.append("")
    t = summary["timing"]
    lines.append(f"Probe time {t['total_seconds']:.1f}s, of which {100 * t['overhead_share']:.1f}% outside model calls.")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_probe_figures(out: Path, summary: dict, records: list[dict], datasets: dict, seed: int) -> None:
    """``levels.csv``, a Figure-1 plot and a reliability grid per dataset and degradation kind."""
    out = Path(out)
    write_levels_csv(out / "levels.csv", summary["levels"])
    by_key: dict[tuple, list[dict]] = {}
    for r in records:
        by_key.setdefault((r["data"], r["kind"], r["level"]), []).append(r)
    for data, samples in datasets.items():
        for kind in dict.fromkeys(lv["kind"] for lv in summary["levels"] if lv["data"] == data):
            levels = [lv for lv in summary["levels"] if lv["data"] == data and lv["kind"] == kind and lv.get("n")]
            if not levels or kind == "none":
                continue
            figure_one(out / f"figure1_{_slug(data)}_{kind}.png", levels, kind, data, samples[0] if samples else None,
                       seed)
            reliability_grid(out / f"reliability_{_slug(data)}_{kind}.png",
                             [(lv, by_key.get((data, kind, lv["level"]), [])) for lv in levels], kind, data)
