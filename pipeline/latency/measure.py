"""Latency measurement: the median of timed forwards after warm-up, networks interleaved.

Several networks measured together take turns, in an order that rotates from round to round,
so a change in the machine's load during the measurement hits them all alike instead of biasing
whichever ran at that moment. In its turn a network runs a short burst of forwards (``TURN_WARM`` untimed, then ``TURN_TIMED``
timed): the other networks' turns have evicted its weights and code paths from the processor's
caches, and a network deployed alone (or re-measured alone in a fresh process) runs with them
warm. Timing each network's first forward after another's made in-process calibrations of the
demo space 10-23% slower than fresh-process measurements of the same networks, and one untimed
forward per turn was not enough; with bursts of 3 + 5 they agree within 3% (docs/latency.md). Threads (and cores, if asked) are pinned
for the duration (``pinned``). The median of the timed rounds is the latency; the interquartile
range over the median says how noisy it was.

Every call is timed on two clocks at once: the wall clock (what a user waits for on a dedicated
device) and the process's CPU time. On a machine shared with other jobs the wall clock also
counts the time the scheduler gave to them; the CPU time does not, and with one thread it equals
the wall time of an idle machine (``--latency.clock=cpu``, docs/latency.md).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Mapping, Optional, TypeVar

import torch

from pipeline.latency.backends import Run, make_runner
from pipeline.latency.target import Target, pinned
from pipeline.space.spec import ArchSpec

K = TypeVar("K", bound=Hashable)


CLOCKS = ("wall", "cpu")
TURN_WARM, TURN_TIMED = 3, 5   # forwards per turn when networks are interleaved: untimed, then timed


@dataclass(frozen=True)
class Timing:
    """Milliseconds per forward on both clocks: medians of ``rounds`` timed calls, their relative
    spreads (interquartile range / median) and minima (the fastest call: what the network costs
    when nothing else disturbs it; a diagnostic of noise, docs/latency.md)."""

    ms: float           # wall clock
    spread: float
    rounds: int
    cpu_ms: float       # CPU time of the process
    cpu_spread: float
    min_ms: float = math.nan
    cpu_min_ms: float = math.nan

    def on(self, clock: str, statistic: str = "median") -> float:
        """The latency on ``clock`` ("wall" or "cpu"), as the ``statistic`` ("median" or "min") of the calls."""
        if statistic == "min":
            return self.cpu_min_ms if clock == "cpu" else self.min_ms
        return self.cpu_ms if clock == "cpu" else self.ms

    def to_dict(self) -> dict[str, float]:
        return {"ms": self.ms, "spread": self.spread, "rounds": self.rounds, "cpu_ms": self.cpu_ms,
                "cpu_spread": self.cpu_spread, "min_ms": self.min_ms, "cpu_min_ms": self.cpu_min_ms}

    @classmethod
    def from_dict(cls, d: dict) -> "Timing":
        return cls(float(d["ms"]), float(d["spread"]), int(d["rounds"]), float(d["cpu_ms"]), float(d["cpu_spread"]),
                   float(d.get("min_ms", math.nan)), float(d.get("cpu_min_ms", math.nan)))


def _median_spread(seconds: list[float]) -> tuple[float, float]:
    ms = sorted(s * 1e3 for s in seconds)
    median = statistics.median(ms)
    q1, q3 = (statistics.quantiles(ms, n=4)[i] for i in (0, 2)) if len(ms) >= 4 else (ms[0], ms[-1])
    return median, (q3 - q1) / median if median > 0 else 0.0


def timing(wall: list[float], cpu: list[float]) -> Timing:
    """Medians, spreads and minima of per-call seconds on the wall clock and in CPU time."""
    (ms, spread), (cpu_ms, cpu_spread) = _median_spread(wall), _median_spread(cpu)
    return Timing(ms, spread, len(wall), cpu_ms, cpu_spread, min(wall) * 1e3, min(cpu) * 1e3)


def time_interleaved(runs: Mapping[K, Run], warmup: int, repeats: int,
                     progress: Optional[Callable[[int, int], None]] = None, min_seconds: float = 0.0,
                     max_rounds: int = 2000) -> dict[K, Timing]:
    """Time every run ``warmup`` + ``repeats`` times, one turn of each per round (order rotating),
    and keep adding timed rounds (up to ``max_rounds``) until they took ``min_seconds``: fast
    networks are then timed over a window long enough that a burst of other work moves the
    median little. With several runs, a turn is ``TURN_WARM`` untimed calls (caches warm again) and
    ``TURN_TIMED`` timed ones; ``rounds`` in the result counts timed calls."""
    keys = list(runs)
    warm, timed = (TURN_WARM, TURN_TIMED) if len(keys) > 1 else (0, 1)
    wall: dict[K, list[float]] = {k: [] for k in keys}
    cpu: dict[K, list[float]] = {k: [] for k in keys}
    timed_seconds, r = 0.0, 0
    while keys and (r < warmup + repeats or (timed_seconds < min_seconds and r < warmup + max_rounds)):
        shift = r % len(keys)
        round_start = time.perf_counter()
        for k in keys[shift:] + keys[:shift]:
            for _ in range(warm):
                runs[k]()   # re-warm the caches the other networks' turns evicted (untimed)
            for _ in range(timed):
                start, start_cpu = time.perf_counter(), time.process_time()
                runs[k]()
                elapsed, elapsed_cpu = time.perf_counter() - start, time.process_time() - start_cpu
                if r >= warmup:
                    wall[k].append(elapsed)
                    cpu[k].append(elapsed_cpu)
        if r >= warmup:
            timed_seconds += time.perf_counter() - round_start
        r += 1
        if progress is not None:
            progress(min(r, warmup + repeats), warmup + repeats)
    return {k: timing(wall[k], cpu[k]) for k in keys}


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
        return time_interleaved(runs, target.warmup, target.repeats, progress, min_seconds=target.min_seconds)
