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
REPORT_SUFFIX = "-qc"


def report_dir_beside(dataset_dir: Path) -> Path:
    """Where `msgnet qc` without ``--out`` writes its report: ``DATA-qc/`` beside the scored set, never
    inside it (the set is an input; writing into it would change what a later command reads)."""
    dataset_dir = Path(dataset_dir)
    return dataset_dir.parent / f"{dataset_dir.name}{REPORT_SUFFIX}"


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
    """One panel per graded score: real and generated densities, the threshold in red."""
    from msgnet.evaluation.plots import histogram_panel, new_figure, save_figure

    names = {"dice": "min_dice", "found_fraction": "min_found_fraction", "pixel_distance": "min_pixel_distance",
             "feature_distance": "min_feature_distance"}
    fig = new_figure(600, 340)
    axes = fig.subplots(2, 2, squeeze=False)
    for k, col in enumerate(HISTOGRAM_SCORES):
        histogram_panel(axes[k // 2][k % 2], col, {"real": real[col], "generated": generated[col]}, bins,
                        thresholds.get(names[col]))
    return save_figure(fig, path)


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    import json

    atomic_write_text(path, json.dumps(summary, indent=2))
