"""ViNTK ablation on a ground-truth file: which kernel, views, combination and statistic rank best?

A *family* fixes how the kernel is computed (parameter set, per-tensor normalisation) and the
views stacked into it; for each architecture one NTK over the probe images under *all* the
family's views is computed and saved (a rerun resumes). Every variant — a subset of views, a
way to combine them, a spectral statistic — is a sub-block of that kernel, so a whole family
costs one kernel per architecture.

Families:
  raw       all parameters, raw Gram (TE-NAS-style), 6 views: identity, 3 radial bands, 2 RFF scales
  adam      weights only, every tensor's Gram scaled to trace 1 (Adam-like), identity + top band
  adam_all  all parameters, normalised like adam, identity + top band

Note: a normalised family's tensors are normalised over all its stacked views, so its
single-view sub-blocks are close to, not exactly, the single-view normalised kernel.

    python benchmarks/proxy_selection/vintk_ablation.py --families adam --limit 200 --n 8
    python benchmarks/proxy_selection/vintk_ablation.py --families raw,adam,adam_all --no-compute   # table only
"""
from __future__ import annotations

import argparse
import itertools
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
from rich.progress import track

from pipeline.data import probe_batch
from pipeline.groundtruth import load_ground_truth
from pipeline.metrics import banded_kendall_tau, kendall_tau, top_fraction_precision
from pipeline.models import count_flops, count_params
from pipeline.proxies.ntk_proxies import kernel, vintk_score
from pipeline.proxies.registry import InvalidScore
from pipeline.utils.io import atomic_write, atomic_write_text

RAW_VIEWS = ["identity", "band0of3", "band1of3", "band2of3", "rff1", "rff4"]
FAMILIES = {
    "raw": dict(params="all", normalize=False, views=RAW_VIEWS),
    "adam": dict(params="weights", normalize=True, views=["identity", "band2of3"]),
    "adam_all": dict(params="all", normalize=True, views=["identity", "band2of3"]),
}
RAW_SUBSETS = [["identity"], ["band0of3"], ["band1of3"], ["band2of3"], ["rff1"], ["rff4"],
               ["identity", "band2of3"], ["identity", "band1of3"], ["identity", "band1of3", "band2of3"],
               ["band0of3", "band1of3", "band2of3"], ["identity", "rff1"], ["identity", "rff4"],
               ["identity", "band2of3", "rff4"], RAW_VIEWS]
# "trace" of a normalised kernel only counts parameter tensors (each has trace 1): it is a
# function of the architecture alone, not of the kernel, so it is left out for those families.
STATISTICS = ("cond", "logdet", "trace", "erank")


def _variants(family: str):
    views = FAMILIES[family]["views"]
    subsets = RAW_SUBSETS if family == "raw" else [[v] for v in views] + [views]
    for subset, combine, stat in itertools.product(subsets, ("stacked", "sum", "mean"), STATISTICS):
        if len(subset) == 1 and combine != "stacked":
            continue
        if FAMILIES[family]["normalize"] and stat == "trace":
            continue
        weight_sets = [None, [1.0] + [0.5] * (len(subset) - 1)] if combine != "stacked" else [None]
        for weights in weight_sets:
            yield subset, combine, stat, weights


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ground-truth", default=str(Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
                                                  / "autoformer_tiny_ood_vit_nas.json"))
    ap.add_argument("--families", default="adam")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--n", type=int, default=8, help="probe photos per view")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-compute", action="store_true", help="only tabulate kernels already saved")
    ap.add_argument("--out", default="checkpoints/vintk_ablation")
    ap.add_argument("--doc", default="docs/vintk_ablation_table.md")
    args = ap.parse_args()

    entries = load_ground_truth(args.ground_truth)
    random.Random(args.seed).shuffle(entries)
    entries = entries[: args.limit]
    images, labels = probe_batch(args.n, image_size=entries[0].spec.img_size, seed=args.seed)
    rows = []
    for family in args.families.split(","):
        cfg = FAMILIES[family]
        folder = Path(args.out) / family
        folder.mkdir(parents=True, exist_ok=True)
        seconds = []
        if not args.no_compute:
            for e in track(entries, description=f"{family} kernels"):
                path = folder / f"{e.key}.pt"
                if not path.exists():
                    start = time.perf_counter()
                    theta = kernel(e.spec, images, labels, seed=args.seed, device="cpu", **cfg)
                    seconds.append(time.perf_counter() - start)
                    atomic_write(path, lambda p: torch.save(theta, p))
        done = [e for e in entries if (folder / f"{e.key}.pt").exists()]
        thetas = {e.key: torch.load(folder / f"{e.key}.pt") for e in done}
        top1 = np.array([e.metrics["top1"] for e in done])
        params = np.array([count_params(e.spec) for e in done], dtype=float)
        views = cfg["views"]
        n = args.n
        for subset, combine, stat, weights in _variants(family):
            idx = torch.cat([torch.arange(views.index(v) * n, (views.index(v) + 1) * n) for v in subset])
            scores = []
            for e in done:
                try:
                    scores.append(vintk_score(thetas[e.key][idx][:, idx], len(subset), stat, combine, weights))
                except InvalidScore:
                    scores.append(np.nan)
            s = np.array(scores)
            ok = np.isfinite(s)
            rows.append(dict(family=family, views="+".join(subset), combine=combine, statistic=stat,
                             weights=weights, samples=len(subset) * n, archs=int(ok.sum()),
                             tau=kendall_tau(s[ok], top1[ok]),
                             band_tau=banded_kendall_tau(s[ok], top1[ok], params[ok], 5)[0],
                             top10=top_fraction_precision(s[ok], top1[ok]), invalid=int((~ok).sum())))
        if seconds:
            print(f"{family}: {np.mean(seconds):.2f} s per kernel ({len(views) * n} samples)")
        for name, values in (("#params", params), ("FLOPs", [count_flops(e.spec) for e in done])):
            values = np.asarray(values, dtype=float)
            rows.append(dict(family=family, views=name, combine="-", statistic="-", weights=None, samples=0,
                             archs=len(done), tau=kendall_tau(values, top1),
                             band_tau=banded_kendall_tau(values, top1, params, 5)[0],
                             top10=top_fraction_precision(values, top1), invalid=0))
    rows.sort(key=lambda r: -r["tau"])
    lines = [f"ViNTK ablation on `{Path(args.ground_truth).name}` (seeded subset, seed {args.seed}), {args.n} probe "
             "photos per view at 224x224, reduction=sum, eval mode. tau = Kendall tau vs ImageNet top-1; band tau = "
             "size-weighted mean tau within 5 equal-count parameter bands; top10 = top-10% precision. Statistics "
             "are oriented (larger = predicted better). `archs` = architectures with a valid score.", "",
             "| family | views | combine | weights | statistic | samples | archs | tau | band tau | top10 | invalid |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = "-" if r["weights"] is None else ",".join(f"{x:g}" for x in r["weights"])
        lines.append(f"| {r['family']} | {r['views']} | {r['combine']} | {w} | {r['statistic']} | {r['samples']} | "
                     f"{r['archs']} | {r['tau']:.3f} | {r['band_tau']:.3f} | {r['top10']:.2f} | {r['invalid']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(Path(args.out) / "ablation.json", json.dumps(rows, indent=1))
    if args.doc:
        atomic_write_text(args.doc, text)


if __name__ == "__main__":
    main()
