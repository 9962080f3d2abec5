"""How well does the latency predictor predict networks it was not calibrated on?

For each space preset and backend: calibrate the predictor exactly as the search does
(``LatencyPredictor.calibrate``: block types timed inside networks, interleaved, and a few whole
networks each in a fresh process), then draw held-out architectures of the space at random (none
of them a calibration network) and measure each in a fresh process (``python -m
pipeline.latency.fresh``, as the search re-measures its pick). One line per preset and backend,
for the device's default statistic (the fastest call on a CPU)::

    autoformer_tiny eager: n 50, MAPE 3.1%, tau(pred) 0.83, tau(FLOPs) 0.58, noise 1.2%, within10 0.94 ceiling 0.90

``within10`` is the share of held-out networks predicted within +-10% of measured; ``ceiling``
the share of the noise probe's measurements within +-10% of their own median: one held-out network
(the one of median FLOPs) measured ``--noise`` more times in fresh processes, one after every
few held-out networks, so its repeats see the machine the held-out networks saw. No predictor
can agree with a measurement more often than the measurement agrees with itself; the goal is
within10 >= ceiling - 0.05 (and >= 0.95 where the ceiling is >= 0.95). MAPE is the mean absolute
percentage error; tau(pred) Kendall's tau of predicted vs measured; tau(FLOPs) that of FLOPs vs
measured, for comparison; noise the probe's median absolute deviation from its median.

Each measurement keeps both statistics (fastest and median call) on both clocks; the predictor is
fitted and judged on the same measurements once per view, and the table in docs/latency.md has a
row for the default statistic and one for the median call.

Resumable: every measurement is appended to ``--results/<preset>_<backend>.jsonl`` as it
finishes and the calibration is cached in ``--results/cache`` (a rerun measures only what is
missing). Timing needs a quiet machine: run one preset at a time, nothing else running:

    python benchmarks/latency.py --runs autoformer_small:eager

``--doc docs/latency.md`` rewrites the table between its markers from every run whose
measurements are complete (``--report`` alone: no measuring). ``--fresh-calibration`` also
measures every block-calibration network in a fresh process (a diagnostic of how the
calibrating process differs from a fresh one; ``benchmarks/latency_residuals.py`` reads it).
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
from pipeline.latency.predictor import LatencyPredictor, calibration_groups, whole_networks  # noqa: E402
from pipeline.latency.target import Target, default_statistic, device_name  # noqa: E402
from pipeline.models import count_flops  # noqa: E402
from pipeline.space import ArchSpec, SearchSpace  # noqa: E402
from pipeline.utils.io import atomic_write_text  # noqa: E402

PRESETS = ["demo", "autoformer_tiny", "autoformer_small", "pit_tiny"]
BACKENDS = ["eager", "export", "onnx"]
RUNS = [f"{p}:eager" for p in PRESETS] + ["demo:onnx"]
START, END = "<!-- latency-table:start -->", "<!-- latency-table:end -->"
DEFAULT = ("wall", default_statistic("cpu"))
VIEWS = [DEFAULT, ("wall", "median")]   # (clock, statistic) rows of the table: the default first


def held_out(space: SearchSpace, n: int, seed: str) -> list[ArchSpec]:
    """``n`` distinct random architectures of the space, none of them a calibration network."""
    calibration = {network_key(s) for group in calibration_groups(space) for s in group}
    calibration |= {network_key(s) for s in whole_networks(space)}
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


def plan(space: SearchSpace, preset: str, args) -> tuple[list[ArchSpec], ArchSpec, list[tuple[str, ArchSpec, int]]]:
    """The held-out networks, the noise probe, and the order of the fresh-process measurements."""
    specs = held_out(space, args.n, f"{preset}-held-out")
    probe = sorted(specs, key=count_flops)[len(specs) // 2]   # the noise probe: the held-out one of median FLOPs
    todo = [("calibration_fresh", s, 0) for g in calibration_groups(space) for s in g] if args.fresh_calibration else []
    # the probe's repeats spread over the run (one after every few held-out networks), not back to
    # back: the machine's load changes over minutes, and the ceiling should see what the networks saw
    every = max(1, len(specs) // max(1, args.noise))
    for j, spec in enumerate(specs):
        todo.append(("held_out", spec, 0))
        if (j + 1) % every == 0 and (j + 1) // every <= args.noise:
            todo.append(("noise", probe, (j + 1) // every - 1))
    todo += [("noise", probe, i) for i in range(len(specs) // every, args.noise)]
    return specs, probe, todo


def evaluate(preset: str, backend: str, args, measure: bool = True):
    """Calibrate, measure the held-out networks and the noise probe (resumably); one result per
    view. ``measure=False``: the results of what was measured before, or None when incomplete."""
    space = SearchSpace.load(preset)
    target = Target(device="cpu", backend=backend, batch=args.batch, threads=args.threads, warmup=args.warmup,
                    repeats=args.repeats, min_seconds=args.min_seconds, statistic=DEFAULT[1])
    log = args.results / f"{preset}_{backend}.jsonl"
    started = time.time()
    cache = MeasurementCache(target, args.results / "cache")
    calibration = [s for group in calibration_groups(space) for s in group]
    whole = whole_networks(space)
    cached = all(cache.get(s) is not None for s in calibration) and all(cache.get(s, True) is not None for s in whole)
    if not measure and not cached:
        return None
    LatencyPredictor.calibrate(
        space, target, cache,
        progress=None if cached else lambda done, total: print(
            f"  [{preset} {backend}] calibration {done}/{total} network runs ({time.time() - started:.0f} s)", flush=True))
    if not cached:   # how long calibrating took (the search pays it once per target)
        _append(log, {"kind": "calibration", "key": "", "seconds": time.time() - started, "date": time.strftime("%F %T")})
    rows = _read(log)
    done = {(r["kind"], r["key"], r.get("i", 0)) for r in rows}
    specs, probe, todo = plan(space, preset, args)
    if not measure and any((kind, network_key(spec), i) not in done for kind, spec, i in todo if kind != "calibration_fresh"):
        return None
    for n, (kind, spec, i) in enumerate(todo, 1):
        if (kind, network_key(spec), i) in done:
            continue
        if args.minutes is not None and time.time() - args.started > 60 * args.minutes:
            print(f"  [{preset} {backend}] stopped after {args.minutes:g} minutes ({n - 1}/{len(todo)}); "
                  "run again to go on", flush=True)
            return None
        got = measure_in_fresh_process(spec, target, memory=False)
        row = {"kind": kind, "key": network_key(spec), "i": i, "arch": spec.short(),
               "flops_m": count_flops(spec) / 1e6, "timing": got["timing"], "date": time.strftime("%F %T")}
        _append(log, row)
        rows.append(row)
        t = Timing.from_dict(got["timing"])
        print(f"  [{preset} {backend}] {kind} {n}/{len(todo)} {spec.short()}: fastest {t.min_ms:.3f} ms, "
              f"median {t.ms:.3f} ms ({time.time() - started:.0f} s)", flush=True)
    wanted = {network_key(s) for s in specs}
    held = list({r["key"]: r for r in rows if r["kind"] == "held_out" and r["key"] in wanted}.values())
    repeated = [Timing.from_dict(r["timing"]) for r in rows if r["kind"] == "noise" and r["key"] == network_key(probe)]
    seconds = [r["seconds"] for r in rows if r["kind"] == "calibration"]
    results = []
    for clock, statistic in VIEWS:
        view = Target(**{**target.__dict__, "clock": clock, "statistic": statistic})
        predictor = LatencyPredictor.fit(view, preset, [(s, view.latency(cache.get(s))) for s in calibration],
                                         [(s, view.latency(cache.get(s, True))) for s in whole])
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
            "noise_n": len(noise), "noise_arch": probe.short(), "correction": predictor.correction.scale,
            "calibration_networks": f"{len(calibration)} + {len(whole)}",
            "calibration_minutes": seconds[-1] / 60 if seconds else float("nan"),
            "dates": f"{min(r['date'] for r in held if 'date' in r)[:10]}" if any("date" in r for r in held) else ""})
    return results


def meets(r: dict) -> bool:
    """The goal: as often within +-10% as the measurement repeats itself, less 0.05 (0.95 at a ceiling >= 0.95)."""
    return r["within10"] >= r["noise_within10"] - 0.05 and (r["noise_within10"] < 0.95 or r["within10"] >= 0.95)


def line(r: dict) -> str:
    view = "" if (r["clock"], r["statistic"]) == DEFAULT else f" ({r['clock']} clock, {r['statistic']})"
    return (f"{r['preset']} {r['backend']}{view}: n {r['n']}, MAPE {100 * r['mape']:.1f}%, tau(pred) {r['tau_pred']:.3f}, "
            f"tau(FLOPs) {r['tau_flops']:.3f}, noise {100 * r['noise']:.1f}%, "
            f"within10 {r['within10']:.2f} ceiling {r['noise_within10']:.2f}")


def table(results: list[dict], args) -> str:
    rows = ["| space | backend | statistic | held-out n | latency (median, range) | within +-10% | ceiling (noise within +-10%) | "
            "meets | MAPE | median error | tau(pred) | tau(FLOPs) | noise (MAD) | calibration networks (blocks + whole) | "
            "calibration minutes |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        words = {"min": "fastest call", "median": "median call"}[r["statistic"]] + (" (default)" if (r["clock"], r["statistic"]) == DEFAULT else "")
        rows.append(f"| {r['preset']} | {r['backend']} | {words} | {r['n']} | {r['median_ms']:.3g} ms "
                    f"({r['min_ms']:.3g}-{r['max_ms']:.3g}) | **{r['within10']:.2f}** | {r['noise_within10']:.2f} (n {r['noise_n']}) | "
                    f"{'yes' if meets(r) else 'no'} | {100 * r['mape']:.1f}% | {100 * r['bias']:+.1f}% | {r['tau_pred']:.3f} | "
                    f"{r['tau_flops']:.3f} | {100 * r['noise']:.1f}% | {r['calibration_networks']} | "
                    f"{r['calibration_minutes']:.1f} |")
    dates = sorted({r["dates"] for r in results if r.get("dates")})
    head = (f"Measured on {device_name('cpu')}, batch {args.batch}, {args.threads} thread(s), {args.warmup} warm-up "
            f"and at least {args.repeats} timed forwards (and {args.min_seconds:g} s) per measurement, each in a fresh "
            f"process, {', '.join(dates) or time.strftime('%Y-%m-%d')}; `python benchmarks/latency.py --doc docs/latency.md`.")
    return "\n".join([START, head, "", *rows, END])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", nargs="+", default=RUNS, metavar="PRESET:BACKEND",
                    help=f"presets and backends to measure (default: {' '.join(RUNS)})")
    ap.add_argument("--n", type=int, default=50, help="held-out architectures per preset and backend")
    ap.add_argument("--noise", type=int, default=10, help="fresh-process repeats of one network (the noise ceiling)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--min-seconds", type=float, default=1.0, help="timed rounds continue until they took this long")
    ap.add_argument("--fresh-calibration", action="store_true",
                    help="also measure every block-calibration network in a fresh process (a diagnostic)")
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "latency")
    ap.add_argument("--doc", type=Path, default=None,
                    help="rewrite the table in this file (docs/latency.md) from every complete run of the default list")
    ap.add_argument("--report", action="store_true", help="measure nothing: print (and --doc) what was measured")
    ap.add_argument("--minutes", type=float, default=None,
                    help="stop starting new measurements after this many minutes (a quiet window; rerun to go on)")
    args = ap.parse_args()
    args.started = time.time()
    runs = []
    for item in args.runs:
        preset, _, backend = item.partition(":")
        if preset not in PRESETS or (backend or "eager") not in BACKENDS:
            ap.error(f"--runs {item}: use PRESET:BACKEND with a preset of {', '.join(PRESETS)} and a backend of "
                     f"{', '.join(BACKENDS)}")
        runs.append((preset, backend or "eager"))
    args.results.mkdir(parents=True, exist_ok=True)
    shown = []
    for preset, backend in runs:
        views = evaluate(preset, backend, args, measure=not args.report)
        if views is None:
            print(f"{preset} {backend}: not complete yet (run: python benchmarks/latency.py --runs {preset}:{backend})")
            continue
        shown += views
        print("\n".join(line(r) for r in views), flush=True)
    print("\n".join(line(r) for r in shown if (r["clock"], r["statistic"]) == DEFAULT))
    if args.doc is not None:
        everything = [r for preset, backend in dict.fromkeys(runs + [tuple(x.split(":")) for x in RUNS])
                      for r in (evaluate(preset, backend, args, measure=False) or [])]
        (args.results / "summary.json").write_text(json.dumps(everything, indent=1))
        text = args.doc.read_text()
        if START in text and END in text:
            text = text[: text.index(START)] + table(everything, args) + text[text.index(END) + len(END):]
            atomic_write_text(args.doc, text)
        else:
            print(f"{args.doc} has no table markers; table:\n{table(everything, args)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
