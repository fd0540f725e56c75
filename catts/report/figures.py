"""The probe's figures: Figure 1 per dataset and degradation kind, and a reliability grid.

Figure 1 (spec section 1): x = degradation level, y = accuracy and mean confidences, with a strip
of one degraded image under the axis so the reader sees what each level looks like. Layout is in
inches (margins fixed, width growing with the number of levels), so labels, legend and image strip
never clip, whether the sweep has two levels or twenty.

``report_kind`` runs in the probe's worker process: it summarises each level of one (dataset,
kind) and draws both figures, while the model answers the next kind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from catts.calibration.plots import draw_reliability_compact
from catts.jobs.summary import N_BINS, summarize
from catts.perception.degrade import degrade

# (confidence, label, colour); all means over parsed answers, like the accuracy they sit beside
PLOTTED = (("answer_prob", "answer probability", "#C44E52"), ("c_mapped", "mapped C", "#DD8452"),
           ("trace_prob", "trace probability", "#8172B3"), ("sequence_prob", "sequence probability", "#55A868"))


def slug(s: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in s)


def report_kind(out: Path, data: str, kind: str, levels: list[int], records: list[dict], example,
                seed: int) -> list[dict]:
    """Level summaries of one (data, kind) and, for a degradation, its Figure 1 and reliability grid."""
    by_level: dict[int, list[dict]] = {lv: [] for lv in levels}
    for r in records:
        if r.get("level") in by_level:
            by_level[r["level"]].append(r)
    ends = {levels[0], levels[-1]} if kind == "diffusion" else set()  # the finding's levels get intervals
    summaries = [{"data": data, "kind": kind, "level": lv, **summarize(by_level[lv], ci=lv in ends)} for lv in levels]
    if kind != "none":
        shown = [s for s in summaries if s["n"]]
        if shown:
            figure_one(Path(out) / f"figure1_{slug(data)}_{kind}.png", shown, kind, data, example, seed)
            reliability_grid(Path(out) / f"reliability_{slug(data)}_{kind}.png",
                             [(s, by_level[s["level"]]) for s in shown], kind, data)
    return summaries


def _conf(level: dict, name: str) -> float:
    v = level.get("confidence", {}).get(name, {}).get("parsed")
    return np.nan if v is None else v


def figure_one(path: Path, levels: list[dict], kind: str, data: str, example, seed: int) -> Path:
    """Accuracy and mean confidences against level, unparsed share as bars, degraded example below."""
    n = len(levels)
    left, right, ax_w = 0.75, 0.25, max(3.6, 0.7 * n)
    top, ax_h, xlab = 0.45, 2.8, 0.5
    strip = ax_w / n * 0.85 if example is not None else 0.0
    strip_h = min(strip, 1.1) + (0.3 if strip else 0.0)
    legend_h = 0.75
    W, H = left + ax_w + right, top + ax_h + xlab + strip_h + legend_h
    fig = Figure(figsize=(W, H), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_axes([left / W, (H - top - ax_h) / H, ax_w / W, ax_h / H])
    xs = np.arange(n)
    ax.bar(xs, [lv["unparsed_rate"] for lv in levels], width=0.6, color="0.85", label="unparsed share", zorder=1)
    for name, label, color in PLOTTED:
        ys = [_conf(lv, name) for lv in levels]
        if np.isfinite(ys).any() and not (name == "c_mapped" and np.nanstd(ys) < 1e-6):
            ax.plot(xs, ys, "s--", color=color, linewidth=1.4, markersize=4, label=f"mean {label} (parsed)", zorder=2)
    ax.plot(xs, [lv["accuracy_parsed"] for lv in levels], "o:", color="#4C72B0", linewidth=1.4, markersize=4,
            label="accuracy (parsed answers)", zorder=3)
    ax.plot(xs, [lv["accuracy"] for lv in levels], "o-", color="#1F3A68", linewidth=2.4, label="accuracy (all answers)",
            zorder=4)
    ax.set_ylim(0, 1.02)
    ax.set_xlim(-0.5, n - 0.5)
    ax.set_xticks(xs, [str(lv["level"]) for lv in levels], fontsize=8)
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylabel("accuracy / confidence", fontsize=9)
    ax.set_xlabel(f"{kind} level", fontsize=9)
    ax.set_title(f"{data}: {kind} (n = {levels[0]['n']} per level)", fontsize=10)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    if example is not None:
        ex_id, image = example
        y0 = H - top - ax_h - xlab - strip_h
        for i, lv in enumerate(levels):
            img = degrade(image, kind, lv["level"], seed=seed, key=ex_id)
            x0 = left + (i + 0.5) * ax_w / n - strip / 2
            iax = fig.add_axes([x0 / W, y0 / H, strip / W, min(strip, 1.1) / H])
            iax.imshow(np.asarray(img))
            iax.set_axis_off()
        fig.text(left / W, (y0 + min(strip, 1.1) + 0.08) / H, f"image {ex_id} at each level", fontsize=7)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="lower center", ncol=min(3, max(2, int(W // 2.4))), fontsize=7,
               frameon=False, bbox_to_anchor=(0.5, 0.02))
    fig.savefig(path, format="png")
    return path


def reliability_grid(path: Path, levels: list[tuple[dict, list[dict]]], kind: str, data: str) -> Path:
    """One small reliability diagram of the answer probability per level (parsed answers)."""
    n = len(levels)
    cols = min(n, 8)
    rows = (n + cols - 1) // cols
    width = max(4.6, 1.7 * cols + 0.5)
    fig = Figure(figsize=(width, 1.9 * rows + 0.5), dpi=90)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_axis_off()
            continue
        lv, recs = levels[k]
        ok = [r for r in recs if "error" not in r and r["prediction"] is not None
              and r["confidence"].get("answer_prob") is not None]
        c = np.array([r["confidence"]["answer_prob"] for r in ok], dtype=float).clip(0, 1)
        z = np.array([r["correct"] for r in ok], dtype=float)
        draw_reliability_compact(ax, c, z, N_BINS, f"{kind} {lv['level']} (n={len(ok)})", "answer prob.")
    fig.suptitle(f"{data}: answer probability per level\n(parsed answers, {N_BINS} bins; grey: share of answers)",
                 fontsize=8)
    fig.subplots_adjust(left=0.35 / width, right=1 - (width - 1.7 * cols - 0.35) / width,
                        bottom=0.55 / (1.9 * rows + 0.5),
                        top=1 - 0.6 / (1.9 * rows + 0.5), wspace=0.35, hspace=0.6)
    fig.savefig(path, format="png")
    return path
