import itertools
import random

import pytest

from pipeline.models import count_flops, count_params
from pipeline.space import Limits, SearchSpace, SpecError


def _enumerate_all(space: SearchSpace):
    """Brute force over every architecture of a (small) per-layer vit space."""
    layer_opts = list(itertools.product(space.num_heads.values, space.mlp_ratio.values))
    for embed in space.embed_dim:
        for depth in space.stage_depths[0]:
            for layers in itertools.product(layer_opts, repeat=depth):
                yield space.make_spec(embed, [depth], [h for h, _ in layers], [m for _, m in layers])


@pytest.mark.slow
def test_bounds_equal_brute_force_on_demo_space():
    space = SearchSpace.load("demo")
    params, flops = [], []
    for spec in _enumerate_all(space):
        p, f = count_params(spec), count_flops(spec)
        params.append(p)
        flops.append(f)
    b = space.bounds()
    assert b["params"] == (min(params) / 1e6, max(params) / 1e6)
    assert b["flops"] == (min(flops) / 1e6, max(flops) / 1e6)


def test_constrained_samples_inside_limits():
    space = SearchSpace.load("autoformer_tiny")
    limits = Limits(min_params=6.0, max_params=7.5, max_flops=1700)
    rng = random.Random(0)
    for _ in range(100):
        spec = space.sample_within(rng, limits)
        assert 6.0 <= count_params(spec) / 1e6 <= 7.5
        assert count_flops(spec) / 1e6 <= 1700


def test_infeasible_limits_fail_fast_with_true_range():
    space = SearchSpace.load("autoformer_tiny")
    lo, hi = space.bounds()["params"]
    with pytest.raises(SpecError, match=rf"{lo:.3f}-{hi:.3f}M"):
        space.sample_within(random.Random(0), Limits(max_params=1.0))
    with pytest.raises(SpecError, match="exceeds the largest model"):
        space.check_limits(Limits(min_flops=1e6))
    with pytest.raises(SpecError, match="larger than max_params"):
        space.check_limits(Limits(min_params=8, max_params=7))
    with pytest.raises(SpecError, match="unknown limit"):
        Limits.from_dict({"max_param": 3})
