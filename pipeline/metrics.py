"""Ranking statistics for judging training-free proxies against measured accuracy.

Pure functions of numpy arrays. Every statistic takes proxy values that are already *oriented*
(larger = predicted better; see :func:`orient`) and the ground-truth metric (larger = better).
Statistics that are undefined (fewer than two points, a constant input) are ``nan``, never an
exception, so one degenerate proxy never stops a report.

* :func:`kendall_tau` - Kendall's tau-b (ties handled), as ``scipy.stats.kendalltau``.
* :func:`spearman_rho` - Spearman's rank correlation, as ``scipy.stats.spearmanr``.
* :func:`banded_kendall_tau` - tau *within parameter-count bands*: the architectures are sorted by
  parameter count and cut into ``bands`` bands of (as near as possible) equal size
  (``numpy.array_split`` of the stable sort order, so the first ``n % bands`` bands hold one
  more architecture). Kendall tau-b is computed inside each band, and the report is the mean of
  the per-band taus weighted by band size, over the bands where tau is defined (at least two
  architectures and neither input constant). Since a size-correlated proxy ranks well simply by
  "bigger is better", this isolates what a proxy knows beyond model size.
* :func:`top_fraction_precision` - of the true top ``fraction`` (default 10 %) of architectures
  by the metric, the fraction also in the proxy's top ``fraction``. Both top sets have
  ``k = ceil(fraction * n)`` members (at least 1). Ties at the cut-off are resolved by *expected*
  membership over uniformly random tie-breaks (an item tied at the boundary belongs to the top set
  with probability "free slots / tied items"), so the value does not depend on input order.
"""
from __future__ import annotations

import math
import warnings
from typing import Sequence

import numpy as np
from scipy import stats

__all__ = ["orient", "kendall_tau", "spearman_rho", "band_indices", "banded_kendall_tau",
           "top_membership", "top_fraction_precision", "summarize"]


def _arrays(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same length, got {x.size} and {y.size}")
    return x, y


def _degenerate(x: np.ndarray, y: np.ndarray) -> bool:
    return x.size < 2 or np.all(x == x[0]) or np.all(y == y[0])


def orient(values: Sequence[float], higher_is_better: bool) -> np.ndarray:
    """Proxy values turned so that larger always means "predicted better"."""
    v = np.asarray(values, dtype=float)
    return v if higher_is_better else -v


def _rank_correlation(statistic, x: Sequence[float], y: Sequence[float]) -> float:
    """``statistic(x, y).statistic`` (a scipy rank correlation), nan when undefined."""
    x, y = _arrays(x, y)
    if _degenerate(x, y):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(statistic(x, y).statistic)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b between ``x`` and ``y``; nan when undefined."""
    return _rank_correlation(stats.kendalltau, x, y)


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho between ``x`` and ``y``; nan when undefined."""
    return _rank_correlation(stats.spearmanr, x, y)


def band_indices(params: Sequence[float], bands: int) -> list[np.ndarray]:
    """Indices of each parameter-count band, smallest models first (empty bands omitted)."""
    if int(bands) < 1:
        raise ValueError(f"bands must be >= 1, got {bands}")
    p = np.asarray(params, dtype=float).ravel()
    order = np.argsort(p, kind="stable")
    return [b for b in np.array_split(order, int(bands)) if b.size]


def banded_kendall_tau(x: Sequence[float], y: Sequence[float], params: Sequence[float],
                       bands: int = 5) -> tuple[float, list[tuple[int, float]]]:
    """Size-weighted mean Kendall tau within ``bands`` equal-count parameter bands.

    Returns ``(weighted_mean, [(band_size, band_tau), ...])``; bands whose tau is undefined are
    listed with ``nan`` and left out of the mean (which is nan if no band has a tau).
    """
    x, y = _arrays(x, y)
    p = np.asarray(params, dtype=float).ravel()
    if p.shape != x.shape:
        raise ValueError(f"params must have the same length as x, got {p.size} and {x.size}")
    per_band = [(int(idx.size), kendall_tau(x[idx], y[idx])) for idx in band_indices(p, bands)]
    defined = [(n, t) for n, t in per_band if math.isfinite(t)]
    if not defined:
        return math.nan, per_band
    weights = np.array([n for n, _ in defined], dtype=float)
    taus = np.array([t for _, t in defined])
    return float(np.sum(weights * taus) / np.sum(weights)), per_band


def _top_k(n: int, fraction: float) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, math.ceil(fraction * n - 1e-9))


def top_membership(values: Sequence[float], k: int) -> np.ndarray:
    """Probability of each item being among the ``k`` largest under random tie-breaking."""
    v = np.asarray(values, dtype=float).ravel()
    if k >= v.size:
        return np.ones(v.size)
    cut = np.sort(v)[::-1][k - 1]          # the k-th largest value
    above = v > cut
    tied = v == cut
    prob = above.astype(float)
    prob[tied] = (k - above.sum()) / tied.sum()
    return prob


def top_fraction_precision(x: Sequence[float], y: Sequence[float], fraction: float = 0.1) -> float:
    """Fraction of the true top ``fraction`` (by ``y``) that is in the proxy's top (by ``x``)."""
    x, y = _arrays(x, y)
    if x.size == 0:
        return math.nan
    k = _top_k(x.size, fraction)
    return float(np.sum(top_membership(x, k) * top_membership(y, k)) / k)


def summarize(values: Sequence[float], metric: Sequence[float], params: Sequence[float],
              higher_is_better: bool = True, bands: int = 5, fraction: float = 0.1) -> dict[str, float]:
    """All statistics of one proxy: raw ``values`` are oriented here by ``higher_is_better``."""
    x = orient(values, higher_is_better)
    y = np.asarray(metric, dtype=float)
    band_tau, _ = banded_kendall_tau(x, y, params, bands)
    return {
        "n": int(x.size),
        "kendall_tau": kendall_tau(x, y),
        "spearman_rho": spearman_rho(x, y),
        "band_tau": band_tau,
        "top_precision": top_fraction_precision(x, y, fraction) if x.size else math.nan,
    }
