"""The field's proxies (AZ-NAS, L-SWAG) on a ground-truth file: per-architecture values out of
``correlate``'s scores.csv, and how well each ranks the file's metrics, with standard errors.

``correlate`` stores what AZ-NAS measured per architecture (its components, JSON) and L-SWAG's
values; this collects them into one committed CSV per file (``file, key``, the components, the
L-SWAG values and the ground truth as ``gt_<metric>``: the ``--extra`` input of
``benchmarks/proxy_selection/regret_study.py``), and prints, per metric, Kendall tau and band tau of

* AZ-NAS as its authors aggregate it (sum of the log ranks of expressivity, trainability and
  complexity) over the architectures scored so far, and of each component;
* L-SWAG and its two terms; #params and FLOPs (ours) beside them.

Standard errors come from a bootstrap over architectures (AZ-NAS re-ranked on every resample). A
run that is still going (``correlate --limit`` chunks of a seeded shuffle) gives a seeded random
subset of the file: the tau printed estimates the full file's, within about its standard error.

    python benchmarks/proxy_selection/field_proxy_results.py --scores checkpoints/az_nas_full/out/scores.csv \\
        --file autoformer_tiny_ood_vit_nas.json --out benchmarks/results/field_proxies_autoformer_tiny_ood_vit_nas.csv
"""
from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

import numpy as np

from pipeline.correlate.plan import BASE_COLUMNS
from pipeline.metrics import banded_kendall_tau, kendall_tau
from pipeline.proxies.az_nas import AZ_COMPONENTS, RELEASED_AGGREGATE, log_rank_sum
from pipeline.utils.io import atomic_write_text

LSWAG = ("lswag", "lswag_gradient", "lswag_expressivity")
TARGET = {"autoformer_tiny_ood_vit_nas.json": ("top1", 0.516, 0.02)}   # issue 21: the authors' notebook


def collect(paths: list[Path]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """(metric names, per key: sizes, ground truth, AZ-NAS components and L-SWAG values); invalid
    scores are left out (a key whose AZ-NAS failed has no components)."""
    metrics: list[str] = []
    out: dict[str, dict[str, float]] = {}
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            metrics = [c for c in reader.fieldnames or [] if c not in BASE_COLUMNS]
            for r in reader:
                row = out.setdefault(r["key"], {"params_m": float(r["params_m"]), "flops_m": float(r["flops_m"]),
                                               **{f"gt_{m}": float(r[m]) for m in metrics}})
                if r["valid"] != "1":
                    continue
                if r["proxy"] == "az_nas" and r["components"]:
                    row.update({f"az_nas_{k}": float(v) for k, v in json.loads(r["components"]).items()})
                elif r["proxy"] in LSWAG:
                    row[r["proxy"]] = float(r["value"])
    return metrics, out


def columns_of(rows: dict[str, dict[str, float]]) -> dict[str, np.ndarray]:
    """Candidate name -> values over ``rows`` (AZ-NAS aggregated over exactly these rows)."""
    table = list(rows.values())
    cols = {c: np.array([t.get(c, math.nan) for t in table]) for c in
            [*(f"az_nas_{k}" for k in AZ_COMPONENTS), *LSWAG, "params_m", "flops_m"]}
    parts = [f"az_nas_{k}" for k in RELEASED_AGGREGATE]
    if all(np.isfinite(cols[p]).all() for p in parts) and table:
        population = [{k: float(cols[f"az_nas_{k}"][i]) for k in RELEASED_AGGREGATE} for i in range(len(table))]
        cols["az_nas"] = np.array(log_rank_sum(population, {"components": RELEASED_AGGREGATE}))
    return {c: v for c, v in cols.items() if len(v) and np.isfinite(v).all()}


def report(name: str, metrics: list[str], rows: dict[str, dict[str, float]], rounds: int, seed: int) -> list[str]:
    wanted = {c for r in rows.values() for c in r if c.startswith(("az_nas_", "lswag"))}
    keys = sorted((k for k in rows if wanted <= set(rows[k])), key=lambda k: (len(k), k))
    left_out = sorted(set(rows) - set(keys), key=lambda k: (len(k), k))
    rows = {k: rows[k] for k in keys}
    cols = columns_of(rows)
    params = np.array([rows[k]["params_m"] for k in keys])
    rng = np.random.default_rng(seed)
    lines = [f"{name}: {len(keys)} architectures with every value below"
             + (f"; {len(left_out)} left out (a value missing or invalid: {', '.join(left_out[:10])})" if left_out else "")]
    for m in metrics:
        truth = np.array([rows[k][f"gt_{m}"] for k in keys])
        boot: dict[str, list[float]] = {c: [] for c in cols}
        for _ in range(rounds):
            idx = rng.integers(0, len(keys), len(keys))
            resampled = columns_of({i: rows[keys[j]] for i, j in enumerate(idx)})
            for c, v in resampled.items():
                boot[c].append(kendall_tau(v, truth[idx]))
        lines += [f"  {m}: Kendall tau (bootstrap se, {rounds} resamples), band tau (5 params bands)"]
        for c, v in cols.items():
            se = float(np.std(boot[c])) if boot[c] else math.nan
            lines.append(f"    {c:22s} tau {kendall_tau(v, truth):6.3f} (se {se:.3f})   band tau "
                         f"{banded_kendall_tau(v, truth, params, 5)[0]:6.3f}")
        target = TARGET.get(name)
        if target and target[0] == m and "az_nas" in cols:
            tau = kendall_tau(cols["az_nas"], truth)
            lines.append(f"  AZ-NAS against the authors' {target[1]} +- {target[2]}: {tau:.3f} "
                         f"({'inside' if abs(tau - target[1]) <= target[2] else 'outside'}; "
                         f"{len(keys)} architectures{'' if len(keys) >= 1000 else ', a seeded subset'})")
    return lines


def write(path: Path, name: str, metrics: list[str], rows: dict[str, dict[str, float]]) -> None:
    """The per-architecture values (``benchmarks/proxy_selection/regret_study.py --extra``): file, key, values, truth."""
    values = [f"az_nas_{k}" for k in AZ_COMPONENTS] + list(LSWAG)
    values = [c for c in values if any(c in r for r in rows.values())]
    header = ["file", "key", *values, *(f"gt_{m}" for m in metrics)]
    lines = [",".join(header)]
    for k in sorted(rows, key=lambda k: (len(k), k)):
        r = rows[k]
        lines.append(",".join([name, k, *(repr(r[c]) if c in r else "" for c in header[2:])]))
    atomic_write_text(path, "\n".join(lines) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scores", action="append", required=True, help="correlate's scores.csv (repeatable)")
    ap.add_argument("--file", required=True, help="the ground-truth file's name, e.g. autoformer_tiny_ood_vit_nas.json")
    ap.add_argument("--out", default="", help="CSV of per-architecture values to write")
    ap.add_argument("--rounds", type=int, default=200, help="bootstrap resamples")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    metrics, rows = collect([Path(p) for p in args.scores])
    if args.out:
        write(Path(args.out), args.file, metrics, rows)
    print("\n".join(report(args.file, metrics, rows, args.rounds, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
