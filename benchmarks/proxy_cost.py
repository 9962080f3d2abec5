"""What does one candidate cost with the search default, against the previous ViNTK?

Issue 10 bounds the default proxy at 2x the previous default (``vintk``: identity + top-band
views, 8 photos each, one kernel over 16 samples) per AutoFormer-T candidate. This scores the
same seeded AutoFormer-T architectures at 224x224 with 8 photos under each proxy, interleaved
(one of each per round, so load drifts hit all alike), with the kernel cache cleared before every
call (a cached kernel would make a repeated call nearly free), and prints the median seconds and
the ratio to ``vintk`` (of the medians, and the median of the per-architecture ratios), measured
in one run.

    python benchmarks/proxy_cost.py [--rounds 6] [--threads 1] [--space autoformer_tiny]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import pipeline.proxies.ntk_proxies as ntk_proxies
from pipeline.data import probe_batch
from pipeline.proxies.registry import compute_proxy
from pipeline.space import SearchSpace

CANDIDATES = {
    "vintk (previous default)": ("vintk", {}),
    "vintk_flops, 2 inits": ("vintk_flops", {"seeds": [0, 1]}),
    "vintk_flops (default)": ("vintk_flops", {}),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--space", default="autoformer_tiny")
    ap.add_argument("--n", type=int, default=8, help="probe photos (per view)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    space = SearchSpace.load(args.space)
    rng = random.Random(0)
    specs = [space.sample(rng) for _ in range(args.rounds)]
    images, labels = probe_batch(args.n, specs[0].img_size, 0, "photos")
    compute_proxy("vintk", specs[0], images, labels, seed=99)          # warm-up, not timed
    seconds: dict[str, list[float]] = {k: [] for k in CANDIDATES}
    for i, spec in enumerate(specs):
        for label, (name, options) in CANDIDATES.items():
            ntk_proxies._CACHE.clear()
            t0 = time.perf_counter()
            compute_proxy(name, spec, images, labels, seed=0, options=options)
            seconds[label].append(time.perf_counter() - t0)
        print(f"round {i + 1}/{len(specs)}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()), flush=True)
    base = statistics.median(seconds["vintk (previous default)"])
    print(f"\n{args.space}, {args.n} photos, {args.threads} thread(s), median of {len(specs)} architectures:")
    for label, values in seconds.items():
        med = statistics.median(values)
        per_arch = statistics.median(v / b for v, b in zip(values, seconds["vintk (previous default)"]))
        print(f"  {label:26s} {med:6.2f} s   {med / base:4.2f}x vintk (median per architecture {per_arch:4.2f}x)"
              f"   (range {min(values):.2f}-{max(values):.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
