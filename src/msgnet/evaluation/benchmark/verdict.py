"""The verdict of the augmentation benchmark, chosen on validation and judged on test.

Per N, two choices are made on the **validation** split only (the mean over seeds of each
training's best validation DICE, the checkpoint the U-Net keeps):

* the *reference*: the best simple baseline a practitioner already has — standard
  augmentation, copy-paste, or both;
* the *selected way to use the pairs*: the best setting that adds generated pairs to real ones.

The pairs are worth adopting only if the selected setting beats the reference on validation;
otherwise the advice is "don't add these pairs". The test split only reports: test DICE of both,
and the gain paired by seed (seed s of two settings shares the real batches, the initial weights
and the test split) with a 95% Student-t interval over the per-seed differences.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

SIMPLE_BASELINES = ("augment", "copy-paste", "augment+copy-paste")  # setting names before any "@ratio"


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


def validation_score(row: dict) -> float | None:
    """Mean over seeds of the best validation DICE; None when a run has none (no validation split)."""
    vals = [r.get("val_dice") for r in row["runs"]]
    if not vals or any(v is None for v in vals):
        return None
    return float(np.mean(vals))


def _is_baseline(row: dict) -> bool:
    return row["name"].split("@")[0] in SIMPLE_BASELINES


def _uses_pairs(row: dict) -> bool:
    return row.get("added") == "synthetic" and row.get("real", True)


def _choose(rows: Sequence[dict], seeds: int) -> dict | None:
    """The row with the best validation score among those trained with every seed (halving's survivors)."""
    cands = [r for r in rows if len(r["runs"]) == seeds and validation_score(r) is not None]
    return max(cands, key=validation_score) if cands else None


def _item(row: dict) -> dict:
    return {"setting": row["name"], "label": row["label"], "val_dice": validation_score(row),
            "dice_mean": row["dice_mean"], "policy": row.get("policy")}


def verdict_for(entry: dict) -> dict:
    """Verdict of one N: reference and selected setting (chosen on validation), their test gains."""
    rows = entry["settings"]
    seeds = max((len(r["runs"]) for r in rows), default=0)
    out: dict = {"n": entry["n"], "chosen_on": "validation split"}
    reference = _choose([r for r in rows if _is_baseline(r)], seeds)
    selected = _choose([r for r in rows if _uses_pairs(r)], seeds)
    if reference is None:
        out["advice"] = "no choice: the simple baselines have no validation score (no validation split or not run)"
        return out
    out["reference"] = _item(reference)
    if selected is None:
        out["advice"] = f"no generated pairs were benchmarked; use {reference['label']}"
        return out
    item = _item(selected)
    by_name = {r["name"]: r for r in rows}
    for key, name in (("vs_reference", reference["name"]), ("vs_augment", "augment")):
        ref = by_name.get(name)
        item[key] = None if ref is None else {**(paired_gain(selected["runs"], ref["runs"]) or {}), "reference": name}
    out["selected"] = item
    out["adopt"] = item["val_dice"] > out["reference"]["val_dice"]
    if out["adopt"]:
        out["advice"] = f"adopt {selected['label']}: it beat {reference['label']} on the validation split"
    else:
        out["advice"] = (f"don't add these pairs: no way of using them tried beat {reference['label']} on the "
                         f"validation split (best: {selected['label']})")
    return out


def _fmt_gain(g: dict | None, ref_label: str) -> str:
    if not g or "gain" not in g:
        return f"{ref_label}: not run"
    if g["low"] is None:
        return f"{ref_label} {g['gain']:+.3f} (one seed, no interval)"
    return f"{ref_label} {g['gain']:+.3f} (95% CI {g['low']:+.3f} to {g['high']:+.3f})"


def format_verdict(v: dict) -> list[str]:
    """The verdict in words: the advice first, then the test figures of both choices."""
    lines = [f"N={v['n']}: {v['advice']}"]
    ref, sel = v.get("reference"), v.get("selected")
    if ref is not None:
        lines.append(f"N={v['n']}: reference (best simple baseline on validation): {ref['label']}, "
                     f"val DICE {ref['val_dice']:.3f}, test DICE {ref['dice_mean']:.3f}")
    if sel is not None:
        lines.append(f"N={v['n']}: selected with generated pairs: {sel['label']}, val DICE {sel['val_dice']:.3f}, "
                     f"test DICE {sel['dice_mean']:.3f}; test gain "
                     + _fmt_gain(sel.get("vs_reference"), f"vs {ref['setting'] if ref else 'reference'}") + "; "
                     + _fmt_gain(sel.get("vs_augment"), "vs augment"))
    return lines
