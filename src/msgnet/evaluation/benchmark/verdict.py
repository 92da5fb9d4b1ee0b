"""The verdict of the augmentation benchmark, chosen on validation and judged on test.

Per N, two choices are made on the **validation** split only (the mean over seeds of each
training's best validation DICE, the checkpoint the U-Net keeps):

* the *reference*: the best simple baseline a practitioner already has — standard
  augmentation, copy-paste, or both;
* the *selected way to use the pairs*: the best setting that adds generated pairs to real ones.

The pairs are worth adopting only if the selected setting beats the reference on validation by
more than the seed-to-seed noise: the validation gain paired by seed (seed s of both settings shares
the real batches and the initial weights) with a 95% Student-t interval whose lower end is above
zero, over at least ``MIN_SEEDS`` seeds. A mean ahead by less than its own noise is no reason to
add pairs (two seeds of -0.012, 95% CI -0.276 to +0.253, once read "adopt"). Otherwise the advice
is not to add them, saying why: the reference was better, the data cannot tell the two apart (and
about how many seeds would, at the observed paired spread), or too few seeds for an interval. The
test split only reports: test DICE of both, and the test gain paired by seed with its interval.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

SIMPLE_BASELINES = ("augment", "copy-paste", "augment+copy-paste")  # setting names before any "@ratio"
MIN_SEEDS = 3  # a paired t-interval from 2 seeds has 1 degree of freedom: about 12.7 standard errors wide
MAX_SEEDS_ESTIMATE = 10_000  # beyond this, "more seeds" is no answer: say so


def paired_gain(a: Sequence[dict], b: Sequence[dict], key: str = "dice") -> dict | None:
    """Mean gain in ``key`` (test ``dice`` or ``val_dice``) of runs ``a`` over runs ``b`` on their common
    seeds, with a 95% t-interval, the paired spread and the seeds a difference of this size needs."""
    da = {r["seed"]: r.get(key) for r in a}
    db = {r["seed"]: r.get(key) for r in b}
    common = sorted(s for s in set(da) & set(db) if da[s] is not None and db[s] is not None)
    if not common:
        return None
    diffs = np.array([da[s] - db[s] for s in common], dtype=np.float64)
    mean = float(diffs.mean())
    if len(diffs) < 2:
        return {"gain": mean, "low": None, "high": None, "seeds": common, "spread": None, "seeds_needed": None}
    sd = float(diffs.std(ddof=1))
    half = float(stats.t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs)))
    return {"gain": mean, "low": mean - half, "high": mean + half, "seeds": common, "spread": sd,
            "seeds_needed": seeds_to_resolve(mean, sd)}


def seeds_to_resolve(gain: float, spread: float) -> int | None:
    """Seeds a paired 95% t-interval needs to exclude zero for a mean gain of this size at this paired
    spread (an estimate: the spread itself is measured on few seeds); None where no number would."""
    if gain == 0 or not math.isfinite(gain) or not math.isfinite(spread):
        return None
    if spread == 0:
        return MIN_SEEDS
    n = max(MIN_SEEDS, math.ceil((1.96 * spread / abs(gain)) ** 2))  # the normal bound, then exact t
    while n <= MAX_SEEDS_ESTIMATE and stats.t.ppf(0.975, n - 1) * spread / math.sqrt(n) >= abs(gain):
        n += 1
    return n if n <= MAX_SEEDS_ESTIMATE else None


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
    """Verdict of one N: reference and selected setting (chosen on validation), their validation gain with
    its interval (which decides), and their test gains (which only report)."""
    rows = entry["settings"]
    seeds = max((len(r["runs"]) for r in rows), default=0)
    out: dict = {"n": entry["n"], "chosen_on": "validation split", "min_seeds": MIN_SEEDS}
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
    val = (paired_gain(selected["runs"], reference["runs"], key="val_dice")
           or {"gain": 0.0, "low": None, "high": None, "seeds": [], "spread": None, "seeds_needed": None})
    item["val_vs_reference"] = {**val, "reference": reference["name"]}
    out["selected"] = item
    out["status"] = _status(val)
    out["adopt"] = out["status"] == "adopt"
    out["advice"] = _advice(out["status"], val, selected["label"], reference["label"])
    return out


def _status(val: dict) -> str:
    """adopt (interval above 0) | worse (below 0) | cannot-tell (around 0) | needs-seeds (fewer than MIN_SEEDS)."""
    if len(val["seeds"]) < MIN_SEEDS or val.get("low") is None:
        return "needs-seeds"
    if val["low"] > 0:
        return "adopt"
    return "worse" if val["high"] < 0 else "cannot-tell"


def _val_text(val: dict) -> str:
    k = len(val["seeds"])
    if val.get("low") is None:
        return f"{val['gain']:+.3f} on validation, {k} seed{'s' if k != 1 else ''}, no interval"
    return f"{val['gain']:+.3f} on validation, 95% CI {val['low']:+.3f} to {val['high']:+.3f} over {k} seeds"


def _advice(status: str, val: dict, sel: str, ref: str) -> str:
    k = len(val["seeds"])
    if status == "adopt":
        return f"adopt {sel}: it beat {ref} on the validation split beyond the seed-to-seed noise ({_val_text(val)})"
    if status == "worse":
        return (f"don't add these pairs: {ref} beat every way of using them tried on the validation split "
                f"(best: {sel}, {_val_text(val)})")
    if status == "needs-seeds":
        return (f"don't add these pairs yet: the verdict needs at least {MIN_SEEDS} seeds for a paired interval, this "
                f"benchmark has {k} (best: {sel} against {ref}, {_val_text(val)}; rerun with --seeds {MIN_SEEDS})")
    need = val.get("seeds_needed")
    size = f"a difference of {abs(val['gain']):.3f}"
    resolve = (f"about {need} seeds would resolve {size} at the observed paired spread ({val['spread']:.3f})"
               if need is not None else f"no practical number of seeds would resolve {size} at the observed "
               f"paired spread ({val['spread']:.3f})")
    lead = (f"no way of using them tried beat {ref} on the validation split (best: {sel})" if val["gain"] <= 0
            else f"the best way of using them, {sel}, was ahead of {ref} by less than the seed-to-seed noise")
    return f"don't add these pairs: {lead}; the data cannot tell the two apart ({_val_text(val)}); {resolve}"


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
        val = sel.get("val_vs_reference")
        lines.append(f"N={v['n']}: selected with generated pairs: {sel['label']}, val DICE {sel['val_dice']:.3f}, "
                     f"test DICE {sel['dice_mean']:.3f}; "
                     + ("" if not val else _fmt_gain(val, f"validation gain vs {val['reference']}") + "; ")
                     + "test gain "
                     + _fmt_gain(sel.get("vs_reference"), f"vs {ref['setting'] if ref else 'reference'}") + "; "
                     + _fmt_gain(sel.get("vs_augment"), "vs augment"))
    return lines
