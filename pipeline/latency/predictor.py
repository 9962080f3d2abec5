"""A per-device latency predictor: a network's latency as the sum of its parts' latencies.

nn-Meter's observation (kernel-level prediction, MobiSys 2021) carried to ViT spaces: a ViT runs
its blocks one after another, so its latency is close to the latency of its "rest" (patch
embedding, position and class token, PiT's pooling layers, final norm and head, and the
backend's per-call overhead) plus that of each block, and a block's latency is set by its type:
width, heads, MLP hidden width and token count (its stage, in PiT). A space has few block
types (12 in AutoFormer-T, 27 in AutoFormer-S), so each is measured once on the target.

A block is not timed alone: alone, its weights stay in the processor's cache between repeats
and the call overhead of the backend counts once per block, both unlike inside a network. Each
type is timed inside a network instead, by difference, like this (ViT, embed dim E)::

    A_E      = rest_E + 1 block of the space's smallest type        (one network per E)
    B_E,type = A_E + K blocks of `type`                               (one network per type)
    block(type) = (B - A) / K,      rest_E = A_E - block(smallest)

with K the space's largest depth less one, so that B is as large as the space's largest
networks and streams its weights from memory as they do. The networks of one E are measured
together, interleaved, so that load drifts cancel in the difference. PiT's rest depends on the
heads of every stage (its pooling layers join two stage widths), so it has one A per
combination. The equations are solved by least squares (exactly determined here); the design
and the check of its rank are in ``calibration_groups`` and ``LatencyPredictor.fit``.

Accuracy is judged on networks that were not measured for the fit (``benchmarks/latency.py``,
docs/latency.md).
"""
from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from pipeline.latency.cache import MeasurementCache, network_key
from pipeline.latency.target import Target
from pipeline.space.space import SearchSpace
from pipeline.space.spec import ArchSpec


def parts(spec: ArchSpec) -> list[str]:
    """The named parts whose latencies add up to ``spec``'s: its rest, then one entry per block."""
    if spec.family == "vit":
        rest = f"rest E{spec.embed_dim}"
        blocks = [f"block E{spec.embed_dim} H{h} M{m:g}" for h, m in zip(spec.num_heads, spec.mlp_ratio)]
        return [rest, *blocks]
    starts = [sum(spec.stage_depths[:s]) for s in range(len(spec.stage_depths))]
    rest = f"rest E{spec.embed_dim} H{'-'.join(str(spec.num_heads[i]) for i in starts)}"
    blocks = [f"block S{spec.stage_of(i)} E{spec.embed_dim} H{h} M{m:g}"
              for i, (h, m) in enumerate(zip(spec.num_heads, spec.mlp_ratio))]
    return [rest, *blocks]


def _extra_blocks(space: SearchSpace, stage: int) -> int:
    """K: blocks added to measure a type, so a B network is as deep as the space's deepest stage."""
    return max(2, max(space.stage_depths[stage]) - 1)


def calibration_groups(space: SearchSpace) -> list[list[ArchSpec]]:
    """The networks measured to calibrate ``space``, in groups measured together (interleaved).

    Every group holds an anchor A and the B networks whose differences to it give block types.
    """
    heads, mlps = space.num_heads.values, space.mlp_ratio.values
    h0, m0 = min(heads), min(mlps)
    stages = len(space.stage_depths)
    groups: list[list[ArchSpec]] = []
    for embed in space.embed_dim:
        if space.family == "vit":
            anchor = space.make_spec(embed, [1], [h0], [m0])
            k = _extra_blocks(space, 0)
            groups.append([anchor] + [space.make_spec(embed, [1 + k], [h0] + [h] * k, [m0] + [m] * k)
                                      for h, m in itertools.product(heads, mlps)])
            continue
        # PiT: one anchor per combination of stage heads (the rest differs), B networks per stage.
        combos = ([(h,) * stages for h in heads] if space.num_heads.per == "global"
                  else list(itertools.product(heads, repeat=stages)))
        for h in heads:
            anchor = space.make_spec(embed, [1] * stages, [h] * stages, [m0] * stages)
            group = [anchor]
            for s, m in itertools.product(range(stages), mlps):
                k = _extra_blocks(space, s)
                depths = [1 + k if t == s else 1 for t in range(stages)]
                layer_mlps = [m0] * (s + 1) + [m] * k + [m0] * (stages - s - 1)
                group.append(space.make_spec(embed, depths, [h] * sum(depths), layer_mlps))
            group += [space.make_spec(embed, [1] * stages, list(c), [m0] * stages)
                      for c in combos if c[0] == h and len(set(c)) > 1]
            groups.append(group)
    return groups


WHOLE_NETWORKS = 6   # random networks measured whole, each in a fresh process, per calibration
CALIBRATION_RUN_SECONDS = 1.0   # a block network's run: timed calls stop (after 3) once they took this long


def whole_networks(space: SearchSpace, n: int = WHOLE_NETWORKS) -> list[ArchSpec]:
    """``n`` random networks of the space (none of them a block-calibration network), evenly
    spread over the FLOPs of 8n draws: measured whole, each in a fresh process, they tie the
    sum of parts to what the search's re-measurement and a deployment see (``Correction``)."""
    from pipeline.models import count_flops

    calibration = {network_key(s) for group in calibration_groups(space) for s in group}
    rng, pool = random.Random(f"{space.name}-whole-networks"), {}
    for _ in range(100 * n):
        if len(pool) >= 8 * n:
            break
        spec = space.sample(rng)
        if network_key(spec) not in calibration:
            pool[network_key(spec)] = spec
    ranked = sorted(pool.values(), key=lambda s: (count_flops(s), network_key(s)))
    if len(ranked) <= n:
        return ranked
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]


@dataclass(frozen=True)
class Correction:
    """``scale * (sum of parts) + offset``: the sum of parts as a whole network in a fresh process runs."""

    scale: float = 1.0
    offset: float = 0.0

    def __call__(self, ms: float) -> float:
        return self.scale * ms + self.offset

    @classmethod
    def fit(cls, pairs: Sequence[tuple[float, float]]) -> "Correction":
        """From (sum of parts, measured whole) pairs: the median ratio (robust to one disturbed network)."""
        import statistics

        if not pairs:
            return cls()
        return cls(statistics.median(m / p for p, m in pairs), 0.0)


@dataclass
class LatencyPredictor:
    """Milliseconds per part on one target; ``predict(spec)`` sums a network's parts and corrects
    the sum to a whole network's latency in a fresh process (``Correction``)."""

    target: dict
    space: str
    parts: dict[str, float]
    correction: Correction = field(default_factory=Correction)

    def part_sum(self, spec: ArchSpec) -> float:
        try:
            return sum(self.parts[p] for p in parts(spec))
        except KeyError as e:
            raise ValueError(f"{spec.short()} has a part ({e.args[0]}) the predictor of space {self.space!r} "
                             "was not calibrated for") from None

    def predict(self, spec: ArchSpec) -> float:
        return self.correction(self.part_sum(spec))

    def to_dict(self) -> dict:
        return {"target": self.target, "space": self.space, "parts": self.parts,
                "correction": {"scale": self.correction.scale, "offset": self.correction.offset}}

    @classmethod
    def from_dict(cls, d: dict) -> "LatencyPredictor":
        correction = Correction(**{k: float(v) for k, v in (d.get("correction") or {}).items()})
        return cls(d["target"], d["space"], {k: float(v) for k, v in d["parts"].items()}, correction)

    @classmethod
    def fit(cls, target: Target, space: str, measured: Sequence[tuple[ArchSpec, float]],
            whole: Sequence[tuple[ArchSpec, float]] = ()) -> "LatencyPredictor":
        """Part latencies that best explain the block networks ``measured`` (least squares), then
        the correction that takes their sums to the ``whole`` networks measured in fresh processes."""
        import numpy as np

        names = sorted({p for spec, _ in measured for p in parts(spec)})
        index = {n: i for i, n in enumerate(names)}
        design = np.zeros((len(measured), len(names)))
        for row, (spec, _) in enumerate(measured):
            for p in parts(spec):
                design[row, index[p]] += 1
        if np.linalg.matrix_rank(design) < len(names):
            raise ValueError("the calibration networks do not determine every part's latency")
        solution, *_ = np.linalg.lstsq(design, np.array([ms for _, ms in measured]), rcond=None)
        predictor = cls(target.predictor_key(), space, {n: float(v) for n, v in zip(names, solution)})
        predictor.correction = Correction.fit([(predictor.part_sum(s), ms) for s, ms in whole])
        return predictor

    @classmethod
    def calibrate(cls, space: SearchSpace, target: Target, cache: Optional[MeasurementCache] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> "LatencyPredictor":
        """Measure what the cache lacks, then fit. A group's networks are timed together (their
        runs interleaved, so load drifts cancel in the differences), one run each per pass over
        all groups: a network's ``RUNS`` runs lie a pass apart (minutes for 224 px spaces), and
        their median outvotes a burst of other work shorter than a pass. Measured twice in a row
        on this shared machine without passes, AutoFormer-T's predictor was within +-10% of 0.22
        and of 0.94 of the held-out networks (docs/latency.md). After each pass a third of the
        whole networks (``whole_networks``) is measured, each in a fresh process."""
        from pipeline.latency import fresh
        from pipeline.latency.measure import RUNS, Timing, join_runs, measure_latency

        cache = cache or MeasurementCache(target)
        groups = calibration_groups(space)
        whole = whole_networks(space)
        missing = [g for g in groups if any(cache.get(spec) is None for spec in g)]   # a group is measured whole
        missing_whole = [s for s in whole if cache.get(s, fresh=True) is None]
        total = (sum(len(g) for g in groups) + len(whole)) * RUNS
        done = total - (sum(len(g) for g in missing) + len(missing_whole)) * RUNS
        runs: dict[ArchSpec, list] = {}
        for p in range(RUNS if missing or missing_whole else 0):
            for group in missing:
                order = group[p % len(group):] + group[:p % len(group)]
                for spec, timing in measure_latency({s: s for s in order}, target, n_runs=1,
                                                    run_seconds=CALIBRATION_RUN_SECONDS).items():
                    runs.setdefault(spec, []).append(timing)
                done += len(group)
                if progress is not None:
                    progress(done, total)
            for spec in missing_whole[p::RUNS]:
                got = fresh.measure_in_fresh_process(spec, target, memory=False)
                cache.put({spec: Timing.from_dict(got["timing"])}, fresh=True)
                done += RUNS
                if progress is not None:
                    progress(done, total)
        if runs:
            cache.put({spec: join_runs(timings) for spec, timings in runs.items()})
        if progress is not None and not (missing or missing_whole):
            progress(total, total)
        measured = [(spec, target.latency(cache.get(spec))) for group in groups for spec in group]
        return cls.fit(target, space.name, measured, [(s, target.latency(cache.get(s, fresh=True))) for s in whole])
