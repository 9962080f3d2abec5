"""Which architectures a ground truth holds: a seeded sample stratified across params bands.

Uniform sampling puts most architectures in the middle of the space's size range; a ranking
judged *within* size bands (band tau) and a regret judged under small budgets need every band
filled. So a large seeded pool is drawn within the limits, sorted by parameter count, cut into
``bands`` equal-count bands, and the same number of architectures is drawn from each. The
sample's order interleaves the bands, so any prefix of it (what a second seed covers, or a
file still being filled) spans the whole size range.
"""
from __future__ import annotations

import hashlib
import json
import random

from pipeline.errors import UserError
from pipeline.models.complexity import count_params
from pipeline.space import ArchSpec, Limits, SearchSpace, SpecError

POOL_FACTOR = 20    # pool size per architecture wanted
STALE_DRAWS = 200   # draws in a row that add nothing new: the space (within the limits) is exhausted


def arch_id(spec: ArchSpec) -> str:
    """A short, stable key of an architecture (the same spec always gets the same id)."""
    return hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def stratified_sample(space: SearchSpace, limits: Limits, n: int, bands: int, seed: int) -> list[ArchSpec]:
    """``n`` distinct architectures of ``space`` within ``limits``, spread evenly over ``bands`` params bands."""
    space.check_limits(limits)
    rng = random.Random(seed)
    pool: dict[ArchSpec, float] = {}
    want, stale = n * POOL_FACTOR, 0
    while len(pool) < want and stale < STALE_DRAWS:   # a small space runs dry: stop when draws stop adding
        try:
            spec = space.sample_within(rng, limits, max_tries=2000)
        except SpecError:
            break
        stale = stale + 1 if spec in pool else 0
        pool.setdefault(spec, count_params(spec))
    if len(pool) < n:
        raise UserError(f"the space {space.name!r} has only {len(pool)} distinct architectures within the limits "
                        f"({limits}); ask for --num_archs={len(pool)} or fewer, or widen the limits")
    ordered = sorted(pool, key=lambda s: (pool[s], arch_id(s)))
    bands = max(1, min(bands, n))
    size = len(ordered) / bands
    strata = [ordered[round(b * size):round((b + 1) * size)] for b in range(bands)]
    picks = [rng.sample(stratum, n // bands + (1 if b < n % bands else 0)) for b, stratum in enumerate(strata)]
    for stratum in picks:   # each band's draws smallest first, then interleaved across bands
        stratum.sort(key=lambda s: (pool[s], arch_id(s)))
    return [stratum[i] for i in range(max(map(len, picks))) for stratum in picks if i < len(stratum)]
