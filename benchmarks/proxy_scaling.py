"""Does a proxy mean the same for small and large networks? Its relation to structure per space.

For seeded random architectures of each preset (AutoFormer-T, -S, -B, PiT-T), prints the range of
each score and its Kendall tau with depth, width, #params and the number of weight tensors: a
score that is mostly "count the tensors" ranks deep networks first whatever they compute, and one
whose range shifts between spaces cannot be compared across them.

    python benchmarks/proxy_scaling.py --per-space 8 --out docs/proxy_scaling.md
"""
from __future__ import annotations

import argparse
import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.data import probe_batch
from pipeline.metrics import kendall_tau
from pipeline.models import build_model, count_flops, count_params
from pipeline.proxies import compute_proxy
from pipeline.proxies.ntk_proxies import VINTK_FLOPS_DEFAULTS, seed_averaged_statistic
from pipeline.space import SearchSpace

SPACES = ("autoformer_tiny", "autoformer_small", "autoformer_base", "pit_tiny")


def weight_tensors(spec) -> int:
    model = build_model(spec, seed=0)
    return sum(isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) for m in model.modules())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-space", type=int, default=8)
    ap.add_argument("--spaces", default=",".join(SPACES))
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    images, labels = probe_batch(8, 224, seed=0)
    opts = {k: v for k, v in VINTK_FLOPS_DEFAULTS.items() if k != "flops_weight"}
    lines = ["| space | score | min | median | max | tau vs depth | tau vs width | tau vs #params | "
             "tau vs #weight tensors |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in args.spaces.split(","):
        space = SearchSpace.load(name)
        rng = random.Random(0)
        specs = [space.sample(rng) for _ in range(args.per_space)]
        rows = []
        t0 = time.perf_counter()
        for spec in specs:
            kernel_term = seed_averaged_statistic(spec, images, labels, seed=0, device="cpu", **opts)
            log_flops = math.log(count_flops(spec) / 1e6)
            rows.append({
                "depth": spec.depth, "width": spec.layer_width(spec.depth - 1),
                "params": count_params(spec), "tensors": weight_tensors(spec),
                "kernel term": kernel_term, "log FLOPs": log_flops, "vintk_flops": kernel_term + log_flops,
                "vintk": compute_proxy("vintk", spec, images, labels).value,
            })
        print(f"{name}: {len(specs)} architectures in {time.perf_counter() - t0:.0f} s", flush=True)
        for score in ("vintk_flops", "kernel term", "log FLOPs", "vintk"):
            v = np.array([r[score] for r in rows])
            taus = [kendall_tau(v, [r[k] for r in rows]) for k in ("depth", "width", "params", "tensors")]
            lines.append(f"| {name} | {score} | {v.min():.3f} | {np.median(v):.3f} | {v.max():.3f} | "
                         + " | ".join("nan" if math.isnan(t) else f"{t:.2f}" for t in taus) + " |")
            print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
