"""Latency and peak memory on a deployment target: the measurement, the memory count, the predictor
and its cache, the objective, and the search under latency/memory limits (issue 23).

Timings are never asserted against a number (the machine is shared); what is asserted are values
that do not depend on the machine's speed: which calls were timed, counts of bytes, a predictor's
exact recovery of latencies that add up by construction, what was (not) measured again.
"""
from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
import textwrap
import time
import zlib
from fractions import Fraction

import pytest
import torch
import yaml
from lightning.pytorch import Trainer

from conftest import run_cli
from pipeline.latency import measure as measure_module
from pipeline.latency.cache import FORMAT, MeasurementCache, network_key
from pipeline.latency.costs import DeviceCosts
from pipeline.latency.measure import RUNS, Timing, time_interleaved
from pipeline.latency.memory import LiveTensorMemory, peak_memory_mb
from pipeline.latency.predictor import (CALIBRATION_MIN_SECONDS, CALIBRATION_RUN_SECONDS, WHOLE_NETWORKS, Correction,
                                        LatencyPredictor, calibration_groups, parts, whole_networks)
from pipeline.latency.target import Target
from pipeline.models import build_model, count_params
from pipeline.search.objective import Objective, fronts, knee
from pipeline.search.store import CandidateStore
from pipeline.space import ArchSpec, SearchSpace

FAST = Target(warmup=0, repeats=1, min_seconds=0.0)   # one timed call: the tests check logic, not speed
TINY_SCHEDULE = ["--strategy.evolution.population=4", "--strategy.evolution.generations=2",
                 "--strategy.evolution.parents=2", "--strategy.evolution.mutations=2",
                 "--strategy.evolution.crossovers=2", "--probe.n=4", "--latency.warmup=1", "--latency.repeats=2",
                 "--latency.min_seconds=0"]


# ------------------------------------------------------------------------------ measurement
def test_interleaved_timing_rotates_the_order_and_leaves_out_the_warmup():
    calls: list[str] = []
    runs = {k: (lambda k=k: calls.append(k)) for k in "abc"}
    timings = time_interleaved(runs, warmup=2, repeats=3)
    # RUNS rounds, each starting one further on; a turn is a whole run: 2 untimed calls (caches warm
    # again), then ceil(3 / RUNS) timed ones
    assert RUNS == 3
    assert calls == [k for order in ("abc", "bca", "cab") for k in order for _ in range(2 + 1)]
    assert all(t.rounds == 3 for t in timings.values())


def test_a_network_is_timed_as_the_median_of_its_runs():
    """One run that a burst of load hit (every call 10x slower) is outvoted by the other two."""
    slow = iter([False] * 3 + [True] * 3 + [False] * 3)   # 1 warm-up + 2 timed calls per run of "a"
    calls = {"a": lambda: time.sleep(0.02 if next(slow) else 0.002), "b": lambda: time.sleep(0.002)}
    timings = time_interleaved(calls, warmup=1, repeats=6)
    assert timings["a"].rounds == 6 and timings["a"].ms < 5 and timings["a"].min_ms < 5, timings


def test_a_turn_times_the_network_with_its_caches_warm():
    """A call right after another network's is slow (its weights were evicted); that one is not timed."""
    last: list[str] = []

    def run(k: str):
        def call():
            if last and last[-1] != k:
                time.sleep(0.02)   # cold: the other network ran last
            last.append(k)
        return call

    timings = time_interleaved({k: run(k) for k in "ab"}, warmup=1, repeats=4)
    assert all(t.ms < 10 for t in timings.values()), timings


def test_the_two_clocks_and_the_time_budget():
    """A call that sleeps takes wall time but no CPU time; min_seconds adds rounds for fast calls."""
    (t,) = time_interleaved({0: lambda: time.sleep(0.01)}, warmup=0, repeats=2, min_seconds=0.1).values()
    assert t.rounds >= 8 and t.ms >= 9.5 and t.min_ms >= 9.5
    assert t.cpu_ms < 5 and t.on("cpu") == t.cpu_ms and t.on("wall", "min") == t.min_ms
    assert Timing.from_dict(json.loads(json.dumps(t.to_dict()))) == t


def test_threads_and_cores_are_pinned_while_timing_only():
    import os

    from pipeline.latency.target import pinned

    threads, cores = torch.get_num_threads(), os.sched_getaffinity(0)
    one = min(cores)
    with pinned(Target(threads=1, cores=(one,))):
        assert torch.get_num_threads() == 1 and os.sched_getaffinity(0) == {one}
    assert torch.get_num_threads() == threads and os.sched_getaffinity(0) == cores


def test_the_default_statistic_is_the_fastest_call_on_cpu_and_the_median_on_cuda(monkeypatch):
    """No GPU here: the device is mocked; what is checked is which statistic each device gets."""
    import pipeline.latency.target as target_module

    assert Target().statistic == "min" and Target(device="cuda").statistic == "median"
    assert Target(statistic="median").statistic == "median" and Target(device="cuda", statistic="min").statistic == "min"
    with pytest.raises(ValueError, match="statistic"):
        Target(statistic="mean")
    timing = Timing(ms=5.0, spread=0.1, rounds=21, cpu_ms=4.0, cpu_spread=0.1, min_ms=3.0, cpu_min_ms=2.5)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = Target.from_settings({"device": "auto", "statistic": "auto"})
    assert (cuda.device, cuda.statistic, cuda.latency(timing), cuda.conditions) == ("cuda", "median", 5.0,
                                                                                      "cuda/eager/batch1/threads1")
    assert Target.from_settings({"device": "auto", "statistic": "min"}).latency(timing) == 3.0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = Target.from_settings({"device": "auto"})
    assert (cpu.device, cpu.statistic, cpu.latency(timing), cpu.conditions) == ("cpu", "min", 3.0,
                                                                                "cpu/eager/batch1/threads1/min")
    assert target_module.default_statistic("cpu") == "min"
    # the search's options: auto unless told
    from pipeline.search.settings import parse_config

    assert parse_config([])["latency"]["statistic"] == "auto"


def test_a_calibration_run_of_a_slow_network_stops_after_three_timed_calls():
    """run_seconds cuts a run's timed calls short (at least 3); without it, repeats / RUNS are timed."""
    calls = []
    slow = {0: lambda: calls.append(time.sleep(0.05))}
    (t,) = time_interleaved(slow, warmup=0, repeats=30, run_seconds=0.1, n_runs=1).values()
    assert t.rounds == 3 == len(calls)
    (t,) = time_interleaved(slow, warmup=0, repeats=30, n_runs=1).values()
    assert t.rounds == 10


def test_warm_up_stops_after_half_a_second_of_slow_calls():
    """A 224 px forward takes 0.2-1 s on one core: two untimed calls warm the caches; fast calls get all five."""
    from pipeline.latency.measure import MIN_WARM_CALLS, warm_up

    calls = []
    warm_up(lambda: calls.append(time.sleep(0.3)), 5)
    assert len(calls) == MIN_WARM_CALLS == 2
    calls.clear()
    warm_up(lambda: calls.append(None), 5)
    assert len(calls) == 5


ALLOCATION_CYCLES = """
    import ctypes, ctypes.util, json, resource, sys
    import torch
    from pipeline.latency.target import Target, pinned
    if sys.argv[1] == "steady":
        with pinned(Target(threads=1)):   # what timing does to the process's allocator
            pass
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    faults = []
    for _ in range(12):   # a forward's activations: 6 x 16 MiB alive together, written, freed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [libc.malloc(16 << 20) for _ in range(6)]
        for b in blocks:
            ctypes.memset(b, 1, 16 << 20)
        for b in blocks:
            libc.free(b)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps(faults))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_timing_keeps_freed_memory_so_a_forward_does_not_fault_its_pages_again():
    """Freed activations stay in the process while timing: after the first cycle, allocating the
    same 96 MiB again costs no page faults, in every cycle. Under glibc's default the same cycles
    fault every page anew (24,576 a cycle: the control below), whatever the process did before:
    the freed heap top (96 MiB) is over the largest trim threshold glibc's moving threshold can
    reach (2 x 32 MiB), so every free hands it back to the system. The same network ran 2x slower
    in some fresh processes for this reason (docs/latency.md).

    The blocks come from glibc's malloc directly, as torch's CPU allocator takes them: torch's own
    small objects, allocated between the blocks, can split the kept heap so that it grows once
    more in a later cycle (one cycle of 12,288 faults, with the fix, in an earlier version of
    this test that allocated tensors), which is growth, not the release-and-fault-again that
    the fix prevents."""
    pages = 6 * (16 << 20) // resource_page_size()

    def cycles(mode: str) -> list[int]:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(ALLOCATION_CYCLES), mode],
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout.splitlines()[-1])

    steady, default = cycles("steady"), cycles("default")
    assert all(f > 0.9 * pages for f in default[2:]), f"glibc's default should fault every cycle: {default}"
    assert all(f < 0.05 * pages for f in steady[1:]), f"faults per cycle with freed memory kept: {steady}"


def resource_page_size() -> int:
    import resource

    return resource.getpagesize()


def test_a_noisy_calibration_is_reported(monkeypatch, tmp_path, capsys):
    """A block's latency is a difference of two networks': a busy machine while calibrating is said."""
    from pipeline.latency.costs import _warn_if_noisy

    space = SearchSpace.load("demo")
    median = Target(warmup=0, repeats=1, min_seconds=0.0, statistic="median")   # the fastest call is not the IQR's
    cache = MeasurementCache(median, tmp_path)
    specs = [s for group in calibration_groups(space) for s in group]
    cache.put({s: Timing(1.0, 0.02, 20, 1.0, 0.02, 0.9, 0.9) for s in specs})
    _warn_if_noisy(space, median, cache)
    assert capsys.readouterr().err == ""
    cache.put({s: Timing(1.0, 0.5, 20, 1.0, 0.5, 0.9, 0.9) for s in specs})
    _warn_if_noisy(space, median, cache)
    assert "timed on a busy machine (median spread 50% of the median)" in capsys.readouterr().err


# ------------------------------------------------------------------------------ memory
def test_live_tensor_memory_counts_storages_alive_together():
    with LiveTensorMemory() as m:
        a = torch.ones(1000)           # 4000 bytes
        b = a * 2                      # 8000 alive
        view = b[:10]                  # a view: no new storage
        del a                          # 4000
        c = b + 1                      # 8000 again
        b.add_(1)                      # in place: nothing new
    assert m.peak == 8000 and view.numel() == 10 and c.numel() == 1000


def test_peak_memory_equals_the_profilers_count():
    """The brute-force reference: torch.profiler sees every allocation and free of the forward."""
    from torch.profiler import ProfilerActivity, profile

    spec = SearchSpace.load("demo").sample(random.Random(1))
    images = torch.rand(3, 3, 32, 32)
    net = build_model(spec, seed=0).eval()
    with torch.inference_mode(), LiveTensorMemory() as counted:
        net(images)
    net = build_model(spec, seed=0).eval()
    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        net(images)
    live = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                            if e.name() == "[memory]"):
        live += nbytes
        peak = max(peak, live)
    assert abs(counted.peak - peak) <= 0.002 * peak
    weights = count_params(spec) * 4 / 2 ** 20
    one, four = peak_memory_mb(spec, "cpu", 1), peak_memory_mb(spec, "cpu", 4)
    assert weights < one < four


# ------------------------------------------------------------------------------ predictor
def _additive(monkeypatch) -> dict[str, int]:
    """Replace measuring with latencies that are sums of per-part costs, by construction, in this
    process and in fresh ones; counts the networks "measured" (``networks``: in this process,
    ``fresh``: in fresh processes)."""
    counter = {"networks": 0, "fresh": 0}

    def cost(part: str) -> float:   # grows with every number in the part's name (width, heads, MLP), plus jitter
        return 0.05 + sum(map(float, re.findall(r"[\d.]+", part))) / 100 + zlib.crc32(part.encode()) % 1000 / 20000

    def additive(spec, target) -> Timing:
        ms = sum(cost(p) for p in parts(spec)) * target.batch
        return Timing(ms, 0.0, 1, ms, 0.0, ms, ms)

    def fake(specs, target, progress=None, n_runs=RUNS, run_seconds=None):
        counter["networks"] += Fraction(len(specs) * n_runs, RUNS)   # a network counts once all its runs are in
        return {k: additive(spec, target) for k, spec in specs.items()}

    monkeypatch.setattr(measure_module, "measure_latency", fake)
    _fresh_as(monkeypatch, additive, counter)
    return counter


def _fresh_as(monkeypatch, timing, counter=None) -> None:
    """Replace the fresh-process measurement by ``timing(spec, target)`` (counted in ``counter["fresh"]``)."""
    import pipeline.latency.fresh as fresh

    def fake(spec, target, memory=True, timeout=None):
        if counter is not None:
            counter["fresh"] = counter.get("fresh", 0) + 1
        t = timing(spec, target)
        return {"latency_ms": target.latency(t), "spread": 0.0, "timing": t.to_dict()}

    monkeypatch.setattr(fresh, "measure_in_fresh_process", fake)


@pytest.mark.parametrize("space_name", ["demo", "autoformer_tiny", "pit_tiny"])
def test_predictor_recovers_latencies_that_add_up(space_name, monkeypatch, tmp_path):
    """Where a network's latency is the sum of its parts, the calibrated predictor is exact on
    networks it never saw: the calibration networks determine every part (ViT and PiT)."""
    _additive(monkeypatch)
    space = SearchSpace.load(space_name)
    predictor = LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path))
    truth = measure_module.measure_latency
    rng = random.Random(0)
    for spec in [space.sample(rng) for _ in range(30)] + [space.extreme_spec(True)]:
        assert predictor.predict(spec) == pytest.approx(truth({0: spec}, FAST)[0].ms, rel=1e-9)


def test_whole_networks_in_fresh_processes_correct_the_part_sum(monkeypatch, tmp_path):
    """Where a whole network in a fresh process runs 1.1x its parts' sum (the calibrating process
    timed its networks faster, say), the predictor predicts the fresh process's latency exactly,
    and the whole networks are measured in fresh processes, once (cached), none a block network."""
    counter = _additive(monkeypatch)
    additive = measure_module.measure_latency

    def slower(spec, target):
        ms = 1.1 * additive({0: spec}, target)[0].ms
        return Timing(ms, 0.0, 1, ms, 0.0, ms, ms)

    _fresh_as(monkeypatch, slower, counter)
    space = SearchSpace.load("autoformer_tiny")
    predictor = LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path))
    assert counter["fresh"] == WHOLE_NETWORKS == len(whole_networks(space))
    assert not {network_key(s) for s in whole_networks(space)} & {network_key(s) for g in calibration_groups(space) for s in g}
    assert predictor.correction.scale == pytest.approx(1.1) and predictor.correction.offset == 0
    rng = random.Random(1)
    for spec in [space.sample(rng) for _ in range(10)]:
        assert predictor.predict(spec) == pytest.approx(1.1 * additive({0: spec}, FAST)[0].ms, rel=1e-9)
    again = LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path))
    assert counter["fresh"] == WHOLE_NETWORKS and again.to_dict() == predictor.to_dict()
    assert LatencyPredictor.from_dict(json.loads(json.dumps(predictor.to_dict()))) == predictor


def test_a_whole_network_disturbed_by_load_does_not_move_the_correction():
    """The correction is the median ratio of the whole networks: one run 2x slow leaves it."""
    assert Correction.fit([(10.0, 11.0), (20.0, 22.0), (5.0, 5.5), (8.0, 16.0), (30.0, 33.0)]).scale == pytest.approx(1.1)
    assert Correction.fit([]) == Correction(1.0, 0.0)


def test_calibration_spreads_a_networks_runs_over_passes(monkeypatch, tmp_path):
    """Every block network is timed once per pass, every one in a pass before any in the next (a
    network's runs lie a pass apart), the widths' groups interleaved and the order rotating; the
    whole networks are measured in fresh processes among each pass's networks; the cached
    timing is the median of the runs."""
    space = SearchSpace.load("demo")
    groups = calibration_groups(space)
    group_of = {network_key(s): i for i, g in enumerate(groups) for s in g}
    events: list[tuple[str, str]] = []

    def fake(specs, target, progress=None, n_runs=RUNS, run_seconds=None):
        assert n_runs == 1 and run_seconds == CALIBRATION_RUN_SECONDS and target.min_seconds == CALIBRATION_MIN_SECONDS
        (spec,) = specs.values()
        events.append(("block", network_key(spec)))
        done = sum(1 for e in events if e == ("block", network_key(spec)))   # this network's run 1, 2 or 3
        fastest = {1: 1.2, 2: 10.0, 3: 0.9}[done]   # the second run of every network is disturbed
        return {k: Timing(10.0 if done == 2 else 1.0, 0.0, 1, 1.0, 0.0, fastest, fastest) for k in specs}

    monkeypatch.setattr(measure_module, "measure_latency", fake)
    _fresh_as(monkeypatch, lambda spec, target: events.append(("whole", network_key(spec))) or
              Timing(1.0, 0.0, 1, 1.0, 0.0, 1.0, 1.0))
    cache = MeasurementCache(FAST, tmp_path)
    LatencyPredictor.calibrate(space, FAST, cache)
    blocks = [k for kind, k in events if kind == "block"]
    n = sum(len(g) for g in groups)
    passes = [blocks[i * n:(i + 1) * n] for i in range(RUNS)]
    assert len(blocks) == RUNS * n and all(set(p) == set(group_of) for p in passes)
    assert all(group_of[a] != group_of[b] for a, b in zip(passes[0], passes[0][1:]))   # widths take turns
    assert passes[1] == passes[0][1:] + passes[0][:1]                                  # rotated a step
    wholes = [i for i, (kind, _) in enumerate(events) if kind == "whole"]
    assert len(wholes) == WHOLE_NETWORKS and 0 < wholes[0] and wholes[-1] < len(events) - 1
    assert all(cache.get(s).ms == 1.0 and cache.get(s).min_ms == 1.2 for g in groups for s in g)


def test_calibration_is_cached_per_target(monkeypatch, tmp_path):
    """A second calibration measures nothing; a changed batch, torch version or a damaged file
    calibrates again, into a file of its own."""
    import pipeline.latency.target as target_module

    counter = _additive(monkeypatch)
    space = SearchSpace.load("demo")
    networks = sum(len(g) for g in calibration_groups(space))
    first = LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path))
    assert counter["networks"] == networks
    again = LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path))
    assert counter["networks"] == networks and again.parts == first.parts
    two = Target(batch=2, warmup=0, repeats=1, min_seconds=0.0)
    doubled = LatencyPredictor.calibrate(space, two, MeasurementCache(two, tmp_path))
    assert counter["networks"] == 2 * networks
    assert doubled.parts == pytest.approx({k: 2 * v for k, v in first.parts.items()})
    monkeypatch.setattr(target_module, "_torch_version", lambda: "99.0")
    LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path))
    assert counter["networks"] == 3 * networks and len(list(tmp_path.glob("*.json"))) == 3
    path = MeasurementCache(FAST, tmp_path).path
    path.write_text("{cut sh")
    LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path))
    assert counter["networks"] == 4 * networks and json.loads(path.read_text())["format"] == FORMAT


def test_real_calibration_runs_and_is_reused(monkeypatch, tmp_path):
    """The real measurement (one timed call per network): every demo part gets a positive
    latency, and the second calibration takes the cache's numbers without timing anything."""
    space = SearchSpace.load("demo")
    # the whole networks in the calling process, not in fresh ones (each a new interpreter: slow here)
    _fresh_as(monkeypatch, lambda spec, target: measure_module.measure_latency({0: spec}, target)[0])
    first = LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path))
    # per width: a rest, a block part per head count, an MLP part per ratio (the smallest's 0)
    assert len(first.parts) == 3 * (1 + 2 + 3) and all(v == v for v in first.parts.values())
    assert all(v == 0 for k, v in first.parts.items() if k.startswith("mlp") and k.endswith(" M2"))
    assert 0.3 < first.correction.scale < 3
    monkeypatch.setattr(measure_module, "measure_latency", lambda *a, **k: pytest.fail("measured again"))
    assert LatencyPredictor.calibrate(space, FAST, MeasurementCache(FAST, tmp_path)).parts == first.parts


# ------------------------------------------------------------------------------ objective
def test_pareto_fronts_crowding_and_knee():
    # (score, latency ms): a front a-b-c-d (d dominated by nothing), e and f behind it
    points = {"a": (1.0, 1.0), "b": (3.0, 2.0), "c": (3.5, 8.0), "d": (3.6, 30.0), "e": (0.5, 3.0), "f": (3.0, 9.0)}
    assert fronts(points) == [["a", "b", "c", "d"], ["e", "f"]]
    assert knee(["a", "b", "c", "d"], points) == "b"   # most score per log-latency above the chord
    objective = Objective("pareto")
    scores, latencies = {k: v[0] for k, v in points.items()}, {k: v[1] for k, v in points.items()}
    assert objective.pick(scores, latencies) == "b"
    order = objective.order(scores, latencies)
    assert set(order[:4]) == {"a", "b", "c", "d"} and set(order[:2]) == {"a", "d"}   # front ends first (crowding)
    assert Objective("score").pick(scores, latencies) == "d"
    scores["z"] = -math.inf
    assert "z" not in objective.order(scores, {**latencies, "z": 0.1})


# ------------------------------------------------------------------------------ resume log
def test_old_logs_without_costs_still_load(tmp_path):
    spec = SearchSpace.load("demo").extreme_spec(False)
    old = {"spec": spec.to_dict(), "generation": 0, "score": 1.0, "rank_value": 1.0, "valid": True,
           "reason": "", "params_m": 0.1, "flops_m": 1.0, "seconds": 0.5}
    log = tmp_path / "candidates.jsonl"
    log.write_text(json.dumps(old) + "\n")
    (c,) = CandidateStore(log).by_spec.values()
    assert c.latency_ms is None and c.memory_mb is None and c.latency_source == ""


# ------------------------------------------------------------------------------ the search
@pytest.fixture
def params_proxy():
    from pipeline.proxies.registry import REGISTRY, register

    name = "test_params_latency"
    if name not in REGISTRY:
        @register(name, higher_is_better=True)
        def by_params(spec, images, labels, *, seed, device):
            return count_params(spec) / 1e6
    return name


def _search(out, proxy, costs, objective="score"):
    from pipeline.search import ArchitectureSearch
    from pipeline.search.command import _NothingToTrain

    search = ArchitectureSearch("demo", out, (torch.randn(2, 3, 32, 32), torch.arange(2)), proxy=proxy,
                                strategy="random", strategy_options={"samples": 12, "per_generation": 6},
                                costs=costs, objective=objective)
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=0, logger=False, callbacks=[search],
                      enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(_NothingToTrain())
    return search


def test_search_under_a_latency_limit_records_costs_and_resumes_without_measuring(
        params_proxy, monkeypatch, tmp_path):
    counter = _additive(monkeypatch)
    space = SearchSpace.load("demo")
    probe = DeviceCosts(space, FAST, cache_folder=tmp_path / "cache")
    probe.prepare()
    assert counter["fresh"] == WHOLE_NETWORKS
    lo, hi = (probe.predictor.predict(space.extreme_spec(b)) for b in (False, True))
    limit = (lo + hi) / 3
    make = lambda: DeviceCosts(space, FAST, max_latency_ms=limit, cache_folder=tmp_path / "cache")  # noqa: E731
    search = _search(tmp_path / "run", params_proxy, make())
    rows = [json.loads(line) for line in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(r["latency_ms"] <= limit and r["memory_mb"] > 0 for r in rows)
    assert all(r["latency_source"] == "predicted" and r["latency_on"] == "cpu/eager/batch1/threads1/min" for r in rows)
    # the pick: the largest network within the limit (the proxy counts parameters), its costs in arch.yaml
    saved = yaml.safe_load((tmp_path / "run" / "arch.yaml").read_text())
    assert ArchSpec.load(tmp_path / "run" / "arch.yaml") == search.chosen
    assert count_params(search.chosen) / 1e6 == max(r["score"] for r in rows)
    record = saved["latency"]
    assert {"device", "backend", "batch", "threads", "search_ms", "fresh_process_ms", "memory_mb"} <= set(record)
    assert record["search_ms"] <= limit and record["search_source"] == "predicted"
    assert counter["fresh"] == WHOLE_NETWORKS + 1   # the pick, re-measured
    # both statistics of the fresh process's calls; the one searched on (the CPU's: the fastest call) is the latency
    assert record["statistic"] == "min" and record["fresh_process_ms"] == record["fresh_process_min_ms"]
    assert record["fresh_process_median_ms"] >= record["fresh_process_min_ms"] > 0
    assert (tmp_path / "run" / "pareto.png").is_file()

    # the same search again: every cost comes from the log, nothing is measured or calibrated
    measured = counter["networks"]
    evaluated = []
    again = make()
    monkeypatch.setattr(again, "evaluate", lambda spec: evaluated.append(spec) or pytest.fail("re-costed"))
    _search(tmp_path / "run", params_proxy, again)
    assert not evaluated and counter["networks"] == measured and counter["fresh"] == WHOLE_NETWORKS + 2   # + the pick
    assert (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()[:12] == [json.dumps(r) for r in rows]

    # a log from before latency was recorded: the costs are added, the proxy is not run again
    log = tmp_path / "run" / "candidates.jsonl"
    log.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in (
        "latency_ms", "latency_source", "memory_mb", "latency_on")}) + "\n" for r in rows))
    seconds = {json.dumps(r["spec"]): r["seconds"] for r in rows}
    _search(tmp_path / "run", params_proxy, make())
    after = [json.loads(line) for line in log.read_text().splitlines()]
    assert all(r["latency_ms"] is not None and r["seconds"] == seconds[json.dumps(r["spec"])] for r in after[-12:])


def test_pareto_objective_writes_the_front(params_proxy, monkeypatch, tmp_path):
    _additive(monkeypatch)
    search = _search(tmp_path / "run", params_proxy, DeviceCosts(SearchSpace.load("demo"), FAST,
                                                                  cache_folder=tmp_path / "cache"), "pareto")
    members = sorted((tmp_path / "run" / "front").glob("*.yaml"))
    assert members and search.chosen in {ArchSpec.load(p) for p in members}
    latencies = [yaml.safe_load(p.read_text())["latency"]["search_ms"] for p in members]
    scores = [yaml.safe_load(p.read_text())["latency"]["score"] for p in members]
    assert latencies == sorted(latencies) and scores == sorted(scores)   # faster is lower-scored along a front


# ------------------------------------------------------------------------------ the command
@pytest.mark.slow
def test_demo_search_under_a_latency_limit_records_the_latency(tmp_path):
    """The issue's check: a demo search with --limits.max_latency_ms=1000 finishes and its arch.yaml
    holds the latency (measured again in a fresh process) with the conditions it was measured under."""
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache")}
    res = run_cli("search", f"--out_dir={tmp_path}", "--run_name=lat", "--limits.max_latency_ms=1000",
                  *TINY_SCHEDULE, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "lat"
    record = yaml.safe_load((out / "arch.yaml").read_text())["latency"]
    assert record["backend"] == "eager" and record["batch"] == 1 and record["threads"] == 1
    assert record["device"].startswith("cpu") and record["search_source"] == "predicted"
    assert 0 < record["search_ms"] <= 1000 and record["fresh_process_ms"] > 0 and record["memory_mb"] > 0
    # the CPU's default statistic, and both statistics of the fresh re-measure
    assert record["statistic"] == "min" and record["fresh_process_ms"] == record["fresh_process_min_ms"]
    assert 0 < record["fresh_process_min_ms"] <= record["fresh_process_median_ms"]
    assert "predicted in the search" in res.stdout and "measured in a fresh process (median call" in res.stdout
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    assert rows and all(r["latency_ms"] > 0 and r["memory_mb"] > 0 for r in rows)
    header = (out / "candidates.csv").read_text().splitlines()[0]
    assert "latency_ms" in header and "memory_mb" in header
    assert list((tmp_path / "cache" / "pipeline" / "latency").glob("cpu-eager-b1-t1-*.json"))
    tables = list((out / "wandb").glob("offline-run-*/files/media/table/search/candidates_*.table.json"))
    assert tables and {"latency_ms", "latency_source", "memory_mb"} <= set(json.loads(tables[0].read_text())["columns"])


def test_missing_backend_is_one_line_naming_the_package(monkeypatch, capsys, tmp_path):
    import importlib.util

    from pipeline.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    code = main(["search", "--latency.backend=onnx", "--limits.max_latency_ms=5", f"--out_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "pip install onnxruntime" in err[0], err
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------ pipeline run
def test_run_takes_the_latency_settings_and_checks_them_before_any_stage(monkeypatch):
    import importlib.util

    from pipeline.errors import ConfigError
    from pipeline.run.settings import parse_config

    cfg = parse_config(["--search.limits.max_latency_ms=4", "--search.latency.backend=export",
                        "--search.objective=pareto", "--search.latency.batch=2"])
    assert cfg["search"]["limits"]["max_latency_ms"] == 4.0 and cfg["search"]["latency"]["backend"] == "export"
    assert cfg["search"]["objective"] == "pareto" and cfg["search"]["latency"]["batch"] == 2
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install onnxruntime"):
        parse_config(["--search.limits.max_latency_ms=4", "--search.latency.backend=onnx"])


def test_run_report_states_both_latencies(tmp_path):
    from pipeline.report import write_report
    from pipeline.search.report import write_arch

    spec = SearchSpace.load("demo").extreme_spec(False)
    search = tmp_path / "search"
    write_arch(search / "arch.yaml", spec, {
        "device": "cpu (AMD EPYC)", "backend": "onnx", "batch": 1, "threads": 1, "clock": "wall",
        "statistic": "median", "warmup": 5, "repeats": 20, "search_ms": 1.2345, "search_source": "predicted",
        "memory_mb": 0.55, "fresh_process_ms": 1.3012, "fresh_process_spread": 0.05})
    (search / "config.yaml").write_text(yaml.safe_dump({"limits": {"max_latency_ms": 2.0}, "objective": "score"}))
    (search / "pareto.png").write_bytes(b"")
    text = write_report(tmp_path).read_text()
    assert "1.234 ms predicted in the search, 1.301 ms measured in a fresh process" in text
    assert "on cpu (AMD EPYC) (onnx, batch 1, 1 thread(s))" in text and "![score vs latency](search/pareto.png)" in text
    assert ArchSpec.load(search / "arch.yaml") == spec
