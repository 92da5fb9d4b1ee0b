"""Training-curve plots drawn with Pillow (matplotlib is not a dependency)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from PIL import Image, ImageDraw

from msgnet.io import atomic_path

SERIES_COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14)]
SKIP_COLUMNS = {"step", "epoch", "split", "time_s", "lr"}


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


def _nice(v: float) -> str:
    return f"{v:.3g}"


def line_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], title: str,
               lines: dict[str, list[tuple[float, float]]], log_y: bool = False) -> None:
    """One chart inside ``box`` (x0, y0, x1, y1): axes, min/max labels, one polyline per series."""
    x0, y0, x1, y1 = box
    draw.text((x0 + 4, y0 + 2), title + (" (log)" if log_y else ""), fill=(0, 0, 0))
    px0, py0, px1, py1 = x0 + 48, y0 + 18, x1 - 8, y1 - 22
    draw.rectangle((px0, py0, px1, py1), outline=(120, 120, 120))
    pts = [p for s in lines.values() for p in s]
    if not pts:
        return
    tf = (lambda v: math.log10(v)) if log_y else (lambda v: v)  # noqa: E731
    xs = [p[0] for p in pts]
    ys = [tf(p[1]) for p in pts]
    xmin, xmax = min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1
    ymin, ymax = min(ys), max(ys) if max(ys) > min(ys) else min(ys) + 1
    inv = (lambda v: 10 ** v) if log_y else (lambda v: v)  # noqa: E731
    draw.text((x0 + 2, py0 - 4), _nice(inv(ymax)), fill=(60, 60, 60))
    draw.text((x0 + 2, py1 - 8), _nice(inv(ymin)), fill=(60, 60, 60))
    draw.text((px0, py1 + 4), _nice(xmin), fill=(60, 60, 60))
    draw.text((px1 - 40, py1 + 4), f"step {_nice(xmax)}", fill=(60, 60, 60))
    for k, (name, s) in enumerate(sorted(lines.items())):
        colour = SERIES_COLOURS[k % len(SERIES_COLOURS)]
        xy = [(px0 + (x - xmin) / (xmax - xmin) * (px1 - px0), py1 - (tf(y) - ymin) / (ymax - ymin) * (py1 - py0))
              for x, y in sorted(s)]
        if len(xy) == 1:
            draw.ellipse((xy[0][0] - 2, xy[0][1] - 2, xy[0][0] + 2, xy[0][1] + 2), fill=colour)
        else:
            draw.line(xy, fill=colour, width=2)
        draw.text((px1 - 60, py0 + 4 + 12 * k), name, fill=colour)


def plot_metrics(csv_path: Path, out: Path, title: str, max_panels: int = 6) -> Path | None:
    """One PNG with a panel per metric column (loss first), train and val as separate lines."""
    series = read_metrics(csv_path)
    if not series:
        return None
    names = sorted(series, key=lambda k: (k != "loss", k))[:max_panels]
    cols = 2 if len(names) > 1 else 1
    rows = math.ceil(len(names) / cols)
    pw, ph = 420, 240
    img = Image.new("RGB", (cols * pw, rows * ph + 24), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.text((6, 6), title, fill=(0, 0, 0))
    for i, name in enumerate(names):
        r, c = divmod(i, cols)
        vals = [v for s in series[name].values() for _, v in s]
        log_y = min(vals) > 0 and max(vals) / min(vals) > 50
        line_panel(draw, (c * pw, 24 + r * ph, (c + 1) * pw, 24 + (r + 1) * ph), name, series[name], log_y)
    with atomic_path(out) as tmp:
        img.save(tmp, format="PNG")
    return out
