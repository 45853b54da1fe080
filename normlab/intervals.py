"""Intervals over seeds: the mean of a metric across repeated runs, and how sure it is."""

from __future__ import annotations

import math

from normlab.sweep_contracts import MeanInterval


def mean_interval(values: list[float | None], confidence: float = 0.95) -> MeanInterval:
    """Mean and two-sided Student-t interval of the mean.

    None and NaN values do not count. With one value the interval is undefined
    and reported as None, not zero.
    """
    from scipy import stats

    clean = [float(v) for v in values if v is not None and v == v]
    n = len(clean)
    if n == 0:
        return MeanInterval(n=0)
    mean = sum(clean) / n
    if n == 1:
        return MeanInterval(n=1, mean=mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return MeanInterval(n=n, mean=mean, low=mean - half, high=mean + half)
