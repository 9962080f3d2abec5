"""Latency measurement: fastest calls and medians after warm-up, runs of the networks interleaved.

A network is timed in ``RUNS`` runs; a run is ``warmup`` untimed forwards (the processor's caches
warm again after whatever ran before) and then timed forwards (at least ``repeats / RUNS`` of
them and ``min_seconds / RUNS`` seconds). Several networks measured together take turns run by
run, the order rotating from round to round, so a change of the machine's load hits them all
alike instead of biasing whichever ran at that moment. A network's latency is the median over
its runs of each run's fastest call (or median call), so a run that a burst hit is outvoted.

A turn is a whole run because a network timed right after others is not the network a user
deploys: interleaving single forwards (or short bursts of 3 untimed + 5 timed) made the demo
space's networks 10-60% slower in one process than the same networks measured alone in a fresh
process, depending on the moment (docs/latency.md). A run alone in the processor matches the
fresh process, which is what the search re-measures its pick in and the predictor is judged on.

Threads (and cores, if asked) are pinned for the duration, and the C allocator is held steady
(``target.pinned``). The interquartile range over the median says how noisy a run was.

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
RUNS = 3   # runs per network: the median of three outvotes one that a burst of load hit
WARM_SECONDS = 0.5   # untimed calls stop once they took this long ...
MIN_WARM_CALLS = 2   # ... and there were at least this many (or ``warmup``, if fewer)
MIN_TIMED_CALLS = 3  # the fewest timed calls of a run cut short by ``run_seconds``


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
                     max_calls: int = 2000, n_runs: int = RUNS,
                     run_seconds: Optional[float] = None) -> dict[K, Timing]:
    """Time each network in ``RUNS`` runs, one run of each per round (order rotating). A run is
    ``warmup`` untimed calls, then timed calls until there are ``ceil(repeats / RUNS)`` of them
    and they took ``min_seconds / RUNS`` (at most ``max_calls``): a fast network is timed over a
    window long enough that a burst of other work moves its median little. The result holds the
    median over runs of each run's fastest call, median and spread (``join_runs``); ``rounds``
    counts timed calls.
    ``n_runs`` < ``RUNS`` times part of a measurement (the predictor's calibration spreads a
    network's runs over passes, ``join_runs`` joins them). ``run_seconds``: a run's timed calls
    stop early, after at least ``MIN_TIMED_CALLS``, once they took that long (the calibration's
    slow 224 px networks: their fastest call is the least of 3 runs' anyway)."""
    keys = list(runs)
    per_run, seconds = max(1, math.ceil(repeats / RUNS)), min_seconds / RUNS
    measured: dict[K, list[Timing]] = {k: [] for k in keys}
    for r in range(n_runs if keys else 0):
        shift = r % len(keys)
        for k in keys[shift:] + keys[:shift]:
            warm_up(runs[k], warmup if r == 0 or len(keys) > 1 else 0)
            wall: list[float] = []
            cpu: list[float] = []
            while len(wall) < per_run or (sum(wall) < seconds and len(wall) < max_calls):
                if run_seconds is not None and len(wall) >= MIN_TIMED_CALLS and sum(wall) >= run_seconds:
                    break
                start, start_cpu = time.perf_counter(), time.process_time()
                runs[k]()
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            measured[k].append(timing(wall, cpu))
        if progress is not None:
            progress(r + 1, n_runs)
    return {k: join_runs(measured[k]) for k in keys}


def warm_up(run: Run, calls: int, seconds: float = WARM_SECONDS) -> None:
    """Untimed calls before a run: ``calls`` of them, or fewer (at least ``MIN_WARM_CALLS``) once
    they took ``seconds``. One forward of a 224 px network (0.2-1 s on one core) already streams
    all its weights through the caches; five of them were most of AutoFormer-S's calibration time."""
    start = time.perf_counter()
    for i in range(calls):
        if i >= MIN_WARM_CALLS and time.perf_counter() - start >= seconds:
            break
        run()   # untimed: the caches the other networks' runs evicted warm again


def join_runs(runs: list[Timing]) -> Timing:
    """One network's runs as one ``Timing``, calls summed: each field the median over the runs
    (each run's fastest call, median and spread), so a run that a burst of load hit is outvoted,
    and one that caught the machine unusually quiet too. (The fastest of all runs would stand
    for the quietest moment of the calibration, minutes long, while a fresh process's three
    runs lie seconds apart: on this shared machine that made the calibration 15% faster than
    fresh processes, by amounts that changed from network to network.)"""
    def mid(field: str) -> float:
        return statistics.median(getattr(t, field) for t in runs)

    return Timing(mid("ms"), mid("spread"), sum(t.rounds for t in runs), mid("cpu_ms"), mid("cpu_spread"),
                  mid("min_ms"), mid("cpu_min_ms"))


def example_input(spec: ArchSpec, batch: int) -> torch.Tensor:
    """The images a network is timed on (values do not change the cost; seeded anyway)."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, spec.in_chans, spec.img_size, spec.img_size, generator=generator)


def build_runner(spec: ArchSpec, target: Target) -> Run:
    """``spec``'s network (seeded weights) ready to run on ``target``."""
    from pipeline.models import build_model

    return make_runner(build_model(spec, seed=0), example_input(spec, target.batch), target)


def measure_latency(specs: Mapping[K, ArchSpec], target: Target,
                    progress: Optional[Callable[[int, int], None]] = None, n_runs: int = RUNS,
                    run_seconds: Optional[float] = None) -> dict[K, Timing]:
    """Latency of each spec's network on ``target``, measured interleaved in this process
    (``n_runs`` of its ``RUNS`` runs, ``run_seconds``: see ``time_interleaved``)."""
    runs = {k: build_runner(s, target) for k, s in specs.items()}
    with pinned(target):
        return time_interleaved(runs, target.warmup, target.repeats, progress, min_seconds=target.min_seconds,
                                n_runs=n_runs, run_seconds=run_seconds)
