"""L-SWAG's per-depth profile of networks of a benchmark file, and what it means for the proxy.

L-SWAG (CVPR 2025) sums its gradient term over the layers between two depth percentiles l-hat and
L-hat, "the beginning and the end of the spikes" of the gradient's standard deviation over depth,
found once per benchmark on randomly initialised networks (its Fig. 2b) before the metric is run.
This script measures, for architectures of a ground-truth file (a seeded subset, the same shuffle
as ``correlate --limit``), everything the proxy depends on per depth bin
(:class:`pipeline.proxies.lswag.LSWAGProfile`) and writes one CSV row per architecture as it goes
(rerun to resume). Then it prints:

* the gradient-std profile over depth bins (mean and std over the networks: label-free, Fig. 2b),
  and the interval its spike rule picks (below);
* Kendall tau against the file's metric of L-SWAG, Λ and Ψ for that interval, and for every
  interval (Fig. 2a: a sensitivity table, not how the interval is chosen).

The spike rule (our reading of "the beginning and the end of the spikes"): the bins whose mean
log-std lies above the midpoint of the profile's range, (max + min) / 2, form the spike; l-hat and
L-hat are its first and last bin.

    python benchmarks/proxy_selection/lswag_layers.py --limit 100 --out benchmarks/results/lswag_autoformer_tiny_ood.csv
"""
from __future__ import annotations

import argparse
import csv
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data import probe_batch
from pipeline.groundtruth import load_ground_truth
from pipeline.metrics import banded_kendall_tau, kendall_tau
from pipeline.models import count_flops, count_params
from pipeline.proxies.lswag import BINS, LSWAGProfile, _measure, lswag_value

STEP = 100 // BINS
COLUMNS = (["key", "metric", "params_m", "flops_m", "layers", "samples", "seconds"]
           + [f"lam_{b}" for b in range(0, 101, STEP)] + [f"psi_upto_{b}" for b in range(0, 101, STEP)]
           + [f"log_sigma_{b}" for b in range(0, 101, STEP)])


def select(path: Path, space: str, limit: int | None, seed: int, metric: str):
    """The architectures ``correlate --limit=LIMIT --seed=SEED`` scores (file order)."""
    entries = [e for e in load_ground_truth(path, space=space) if math.isfinite(e.metrics.get(metric, math.nan))]
    order = list(range(len(entries)))
    if limit is not None:
        random.Random(seed).shuffle(order)
        order = sorted(order[:limit])
    return [entries[i] for i in order]


def profile_of(row: dict) -> LSWAGProfile:
    bins = range(0, 101, STEP)
    return LSWAGProfile(tuple(float(row[f"lam_{b}"]) for b in bins), tuple(int(float(row[f"psi_upto_{b}"])) for b in bins),
                        tuple(float(row[f"log_sigma_{b}"]) for b in bins), int(row["layers"]), int(row["samples"]))


def measure(entries, out: Path, metric: str, n: int, seed: int) -> list[dict]:
    done = {r["key"]: r for r in csv.DictReader(open(out))} if out.is_file() else {}
    new = not out.is_file()
    images, labels = probe_batch(n, entries[0].spec.img_size, seed=0, source="photos")
    with open(out, "a", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        if new:
            w.writeheader()
        for i, e in enumerate(entries):
            if e.key in done:
                continue
            start = time.perf_counter()
            p = _measure(e.spec, images, labels, seed=seed, device="cpu", splits=2, init="network")
            row = {"key": e.key, "metric": e.metrics[metric], "params_m": count_params(e.spec) / 1e6,
                   "flops_m": count_flops(e.spec) / 1e6, "layers": p.layers, "samples": p.samples,
                   "seconds": round(time.perf_counter() - start, 2),
                   **{f"lam_{b * STEP}": v for b, v in enumerate(p.lam)},
                   **{f"psi_upto_{b * STEP}": v for b, v in enumerate(p.psi_upto)},
                   **{f"log_sigma_{b * STEP}": v for b, v in enumerate(p.log_sigma)}}
            w.writerow(row)
            f.flush()
            done[e.key] = {k: str(v) for k, v in row.items()}
            print(f"[{len(done)}/{len(entries)}] {e.key} {e.spec.short()} {row['seconds']} s", flush=True)
    return [done[e.key] for e in entries]


def spike_interval(log_sigma: np.ndarray) -> tuple[int, int]:
    """(l-hat, L-hat) in percent from the per-bin mean log-std (see the module docstring)."""
    means = np.nanmean(log_sigma, axis=0)
    above = np.flatnonzero(means >= (np.nanmax(means) + np.nanmin(means)) / 2)
    return int(above[0] * STEP), int(above[-1] * STEP)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ground_truth", default="../shared/benchmarks/autoformer_tiny_ood_vit_nas.json")
    ap.add_argument("--space", default="autoformer_tiny")
    ap.add_argument("--metric", default="top1")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0, help="the shuffle of --limit (as correlate's)")
    ap.add_argument("--n", type=int, default=64, help="probe images (the paper's batch: 64)")
    ap.add_argument("--model_seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", required=True, help="CSV of per-architecture profiles (appended; rerun resumes)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    entries = select(Path(args.ground_truth), args.space, args.limit, args.seed, args.metric)
    rows = measure(entries, Path(args.out), args.metric, args.n, args.model_seed)
    profiles = [profile_of(r) for r in rows]
    truth = np.array([float(r["metric"]) for r in rows])
    params = np.array([float(r["params_m"]) for r in rows])
    log_sigma = np.array([p.log_sigma for p in profiles])
    print(f"\n{len(rows)} architectures of {Path(args.ground_truth).name}, {args.n} probe images")
    print("depth bin (%):  " + " ".join(f"{b:>6d}" for b in range(0, 101, STEP)))
    print("mean log std:   " + " ".join(f"{v:6.2f}" for v in np.nanmean(log_sigma, axis=0)))
    print("std over nets:  " + " ".join(f"{v:6.2f}" for v in np.nanstd(log_sigma, axis=0)))
    lo, hi = spike_interval(log_sigma)
    print(f"spike rule: l-hat = {lo}%, L-hat = {hi}%")
    for name, part in (("L-SWAG", "lswag"), ("gradient term", "gradient"), ("expressivity term", "expressivity")):
        v = np.array([lswag_value(p, [lo, hi], part) for p in profiles])
        print(f"  {name:18s} [{lo}, {hi}]: tau {kendall_tau(v, truth):.3f}, band tau "
              f"{banded_kendall_tau(v, truth, params, 5)[0]:.3f}")
    full = np.array([lswag_value(p, [0, 100], "lswag") for p in profiles])
    print(f"  L-SWAG over every layer [0, 100]: tau {kendall_tau(full, truth):.3f}")
    print(f"  #params: tau {kendall_tau(params, truth):.3f}; FLOPs: tau "
          f"{kendall_tau([float(r['flops_m']) for r in rows], truth):.3f}")
    print("\nL-SWAG tau for every interval [l-hat, L-hat] (rows l-hat, columns L-hat; sensitivity, in-sample):")
    print("      " + " ".join(f"{h:>6d}" for h in range(0, 101, STEP)))
    for lo_ in range(0, 101, STEP):
        cells = [f"{kendall_tau([lswag_value(p, [lo_, h], 'lswag') for p in profiles], truth):6.3f}" if h >= lo_
                 else "      " for h in range(0, 101, STEP)]
        print(f"{lo_:>5d} " + " ".join(cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
