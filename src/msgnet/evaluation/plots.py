"""The report's figures, drawn with matplotlib's object API (no pyplot: no global figure state).

Training curves of a stage (``metrics.csv``), the benchmark's DICE against N and its learning
curves, and the quality-control score histograms all go through :func:`new_figure` and
:func:`save_figure`, so every picture has the same look and is written atomically.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from msgnet.io import PNG_MARK, atomic_path

SKIP_COLUMNS = {"step", "epoch", "split", "time_s", "lr"}
DPI = 100


def read_metrics(path: Path) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """metrics.csv -> {column: {split: [(step, value), ...]}} for every numeric column but the fixed ones."""
    series: dict[str, dict[str, list[tuple[float, float]]]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step", ""))
            except ValueError:
                continue
            split = row.get("split") or "train"
            for key, val in row.items():
                if key in SKIP_COLUMNS or key is None or val in (None, ""):
                    continue
                try:
                    v = float(val)
                except ValueError:
                    continue
                if math.isfinite(v):
                    series.setdefault(key, {}).setdefault(split, []).append((step, v))
    return series


def new_figure(width_px: int, height_px: int, title: str | None = None) -> Figure:
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=10, wrap=True)  # a one-panel figure is narrower than a long title
    return fig


def save_figure(fig: Figure, out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata=dict([PNG_MARK]))
    return out


def line_panel(ax: Axes, title: str, lines: dict[str, list[tuple[float, float]]], ylabel: str,
               xlabel: str = "step", log_y: bool = False) -> None:
    """One chart: a line (or a point) per series, sorted by x, with its legend and labelled axes."""
    for name, points in sorted(lines.items()):
        xs, ys = zip(*sorted(points)) if points else ((), ())
        ax.plot(xs, ys, marker="o" if len(xs) == 1 else None, markersize=3, linewidth=1.5, label=name)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    if log_y:
        ax.set_yscale("log")
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7)


def plot_metrics(csv_path: Path, out: Path, title: str, max_panels: int = 6) -> Path | None:
    """One PNG with a panel per metric column (loss first), train and val as separate lines."""
    series = read_metrics(csv_path)
    if not series:
        return None
    names = sorted(series, key=lambda k: (k != "loss", k))[:max_panels]
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    fig = new_figure(cols * 420, rows * 240 + 24, title)
    axes = fig.subplots(rows, cols, squeeze=False)
    for i, name in enumerate(names):
        vals = [v for s in series[name].values() for _, v in s]
        log_y = min(vals) > 0 and max(vals) / min(vals) > 50
        line_panel(axes[i // cols][i % cols], name, series[name], ylabel=name, log_y=log_y)
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].set_visible(False)
    return save_figure(fig, out)


def histogram_panel(ax: Axes, title: str, samples: dict[str, Any], bins: int, cut: float | None) -> None:
    """Densities of each named sample on shared bins, and the threshold as a red line."""
    present = [v for v in samples.values() if len(v)]
    lo = min(float(min(v)) for v in present)
    hi = max(float(max(v)) for v in present)
    hi = hi if hi > lo else lo + 1.0
    for name, values in samples.items():
        if len(values):
            ax.hist(values, bins=bins, range=(lo, hi), density=True, alpha=0.55, label=name)
    if cut is not None and lo <= cut <= hi:
        ax.axvline(cut, color="red", linewidth=1.5, label="threshold")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(title, fontsize=8)
    ax.set_ylabel("density", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7)
