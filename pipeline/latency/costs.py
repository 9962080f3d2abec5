"""A candidate's cost on the target: latency (predicted or measured) and peak memory, and the
limits they must meet. What the search asks of the ``latency`` package goes through here.

* ``check_feasible``: the space's smallest network measured first, so a limit no network can
  meet is one line before the search starts;
* ``prepare``: the predictor, calibrated once per target (cached) and kept in the run folder,
  so a resumed search proposes exactly what the first run proposed;
* ``admits``: the cheap test the strategies apply to every proposal (predicted latency; for
  memory, the weights alone already over the limit);
* ``evaluate``: a candidate's costs, measured where the settings ask for it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pipeline.errors import UserError
from pipeline.latency.predictor import LatencyPredictor
from pipeline.latency.target import Target
from pipeline.space.space import SearchSpace
from pipeline.space.spec import ArchSpec
from pipeline.utils.io import atomic_write_text

PREDICTOR_FILE = "latency_predictor.json"


@dataclass(frozen=True)
class Costs:
    """One candidate's costs as the resume log stores them."""

    latency_ms: float
    source: str          # "predicted" or "measured"
    memory_mb: float
    conditions: str      # Target.conditions: a log measured under others is re-evaluated


class DeviceCosts:
    """Latency and memory of candidates of ``space`` on ``target``, under optional limits.

    Args:
        space: the search space.
        target: device, backend, batch, threads, warm-up and repeats.
        method: "predict" (sum of calibrated parts) or "measure" (every candidate timed).
        max_latency_ms / max_memory_mb: the limits (None: unbounded).
        cache_folder: where calibration measurements are cached (default: the user's cache).
    """

    def __init__(self, space: SearchSpace, target: Target, method: str = "predict",
                 max_latency_ms: Optional[float] = None, max_memory_mb: Optional[float] = None,
                 cache_folder: Optional[Path] = None) -> None:
        if method not in ("predict", "measure"):
            raise ValueError(f"method must be 'predict' or 'measure', got {method!r}")
        self.space = space
        self.target = target
        self.method = method
        self.max_latency_ms = max_latency_ms
        self.max_memory_mb = max_memory_mb
        self.cache_folder = cache_folder
        self.predictor: Optional[LatencyPredictor] = None

    @property
    def needs_predictor(self) -> bool:
        """Predicting, or pre-filtering proposals under a latency limit."""
        return self.method == "predict" or self.max_latency_ms is not None

    # ------------------------------------------------------------------ before the search
    def check_feasible(self) -> dict[str, float]:
        """Measure the space's smallest network; a limit it does not meet is a UserError."""
        from pipeline.latency.measure import measure_latency
        from pipeline.latency.memory import peak_memory_mb

        smallest = self.space.extreme_spec(False)
        found = {"latency_ms": self.target.latency(measure_latency({0: smallest}, self.target)[0])}
        if self.max_memory_mb is not None:
            found["memory_mb"] = peak_memory_mb(smallest, self.target.device, self.target.batch)
        problems = []
        if self.max_latency_ms is not None and found["latency_ms"] > self.max_latency_ms:
            problems.append(f"--limits.max_latency_ms={self.max_latency_ms:g}, but the smallest network takes "
                            f"{found['latency_ms']:.3g} ms")
        if self.max_memory_mb is not None and found["memory_mb"] > self.max_memory_mb:
            problems.append(f"--limits.max_memory_mb={self.max_memory_mb:g}, but the smallest network needs "
                            f"{found['memory_mb']:.3g} MB")
        if problems:
            raise UserError(f"no network of space {self.space.name!r} meets the limits on "
                            f"{self.target.describe()}: {'; '.join(problems)} ({smallest.short()}); "
                            "raise the limit, or pick a smaller space, batch or another backend")
        return found

    def prepare(self, out_dir: Optional[Path] = None, progress: Optional[Callable[[int, int], None]] = None,
                save: bool = True) -> Optional[LatencyPredictor]:
        """The predictor: the one this run folder used (same target: a resumed search proposes what
        the first run proposed), else the one prepared already, else calibrated (cached); then kept
        in the run folder when ``save``. A latency limit below every prediction is a UserError."""
        if not self.needs_predictor:
            return None
        saved = Path(out_dir) / PREDICTOR_FILE if out_dir is not None else None
        if saved is not None and saved.is_file():
            predictor = LatencyPredictor.from_dict(json.loads(saved.read_text()))
            if predictor.target == self.target.predictor_key() and predictor.space == self.space.name:
                self.predictor = predictor
        if self.predictor is None:
            from pipeline.latency.cache import MeasurementCache

            cache = MeasurementCache(self.target, self.cache_folder)
            self.predictor = LatencyPredictor.calibrate(self.space, self.target, cache, progress)
            _warn_if_noisy(self.space, self.target, cache)
        self.check_predicted_feasible()
        if saved is not None and save:
            atomic_write_text(saved, json.dumps(self.predictor.to_dict(), indent=1))
        return self.predictor

    def use(self, predictor: Optional[LatencyPredictor]) -> None:
        """Take the predictor another rank prepared."""
        self.predictor = predictor

    def check_predicted_feasible(self) -> None:
        """Proposals are filtered on predicted latency: refuse a limit below every prediction."""
        if self.max_latency_ms is None or self.predictor is None:
            return
        fastest = min(_shallow_uniform(self.space), key=self.predictor.predict)
        predicted = self.predictor.predict(fastest)
        if predicted > self.max_latency_ms:
            raise UserError(f"--limits.max_latency_ms={self.max_latency_ms:g}: the calibrated predictor puts the "
                            f"fastest network of space {self.space.name!r} ({fastest.short()}) at {predicted:.3g} ms "
                            f"on {self.target.describe()}; raise the limit")

    # ------------------------------------------------------------------ during the search
    def admits(self, spec: ArchSpec) -> bool:
        """Whether a proposal may be scored: predicted latency and weight memory within the limits."""
        if self.max_latency_ms is not None and self.predictor is not None \
                and self.predictor.predict(spec) > self.max_latency_ms:
            return False
        if self.max_memory_mb is not None:
            from pipeline.models import count_params

            if count_params(spec) * 4 / 2 ** 20 > self.max_memory_mb:   # fp32 weights alone
                return False
        return True

    def evaluate(self, spec: ArchSpec) -> Costs:
        """The candidate's latency (per ``method``) and measured peak memory."""
        from pipeline.latency.memory import peak_memory_mb

        if self.method == "measure":
            from pipeline.latency.measure import measure_latency

            latency, source = self.target.latency(measure_latency({0: spec}, self.target)[0]), "measured"
        else:
            assert self.predictor is not None, "prepare() first"
            latency, source = self.predictor.predict(spec), "predicted"
        return Costs(latency, source, peak_memory_mb(spec, self.target.device, self.target.batch),
                     self.target.conditions)

    def violation(self, costs: Costs) -> str:
        """Why a candidate breaks a limit ("" when it meets them)."""
        if self.max_latency_ms is not None and costs.latency_ms > self.max_latency_ms:
            return (f"latency {costs.latency_ms:.3g} ms ({costs.source}) over --limits.max_latency_ms="
                    f"{self.max_latency_ms:g}")
        if self.max_memory_mb is not None and costs.memory_mb > self.max_memory_mb:
            return f"peak memory {costs.memory_mb:.3g} MB over --limits.max_memory_mb={self.max_memory_mb:g}"
        if not (math.isfinite(costs.latency_ms) and math.isfinite(costs.memory_mb)):
            return "latency or memory not measurable"
        return ""

    def record(self, spec: ArchSpec, search_costs: Costs) -> dict:
        """What ``arch.yaml`` keeps about the pick: its costs in the search, and again measured in a
        fresh process (nothing of the search's state in it), with the target they hold for."""
        from pipeline.latency.fresh import measure_in_fresh_process
        from pipeline.latency.target import device_name

        t = self.target
        record = {"device": device_name(t.device), "backend": t.backend, "batch": t.batch, "threads": t.threads,
                  "clock": t.clock, "statistic": t.statistic, "warmup": t.warmup, "repeats": t.repeats,
                  "search_ms": round(search_costs.latency_ms, 4), "search_source": search_costs.source,
                  "memory_mb": round(search_costs.memory_mb, 3)}
        try:
            fresh = measure_in_fresh_process(spec, t)
        except Exception as e:  # noqa: BLE001 -- a finished search is not lost to its re-measurement
            return {**record, "fresh_process_ms": None, "fresh_process_error": str(e)}
        both = {}
        if "timing" in fresh:   # both statistics of the same calls: the one searched on, and the other
            from pipeline.latency.measure import Timing

            timing = Timing.from_dict(fresh["timing"])
            both = {f"fresh_process_{s}_ms": round(timing.on(t.clock, s), 4) for s in ("min", "median")}
        return {**record, "fresh_process_ms": round(fresh["latency_ms"], 4), **both,
                "fresh_process_spread": round(fresh["spread"], 4),
                "memory_mb": round(fresh.get("memory_mb", search_costs.memory_mb), 3)}


NOISY = 0.10   # median spread (interquartile range / median) of the calibration's timed calls


def _warn_if_noisy(space: SearchSpace, target: Target, cache) -> None:
    """Say so when the machine was busy while the predictor's networks were timed: a block's
    latency is a difference of two networks', so their noise reaches the predictions amplified."""
    import statistics
    import sys

    from pipeline.latency.predictor import calibration_groups

    timings = [cache.get(s) for group in calibration_groups(space) for s in group]
    spread = statistics.median(t.cpu_spread if target.clock == "cpu" else t.spread for t in timings)
    if spread > NOISY and target.statistic == "median":
        sys.stderr.write(f"warning: the latency predictor's networks were timed on a busy machine (median spread "
                         f"{spread:.0%} of the median); its predictions will be off. Calibrate on a quiet machine "
                         f"(delete {cache.path} to calibrate again), or time the fastest call "
                         f"(--latency.statistic=min; docs/latency.md)\n")


def _shallow_uniform(space: SearchSpace) -> list[ArchSpec]:
    """The shallowest networks of every width with one MLP ratio and, per stage, one head count: the
    fastest network of the space is among them when blocks cost what they cost alone (an additive
    predictor's assumption), whichever block type is cheapest."""
    import itertools

    depths = [min(s) for s in space.stage_depths]
    heads = [space.num_heads.values] * (len(depths) if space.num_heads.per != "global" else 1)
    out = []
    for embed, mlp, combo in itertools.product(space.embed_dim, space.mlp_ratio.values, itertools.product(*heads)):
        per_stage = combo if len(combo) == len(depths) else combo * len(depths)
        layers = [h for h, d in zip(per_stage, depths) for _ in range(d)]
        out.append(space.make_spec(embed, depths, layers, [mlp] * len(layers)))
    return out


def latency_line(record: dict) -> str:
    """The pick's latency as the search and the run report state it: both numbers, and where."""
    statistic = record.get("statistic", "median")
    other = "median" if statistic == "min" else "min"
    fresh = (f"{record['fresh_process_ms']:.4g} ms measured in a fresh process"
             + (f" ({STATISTIC_WORDS[other]} {record[f'fresh_process_{other}_ms']:.4g} ms)"
                if record.get(f"fresh_process_{other}_ms") is not None else "")
             if record.get("fresh_process_ms") is not None
             else f"not re-measured in a fresh process ({record.get('fresh_process_error', 'failed')})")
    return (f"{record['search_ms']:.4g} ms {record['search_source']} in the search, {fresh}, on {record['device']} "
            f"({record['backend']}, batch {record['batch']}, {record['threads']} thread(s)"
            + (f", {record['clock']} clock" if record.get("clock", "wall") != "wall" else "")
            + (f", {STATISTIC_WORDS[statistic]}" if statistic != "median" else "")
            + f"); peak inference memory {record['memory_mb']:.4g} MB")


STATISTIC_WORDS = {"min": "fastest call", "median": "median call"}
