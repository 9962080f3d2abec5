"""Score every architecture of the dev ground-truth files once, keeping what proxies are made of.

The proxy study of issue 10 compares many candidate scores (ViNTK variants, per-block kernels,
NASWOT-style activation terms, size) on the tune halves of both dev files. Recomputing a kernel
per variant is what made the earlier ablation slow, so this script computes, per architecture,
the raw materials once and saves them; every variant is then arithmetic on the saved arrays
(``benchmarks/proxy_selection/proxy_study.py``).

Per architecture (the network as its benchmark built it: AutoFormer's ``--gp`` pooling,
seeded initialisation, eval mode):

* one NTK pass over the probe under the views ``identity`` and ``band2of3`` (8 photos each,
  16 samples), all parameters, every tensor's Gram kept apart (``grams_out``); saved grouped:
  per block the trace-normalised weight Grams of attention (qkv, proj) and MLP (fc1, fc2), the
  patch embedding and the classifier, plus the raw sum over all parameters (TE-NAS kernel);
* the normalised weight kernel of a second initialisation (seed 1), to measure seed noise;
* NASWOT's activation-code kernel log-determinant and, per block, the effective rank of the
  token features (AZ-NAS's "expressivity");
* size: params, FLOPs, depth, width.

Workers split the architectures (several processes share one GPU); each stops at ``--deadline``
seconds and what is done is kept (architectures are processed in a seeded random order, so a
partial run is a random subset).

    python benchmarks/proxy_selection/proxy_features.py --out /tmp/features --workers 8 --deadline 420
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

FILES = {
    "ood": ("autoformer_tiny_ood_vit_nas.json", "autoformer_tiny"),
    "vb101": ("vitbench101_autoformer_tiny_kd.jsonl", None),
}
# ViT-Bench-101's AutoFormerSub classifies the mean of the patch tokens (Auto-Prox-AAAI24,
# pycls/models/auto/autoformer_subnet.py); its JSON lines predate the global_pool field.
ARCH_OVERRIDES = {"vb101": {"global_pool": "avg"}}
LABELS8 = None


def load_entries(bench_dir: Path) -> list[tuple[str, object]]:
    from pipeline.groundtruth import load_ground_truth

    out = []
    for tag, (name, space) in FILES.items():
        for e in load_ground_truth(bench_dir / name, space=space):
            spec = dataclasses.replace(e.spec, **ARCH_OVERRIDES.get(tag, {}))
            out.append((tag, dataclasses.replace(e, spec=spec)))
    return out


def group_of(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "blocks":
        kind = "attn" if parts[2] == "attn" else "mlp" if parts[2] == "mlp" else "other"
        return f"b{int(parts[1]):02d}.{kind}"
    return {"patch_embed": "patch", "head": "head"}.get(parts[0], "other")


def is_weight(model: torch.nn.Module, name: str) -> bool:
    module_name, _, param = name.rpartition(".")
    module = model.get_submodule(module_name)
    return param == "weight" and isinstance(module, (torch.nn.Linear, torch.nn.Conv2d))


def upper(m: torch.Tensor) -> np.ndarray:
    i, j = torch.triu_indices(m.shape[0], m.shape[0])
    return m[i, j].float().cpu().numpy()


def features(spec, images16, images8, device, baselines: bool = True) -> tuple[dict, dict[str, np.ndarray]]:
    from pipeline.models import build_model, count_flops, count_params
    from pipeline.proxies.ntk import disable_fused_attention, empirical_ntk

    row: dict = {"params_m": count_params(spec) / 1e6, "flops_m": count_flops(spec) / 1e6,
                 "depth": spec.depth, "embed_dim": spec.embed_dim,
                 "mean_mlp": float(np.mean(spec.mlp_ratio)), "sum_heads": int(sum(spec.num_heads))}
    t0 = time.perf_counter()
    model = disable_fused_attention(build_model(spec, seed=0)).to(device)
    grams: list = []
    raw = empirical_ntk(model, images16, params="all", grams_out=grams)
    groups: dict[str, torch.Tensor] = {}
    for name, g in grams:
        if not is_weight(model, name):
            continue
        tr = g.trace()
        if tr <= 0:
            continue
        key = group_of(name)
        groups[key] = groups.get(key, 0) + g / tr
    row["raw_all"] = upper(raw)
    row["ntk_seconds"] = time.perf_counter() - t0
    # NASWOT + per-block feature effective rank, one forward of the identity images.
    from study_features import activation_pass

    row["naswot"], row["feature_erank"] = activation_pass(model, images8)
    del model
    model = disable_fused_attention(build_model(spec, seed=1)).to(device)
    k1 = empirical_ntk(model, images16, params="weights", normalize=True)
    row["seed1_norm_weights"] = upper(k1)
    del model
    from pipeline.proxies.registry import compute_proxy

    for name in ("synflow", "dss", "grad_norm", "snip") if baselines else ():
        score = compute_proxy(name, spec, images8, LABELS8.to(device), seed=0, device=device)
        row[name] = score.value if score.valid else float("nan")
    row["seconds"] = time.perf_counter() - t0
    return row, {k: upper(v) for k, v in groups.items()}


def seed_kernels(spec, images16, device, seeds: str) -> dict:
    """Only the normalised weight kernel, for more initialisations (seed noise and averaging)."""
    from pipeline.models import build_model
    from pipeline.proxies.ntk import disable_fused_attention, empirical_ntk

    t0 = time.perf_counter()
    row = {}
    for seed in map(int, seeds.split(",")):
        model = disable_fused_attention(build_model(spec, seed=seed)).to(device)
        row[f"seed{seed}_norm_weights"] = upper(empirical_ntk(model, images16, params="weights", normalize=True))
    row["seconds"] = time.perf_counter() - t0
    return row


def worker(rank: int, world: int, args) -> None:
    torch.set_num_threads(args.threads)
    from pipeline.data import probe_batch
    from pipeline.proxies.fourier import make_view

    device = args.device
    entries = load_entries(Path(args.bench))
    order = list(range(len(entries)))
    random.Random(0).shuffle(order)
    if args.skip:
        done = {(r["file"], r["key"]) for r in map(json.loads, open(args.skip))}
        order = [i for i in order if (entries[i][0], entries[i][1].key) not in done]
        order.sort(key=lambda i: entries[i][0] != "vb101")  # the small file first
    mine = order[rank::world]
    if args.limit:
        mine = mine[: args.limit]
    images, labels = probe_batch(8, 224, seed=0, source="photos")
    global LABELS8
    LABELS8 = labels
    images8 = images.to(device)
    images16 = torch.cat([make_view(images, v, 0) for v in ("identity", "band2of3")]).to(device)
    out = Path(args.out)
    rows_path = out / f"rows_{rank}.jsonl"
    grams_rows = []
    start = time.time()
    with open(rows_path, "w") as fh:
        for n, i in enumerate(mine):
            if time.time() - start > args.deadline:
                print(f"[worker {rank}] deadline after {n} architectures", flush=True)
                break
            tag, e = entries[i]
            if args.seeds:
                row, groups = seed_kernels(e.spec, images16, device, args.seeds), {}
            else:
                row, groups = features(e.spec, images16, images8, device, baselines=not args.no_baselines)
            meta = {"file": tag, "key": e.key, "metrics": e.metrics}
            fh.write(json.dumps({**meta, **{k: (v.tolist() if isinstance(v, np.ndarray) else v)
                                            for k, v in row.items()}}) + "\n")
            fh.flush()
            if groups:
                grams_rows.append((f"{tag}:{e.key}", groups))
            if n % 20 == 0:
                print(f"[worker {rank}] {n}/{len(mine)} {row['seconds']:.2f}s", flush=True)
    arrays = {f"{key}|{g}": v.astype(np.float32) for key, groups in grams_rows for g, v in groups.items()}
    if arrays:
        np.savez(out / f"grams_{rank}.npz", **arrays)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bench", default=str(Path(__file__).resolve().parents[2].parent / "shared" / "benchmarks"))
    ap.add_argument("--out", required=True)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=math.inf)
    ap.add_argument("--limit", type=int, default=0, help="architectures per worker (0 = all)")
    ap.add_argument("--skip", default="", help="features.jsonl of an earlier run: skip its architectures")
    ap.add_argument("--no-baselines", action="store_true", help="skip synflow, dss, grad_norm, snip")
    ap.add_argument("--seeds", default="", help="only the normalised weight kernels of these init seeds")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.workers == 1:
        worker(0, 1, args)
        return 0
    import torch.multiprocessing as mp

    mp.start_processes(worker, args=(args.workers, args), nprocs=args.workers, start_method="spawn")
    merge(Path(args.out), args.workers)
    return 0


def merge(out: Path, workers: int, part_bytes: int = 14 * 2 ** 20) -> None:
    """One rows file and a few gram files of at most ``part_bytes`` (files travel back in few pieces)."""
    with open(out / "features.jsonl", "w") as fh:
        for r in range(workers):
            path = out / f"rows_{r}.jsonl"
            fh.write(path.read_text())
            path.unlink()
    part, size, arrays = 0, 0, {}
    if not any((out / f"grams_{r}.npz").is_file() for r in range(workers)):
        return
    for r in range(workers):
        path = out / f"grams_{r}.npz"
        with np.load(path) as z:
            for k in z.files:
                arrays[k] = z[k]
                size += z[k].nbytes
                if size > part_bytes:
                    np.savez(out / f"grams_part{part}.npz", **arrays)
                    part, size, arrays = part + 1, 0, {}
        path.unlink()
    if arrays:
        np.savez(out / f"grams_part{part}.npz", **arrays)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
