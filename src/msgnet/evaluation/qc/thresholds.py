"""Keep-or-reject thresholds, derived from real pairs scored exactly like generated ones.

No number here is tuned on generated data. The real **validation** pairs are scored (the
segmenter never trained on them; their nearest neighbours are searched among the training
images, as a generated image's are), then:

* the four *graded* scores — consistency ``dice``, ``found_fraction``, and both memorisation
  distances (a real unseen image is never a copy, so a generated image closer to a training
  image than almost every real unseen image is suspect) — reject below one common low
  percentile ``q`` of their real distributions; ``q`` is the largest for which the real
  validation pairs still pass all checks together at the target rate (``--real-keep``, 95%).
  One percentile for all four keeps the four criteria equally strict.
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
}
PERCENTILE_GRID = np.round(np.arange(0.0, 25.0001, 0.05), 2)


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
    percentile: float | None = None  # the common percentile q of the graded scores
    origin: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def failures(self, table: ScoreTable) -> list[tuple[str, np.ndarray]]:
        """(reason, boolean mask of the pairs failing it) for every check."""
        checks = [(REASONS[name], table[col] < getattr(self, name)) for name, col in GRADED.items()]
        has_objects = table["objects"] > 0
        checks += [
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


def parse_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Check hand-set thresholds (None: derive from the real data)."""
    out: dict[str, Any] = {}
    for name, value in values.items():
        if value is None:
            continue
        if name not in {f.name for f in dataclasses.fields(Thresholds)} or name in ("percentile", "origin"):
            raise UsageError(f"unknown threshold {name!r}")
        if name != "allow_empty" and not np.isfinite(float(value)):
            raise UsageError(f"{name}: must be a finite number")
        low, high = THRESHOLD_RANGES.get(name, (-np.inf, np.inf))
        if name != "allow_empty" and not low <= float(value) <= high:
            raise UsageError(f"{name}: must be in [{low:g}, {high:g}], got {value}")
        out[name] = value
    return out


def calibrate(real: ScoreTable, target_keep: float = 0.95, overrides: dict[str, Any] | None = None) -> Thresholds:
    """Thresholds from real validation scores; ``overrides`` (already checked) win over derived values."""
    if not 0.0 < target_keep <= 1.0:
        raise UsageError("real_keep: must be in (0, 1]")
    if len(real) == 0:
        raise UsageError("quality control needs real validation pairs to derive its thresholds")
    overrides = dict(overrides or {})
    t = Thresholds()
    has_objects = real["objects"] > 0
    sizes = real["smallest_object"][has_objects]
    t.min_object_pixels = int(sizes.min() // 2) if sizes.size else 0
    t.min_contrast = float(real["contrast"].min() / 2)
    t.max_saturation = float(min(1.0, max(2 * real["saturation"].max(), 0.01)))
    t.allow_empty = bool((~has_objects).any())
    t.origin = {
        "min_object_pixels": "half the smallest real object",
        "min_contrast": "half the lowest real contrast",
        "max_saturation": "twice the highest real share of saturated pixels (at least 1%)",
        "allow_empty": "whether any real pair is empty",
    }
    for name, value in overrides.items():
        setattr(t, name, type(getattr(t, name))(value))
        t.origin[name] = "set by hand"
    free = [name for name in GRADED if name not in overrides]
    for name in free:
        setattr(t, name, 0.0)
    # The target counts among the real pairs the fixed checks pass: a real set whose own layouts
    # break its rule now and then must not push the graded thresholds to zero.
    fixed_ok = t.kept(real)
    best_q = 0.0
    for q in PERCENTILE_GRID:  # ascending: keep the last q that still passes enough real pairs
        for name in free:
            setattr(t, name, float(np.percentile(real[GRADED[name]], q)))
        kept = float(t.kept(real)[fixed_ok].mean()) if fixed_ok.any() else 0.0
        if kept + 1e-12 < target_keep:
            break
        best_q = float(q)
    for name in free:
        setattr(t, name, float(np.percentile(real[GRADED[name]], best_q)) if best_q > 0 else 0.0)
        t.origin[name] = f"{best_q:g}th percentile of the real validation pairs"
    t.percentile = best_q
    return t


def real_distribution(real: ScoreTable) -> dict[str, dict[str, float]]:
    """Percentiles (1, 5, 25, 50) of each graded real score: the distribution thresholds came from."""
    return {col: {f"p{p}": float(np.percentile(real[col], p)) for p in (1, 5, 25, 50)} for col in GRADED.values()}
