"""ViNTK ablation on a ground-truth file: which views, combination and statistic rank best?

One NTK per architecture over the probe images stacked under *all* candidate views; every
variant (a subset of views, a way to combine them, a spectral statistic) is a sub-block of that
kernel, so the whole table costs one kernel per architecture. Kernels are saved as they are
computed (a rerun resumes). Prints and writes a markdown table sorted by Kendall tau, with tau
within parameter-count bands and the relative cost (samples per kernel).

    python benchmarks/vintk_ablation.py --limit 300 --n 10
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
from pipeline.metrics import banded_kendall_tau, kendall_tau
from pipeline.models import count_params
from pipeline.proxies.ntk_proxies import kernel, vintk_score
from pipeline.proxies.registry import InvalidScore
from pipeline.utils.io import atomic_write, atomic_write_text

ALL_VIEWS = ["identity", "band0of3", "band1of3", "band2of3", "rff1", "rff4"]
SUBSETS = [["identity"], ["band0of3"], ["band1of3"], ["band2of3"], ["rff1"], ["rff4"],
           ["identity", "band2of3"], ["identity", "band1of3"], ["identity", "band1of3", "band2of3"],
           ["band0of3", "band1of3", "band2of3"], ["identity", "rff1"], ["identity", "rff4"],
           ["identity", "band2of3", "rff4"], ALL_VIEWS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ground-truth", default=str(Path(__file__).resolve().parents[2] / "shared" / "benchmarks"
                                                  / "autoformer_tiny_ood_vit_nas.json"))
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--n", type=int, default=10, help="probe images per view")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="checkpoints/vintk_ablation")
    ap.add_argument("--doc", default="docs/vintk_ablation.md")
    args = ap.parse_args()

    entries = load_ground_truth(args.ground_truth)
    random.Random(args.seed).shuffle(entries)
    entries = entries[: args.limit]
    out = Path(args.out) / "kernels"
    out.mkdir(parents=True, exist_ok=True)
    images, labels = probe_batch(args.n, image_size=entries[0].spec.img_size, seed=args.seed)
    seconds = []
    for e in track(entries, description="kernels"):
        path = out / f"{e.key}.pt"
        if path.exists():
            continue
        start = time.perf_counter()
        theta = kernel(e.spec, images, labels, seed=args.seed, device="cpu", views=ALL_VIEWS)
        seconds.append(time.perf_counter() - start)
        atomic_write(path, lambda p: torch.save(theta, p))
    if seconds:
        print(f"mean seconds per kernel ({len(ALL_VIEWS) * args.n} samples): {np.mean(seconds):.2f}")

    thetas = {e.key: torch.load(out / f"{e.key}.pt") for e in entries}
    top1 = np.array([e.metrics["top1"] for e in entries])
    params = np.array([count_params(e.spec) for e in entries], dtype=float)
    n = args.n
    rows = []
    for views, combine, stat in itertools.product(SUBSETS, ("stacked", "sum", "mean"), ("cond", "logdet", "trace", "erank")):
        if len(views) == 1 and combine != "stacked":
            continue
        idx = torch.cat([torch.arange(ALL_VIEWS.index(v) * n, (ALL_VIEWS.index(v) + 1) * n) for v in views])
        scores, invalid = [], 0
        for e in entries:
            try:
                scores.append(vintk_score(thetas[e.key][idx][:, idx], len(views), stat, combine))
            except InvalidScore:
                scores.append(np.nan)
                invalid += 1
        s = np.array(scores)
        ok = np.isfinite(s)
        rows.append(dict(views="+".join(views), combine=combine, statistic=stat, samples=len(views) * n,
                         tau=kendall_tau(s[ok], top1[ok]), band_tau=banded_kendall_tau(s[ok], top1[ok], params[ok], 5)[0],
                         invalid=invalid))
    rows.append(dict(views="#params", combine="-", statistic="-", samples=0, tau=kendall_tau(params, top1),
                     band_tau=banded_kendall_tau(params, top1, params, 5)[0], invalid=0))
    rows.sort(key=lambda r: -r["tau"])
    lines = [f"ViNTK ablation on {len(entries)} architectures of `{Path(args.ground_truth).name}` "
             f"(seeded subset, seed {args.seed}), {n} probe photos per view at 224x224, reduction=sum, "
             "all parameters, eval mode. tau = Kendall tau vs ImageNet top-1; band tau = mean tau within "
             "5 equal-count parameter bands. Statistics are oriented (larger = predicted better).", "",
             "| views | combine | statistic | samples | tau | band tau | invalid |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['views']} | {r['combine']} | {r['statistic']} | {r['samples']} | {r['tau']:.3f} | "
                     f"{r['band_tau']:.3f} | {r['invalid']} |")
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(Path(args.out) / "ablation.md", text)
    atomic_write_text(Path(args.out) / "ablation.json", json.dumps(rows, indent=1))
    if args.doc:
        atomic_write_text(args.doc, text)


if __name__ == "__main__":
    main()
