"""The ranking statistics of ``pipeline.metrics``, against scipy and brute force."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from pipeline import metrics


def test_tau_and_rho_equal_scipy():
    rng = np.random.default_rng(0)
    for n in (5, 17, 60):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        x[:3] = x[3]  # some ties
        assert metrics.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
        assert metrics.spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(metrics.kendall_tau([1.0], [2.0]))
    assert math.isnan(metrics.kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(metrics.spearman_rho([1.0, 2.0], [3.0, 3.0]))


@pytest.mark.parametrize("n,bands", [(23, 5), (10, 5), (7, 3), (4, 6), (30, 1)])
def test_banded_tau_equals_brute_force(n, bands):
    rng = np.random.default_rng(n)
    params = rng.integers(0, 8, size=n).astype(float)  # ties across band edges
    x = params + rng.normal(size=n)
    y = params + rng.normal(size=n)
    got, per_band = metrics.banded_kendall_tau(x, y, params, bands)
    # brute force: sort by params (stable), cut into equal-count bands, tau per band, weighted mean
    order = sorted(range(n), key=lambda i: (params[i], i))
    sizes = [n // bands + (b < n % bands) for b in range(bands)]
    num = den = 0.0
    start, expect_bands = 0, []
    for size in sizes:
        idx = order[start:start + size]
        start += size
        if not idx:
            continue
        tau = stats.kendalltau(x[idx], y[idx]).statistic if len(idx) >= 2 else math.nan
        expect_bands.append((len(idx), tau))
        if math.isfinite(tau):
            num += len(idx) * tau
            den += len(idx)
    assert [s for s, _ in per_band] == [s for s, _ in expect_bands]
    np.testing.assert_allclose([t for _, t in per_band], [t for _, t in expect_bands], equal_nan=True)
    if den:
        assert got == pytest.approx(num / den, abs=1e-12)
    else:
        assert math.isnan(got)


def test_top_precision_hand_example():
    # 20 architectures: top 10% = 2. True top-2 by metric: items 0 and 1.
    metric = np.arange(20, 0, -1, dtype=float)
    proxy = np.zeros(20)
    proxy[0], proxy[5] = 10, 9          # proxy's top-2: items 0 and 5 -> one hit of two
    proxy[6:] = np.linspace(-1, -2, 14)
    assert metrics.top_fraction_precision(proxy, metric, 0.1) == pytest.approx(0.5)
    assert metrics.top_fraction_precision(metric, metric, 0.1) == 1.0
    assert metrics.top_fraction_precision(-metric, metric, 0.1) == 0.0
    # k = ceil(0.1 * 12) = 2; a perfect ranking of 12 still scores 1
    assert metrics.top_fraction_precision(np.arange(12.0), np.arange(12.0), 0.1) == 1.0


def test_top_precision_ties_are_expected_value_over_tie_breaks():
    metric = np.array([9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0])       # true top-1 (k=1 at 10%) is item 0
    proxy = np.array([5.0, 5, 5, 1, 0, 0, 0, 0, 0, 0])        # three-way tie at the top
    assert metrics.top_fraction_precision(proxy, metric, 0.1) == pytest.approx(1 / 3)
    # brute force over every tie-break order (permutations within each group of equal values)
    proxy = np.array([5.0, 4, 4, 4, 1, 1, 0, 0, 0, 0])
    metric = np.array([0.0, 9, 1, 8, 7, 2, 3, 4, 5, 6])
    for k, frac in ((3, 0.3), (5, 0.5), (2, 0.2)):
        true_top = set(np.argsort(-metric, kind="stable")[:k].tolist())
        groups = [np.flatnonzero(proxy == v).tolist() for v in np.unique(proxy)]
        hits = []
        for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
            pos = {i: n for perm in perms for n, i in enumerate(perm)}
            rank = sorted(range(10), key=lambda i: (-proxy[i], pos[i]))
            hits.append(len(true_top & set(rank[:k])) / k)
        assert metrics.top_fraction_precision(proxy, metric, frac) == pytest.approx(np.mean(hits), abs=1e-12)


def test_direction_handling():
    rng = np.random.default_rng(3)
    values, metric, params = rng.normal(size=40), rng.normal(size=40), rng.normal(size=40)
    up = metrics.summarize(values, metric, params, higher_is_better=True, bands=4)
    down = metrics.summarize(-values, metric, params, higher_is_better=False, bands=4)
    assert up == down
    flipped = metrics.summarize(values, metric, params, higher_is_better=False, bands=4)
    assert flipped["kendall_tau"] == pytest.approx(-up["kendall_tau"])
    assert flipped["spearman_rho"] == pytest.approx(-up["spearman_rho"])
    np.testing.assert_array_equal(metrics.orient([1, -2], False), [-1, 2])
