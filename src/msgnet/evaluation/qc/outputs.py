"""What quality control writes: ``qc.csv`` (every pair's scores and verdict), ``qc.json`` (pass
rate, thresholds, real distributions), ``rejected.png`` (the worst rejected pairs, with their
overlays and scores) and ``qc_histograms.png`` (real against generated score distributions)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from msgnet.io import atomic_write_text
from msgnet.layouts.render import grid, overlay, save_png, to_rgb
from msgnet.evaluation.qc.scores import FLOAT_COLUMNS, INT_COLUMNS, TEXT_COLUMNS, ScoreTable

CSV_COLUMNS = ("id", "kept", "kept_id", "reasons") + FLOAT_COLUMNS[:2] + ("objects", "objects_found") + \
    TEXT_COLUMNS + ("pixel_nn", "pixel_distance", "feature_nn", "feature_distance", "contrast", "saturation",
                    "smallest_object")
HISTOGRAM_SCORES = ("dice", "found_fraction", "pixel_distance", "feature_distance")


def csv_rows(ids: Sequence[int], table: ScoreTable, reasons: Sequence[Sequence[str]],
             kept_ids: Sequence[int | None]) -> str:
    """CSV lines (no header) for these pairs."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for k, iid in enumerate(ids):
        row = table.row(k)
        out: list[Any] = [int(iid), int(not reasons[k]), "" if kept_ids[k] is None else int(kept_ids[k]),
                          ";".join(reasons[k])]
        for col in CSV_COLUMNS[4:]:
            v = row[col]
            out.append(f"{v:.5f}" if col in FLOAT_COLUMNS else (int(v) if col in INT_COLUMNS else v))
        writer.writerow(out)
    return buf.getvalue()


def csv_header() -> str:
    return ",".join(CSV_COLUMNS) + "\n"


def read_csv_table(path: Path) -> tuple[ScoreTable, np.ndarray]:
    """The score table and the kept mask of a ``qc.csv`` (for reports)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    cols: dict[str, np.ndarray] = {}
    for col in CSV_COLUMNS[4:]:
        values = [r[col] for r in rows]
        if col in FLOAT_COLUMNS:
            cols[col] = np.array(values, dtype=np.float64)
        elif col in INT_COLUMNS:
            cols[col] = np.array(values, dtype=np.int64)
        else:
            cols[col] = np.array(values, dtype=object)
    return ScoreTable(cols), np.array([r["kept"] == "1" for r in rows], dtype=bool)


def severity_key(failed: int, dice: float, index: int) -> tuple[int, float, int]:
    """Sort key of a rejected pair, worst first: most failed checks, then lowest consistency DICE."""
    return (-failed, dice, index)


def severity_order(table: ScoreTable, reasons: Sequence[Sequence[str]]) -> np.ndarray:
    """Indices of rejected pairs, worst first (:func:`severity_key`)."""
    rejected = [i for i, r in enumerate(reasons) if r]
    return np.array(sorted(rejected, key=lambda i: severity_key(len(reasons[i]), float(table["dice"][i]), i)),
                    dtype=np.int64)


def _caption(tile: np.ndarray, lines: Sequence[str], height: int = 24) -> np.ndarray:
    """The tile with a black strip of small text beneath it."""
    w = tile.shape[1]
    strip = Image.new("RGB", (w, height), (0, 0, 0))
    draw = ImageDraw.Draw(strip)
    for k, line in enumerate(lines[:2]):
        draw.text((2, 1 + 11 * k), line, fill=(255, 255, 255))
    return np.concatenate([tile, np.asarray(strip)], axis=0)


def rejected_grid(images: Sequence[np.ndarray], layouts: Sequence[np.ndarray], captions: Sequence[Sequence[str]],
                  palette: np.ndarray, path: Path, columns: int = 4) -> Path | None:
    """Image beside its layout overlay, with the scores beneath, for each rejected pair given."""
    if not len(images):
        return None
    tiles = []
    for img, lay, cap in zip(images, layouts, captions):
        scale = max(1, 128 // img.shape[0])  # wide enough for the caption
        pair = np.concatenate([to_rgb(img), overlay(img, lay, palette)], axis=1)
        pair = np.asarray(Image.fromarray(pair).resize((pair.shape[1] * scale, pair.shape[0] * scale), Image.NEAREST))
        tiles.append(_caption(pair, cap))
    return save_png(grid(tiles, columns=columns), path)


def pair_caption(row: dict[str, Any], reasons: Sequence[str]) -> list[str]:
    return [f"dice {row['dice']:.2f} found {row['objects_found']}/{row['objects']} px {row['pixel_distance']:.3f}",
            ", ".join(reasons)[:40]]


def histograms_png(real: ScoreTable, generated: ScoreTable, thresholds: dict[str, float], path: Path,
                   bins: int = 30) -> Path:
    """One panel per graded score: real (blue) and generated (orange) densities, threshold in red."""
    names = {"dice": "min_dice", "found_fraction": "min_found_fraction", "pixel_distance": "min_pixel_distance",
             "feature_distance": "min_feature_distance"}
    pw, ph, pad = 300, 170, 30
    img = Image.new("RGB", (2 * pw, 2 * ph), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    for k, col in enumerate(HISTOGRAM_SCORES):
        x0, y0 = (k % 2) * pw, (k // 2) * ph
        values = [v for v in (real[col], generated[col]) if len(v)]
        lo = min(float(v.min()) for v in values)
        hi = max(float(v.max()) for v in values)
        hi = hi if hi > lo else lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        box = (x0 + pad, y0 + 20, x0 + pw - 10, y0 + ph - 20)
        draw.rectangle(box, outline=(120, 120, 120))
        dens = [np.histogram(v, edges)[0] / max(1, len(v)) if len(v) else np.zeros(bins)
                for v in (real[col], generated[col])]
        top = max(float(d.max()) for d in dens) or 1.0
        bw = (box[2] - box[0]) / bins
        for d, colour, off in zip(dens, ((40, 90, 220), (240, 140, 20)), (0.0, 0.5)):
            for b, v in enumerate(d):
                if v <= 0:
                    continue
                xa = box[0] + (b + off) * bw
                draw.rectangle((xa, box[3] - (box[3] - box[1]) * v / top, xa + bw / 2, box[3]), fill=colour)
        t = thresholds.get(names[col])
        if t is not None and lo <= t <= hi:
            xt = box[0] + (t - lo) / (hi - lo) * (box[2] - box[0])
            draw.line((xt, box[1], xt, box[3]), fill=(220, 0, 0), width=2)
        draw.text((x0 + pad, y0 + 4), f"{col}  (blue real, orange generated, red cut)", fill=(0, 0, 0))
        draw.text((box[0], box[3] + 3), f"{lo:.3g}", fill=(0, 0, 0))
        draw.text((box[2] - 40, box[3] + 3), f"{hi:.3g}", fill=(0, 0, 0))
    return save_png(np.asarray(img), path)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    import json

    atomic_write_text(path, json.dumps(summary, indent=2))
