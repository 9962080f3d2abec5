"""A per-device latency predictor: a network's latency as the sum of its parts' latencies.

nn-Meter's observation (kernel-level prediction, MobiSys 2021) carried to ViT spaces: a ViT runs
its blocks one after another, so its latency is close to the latency of its "rest" (patch
embedding, position and class token, PiT's pooling layers, final norm and head, and the
backend's per-call overhead) plus that of each block. A block runs its attention and then its
MLP, so in a ViT (one width E for all blocks) its latency is that of its attention, set by E and
the heads, plus that of its MLP, set by E and the MLP ratio: ``block E H`` + ``mlp E M`` (the
second 0 for the space's smallest ratio). In PiT a stage's width is base dim x heads, so its MLP
depends on the heads too: a PiT block has one part per stage, base dim, heads and MLP ratio.

A block is not timed alone: alone, its weights stay in the processor's cache between repeats
and the call overhead of the backend counts once per block, both unlike inside a network. Each
part is timed inside a network instead, by difference, like this (ViT, embed dim E)::

    A_E        = rest_E + 1 block (smallest heads h0, smallest MLP ratio m0)    (one network per E)
    B_E,h,m    = A_E + K blocks of heads h, MLP ratio m,  for (h, m0) and (h0, m)  (one factor at a time)
    block + mlp of (h, m) = (B - A) / K,      rest_E = A_E - block(h0) - mlp(m0)

with K the space's largest depth less one, so that B is as large as the space's largest
networks and streams its weights from memory as they do. A ViT space of nH head counts and nM
MLP ratios needs nH + nM - 1 B networks per width instead of nH x nM (AutoFormer-S: 5 instead
of 9). PiT's rest depends on the heads of every stage (its pooling layers join two stage
widths), so it has one A per combination. The equations are solved by least squares; the
design and the check of its rank are in ``calibration_groups`` and ``LatencyPredictor.fit``.

The sum of parts is timed in the calibrating process; a deployed network (and the search's
re-measure) runs alone in a fresh process. A few whole networks measured each in a fresh
process tie the two (``Correction``): on this shared machine the calibrating process's networks
ran a median 15% faster than the same networks in fresh processes minutes later
(docs/latency.md).

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
    """The named parts whose latencies add up to ``spec``'s: its rest, then its blocks' parts
    (ViT: each block's attention-and-rest ``block E H`` and its ``mlp E M``; PiT: one per block)."""
    if spec.family == "vit":
        e = spec.embed_dim
        blocks = [p for h, m in zip(spec.num_heads, spec.mlp_ratio) for p in (f"block E{e} H{h}", f"mlp E{e} M{m:g}")]
        return [f"rest E{e}", *blocks]
    starts = [sum(spec.stage_depths[:s]) for s in range(len(spec.stage_depths))]
    rest = f"rest E{spec.embed_dim} H{'-'.join(str(spec.num_heads[i]) for i in starts)}"
    blocks = [f"block S{spec.stage_of(i)} E{spec.embed_dim} H{h} M{m:g}"
              for i, (h, m) in enumerate(zip(spec.num_heads, spec.mlp_ratio))]
    return [rest, *blocks]


def _split(names: Sequence[str]) -> dict[str, tuple[list[str], list[str]]]:
    """Per ViT width, its ``block E H`` and ``mlp E M`` parts: their sum is determined, not the
    split (a constant may move from every block part to every mlp part of the width)."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for n in names:
        kind, _, rest = n.partition(" ")
        if kind in ("block", "mlp") and rest.startswith("E"):
            width = rest.split()[0]
            out.setdefault(width, ([], []))[kind == "mlp"].append(n)
    return {w: (b, m) for w, (b, m) in out.items() if b and m}


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
        if space.family == "vit":   # one factor at a time: the heads at m0, the MLP ratios at h0
            anchor = space.make_spec(embed, [1], [h0], [m0])
            k = _extra_blocks(space, 0)
            types = [(h, m0) for h in heads] + [(h0, m) for m in mlps if m != m0]
            groups.append([anchor] + [space.make_spec(embed, [1 + k], [h0] + [h] * k, [m0] + [m] * k)
                                      for h, m in types])
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
CALIBRATION_RUN_SECONDS = 1.0   # a block network's run: timed calls stop (after 3) once they took this long ...
CALIBRATION_MIN_SECONDS = 0.3   # ... and continue (past repeats / 3) until they took a third of this


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
        split = _split(names)
        if np.linalg.matrix_rank(design) < len(names) - len(split):
            raise ValueError("the calibration networks do not determine every part's latency")
        solution, *_ = np.linalg.lstsq(design, np.array([ms for _, ms in measured]), rcond=None)
        values = {n: float(v) for n, v in zip(names, solution)}
        for block_parts, mlp_parts in split.values():   # the smallest MLP ratio's part is 0
            shift = values[min(mlp_parts, key=lambda n: float(n.rsplit("M", 1)[1]))]
            values.update({n: values[n] - shift for n in mlp_parts})
            values.update({n: values[n] + shift for n in block_parts})
        predictor = cls(target.predictor_key(), space, values)
        predictor.correction = Correction.fit([(predictor.part_sum(s), ms) for s, ms in whole])
        return predictor

    @classmethod
    def calibrate(cls, space: SearchSpace, target: Target, cache: Optional[MeasurementCache] = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> "LatencyPredictor":
        """Measure what the cache lacks, then fit.

        The block networks are timed in ``RUNS`` passes, one run of each per pass, the groups
        interleaved (one network of each width in turn, the order rotating from pass to pass): a
        network's runs lie a pass apart (minutes for 224 px spaces), the median of its runs
        outvotes a burst of other work shorter than a pass, and a change of the machine's load
        within a pass reaches every width alike (timed group by group, one loaded run left
        AutoFormer-T's E192 networks predicted 21% under their fresh-process latency, its E240
        ones 7%: docs/latency.md). A calibration run is short
        (``CALIBRATION_MIN_SECONDS``, ``CALIBRATION_RUN_SECONDS``): what is kept is the median of
        three. Among each pass's block networks a third of the whole networks is measured, each in a
        fresh process, with the target's full warm-up and repeats."""
        import dataclasses

        from pipeline.latency import fresh
        from pipeline.latency.measure import RUNS, Timing, join_runs, measure_latency

        cache = cache or MeasurementCache(target)
        groups = calibration_groups(space)
        whole = whole_networks(space)
        missing = _interleave([g for g in groups if any(cache.get(spec) is None for spec in g)])   # groups whole
        missing_whole = [s for s in whole if cache.get(s, fresh=True) is None]
        total = (sum(len(g) for g in groups) + len(whole)) * RUNS
        done = total - (len(missing) + len(missing_whole)) * RUNS
        quick = dataclasses.replace(target, min_seconds=CALIBRATION_MIN_SECONDS)
        runs: dict[ArchSpec, list] = {}
        for p in range(RUNS if missing or missing_whole else 0):
            order = missing[p % len(missing):] + missing[:p % len(missing)] if missing else []
            for fresh_process, spec in _spread(order, missing_whole[p::RUNS]):
                if fresh_process:
                    got = fresh.measure_in_fresh_process(spec, target, memory=False)
                    cache.put({spec: Timing.from_dict(got["timing"])}, fresh=True)
                    done += RUNS
                else:
                    timing = measure_latency({0: spec}, quick, n_runs=1, run_seconds=CALIBRATION_RUN_SECONDS)[0]
                    runs.setdefault(spec, []).append(timing)
                    done += 1
                if progress is not None:
                    progress(done, total)
        if runs:
            cache.put({spec: join_runs(timings) for spec, timings in runs.items()})
        if progress is not None and not (missing or missing_whole):
            progress(total, total)
        measured = [(spec, target.latency(cache.get(spec))) for group in groups for spec in group]
        return cls.fit(target, space.name, measured, [(s, target.latency(cache.get(s, fresh=True))) for s in whole])


def _interleave(groups: Sequence[Sequence[ArchSpec]]) -> list[ArchSpec]:
    """One network of each group in turn: g0[0], g1[0], ..., g0[1], g1[1], ..."""
    longest = max((len(g) for g in groups), default=0)
    return [g[i] for i in range(longest) for g in groups if i < len(g)]


def _spread(blocks: Sequence[ArchSpec], whole: Sequence[ArchSpec]) -> list[tuple[bool, ArchSpec]]:
    """The pass's block networks with its whole networks evenly among them ((True, spec): a whole one)."""
    out: list[tuple[bool, ArchSpec]] = [(False, s) for s in blocks]
    for i, spec in reversed(list(enumerate(whole))):
        out.insert(round((i + 1) * len(blocks) / (len(whole) + 1)), (True, spec))
    return out
