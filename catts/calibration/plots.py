"""Reliability diagrams, drawn with matplotlib's Agg canvas (no pyplot, no display, no global state)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .metrics import ArrayLike, _check_conf, ece, reliability_bins

__all__ = ["reliability_diagram", "draw_reliability", "draw_reliability_compact"]


def reliability_diagram(confidences: ArrayLike, correct: ArrayLike,
                        path: Union[str, os.PathLike], n_bins: int = 15, title: str = "") -> Path:
    """Save a two-panel reliability diagram as a PNG and return its path.

    Top panel: per equal-width bin (see :func:`catts.calibration.metrics.reliability_bins`), a bar of
    the bin's accuracy ``acc_b``, a shaded gap between ``acc_b`` and the bin's mean confidence
    ``conf_b``, and the diagonal ``acc = conf`` of perfect calibration; the legend gives
    ``ECE = sum_b (n_b/n) |acc_b - conf_b|`` for these bins. Empty bins draw nothing.
    Bottom panel: histogram of the confidences (counts) over the same bins, with the mean
    confidence and the accuracy marked. Parent folders are created as needed.
    """
    c, z = _check_conf(confidences, correct)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(5.0, 6.0), dpi=120)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    draw_reliability(top, bottom, c, z, n_bins, title or f"Reliability diagram (n = {c.size})")
    fig.tight_layout()
    fig.savefig(out, format="png")
    return out


def draw_reliability(top, bottom, c: np.ndarray, z: np.ndarray, n_bins: int = 15, title: str = "") -> None:
    """Draw a reliability diagram on two given axes (accuracy bars over confidence histogram)."""
    bins = reliability_bins(c, z, n_bins, "uniform")
    value = ece(c, z, n_bins, "uniform")
    left = bins.edges[:-1]
    width = np.diff(bins.edges)
    ok = bins.nonempty

    top.plot([0, 1], [0, 1], linestyle="--", color="0.4", linewidth=1, label="perfect calibration")
    top.bar(left[ok], bins.accuracy[ok], width=width[ok], align="edge", color="#4C72B0",
            edgecolor="black", linewidth=0.6, label="accuracy")
    gap_low = np.minimum(bins.accuracy[ok], bins.mean_confidence[ok])
    gap_height = np.abs(bins.accuracy[ok] - bins.mean_confidence[ok])
    top.bar(left[ok], gap_height, bottom=gap_low, width=width[ok], align="edge",
            color="#C44E52", alpha=0.35, edgecolor="#C44E52", hatch="//", linewidth=0.6,
            label="gap to mean confidence")
    handles, labels = top.get_legend_handles_labels()
    handles.append(Patch(color="none"))
    labels.append(f"ECE ({n_bins} bins) = {value:.4f}")
    top.legend(handles, labels, loc="upper left", fontsize=8, frameon=True)
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(title, fontsize=10)
    top.grid(True, linewidth=0.3, alpha=0.5)

    bottom.bar(left, bins.counts, width=width, align="edge", color="0.55", edgecolor="black",
               linewidth=0.6)
    bottom.axvline(float(c.mean()), color="#C44E52", linewidth=1.2,
                   label=f"mean conf. {c.mean():.3f}")
    bottom.axvline(float(z.mean()), color="#4C72B0", linewidth=1.2, linestyle=":",
                   label=f"accuracy {z.mean():.3f}")
    bottom.legend(loc="upper left", fontsize=7)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("count")
    bottom.set_xlim(0, 1)


def draw_reliability_compact(ax, c: np.ndarray, z: np.ndarray, n_bins: int = 15, title: str = "",
                             xlabel: str = "confidence") -> None:
    """A small reliability diagram on one axis: accuracy per bin (step line) against the diagonal,
    the share of answers per bin as grey steps along the bottom, and the ECE of the same bins.
    One artist per curve, so a grid of many levels stays cheap to draw."""
    ax.plot([0, 1], [0, 1], "--", color="0.5", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xticks([0, 0.5, 1], ["0", ".5", "1"], fontsize=7)
    ax.set_yticks([0, 0.5, 1], ["0", ".5", "1"], fontsize=7)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel(xlabel, fontsize=7)
    if len(c) == 0:
        ax.text(0.5, 0.5, "no answers", ha="center", fontsize=7, transform=ax.transAxes)
        return
    c, z = _check_conf(c, z)
    bins = reliability_bins(c, z, n_bins, "uniform")
    ax.stairs(bins.counts / bins.n, bins.edges, color="0.6", fill=True, alpha=0.5)
    ax.stairs(np.where(bins.nonempty, bins.accuracy, np.nan), bins.edges, color="#4C72B0", linewidth=1.6,
              baseline=None)
    ax.text(0.04, 0.88, f"ECE {ece(c, z, n_bins):.2f}", fontsize=7, transform=ax.transAxes)
