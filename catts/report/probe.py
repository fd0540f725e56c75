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

from catts.calibration.metrics import ece, reliability_bins
from catts.perception.degrade import degrade

CSV_FIELDS = ("data", "kind", "level", "n", "n_errors", "accuracy", "unparsed_rate", "ece", "ece_c_mapped", "brier",
              "auroc", "auroc_c", "mean_tokens")
AXES_WIDTH = 0.58
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
    fig = Figure(figsize=(0.9 * len(levels) + 3.6, 5.2), dpi=100)
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
    """One small reliability diagram of answer_prob per level, side by side.

    Each panel: accuracy per confidence bin (10 equal-width bins, a step line) against the
    diagonal, the share of answers per bin as grey steps along the bottom, and the level's ECE.
    Lighter than ``catts.calibration.plots.reliability_diagram`` (one artist per curve, no bars),
    so a sweep's report stays a small share of the probe's time.
    """
    n = len(records_by_level)
    fig = Figure(figsize=(2.0 * n + 0.6, 2.6), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for ax, (lv, recs) in zip(axes, records_by_level):
        ok = [r for r in recs if "error" not in r]
        ax.plot([0, 1], [0, 1], "--", color="0.5", linewidth=0.8)
        ax.set_title(f"{kind} {lv['level']}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        if not ok:
            continue
        c = np.clip([r["confidence"]["answer_prob"] or 0.0 for r in ok], 0, 1)  # unparsed: 0
        z = np.array([r["correct"] for r in ok], dtype=float)
        bins = reliability_bins(c, z, n_bins=10)
        ax.stairs(bins.counts / bins.n, bins.edges, color="0.6", fill=True, alpha=0.5)
        acc = np.where(bins.nonempty, bins.accuracy, np.nan)
        ax.stairs(acc, bins.edges, color="#4C72B0", linewidth=1.6)
        ax.text(0.04, 0.9, f"ECE {ece(c, z, n_bins=10):.2f}", fontsize=8, transform=ax.transAxes)
        ax.set_xlabel("answer probability", fontsize=8)
    axes[0].set_ylabel("accuracy / share", fontsize=8)
    fig.suptitle(f"{data}: reliability per level", fontsize=10)
    fig.subplots_adjust(left=0.5 / (2.0 * n + 0.6) + 0.02, right=0.98, bottom=0.2, top=0.8, wspace=0.15)
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
            "accuracy_parsed": [a.get("accuracy_parsed"), b.get("accuracy_parsed")],
            "unparsed_rate": [a["unparsed_rate"], b["unparsed_rate"]],
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
                      f"accuracy. Unparsed answers went {b['unparsed_rate'][0]:.3f} -> {b['unparsed_rate'][1]:.3f}; "
                      f"among parsed answers accuracy went {b['accuracy_parsed'][0]:.3f} -> "
                      f"{b['accuracy_parsed'][1]:.3f}. (Answer probability: mean over parsed answers.)", ""]
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
