"""Intervals over seeds: the mean of a metric across repeated runs, and how sure it is."""

from __future__ import annotations

import math


def mean_interval(values: list[float], confidence: float = 0.95) -> dict[str, float | int | None]:
    """Mean and two-sided Student-t interval of the mean.

    With one value the interval is undefined and reported as None, not zero.
    """
    from scipy import stats

    clean = [float(v) for v in values if v is not None and v == v]
    n = len(clean)
    if n == 0:
        return {"n": 0, "mean": None, "low": None, "high": None}
    mean = sum(clean) / n
    if n == 1:
        return {"n": 1, "mean": mean, "low": None, "high": None}
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return {"n": n, "mean": mean, "low": mean - half, "high": mean + half}
