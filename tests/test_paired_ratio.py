"""The benchmarks' paired-ratio confidence interval (benchmarks/paired_ratio.py) on synthetic
numbers: nothing is timed."""
import importlib.util
import random
import sys

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location("paired_ratio", REPO / "benchmarks" / "paired_ratio.py")
paired_ratio_module = sys.modules["paired_ratio"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(paired_ratio_module)
paired_ratio = paired_ratio_module.paired_ratio


def noisy(n, mean, rel_sd, seed):
    rng = random.Random(seed)
    return [mean * (1 + rng.gauss(0, rel_sd)) for _ in range(n)]


def test_identical_sides_give_an_interval_around_one():
    ref = noisy(7, 3.8, 0.02, seed=1)
    ours = [r * (1 + 0.01 * random.Random(i).gauss(0, 1)) for i, r in enumerate(ref)]
    r = paired_ratio(ours, ref)
    assert r.lo <= 1.0 <= r.hi
    assert r.lo <= r.ratio <= r.hi and r.pairs == 7
    assert paired_ratio(ref, ref).lo == paired_ratio(ref, ref).hi == 1.0


def test_a_ten_percent_gap_is_detected():
    ref = noisy(7, 3.8, 0.05, seed=3)   # machine drift, shared by the pair
    ours = [0.9 * r * (1 + 0.015 * random.Random(10 + i).gauss(0, 1)) for i, r in enumerate(ref)]
    r = paired_ratio(ours, ref)
    assert r.hi < 0.95 and r.lo > 0.85
    assert str(r) == f"ratio {r.ratio:.2f} [{r.lo:.2f}, {r.hi:.2f}]"


def test_seeded_and_wider_at_higher_level():
    ours, ref = noisy(9, 1.0, 0.03, seed=5), noisy(9, 1.0, 0.03, seed=6)
    assert paired_ratio(ours, ref) == paired_ratio(ours, ref)
    narrow, wide = paired_ratio(ours, ref, level=0.5), paired_ratio(ours, ref, level=0.99)
    assert wide.lo < narrow.lo <= narrow.hi < wide.hi


def test_bad_input():
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])
    with pytest.raises(ValueError):
        paired_ratio([], [])
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0], level=1.0)
