"""What does one candidate cost under a proxy, against a reference proxy, measured in one run?

``--set default`` (issue 10): the search default against the previous default (``vintk``:
identity + top-band views, 8 photos each, one kernel over 16 samples), bounded at 2x.
``--set search`` (issue 21): the search default ``naswot`` against ``vintk_flops``, bounded at 2x.
``--set field`` (issue 21): the field's proxies as their authors run them (AZ-NAS: 64 Gaussian
images through the candidate's slice of a seeded supernet; L-SWAG: 64 photos with their labels)
and the search default ``naswot`` against ``vintk_flops``.

The same seeded architectures of ``--space`` at their own resolution (224x224 for AutoFormer-T)
are scored under each proxy, interleaved (one of each per round, so load drifts hit all alike),
with every measurement cache cleared before each call (a cached kernel or profile would make a
repeated call nearly free; the shared supernet's weights stay cached, as in a search), and the
median seconds and the ratio to the reference (of the medians, and the median of the
per-architecture ratios) are printed. Run it through the heavy-job lock on a shared machine.

    python benchmarks/proxy_cost.py [--set default|search|field] [--rounds 6] [--threads 1] [--space autoformer_tiny]
"""
from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import pipeline.proxies.az_nas as az_nas
import pipeline.proxies.lswag as lswag
import pipeline.proxies.ntk_proxies as ntk_proxies
from pipeline.data import probe_batch
from pipeline.proxies.registry import compute_proxy
from pipeline.space import SearchSpace

# label -> (proxy, options, probe photos); the first of each set is the reference
SETS = {
    "default": {
        "vintk (previous default)": ("vintk", {}, 8),
        "vintk_flops, 2 inits": ("vintk_flops", {"seeds": [0, 1]}, 8),
        "vintk_flops": ("vintk_flops", {}, 8),
    },
    "search": {   # issue 21's bound: the default at most 2x vintk_flops per candidate
        "vintk_flops": ("vintk_flops", {}, 8),
        "naswot (search default)": ("naswot", {}, 8),
    },
    "field": {
        "vintk_flops": ("vintk_flops", {}, 8),
        "naswot (search default)": ("naswot", {}, 8),
        "az_nas (64 random images)": ("az_nas", {}, 8),
        "lswag (64 photos)": ("lswag", {}, 64),
    },
}


def clear_caches() -> None:
    """Forget every measurement a proxy keeps for its next call on the same network."""
    for module in (ntk_proxies, az_nas, lswag):
        module._CACHE.clear()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=sorted(SETS), default="default", help="which proxies (see above)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--space", default="autoformer_tiny")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    candidates = SETS[args.set]
    reference = next(iter(candidates))
    space = SearchSpace.load(args.space)
    rng = random.Random(0)
    specs = [space.sample(rng) for _ in range(args.rounds)]
    probes = {n: probe_batch(n, specs[0].img_size, 0, "photos") for _, _, n in candidates.values()}
    for name, options, n in candidates.values():                       # warm-up, not timed
        compute_proxy(name, specs[0], *probes[n], seed=0, options=options)
    seconds: dict[str, list[float]] = {k: [] for k in candidates}
    for i, spec in enumerate(specs):
        for label, (name, options, n) in candidates.items():
            clear_caches()
            t0 = time.perf_counter()
            compute_proxy(name, spec, *probes[n], seed=0, options=options)
            seconds[label].append(time.perf_counter() - t0)
        print(f"round {i + 1}/{len(specs)}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in seconds.items()), flush=True)
    base = statistics.median(seconds[reference])
    print(f"\n{args.space}, {args.threads} thread(s), median of {len(specs)} architectures, against {reference}:")
    for label, values in seconds.items():
        med = statistics.median(values)
        per_arch = statistics.median(v / b for v, b in zip(values, seconds[reference]))
        print(f"  {label:26s} {med:6.2f} s   {med / base:5.2f}x (median per architecture {per_arch:4.2f}x)"
              f"   (range {min(values):.2f}-{max(values):.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
