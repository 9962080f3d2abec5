"""Where does the part-sum latency model err? Residuals of the held-out networks, offline.

Reads what ``benchmarks/latency.py`` measured (``--results/<preset>_<backend>.jsonl`` and the
calibration cache), measures nothing, and prints for one preset and backend:

* the calibrating process against a fresh one: every block-calibration network measured in both
  (run the benchmark with ``--fresh-calibration`` first), the ratio fresh / in-process per
  network, by embed width and depth;
* the held-out residuals ``measured / predicted - 1`` of the part sum (no correction), by depth,
  embed width, heads, MLP ratio, stage (PiT) and FLOPs, with a least-squares fit of the residual
  on those features (which term is wrong, and by how much);
* within +-10% for model variants fitted on the same measurements: the raw part sum, the part
  sum corrected by the whole networks (the shipped ``Correction``), an affine correction, the
  parts fitted on the calibration networks' fresh-process measurements.

    python benchmarks/latency_residuals.py autoformer_tiny [--statistic min]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.latency.cache import MeasurementCache  # noqa: E402
from pipeline.latency.measure import Timing  # noqa: E402
from pipeline.latency.predictor import Correction, LatencyPredictor, calibration_groups, whole_networks  # noqa: E402
from pipeline.latency.target import Target  # noqa: E402
from pipeline.models import count_flops  # noqa: E402
from pipeline.space import ArchSpec, SearchSpace  # noqa: E402


def within10(pred: list[float], meas: list[float]) -> float:
    return sum(abs(p / m - 1) <= 0.10 for p, m in zip(pred, meas)) / len(meas)


def describe(errors: list[float]) -> str:
    e = np.array(errors)
    return f"n {len(e):3d}  median {100 * np.median(e):+6.1f}%  mean {100 * e.mean():+6.1f}%  MAD {100 * np.median(abs(e - np.median(e))):5.1f}%"


def features(spec: ArchSpec) -> dict[str, float]:
    out = {"depth": spec.depth, "embed": spec.embed_dim, "flops_g": count_flops(spec) / 1e9,
           "share heads max": float(np.mean([h == max(spec.num_heads) for h in spec.num_heads])),
           "share MLP max": float(np.mean([m == max(spec.mlp_ratio) for m in spec.mlp_ratio]))}
    if spec.family == "pit":
        for s, d in enumerate(spec.stage_depths):
            out[f"stage {s} depth"] = d
            out[f"stage {s} heads"] = spec.num_heads[sum(spec.stage_depths[:s])]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset")
    ap.add_argument("--backend", default="eager")
    ap.add_argument("--statistic", default="min", choices=["min", "median"])
    ap.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "latency")
    args = ap.parse_args()
    space = SearchSpace.load(args.preset)
    target = Target(device="cpu", backend=args.backend, statistic=args.statistic)
    cache = MeasurementCache(target, args.results / "cache")
    rows = [json.loads(x) for x in (args.results / f"{args.preset}_{args.backend}.jsonl").read_text().splitlines() if x.strip()]
    latency = lambda t: target.latency(Timing.from_dict(t) if isinstance(t, dict) else t)  # noqa: E731
    calibration = [s for g in calibration_groups(space) for s in g]
    whole = whole_networks(space)
    measured = [(s, latency(cache.get(s))) for s in calibration]
    whole_ms = [(s, latency(cache.get(s, fresh=True))) for s in whole if cache.get(s, fresh=True) is not None]
    raw = LatencyPredictor.fit(target, args.preset, measured)
    shipped = LatencyPredictor.fit(target, args.preset, measured, whole_ms)

    # 1. the calibrating process against fresh processes, network by network
    fresh_cal = {r["key"]: latency(r["timing"]) for r in rows if r["kind"] == "calibration_fresh"}
    from pipeline.latency.cache import network_key

    if fresh_cal:
        print(f"== {args.preset}: fresh / in-process, block-calibration networks ({args.statistic})")
        for s, ms in measured:
            if network_key(s) in fresh_cal:
                print(f"  {s.short():60s} in-process {ms:9.3f}  fresh {fresh_cal[network_key(s)]:9.3f}  "
                      f"ratio {fresh_cal[network_key(s)] / ms:6.3f}")
        ratios = [fresh_cal[network_key(s)] / ms for s, ms in measured if network_key(s) in fresh_cal]
        print(f"  ratio median {statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")

    # 2. held-out residuals of the raw part sum
    held = list({r["key"]: r for r in rows if r["kind"] == "held_out"}.values())
    specs = [ArchSpec.from_dict(json.loads(r["key"])) for r in held]
    meas = [latency(r["timing"]) for r in held]
    pred_raw = [raw.predict(s) for s in specs]
    err = [m / p - 1 for p, m in zip(pred_raw, meas)]
    print(f"\n== held-out residuals measured / part-sum - 1 ({args.statistic})")
    print(f"  all        {describe(err)}")
    feats = [features(s) for s in specs]
    for name in feats[0]:
        values = sorted({f[name] for f in feats})
        if len(values) <= 6:
            for v in values:
                print(f"  {name} = {v:g}".ljust(28) + describe([e for e, f in zip(err, feats) if f[name] == v]))
    names = [n for n in feats[0] if n != "flops_g"]   # FLOPs: a function of the others (collinear)
    x = np.array([[f[n] for n in names] for f in feats], dtype=float)
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1)
    coef, *_ = np.linalg.lstsq(np.c_[np.ones(len(x)), x], np.array(err), rcond=None)
    print("  least squares of the residual on standardised features (effect of +1 s.d., %):")
    print("   " + ", ".join(f"{n} {100 * c:+.1f}" for n, c in zip(["intercept", *names], coef)))

    # 3. model variants on the same measurements
    print(f"\n== within +-10% of the {len(meas)} held-out networks ({args.statistic})")
    print(f"  part sum (no correction)                   {within10(pred_raw, meas):.2f}")
    print(f"  + whole-network scale ({len(whole_ms)} fresh), scale {shipped.correction.scale:.3f}  "
          f"{within10([shipped.predict(s) for s in specs], meas):.2f}")
    if len(whole_ms) >= 2:
        a = np.array([[raw.part_sum(s), 1.0] for s, _ in whole_ms])
        (scale, offset), *_ = np.linalg.lstsq(a, np.array([m for _, m in whole_ms]), rcond=None)
        affine = Correction(float(scale), float(offset))
        print(f"  + whole-network affine {scale:.3f} x + {offset:.2f}          "
              f"{within10([affine(raw.part_sum(s)) for s in specs], meas):.2f}")
    if fresh_cal and len(fresh_cal) == len(calibration):
        from_fresh = LatencyPredictor.fit(target, args.preset, [(s, fresh_cal[network_key(s)]) for s in calibration])
        print(f"  parts fitted on fresh-process calibration  {within10([from_fresh.predict(s) for s in specs], meas):.2f}")
    oracle = statistics.median(m / p for p, m in zip(pred_raw, meas))
    print(f"  part sum x the held-out's own median ratio {oracle:.3f} (fitted on the held-out networks) "
          f"{within10([oracle * p for p in pred_raw], meas):.2f}")
    noise = [latency(r["timing"]) for r in rows if r["kind"] == "noise"]
    if noise:
        c = statistics.median(noise)
        print(f"  ceiling (noise probe within +-10% of its median, n {len(noise)}) "
              f"{sum(abs(v / c - 1) <= 0.1 for v in noise) / len(noise):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
