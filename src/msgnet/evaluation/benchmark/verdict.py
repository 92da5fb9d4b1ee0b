"""The verdict of the augmentation benchmark: per N, the best setting and what it gains over the
two baselines practitioners already have (standard augmentation and copy-paste).

Gains are paired by seed: seed s of two settings shares the real batches, the initial weights
and the test split, so the per-seed difference removes most of the run-to-run noise. The 95%
interval is Student's t over those differences (n - 1 degrees of freedom).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats


def paired_gain(a: Sequence[dict], b: Sequence[dict]) -> dict | None:
    """Mean DICE gain of runs ``a`` over runs ``b`` on their common seeds, with a 95% t-interval."""
    da = {r["seed"]: r["dice"] for r in a}
    db = {r["seed"]: r["dice"] for r in b}
    common = sorted(set(da) & set(db))
    if not common:
        return None
    diffs = np.array([da[s] - db[s] for s in common], dtype=np.float64)
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return {"gain": mean, "low": None, "high": None, "seeds": common}
    half = float(stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs)))
    return {"gain": mean, "low": mean - half, "high": mean + half, "seeds": common}


def _best(rows: Sequence[dict], pred=lambda r: True) -> dict | None:
    cands = [r for r in rows if pred(r) and not math.isnan(r["dice_mean"])]
    return max(cands, key=lambda r: r["dice_mean"]) if cands else None


def verdict_for(entry: dict) -> dict:
    """Verdict of one N: the best setting overall, and the best one that uses generated pairs."""
    rows = entry["settings"]
    augment = next((r for r in rows if r["name"] == "augment"), None)
    copy_paste = _best(rows, lambda r: r["added"] == "copy-paste")
    out: dict = {"n": entry["n"]}
    picks = {"best": _best(rows)}
    if any(r["added"] == "synthetic" for r in rows):
        picks["best_with_synthetic"] = _best(rows, lambda r: r["added"] == "synthetic")
    for key, pick in picks.items():
        if pick is None:
            continue
        item = {"setting": pick["name"], "label": pick["label"], "dice_mean": pick["dice_mean"]}
        for ref_name, ref in (("vs_augment", augment), ("vs_copy_paste", copy_paste)):
            if ref is None:
                item[ref_name] = None
            elif ref is pick:
                item[ref_name] = {"gain": 0.0, "low": None, "high": None, "same": True, "reference": ref["name"]}
            else:
                gain = paired_gain(pick["runs"], ref["runs"])
                item[ref_name] = None if gain is None else {**gain, "reference": ref["name"]}
        out[key] = item
    return out


def _fmt_gain(g: dict | None, ref_label: str) -> str:
    if g is None:
        return f"{ref_label}: not run"
    if g.get("same"):
        return f"{ref_label}: is that baseline"
    if g["low"] is None:
        return f"{ref_label} {g['gain']:+.3f} (one seed, no interval)"
    return f"{ref_label} {g['gain']:+.3f} (95% CI {g['low']:+.3f} to {g['high']:+.3f})"


def format_verdict(v: dict) -> list[str]:
    lines = []
    for key, head in (("best", "best"), ("best_with_synthetic", "best with generated pairs")):
        item = v.get(key)
        if item is None:
            continue
        lines.append(f"N={v['n']}: {head}: {item['label']}, DICE {item['dice_mean']:.3f}; "
                     + _fmt_gain(item.get("vs_augment"), "vs standard augmentation") + "; "
                     + _fmt_gain(item.get("vs_copy_paste"), "vs copy-paste"))
    return lines
