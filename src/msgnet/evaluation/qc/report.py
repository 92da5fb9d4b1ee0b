"""The quality-control section of `msgnet report` and `msgnet eval report`.

Reads what `msgnet qc` or `msgnet sample --qc` left beside a generated set (``qc.json``,
``qc.csv``, ``rejected.png``, ``qc_histograms.png``) and turns it into Markdown: the pass rate
with its interval, why pairs were rejected, the thresholds and the real distributions they came
from, the memorisation distances of generated against real pairs, and the two figures.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from msgnet.evaluation.qc.outputs import read_csv_table, report_dir_beside
from msgnet.evaluation.stats import fmt_rate

QC_FILES = ("qc.json", "qc.csv")


def find_qc(dataset_dir: Path) -> Path | None:
    """The folder holding a set's QC results: the set itself (kept by QC), ``DIR-qc/`` beside it (scored
    only), or ``DIR/qc/`` (scored only, where earlier versions wrote it)."""
    for d in (dataset_dir, report_dir_beside(dataset_dir), dataset_dir / "qc"):
        if all((d / f).is_file() for f in QC_FILES):
            return d
    return None


def _pct(values: np.ndarray, p: float) -> float:
    return float(np.percentile(values, p)) if len(values) else float("nan")


def _consistency_notes(t: dict[str, Any], real: dict[str, Any]) -> list[str]:
    """Which pairs consistency judged, the near-empty rule, and the swapped pairs the cuts reject
    (absent from the qc.json of versions before the rule: nothing said)."""
    if "min_foreground" not in t:
        return []
    judged = real.get("judged")
    text = (f"DICE and found fraction judge pairs with at least {100 * t['min_foreground']:g}% object pixels"
            + (f" ({judged} of the {real['pairs']} real validation pairs)" if judged is not None else "")
            + f"; a near-empty pair is rejected when the segmenter sees more than "
            f"{100 * t['max_empty_prediction']:.2f}% object pixels in its image.")
    rejected = (t.get("swapped") or {}).get("rejected") or {}
    if rejected:
        shares = ", ".join(f"{name.removeprefix('min_')} {100 * v:.0f}%" for name, v in rejected.items())
        text += (f" Against {t['swapped']['pairs']} swapped pairs (a real image with another real image's layout) "
                 f"the cuts reject: {shares}.")
    return ["", text]


def qc_section(qc_dir: Path, out: Path, link_dir: str = "") -> tuple[dict[str, Any], list[str]]:
    """(JSON summary, Markdown lines) of the QC results in ``qc_dir``; figures are copied into ``out``
    and linked as ``link_dir/<name>`` (``out`` relative to the Markdown file)."""
    summary = json.loads((qc_dir / "qc.json").read_text())
    table, kept = read_csv_table(qc_dir / "qc.csv")
    rate = summary["pass_rate"]
    lo, hi = rate["ci95"]
    real = summary["real_validation"]
    t = summary["thresholds"]
    memo = {col: {"min": float(table[col].min()) if len(table) else None, "p1": _pct(table[col], 1),
                  "median": _pct(table[col], 50),
                  "flagged": int((table[col] < t[f"min_{col}"]).sum())}
            for col in ("pixel_distance", "feature_distance")}
    lines = ["## Quality control of the generated pairs", "",
             f"{rate['kept']} of {rate['scored']} scored pairs pass: **{fmt_rate(rate['rate'], lo, hi)}**. "
             f"Thresholds from {real['pairs']} real validation pairs "
             f"scored the same way, which keep {100 * real['kept']:.1f}% of them"
             + (f" (real test pairs: {100 * summary['real_test_kept']:.1f}%)." if summary.get("real_test_kept")
                is not None else "."),
             "", "| rejected for | pairs | share of scored |", "|---|---|---|"]
    for reason, count in summary["rejected_by"].items():
        lines.append(f"| {reason} | {count} | {100 * count / max(1, rate['scored']):.2f}% |")
    lines += ["", "| score | cut (reject below) | from | real p1 / p5 / median | generated p5 / median |",
              "|---|---|---|---|---|"]
    for col in ("dice", "found_fraction", "pixel_distance", "feature_distance"):
        d = real["distribution"][col]
        lines.append(f"| {col} | {t[f'min_{col}']:.4f} | {t['origin'].get(f'min_{col}', '')} | "
                     f"{d['p1']:.3f} / {d['p5']:.3f} / {d['p50']:.3f} | "
                     f"{_pct(table[col], 5):.3f} / {_pct(table[col], 50):.3f} |")
    lines += _consistency_notes(t, real)
    lines += ["", f"Memorisation: nearest real training image of each generated one (of "
              f"{summary.get('memorisation_reference_images')} searched); "
              f"pixel distance (sqrt(2 - 2 x correlation)) min "
              f"{memo['pixel_distance']['min']:.4f}, median {memo['pixel_distance']['median']:.4f} (real unseen "
              f"images: median {real['distribution']['pixel_distance']['p50']:.4f}); "
              f"{memo['pixel_distance']['flagged']} flagged as near-copies in pixels, "
              f"{memo['feature_distance']['flagged']} in segmenter features.", ""]
    figures = {}
    for name in ("qc_histograms.png", "rejected.png"):
        if (qc_dir / name).is_file():
            target = out / (name if name.startswith("qc_") else f"qc_{name}")
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy2(qc_dir / name, target)
            figures[name] = f"{link_dir}/{target.name}" if link_dir else target.name
    if "qc_histograms.png" in figures:
        lines += ["Score distributions, real validation pairs against generated ones (red: the cut):", "",
                  f"![qc histograms]({figures['qc_histograms.png']})", ""]
    if "rejected.png" in figures:
        lines += ["The worst rejected pairs (image, layout overlaid; scores and reasons beneath):", "",
                  f"![rejected]({figures['rejected.png']})", ""]
    return {"pass_rate": rate, "rejected_by": summary["rejected_by"], "thresholds": t,
            "memorisation": memo, "figures": figures, "source": str(qc_dir)}, lines
