"""The benchmark's verdict: adopt only on a validation gain beyond its own seed-to-seed noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from msgnet.evaluation.benchmark.verdict import MIN_SEEDS, format_verdict, seeds_to_resolve, verdict_for
from msgnet.evaluation.job_report import headline


def _row(name, val, test, added=None, policy=None):
    runs = [{"seed": s, "dice": d, "val_dice": v} for s, (v, d) in enumerate(zip(val, test))]
    return {"name": name, "label": name, "added": added, "real": True, "runs": runs, "policy": policy,
            "dice_mean": float(np.mean(test))}


def _entry(reference_val, pairs_val, test_gain=0.0):
    k = len(reference_val)
    test = [0.80 + 0.01 * s for s in range(k)]
    return {"n": 100, "settings": [
        _row("augment", [v - 0.05 for v in reference_val], [t - 0.02 for t in test]),
        _row("augment+copy-paste@1", reference_val, test, "copy-paste"),
        _row("pairs:on-top@0.25", pairs_val, [t + test_gain for t in test], "synthetic", {"spec": "on-top@0.25"}),
    ]}


def _first_line(entry):
    entry["verdict"] = verdict_for(entry)
    return headline({"results": [entry]})[0]


def test_a_validation_gain_inside_the_seed_spread_is_not_adopted_and_says_how_many_seeds_would_tell():
    entry = _entry([0.80, 0.84, 0.78], [0.82, 0.81, 0.80], test_gain=-0.012)  # paired: +0.02, -0.03, +0.02
    v = verdict_for(entry)
    val = v["selected"]["val_vs_reference"]
    assert val["gain"] > 0 and val["low"] < 0 < val["high"]  # ahead on the mean, inside the noise
    assert not v["adopt"] and v["status"] == "cannot-tell"
    assert v["advice"].startswith("don't add these pairs") and "cannot tell" in v["advice"]
    need = val["seeds_needed"]
    assert f"about {need} seeds" in v["advice"]
    # the estimate: the fewest seeds whose paired 95% interval excludes 0 at the observed spread
    half = lambda n: stats.t.ppf(0.975, n - 1) * val["spread"] / math.sqrt(n)  # noqa: E731
    assert half(need) < val["gain"] <= half(need - 1)
    line = _first_line(entry)
    assert line.startswith("Don't add these pairs:") and "Adopt" not in line and "cannot tell" in line
    assert any("validation gain vs augment+copy-paste@1" in x for x in format_verdict(v))


def test_a_clear_validation_gain_over_three_seeds_is_adopted():
    entry = _entry([0.80, 0.81, 0.79], [0.83, 0.845, 0.82], test_gain=0.01)
    v = verdict_for(entry)
    val = v["selected"]["val_vs_reference"]
    assert v["adopt"] and v["status"] == "adopt" and val["low"] > 0 and len(val["seeds"]) == 3
    assert v["advice"].startswith("adopt pairs:on-top@0.25") and "95% CI" in v["advice"]
    line = _first_line(entry)
    assert line.startswith("Adopt ") and "beyond the seed-to-seed noise" in line


def test_two_seeds_are_not_enough_for_a_verdict():
    # the issue's case: ahead on two seeds' mean, a test gain of -0.012 with an interval wider than the gain
    entry = _entry([0.80, 0.81], [0.84, 0.80], test_gain=-0.012)
    v = verdict_for(entry)
    assert not v["adopt"] and v["status"] == "needs-seeds" and MIN_SEEDS == 3
    assert f"at least {MIN_SEEDS} seeds" in v["advice"] and "this benchmark has 2" in v["advice"]
    line = _first_line(entry)
    assert line.startswith("Don't add these pairs yet:") and "at least 3 seeds" in line and "Adopt" not in line


def test_a_gain_below_zero_beyond_the_noise_says_the_reference_won():
    entry = _entry([0.80, 0.81, 0.79], [0.70, 0.72, 0.69])
    v = verdict_for(entry)
    assert not v["adopt"] and v["status"] == "worse" and "beat every way" in v["advice"]
    assert _first_line(entry).startswith("Don't add these pairs: on 100 real training images none of the 1 ways")


def test_seeds_to_resolve_edges():
    assert seeds_to_resolve(0.0, 0.02) is None  # no difference: no number of seeds resolves it
    assert seeds_to_resolve(0.05, 0.0) == MIN_SEEDS
    assert seeds_to_resolve(1e-6, 1.0) is None  # beyond any practical number
    assert seeds_to_resolve(-0.01, 0.02) == seeds_to_resolve(0.01, 0.02) >= 18  # (1.96 x 2)^2 = 15.4, t widens it
