"""The speed ratio of two interleaved measurements, with a bootstrap confidence interval.

A benchmark that alternates ours and a reference gets pairs ``(ours_i, ref_i)`` measured side by
side, so a change of machine load hits both members of a pair alike. The ratio is the mean of
the per-pair ratios ``ours_i / ref_i`` (throughputs: above 1 means ours is faster), and its
interval a seeded percentile bootstrap over the pairs: resample the pairs with replacement,
take the mean of their ratios, and read the ``(1 - level) / 2`` and ``(1 + level) / 2``
percentiles of many such means. The same numbers always give the same interval.
"""
from __future__ import annotations

import random
import statistics
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class PairedRatio:
    ratio: float
    lo: float
    hi: float
    level: float
    pairs: int

    def __str__(self) -> str:
        return f"ratio {self.ratio:.2f} [{self.lo:.2f}, {self.hi:.2f}]"


def paired_ratio(ours: Sequence[float], ref: Sequence[float], level: float = 0.90, resamples: int = 10_000,
                 seed: int = 0) -> PairedRatio:
    """Mean of ``ours[i] / ref[i]`` and its ``level`` percentile-bootstrap interval over the pairs."""
    if len(ours) != len(ref) or not ours:
        raise ValueError(f"need the same positive number of measurements per side, got {len(ours)} and {len(ref)}")
    mean, lo, hi = bootstrap_mean([a / b for a, b in zip(ours, ref)], level, resamples, seed)
    return PairedRatio(mean, lo, hi, level, len(ours))


def bootstrap_mean(values: Sequence[float], level: float = 0.90, resamples: int = 10_000,
                   seed: int = 0) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of ``values`` and its seeded percentile-bootstrap ``level`` interval."""
    if not values:
        raise ValueError("no values")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1 - level) / 2
    return statistics.fmean(values), _percentile(means, tail), _percentile(means, 1 - tail)


def _percentile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    pos = q * (len(sorted_values) - 1)
    i = int(pos)
    j = min(i + 1, len(sorted_values) - 1)
    return sorted_values[i] + (sorted_values[j] - sorted_values[i]) * (pos - i)


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: how far the repeats of one side lie apart."""
    return (max(values) - min(values)) / statistics.median(values)
