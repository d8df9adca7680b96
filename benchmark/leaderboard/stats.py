"""Seed statistics: n, mean, sample standard deviation, a 95% interval, paired differences.

The interval is Student's t on the seeds' mean (``mean +- t(0.975, n-1) * sd / sqrt(n)``), or, when
asked, a seeded percentile bootstrap of the mean (``bootstrap_interval``); a single seed has no
interval. Every table says which one its +- is.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Sequence

# t(0.975, df) for df = 1..30 (two-sided 95%); beyond, 1.96 + 2.4 / df is within 0.002 of the exact value
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t975(df: int) -> float:
    if df < 1:
        raise ValueError("t975: df >= 1")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float | None
    sd: float | None  # sample standard deviation (ddof=1); None for n < 2
    half_width: float | None  # of the 95% interval; None for n < 2

    @property
    def excludes_zero(self) -> bool:
        """The 95% interval lies wholly above or below 0 (a difference the seeds resolve)."""
        return self.mean is not None and self.half_width is not None and abs(self.mean) > self.half_width

    def text(self, digits: int = 2) -> str:
        if self.n == 0 or self.mean is None:
            return "-"
        if self.half_width is None:
            return f"{self.mean:.{digits}f} (n={self.n})"
        return f"{self.mean:.{digits}f} ± {self.half_width:.{digits}f} (n={self.n})"


def summarize(values: Sequence[float], bootstrap: int = 0, seed: int = 0) -> Summary:
    """n, mean, sd (ddof=1) and the 95% interval's half-width (t, or a seeded bootstrap of ``bootstrap``
    resamples: half the width of its 2.5-97.5 percentile range)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]  # NaN/inf: flagged by the caller
    n = len(vals)
    if n == 0:
        return Summary(0, None, None, None)
    mean = sum(vals) / n
    if n == 1:
        return Summary(1, mean, None, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    if bootstrap:
        lo, hi = bootstrap_interval(vals, bootstrap, seed)
        return Summary(n, mean, sd, (hi - lo) / 2)
    return Summary(n, mean, sd, t975(n - 1) * sd / math.sqrt(n))


def bootstrap_interval(values: Sequence[float], resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of the mean, reproducible for a seed."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(n)) / n for _ in range(resamples))
    return means[int(0.025 * (resamples - 1))], means[int(math.ceil(0.975 * (resamples - 1)))]
