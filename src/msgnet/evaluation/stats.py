"""Small statistics shared by the evaluation reports: Wilson intervals and mean ± std over seeds."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np



def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sensible at 0 and n, unlike the normal one)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    from scipy.stats import binomtest

    ci = binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return (float(ci.low), float(ci.high))


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof=1); the std is None for a single value."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return (float("nan"), None)
    if arr.size == 1:
        return (float(arr[0]), None)
    return (float(arr.mean()), float(arr.std(ddof=1)))


def fmt_mean_std(mean: float, std: float | None, digits: int = 3) -> str:
    if mean is None or math.isnan(mean):
        return "n/a"
    if std is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def fmt_rate(rate: float, low: float, high: float) -> str:
    return f"{100 * rate:.2f}% (95% CI {100 * low:.2f}–{100 * high:.2f}%)"
