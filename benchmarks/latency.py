"""How well does the latency predictor predict networks it was not calibrated on?

For each space preset and backend: calibrate the predictor exactly as the search does
(``LatencyPredictor.calibrate``: block types timed inside networks, interleaved), then draw
held-out architectures of the space at random (none of them a calibration network) and measure
each in a fresh process (``python -m pipeline.latency.fresh``, as the search re-measures its
pick). One line per preset and backend::

    autoformer_tiny eager: n 50, MAPE 2.1%, tau(pred) 0.93, tau(FLOPs) 0.88, noise 1.2%, within10 0.98

Every call is timed on the wall clock and in the process's CPU time (``--latency.clock``), and
each measurement keeps both the median and the fastest call; the predictor is fitted and judged
on the same measurements once per view. The summary prints the line for ``--clock`` and
``--statistic`` (default wall, median: the search's default) and the wall-clock fastest-call line
(``--latency.statistic=min``), whose measurements reproduce far better on a shared machine; the
table in docs/latency.md has a row per view.
``within10`` is the share of held-out networks predicted within +-10% of measured; MAPE the
mean absolute percentage error; tau(pred) Kendall's tau of predicted vs measured; tau(FLOPs)
that of FLOPs vs measured, for comparison; noise the median absolute deviation (relative to the
median) of one network measured ``--noise`` times in fresh processes spread over the run, with ``noise within10`` the
share of those repeated measurements within +-10% of their own median: the ceiling any predictor
can reach under this machine's noise.

Resumable: every measurement is appended to ``--results/<preset>_<backend>.jsonl`` as it
finishes and the calibration is cached in ``--results/cache`` (a rerun measures only what is
missing). Timing needs a quiet machine; on the shared box run it through the heavy-job lock:

    nohup flock /work/wt/heavy.lock nice -n 5 python benchmarks/latency.py > latency.log 2>&1 &

``--doc docs/latency.md`` rewrites the table between its markers.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.latency.cache import MeasurementCache, network_key  # noqa: E402
from pipeline.latency.fresh import measure_in_fresh_process  # noqa: E402
from pipeline.latency.measure import Timing  # noqa: E402
from pipeline.latency.predictor import LatencyPredictor, calibration_groups  # noqa: E402
from pipeline.latency.target import Target, device_name  # noqa: E402
from pipeline.models import count_flops  # noqa: E402
from pipeline.space import ArchSpec, SearchSpace  # noqa: E402

PRESETS = ["demo", "autoformer_tiny", "autoformer_small", "pit_tiny"]
BACKENDS = ["eager", "export", "onnx"]
START, END = "<!-- latency-table:start -->", "<!-- latency-table:end -->"
VIEWS = [("wall", "median"), ("cpu", "median"), ("wall", "min")]   # (clock, statistic) rows of the table


def held_out(space: SearchSpace, n: int, seed: str) -> list[ArchSpec]:
    """``n`` distinct random architectures of the space, none of them a calibration network."""
    calibration = {network_key(s) for group in calibration_groups(space) for s in group}
    rng, out, seen = random.Random(seed), [], set()
    while len(out) < n:
        spec = space.sample(rng)
        key = network_key(spec)
        if key not in calibration and key not in seen:
            seen.add(key)
            out.append(spec)
    return out


def _read(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass   # a line cut short by an interruption
    return rows


def _append(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def kendall(a: list[float], b: list[float]) -> float:
    from scipy.stats import kendalltau

    return float(kendalltau(a, b).statistic)


def evaluate(preset: str, backend: str, args) -> list[dict]:
    """Calibrate, measure the held-out networks and the noise probe (resumably); one result per view."""
    space = SearchSpace.load(preset)
    target = Target(device="cpu", backend=backend, batch=args.batch, threads=args.threads, warmup=args.warmup,
                    repeats=args.repeats, min_seconds=args.min_seconds)
    log = args.results / f"{preset}_{backend}.jsonl"
    started = time.time()
    cache = MeasurementCache(target, args.results / "cache")
    LatencyPredictor.calibrate(
        space, target, cache,
        progress=lambda done, total: print(f"  [{preset} {backend}] calibration {done}/{total} network runs "
                                           f"({time.time() - started:.0f} s)", flush=True))
    rows = _read(log)
    done = {(r["kind"], r["key"], r.get("i", 0)) for r in rows}
    specs = held_out(space, args.n, f"{preset}-held-out")
    probe = sorted(specs, key=count_flops)[len(specs) // 2]   # the noise probe: the held-out one of median FLOPs
    # the probe's repeats spread over the run (one after every few held-out networks), not back to
    # back: the machine's load changes over minutes, and the ceiling should see what the networks saw
    every = max(1, len(specs) // max(1, args.noise))
    todo = []
    for j, spec in enumerate(specs):
        todo.append(("held_out", spec, 0))
        if (j + 1) % every == 0 and (j + 1) // every <= args.noise:
            todo.append(("noise", probe, (j + 1) // every - 1))
    todo += [("noise", probe, i) for i in range(len(specs) // every, args.noise)]
    for n, (kind, spec, i) in enumerate(todo, 1):
        if (kind, network_key(spec), i) in done:
            continue
        got = measure_in_fresh_process(spec, target, memory=False)
        row = {"kind": kind, "key": network_key(spec), "i": i, "arch": spec.short(),
               "flops_m": count_flops(spec) / 1e6, "timing": got["timing"]}
        _append(log, row)
        rows.append(row)
        t = Timing.from_dict(got["timing"])
        print(f"  [{preset} {backend}] {kind} {n}/{len(todo)} {spec.short()}: {t.ms:.3f} ms wall, {t.cpu_ms:.3f} ms CPU, "
              f"fastest {t.min_ms:.3f} ms ({time.time() - started:.0f} s)", flush=True)
    wanted = {network_key(s) for s in specs}
    held = list({r["key"]: r for r in rows if r["kind"] == "held_out" and r["key"] in wanted}.values())
    repeated = [Timing.from_dict(r["timing"]) for r in rows if r["kind"] == "noise" and r["key"] == network_key(probe)]
    calibration = [(s, cache.get(s)) for group in calibration_groups(space) for s in group]
    results = []
    for clock, statistic in VIEWS:
        view = Target(**{**target.__dict__, "clock": clock, "statistic": statistic})
        predictor = LatencyPredictor.fit(view, preset, [(s, view.latency(t)) for s, t in calibration])
        pred = [predictor.predict(ArchSpec.from_dict(json.loads(r["key"]))) for r in held]
        meas = [view.latency(Timing.from_dict(r["timing"])) for r in held]
        errors = [p / m - 1 for p, m in zip(pred, meas)]
        noise = [view.latency(t) for t in repeated]
        centre = statistics.median(noise) if noise else float("nan")
        results.append({
            "preset": preset, "backend": backend, "clock": clock, "statistic": statistic, "n": len(meas),
            "within10": sum(abs(e) <= 0.10 for e in errors) / len(errors), "mape": statistics.mean(map(abs, errors)),
            "bias": statistics.median(errors), "tau_pred": kendall(pred, meas),
            "tau_flops": kendall([r["flops_m"] for r in held], meas),
            "median_ms": statistics.median(meas), "min_ms": min(meas), "max_ms": max(meas),
            "noise": statistics.median(abs(v / centre - 1) for v in noise) if noise else float("nan"),
            "noise_within10": sum(abs(v / centre - 1) <= 0.10 for v in noise) / len(noise) if noise else float("nan"),
            "noise_n": len(noise), "noise_arch": probe.short(),
            "calibration_networks": len(calibration), "minutes": (time.time() - started) / 60})
    return results


def line(r: dict) -> str:
    view = "" if (r["clock"], r["statistic"]) == ("wall", "median") else f" ({r['clock']} clock, {r['statistic']})"
    return (f"{r['preset']} {r['backend']}{view}: n {r['n']}, MAPE {100 * r['mape']:.1f}%, tau(pred) {r['tau_pred']:.3f}, "
            f"tau(FLOPs) {r['tau_flops']:.3f}, noise {100 * r['noise']:.1f}% (noise within10 {r['noise_within10']:.2f}), "
            f"within10 {r['within10']:.2f}")


def table(results: list[dict], args) -> str:
    rows = ["| space | backend | clock, statistic | held-out n | latency (median, range) | within +-10% | MAPE | median error | "
            "tau(pred) | tau(FLOPs) | noise (MAD) | noise within +-10% | calibration networks |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        rows.append(f"| {r['preset']} | {r['backend']} | {r['clock']}, {r['statistic']} | {r['n']} | {r['median_ms']:.3g} ms "
                    f"({r['min_ms']:.3g}-{r['max_ms']:.3g}) | **{r['within10']:.2f}** | {100 * r['mape']:.1f}% | "
                    f"{100 * r['bias']:+.1f}% | {r['tau_pred']:.3f} | {r['tau_flops']:.3f} | {100 * r['noise']:.1f}% | "
                    f"{r['noise_within10']:.2f} (n {r['noise_n']}) | {r['calibration_networks']} |")
    head = (f"Measured on {device_name('cpu')}, batch {args.batch}, {args.threads} thread(s), {args.warmup} warm-up "
            f"and at least {args.repeats} timed forwards (and {args.min_seconds:g} s) per measurement, "
            f"{time.strftime('%Y-%m-%d')}; `python benchmarks/latency.py`.")
    return "\n".join([START, head, "", *rows, END])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=PRESETS)
    ap.add_argument("--backends", nargs="+", default=BACKENDS, choices=BACKENDS)
    ap.add_argument("--n", type=int, default=50, help="held-out architectures per preset and backend")
    ap.add_argument("--noise", type=int, default=10, help="fresh-process repeats of one network (the noise ceiling)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=1.0, help="timed rounds continue until they took this long")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="the clock of the printed lines")
    ap.add_argument("--statistic", default="median", choices=["median", "min"])
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "latency")
    ap.add_argument("--doc", type=Path, default=None, help="rewrite the table in this file (docs/latency.md)")
    args = ap.parse_args()
    args.results.mkdir(parents=True, exist_ok=True)
    results, shown = [], []
    for preset in args.presets:
        for backend in args.backends:
            views = evaluate(preset, backend, args)
            results += views
            shown += [r for r in views if (r["clock"], r["statistic"]) in ((args.clock, args.statistic), ("wall", "min"))]
            print("\n".join(line(r) for r in views), flush=True)
            (args.results / "summary.json").write_text(json.dumps(results, indent=1))
    print("\n".join(line(r) for r in shown))
    if args.doc is not None:
        text = args.doc.read_text()
        if START in text and END in text:
            text = text[: text.index(START)] + table(results, args) + text[text.index(END) + len(END):]
            args.doc.write_text(text)
        else:
            print(f"{args.doc} has no table markers; table:\n{table(results, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
