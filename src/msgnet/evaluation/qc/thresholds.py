"""Keep-or-reject thresholds, derived from real pairs scored exactly like generated ones.

No number here is tuned on generated data. The real **validation** pairs are scored (the
segmenter never trained on them; their nearest neighbours are searched among the training
images, as a generated image's are), then:

* the four *graded* scores — consistency ``dice``, ``found_fraction``, and both memorisation
  distances (a real unseen image is never a copy, so a generated image closer to a training
  image than almost every real unseen image is suspect) — reject below one common low
  percentile ``q`` of their real distributions; ``q`` is the largest for which the real
  validation pairs still pass all checks together at the target rate (``--real-keep``, 95%).
  One percentile for all four keeps the four criteria equally strict. A percentile is an order
  statistic (a real value, ties kept): interpolating between the two lowest of a few real pairs
  would cut just above the lowest, reject it, and with fewer than 20 pairs push every cut to 0.
* consistency is judged only where there is something to judge: a pair whose layout has less
  than ``min_foreground`` (1%) object pixels, or no object, is *near-empty*. Its DICE is chance
  (a sliver of a nucleus at a tile's edge is found or not), so the near-empty real pairs take no
  part in the DICE and found-fraction percentiles, and a near-empty pair is judged by a rule of
  its own: rejected when the segmenter sees more object pixels in its image than in any real
  near-empty one (and than twice ``min_foreground``): an image showing objects its layout lacks.
* **swapped pairs** check the consistency cuts: a real image with another real image's layout
  is what a bad pair looks like. Where a cut rejects fewer than 90% of them it is raised to
  reject 90%, but never past the point where it would keep fewer than 90% of the real pairs it
  judges; how many swapped pairs each cut rejects is recorded (``swapped``).
* the *degenerate-output* checks sit outside anything real: an object smaller than half the
  smallest real object, an image with less than half the lowest real contrast, or with more
  than twice the highest real share of saturated pixels; an empty layout only where no real
  pair is empty.
* the dataset's **rule** is a hard check: a pair that breaks it is rejected.

Every threshold can be set by hand; the summary says which came from where.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from msgnet.errors import UsageError
from msgnet.evaluation.qc.scores import ScoreTable

GRADED = {  # threshold name -> score column (reject when the score is below the threshold)
    "min_dice": "dice",
    "min_found_fraction": "found_fraction",
    "min_pixel_distance": "pixel_distance",
    "min_feature_distance": "feature_distance",
}
REASONS = {  # threshold name -> the reason recorded for a rejected pair
    "min_dice": "inconsistent",
    "min_found_fraction": "objects-missing",
    "min_pixel_distance": "near-copy-pixels",
    "min_feature_distance": "near-copy-features",
    "min_object_pixels": "tiny-object",
    "min_contrast": "blank",
    "max_saturation": "saturated",
    "allow_empty": "empty",
    "max_empty_prediction": "unannotated-objects",
}
CONSISTENCY = ("min_dice", "min_found_fraction")  # judged on pairs with enough object pixels only
PERCENTILE_GRID = np.round(np.arange(0.0, 25.0001, 0.05), 2)
MIN_FOREGROUND = 0.01  # below this share of object pixels a layout is near-empty: DICE on it is chance
SWAP_REJECT = 0.9  # a consistency cut should reject at least this share of swapped real pairs ...
SWAP_KEEP = 0.9  # ... but is never raised so far that it keeps less than this share of the real pairs


@dataclass
class Thresholds:
    """Where a pair is cut; ``origin`` says for each field where its value came from."""

    min_dice: float = 0.0
    min_found_fraction: float = 0.0
    min_pixel_distance: float = 0.0
    min_feature_distance: float = 0.0
    min_object_pixels: int = 0
    min_contrast: float = 0.0
    max_saturation: float = 1.0
    allow_empty: bool = True
    min_foreground: float = 0.0  # a pair with a smaller share of object pixels (or no object) is near-empty
    max_empty_prediction: float = 1.0  # near-empty: reject when the segmenter sees a larger share of objects
    percentile: float | None = None  # the common percentile q of the graded scores
    origin: dict[str, str] = field(default_factory=dict)
    swapped: dict[str, Any] = field(default_factory=dict)  # {"pairs": k, "rejected": {name: share}}

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def judged(self, table: ScoreTable) -> np.ndarray:
        """Pairs whose consistency DICE means something: an object, and at least ``min_foreground`` of them."""
        return judged_mask(table, self.min_foreground)

    def failures(self, table: ScoreTable) -> list[tuple[str, np.ndarray]]:
        """(reason, boolean mask of the pairs failing it) for every check."""
        judged = self.judged(table)
        checks = [(REASONS[name], (judged if name in CONSISTENCY else True) & (table[col] < getattr(self, name)))
                  for name, col in GRADED.items()]
        has_objects = table["objects"] > 0
        checks += [
            ("unannotated-objects", ~judged & (table["predicted_foreground"] > self.max_empty_prediction)),
            ("tiny-object", has_objects & (table["smallest_object"] < self.min_object_pixels)),
            ("blank", table["contrast"] < self.min_contrast),
            ("saturated", table["saturation"] > self.max_saturation),
            ("empty", ~has_objects & (not self.allow_empty)),
        ]
        broken = np.array([str(b) not in ("", "n/a") for b in table["rule_broken"]], dtype=bool)
        checks.append(("rule", broken))
        return checks

    def kept(self, table: ScoreTable) -> np.ndarray:
        """Boolean mask of the pairs that pass every check."""
        failed = np.zeros(len(table), dtype=bool)
        for _, mask in self.failures(table):
            failed |= mask
        return ~failed

    def reasons(self, table: ScoreTable) -> list[list[str]]:
        """Why each pair is rejected (an empty list: it is kept); rule failures name the broken parts."""
        out: list[list[str]] = [[] for _ in range(len(table))]
        for reason, failed in self.failures(table):
            for i in np.flatnonzero(failed):
                if reason == "rule":
                    out[i].extend(f"rule:{part}" for part in str(table["rule_broken"][i]).split(","))
                else:
                    out[i].append(reason)
        return out


# The values a hand-set threshold can take: fractions in [0, 1], counts and distances not negative.
THRESHOLD_RANGES = {"min_dice": (0.0, 1.0), "min_found_fraction": (0.0, 1.0), "max_saturation": (0.0, 1.0),
                    "min_object_pixels": (0.0, np.inf), "min_pixel_distance": (0.0, np.inf),
                    "min_feature_distance": (0.0, np.inf), "min_contrast": (0.0, 1.0)}
# The near-empty rule's two shares, settable through ``overrides`` (kept apart from THRESHOLD_RANGES,
# whose names are also QCSettings fields and command-line options).
NEAR_EMPTY_RANGES = {"min_foreground": (0.0, 1.0), "max_empty_prediction": (0.0, 1.0)}


def parse_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Check hand-set thresholds (None: derive from the real data)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in {f.name for f in dataclasses.fields(Thresholds)} or name in ("percentile", "origin", "swapped"):
            raise UsageError(f"unknown threshold {name!r}")
        if name != "allow_empty" and not np.isfinite(float(value)):
            raise UsageError(f"{name}: must be a finite number")
        low, high = {**THRESHOLD_RANGES, **NEAR_EMPTY_RANGES}.get(name, (-np.inf, np.inf))
        if name != "allow_empty" and not low <= float(value) <= high:
            raise UsageError(f"{name}: must be in [{low:g}, {high:g}], got {value}")
        out[name] = value
    return out


def judged_mask(table: ScoreTable, min_foreground: float) -> np.ndarray:
    """Pairs with an object and at least ``min_foreground`` object pixels: their consistency can be judged."""
    return (table["objects"] > 0) & (table["foreground"] >= min_foreground)


def order_statistic(values: np.ndarray, q: float) -> float:
    """The real value at percentile ``q`` (no interpolation); "reject below it" rejects at most q% of them."""
    return float(np.percentile(values, q, method="lower")) if values.size else 0.0


def calibrate(real: ScoreTable, target_keep: float = 0.95, overrides: dict[str, Any] | None = None,
              swapped: ScoreTable | None = None) -> Thresholds:
    """Thresholds from real validation scores; ``overrides`` (already checked) win over derived values.

    ``swapped``: consistency scores of real images paired with other real layouts (see the module
    docstring); without it the consistency cuts are not checked against bad pairs.
    """
    if not 0.0 < target_keep <= 1.0:
        raise UsageError("real_keep: must be in (0, 1]")
    if len(real) == 0:
        raise UsageError("quality control needs real validation pairs to derive its thresholds")
    overrides = dict(overrides or {})
    t = _fixed_checks(real, overrides)
    free = [name for name in GRADED if name not in overrides]
    judged = t.judged(real)
    # Consistency percentiles come from the pairs it judges; the memorisation ones from every pair.
    populations = {name: real[GRADED[name]][judged] if name in CONSISTENCY else real[GRADED[name]] for name in free}
    for name in free:
        setattr(t, name, 0.0)
    # The target counts among the real pairs the fixed checks pass: a real set whose own layouts
    # break its rule now and then must not push the graded thresholds to zero.
    fixed_ok = t.kept(real)
    best_q = 0.0
    for q in PERCENTILE_GRID:  # ascending: keep the last q that still passes enough real pairs
        for name in free:
            setattr(t, name, order_statistic(populations[name], q))
        kept = float(t.kept(real)[fixed_ok].mean()) if fixed_ok.any() else 0.0
        if kept + 1e-12 < target_keep:
            break
        best_q = float(q)
    for name in free:
        values = populations[name]
        setattr(t, name, order_statistic(values, best_q))
        rank = int(np.sum(values < getattr(t, name))) + 1
        what = (f"pairs with at least {100 * t.min_foreground:g}% object pixels" if name in CONSISTENCY
                else "pairs")
        t.origin[name] = (f"{best_q:g}th percentile (the {_ordinal(rank)} lowest) of {values.size} real validation "
                          f"{what}" if values.size else f"no real validation {what}: not checked")
    t.percentile = best_q
    if swapped is not None and len(swapped):
        _check_with_swapped(t, real, swapped, [n for n in CONSISTENCY if n in free])
    return t


def _fixed_checks(real: ScoreTable, overrides: dict[str, Any]) -> Thresholds:
    """The thresholds that sit outside anything real, and the near-empty rule; hand-set values win."""
    t = Thresholds()
    has_objects = real["objects"] > 0
    sizes = real["smallest_object"][has_objects]
    t.min_object_pixels = int(sizes.min() // 2) if sizes.size else 0
    t.min_contrast = float(real["contrast"].min() / 2)
    t.max_saturation = float(min(1.0, max(2 * real["saturation"].max(), 0.01)))
    t.allow_empty = bool((~has_objects).any())
    t.min_foreground = float(overrides.get("min_foreground", MIN_FOREGROUND))
    near_empty = real["predicted_foreground"][~judged_mask(real, t.min_foreground)]
    t.max_empty_prediction = float(max(2 * t.min_foreground, near_empty.max() if near_empty.size else 0.0))
    t.origin = {
        "min_object_pixels": "half the smallest real object",
        "min_contrast": "half the lowest real contrast",
        "max_saturation": "twice the highest real share of saturated pixels (at least 1%)",
        "allow_empty": "whether any real pair is empty",
        "min_foreground": "fixed: consistency is judged on pairs with at least this share of object pixels",
        "max_empty_prediction": f"the most object pixels the segmenter sees in any of {near_empty.size} real "
                                "near-empty validation pairs (at least twice min_foreground)",
    }
    for name, value in overrides.items():
        setattr(t, name, type(getattr(t, name))(value))
        t.origin[name] = "set by hand"
    return t


def _check_with_swapped(t: Thresholds, real: ScoreTable, swapped: ScoreTable, free: list[str]) -> None:
    """Record the share of swapped pairs each consistency cut rejects; raise a free cut that rejects
    fewer than SWAP_REJECT of them, as far as keeping SWAP_KEEP of the real pairs it judges allows."""
    judged_real, judged_swapped = t.judged(real), t.judged(swapped)
    rejected: dict[str, float] = {}
    for name in CONSISTENCY:
        col = GRADED[name]
        fake = np.sort(swapped[col][judged_swapped])
        if not fake.size:
            continue
        cut = getattr(t, name)
        if name in free and float(np.mean(fake < cut)) < SWAP_REJECT:
            ours = np.sort(real[col][judged_real])
            need = _just_above(fake[int(np.ceil(SWAP_REJECT * fake.size)) - 1], np.concatenate([ours, fake]))
            # rejecting below the value of rank m rejects at most m of them: m <= (1 - SWAP_KEEP) x n
            ceiling = float(ours[int(np.floor((1 - SWAP_KEEP) * ours.size))]) if ours.size else cut
            raised = max(cut, min(need, ceiling))
            if raised > cut:
                kept = float(np.mean(ours >= raised))
                t.origin[name] += (f"; raised from {cut:.4f} to reject swapped pairs (keeps {100 * kept:.0f}% of "
                                   "the real pairs it judges)")
                setattr(t, name, raised)
        rejected[name] = float(np.mean(fake < getattr(t, name)))
    t.swapped = {"pairs": int(judged_swapped.sum()), "rejected": rejected}


def _just_above(value: float, seen: np.ndarray) -> float:
    """A cut that rejects ``value``: halfway to the next value seen above it (found fractions are discrete:
    "reject below 0.5833" reads plainly where "below 0.5000 + 1 ulp" would not)."""
    above = seen[seen > value]
    return float((value + above.min()) / 2) if above.size else float(np.nextafter(value, np.inf))


def _ordinal(k: int) -> str:
    return f"{k}{'th' if 10 <= k % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(k % 10, 'th')}"


def real_distribution(real: ScoreTable, thresholds: Thresholds | None = None) -> dict[str, dict[str, float]]:
    """Percentiles (1, 5, 25, 50) of each graded real score: the distribution thresholds came from
    (the consistency scores of the pairs ``thresholds`` judges; NaN where there are none)."""
    judged = thresholds.judged(real) if thresholds is not None else np.ones(len(real), dtype=bool)
    out = {}
    for name, col in GRADED.items():
        values = real[col][judged] if name in CONSISTENCY else real[col]
        out[col] = {f"p{p}": float(np.percentile(values, p)) if values.size else float("nan") for p in (1, 5, 25, 50)}
    return out
