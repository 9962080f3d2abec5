"""Is a score more than depth or size? Its Kendall tau with depth and with FLOPs inside one params band.

Per space preset (demo, AutoFormer-T/S/B, PiT-T), seeded random architectures are drawn inside one
narrow params band of that space (+-``--band`` around the params quartile where depth varies most): there
every network has about the same size, so a score that only counts layers or only measures
compute shows it as a large tau with depth or with FLOPs. Each candidate of
``benchmarks/proxy_selection/study_candidates.py`` is computed from the same features as the dev-file study
(``benchmarks/proxy_selection/study_features.py``: the search default's kernel at 3 initialisations, NASWOT, ...),
plus any registered proxy named in ``--proxies`` (e.g. AZ-NAS's components once registered).

Per-architecture values go to ``benchmarks/results/proxy_scaling_band.csv`` (long format: one row
per architecture and value, the first its spec as JSON, appended and fsynced; a rerun computes only what is missing, so
adding a proxy later scores only it), and the table to ``--out``.

    python benchmarks/proxy_selection/proxy_scaling.py --per-space 32 --out docs/proxy_scaling.md [--proxies az_nas]
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402
from study_candidates import arch_scores  # noqa: E402
from study_features import activation_features, kernel_features, structure  # noqa: E402

from pipeline.data import probe_batch  # noqa: E402
from pipeline.metrics import kendall_tau  # noqa: E402
from pipeline.models import count_mlp_units, count_params  # noqa: E402
from pipeline.space import Limits, SearchSpace  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPACES = ("demo", "autoformer_tiny", "autoformer_small", "autoformer_base", "pit_tiny")
SHOWN = ["vintk_flops", "kernel", "kernel - log T", "kernel - log T + log F", "block shape", "block shape + log F",
         "naswot", "naswot shape", "MLP units", "expressivity", "params", "flops"]


def band_specs(space: SearchSpace, n: int, half_width: float) -> tuple[list, tuple[float, float]]:
    """``n`` seeded random specs within +-half_width of one params quartile of the space (25, 50 or
    75 %): the one whose networks vary most in depth (entropy of the depth counts of 2,000 random
    networks in the band), so that a score that counts layers has room to show it."""
    rng = random.Random(0)
    sample = [space.sample(rng) for _ in range(2000)]
    params = np.array([count_params(s) / 1e6 for s in sample])

    def depth_entropy(centre: float) -> float:
        depths = [s.depth for s, p in zip(sample, params) if abs(p / centre - 1) <= half_width]
        counts = np.unique(depths, return_counts=True)[1] / max(len(depths), 1)
        return float(-(counts * np.log(counts)).sum())

    centre = max(np.quantile(params, [0.25, 0.5, 0.75]), key=depth_entropy)
    lo, hi = centre * (1 - half_width), centre * (1 + half_width)
    rng = random.Random(1)
    return [space.sample_within(rng, Limits(min_params=lo, max_params=hi)) for _ in range(n)], (lo, hi)


def read_done(path: Path) -> dict[tuple[str, int, str], float]:
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        path.write_bytes(data[: data.rfind(b"\n") + 1])
    return {(r["space"], int(r["index"]), r["name"]): float(r["value"]) for r in csv.DictReader(open(path))
            if r["name"] != "spec"}


def read_specs(path: Path) -> dict:
    from pipeline.space import ArchSpec

    if not path.is_file():
        return {}
    return {(r["space"], int(r["index"])): ArchSpec.from_dict(json.loads(r["value"])) for r in csv.DictReader(open(path))
            if r["name"] == "spec"}


def score_space(name: str, n: int, half_width: float, proxies: list[str], done: dict, writer, fh) -> None:
    from pipeline.proxies import compute_proxy

    space = SearchSpace.load(name)
    specs, (lo, hi) = band_specs(space, n, half_width)
    images, labels = probe_batch(8, specs[0].img_size, seed=0, source="photos")
    t0 = time.perf_counter()
    for i, spec in enumerate(specs):
        def put(key: str, value: float) -> None:
            writer.writerow([name, i, key, repr(float(value))])
            done[(name, i, key)] = float(value)

        if (name, i, "kernel_s2") not in done:
            writer.writerow([name, i, "spec", json.dumps(spec.to_dict())])
            for k, v in structure(spec).items():
                put(k, v)
            for s in (0, 1, 2):
                feats, _, model = kernel_features(spec, images, seed=s)
                for k, v in feats.items():
                    put(f"{k}_s{s}", v)
                if s == 0:
                    for k, v in activation_features(model, images).items():
                        put(k, v)
                del model
        for proxy in proxies:
            if (name, i, proxy) not in done:
                score = compute_proxy(proxy, spec, images, labels, seed=0)
                put(proxy, score.value if score.valid else math.nan)
        fh.flush()
        os.fsync(fh.fileno())
    print(f"{name}: {n} architectures in {lo:.3f}-{hi:.3f} M params, {time.perf_counter() - t0:.0f} s", flush=True)


COMPACT = ["vintk_flops", "kernel", "kernel - log T", "block shape", "naswot", "MLP units", "params", "flops"]


def taus(done: dict, specs: dict, name: str, proxies: list[str]) -> tuple[dict, dict[str, tuple[float, float]]]:
    """The band's ranges and, per score, its Kendall tau with depth and with FLOPs."""
    idx = sorted({i for s, i, _ in done if s == name})
    rows = [{k: v for (s, i, k), v in done.items() if s == name and i == j} for j in idx]
    rows = [{**r, "n_units": count_mlp_units(specs[(name, j)])} for j, r in zip(idx, rows) if "kernel_s2" in r]
    if not rows:
        return {}, {}
    scores = [{**arch_scores(r), **{p: r.get(p, math.nan) for p in proxies}} for r in rows]
    ranges = {k: [r[k] for r in rows] for k in ("depth", "flops_m", "params_m")}
    out = {}
    for score in dict.fromkeys(SHOWN + COMPACT + proxies):
        v = np.array([s.get(score, math.nan) for s in scores], dtype=float)
        ok = np.isfinite(v)
        out[score] = tuple(kendall_tau(v[ok], np.asarray(ranges[k])[ok]) for k in ("depth", "flops_m"))
    return ranges, out


def _t(x: float) -> str:
    return "nan" if math.isnan(x) else f"{x:.2f}"


def table(done: dict, specs: dict, spaces: list[str], proxies: list[str]) -> str:
    """Long table (every score) and a compact one (rows: spaces; cells: tau with depth / with FLOPs)."""
    lines = ["| space | n | params band (M) | FLOPs range (M) | depths | score | tau with depth | tau with FLOPs |",
             "|---|---:|---|---|---|---|---:|---:|"]
    compact = ["| space | n | depths | " + " | ".join(COMPACT + proxies) + " |",
               "|---|---:|---|" + "---:|" * len(COMPACT + proxies)]
    for name in spaces:
        ranges, res = taus(done, specs, name, proxies)
        if not res:
            continue
        depth, flops, params = ranges["depth"], ranges["flops_m"], ranges["params_m"]
        head = (f"| {name} | {len(depth)} | {min(params):.3f}-{max(params):.3f} | {min(flops):.0f}-{max(flops):.0f} | "
                f"{int(min(depth))}-{int(max(depth))} |")
        for score in SHOWN + proxies:
            lines.append(f"{head} {score} | {_t(res[score][0])} | {_t(res[score][1])} |")
            head = "| | | | | |"
        compact.append(f"| {name} | {len(depth)} | {int(min(depth))}-{int(max(depth))} | "
                       + " | ".join(f"{_t(res[c][0])} / {_t(res[c][1])}" for c in COMPACT + proxies) + " |")
    return "\n".join(compact) + "\n\nEvery score:\n\n" + "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-space", type=int, default=32)
    ap.add_argument("--band", type=float, default=0.05, help="half width of the params band, relative")
    ap.add_argument("--spaces", default=",".join(SPACES))
    ap.add_argument("--proxies", default="", help="registered proxies to add (comma-separated)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--csv", default=str(REPO / "benchmarks" / "results" / "proxy_scaling_band.csv"))
    ap.add_argument("--table-only", action="store_true", help="print the table of what the CSV holds")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    spaces = [s for s in args.spaces.split(",") if s]
    proxies = [p for p in args.proxies.split(",") if p]
    path = Path(args.csv)
    done = read_done(path)
    if not args.table_only:
        new = not path.is_file() or path.stat().st_size == 0
        with open(path, "a", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            if new:
                writer.writerow(["space", "index", "name", "value"])
            for name in spaces:
                score_space(name, args.per_space, args.band, proxies, done, writer, fh)
    text = table(done, read_specs(path), spaces, proxies)
    return publish(text, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
