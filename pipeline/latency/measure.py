"""Latency measurement: the median of timed forwards after warm-up, networks interleaved.

Several networks measured together take one forward each per round, in an order that rotates
from round to round, so a change in the machine's load during the measurement hits them all
alike instead of biasing whichever ran at that moment. Threads (and cores, if asked) are pinned
for the duration (``pinned``). The median of the timed rounds is the latency; the interquartile
range over the median says how noisy it was.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Optional, TypeVar

import torch

from pipeline.latency.backends import Run, make_runner
from pipeline.latency.target import Target, pinned
from pipeline.space.spec import ArchSpec

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class Timing:
    """Milliseconds per forward: the median of ``rounds`` timed calls and their relative spread."""

    ms: float
    spread: float   # interquartile range / median
    rounds: int


def timing(seconds: list[float]) -> Timing:
    ms = sorted(s * 1e3 for s in seconds)
    median = statistics.median(ms)
    q1, q3 = (statistics.quantiles(ms, n=4)[i] for i in (0, 2)) if len(ms) >= 4 else (ms[0], ms[-1])
    return Timing(median, (q3 - q1) / median if median > 0 else 0.0, len(ms))


def time_interleaved(runs: Mapping[K, Run], warmup: int, repeats: int,
                     progress: Optional[Callable[[int, int], None]] = None) -> dict[K, Timing]:
    """Time every run ``warmup`` + ``repeats`` times, one call of each per round (order rotating)."""
    keys = list(runs)
    seconds: dict[K, list[float]] = {k: [] for k in keys}
    total = warmup + repeats
    for r in range(total):
        shift = r % len(keys) if keys else 0
        for k in keys[shift:] + keys[:shift]:
            start = time.perf_counter()
            runs[k]()
            elapsed = time.perf_counter() - start
            if r >= warmup:
                seconds[k].append(elapsed)
        if progress is not None:
            progress(r + 1, total)
    return {k: timing(v) for k, v in seconds.items()}


def example_input(spec: ArchSpec, batch: int) -> torch.Tensor:
    """The images a network is timed on (values do not change the cost; seeded anyway)."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, spec.in_chans, spec.img_size, spec.img_size, generator=generator)


def build_runner(spec: ArchSpec, target: Target) -> Run:
    """``spec``'s network (seeded weights) ready to run on ``target``."""
    from pipeline.models import build_model

    return make_runner(build_model(spec, seed=0), example_input(spec, target.batch), target)


def measure_latency(specs: Mapping[K, ArchSpec], target: Target,
                    progress: Optional[Callable[[int, int], None]] = None) -> dict[K, Timing]:
    """Latency of each spec's network on ``target``, measured interleaved in this process."""
    runs = {k: build_runner(s, target) for k, s in specs.items()}
    with pinned(target):
        return time_interleaved(runs, target.warmup, target.repeats, progress)
