"""Per-architecture features of a dev file for the proxy study (issue 21), on CPU, resumable.

For each architecture of one ground-truth file (the network as its benchmark built it), one row of
``benchmarks/results/study_features_<file stem>.csv``:

* size and structure: params and FLOPs (ours: exact multiply-adds), AutoFormer's own FLOPs count
  where it applies, depth, embed dim, mean MLP ratio, total heads, number of weight tensors;
* the search default's kernel, per initialisation (seeds 0, 1, 2, as ``vintk_flops``): the
  Adam-normalised NTK of the weights on the 8 probe photos (identity view) -- its mean log eigenvalue
  (``kernel_s*``: ``vintk_flops`` = their mean + log FLOPs, exactly), its trace (the number of weight
  tensors counted), its effective rank, and the mean over blocks of each block's own trace-normalised
  kernel's mean log eigenvalue (``block_logdet_s*``: a shape term with no depth count in it);
* NASWOT on the seed-0 network, and AZ-NAS-style expressivity (effective rank of each block's token
  features, summed and averaged over blocks), from the same forward pass.

Architectures are processed in a fixed order that alternates the tune and test halves (each half
shuffled with seed 0), so any prefix of the run is a seeded random subset of equal parts of both
halves (``--limit-per-half``). Each row is appended and fsynced as soon as it is computed; a rerun
skips the keys already in the CSV. Per-block normalised Gram matrices go to
``checkpoints/study/<file stem>_grams.jsonl`` (not committed: ~10 KB per architecture) for later
regrouping.

    python benchmarks/proxy_selection/study_features.py --file autoformer_small_ood_vit_nas.json --space autoformer_small \\
        [--limit-per-half 250] [--threads 2]
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

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO.parent / "shared" / "benchmarks"
SEEDS = (0, 1, 2)            # vintk_flops' initialisations (model seed 0 + offsets)
# What each file's format cannot state (as configs/correlate/vitbench101.yaml): Auto-Prox's model pools.
OVERRIDES = {"vitbench101_autoformer_tiny_kd.jsonl": {"global_pool": "avg"}}
STRUCTURE = ["params_m", "flops_m", "af_flops_m", "depth", "embed_dim", "mean_mlp", "sum_heads", "n_weight_tensors"]
PER_SEED = ["kernel", "trace", "erank", "block_logdet"]


def columns(metrics: list[str]) -> list[str]:
    return (["file", "key", "half", *[f"gt_{m}" for m in metrics], *STRUCTURE,
             *[f"{k}_s{s}" for k in PER_SEED for s in SEEDS], "naswot", "expressivity", "expressivity_mean",
             "seconds"])


def ordered(entries: list, split: dict[str, list[str]]) -> list[tuple[str, object]]:
    """(half, entry) alternating tune and test, each half shuffled with seed 0."""
    by_key = {e.key: e for e in entries}
    halves = {}
    for half in ("tune", "test"):
        keys = list(split[half])
        random.Random(0).shuffle(keys)
        halves[half] = keys
    out = []
    for i in range(max(len(v) for v in halves.values())):
        for half in ("tune", "test"):
            if i < len(halves[half]):
                out.append((half, by_key[halves[half][i]]))
    return out


def mean_log_eig(k: torch.Tensor) -> float:
    ev = torch.linalg.eigvalsh(0.5 * (k + k.T).double().cpu())
    if ev[0] <= ev[-1] * 1e-12:
        return math.nan
    return float(ev.log().mean())


def effective_rank(k: torch.Tensor) -> float:
    ev = torch.linalg.eigvalsh(0.5 * (k + k.T).double().cpu()).clamp_min(0)
    p = ev / ev.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def block_of(name: str) -> str:
    """``<block>/attn`` or ``<block>/mlp`` for a block's weight (``blocks.3.attn.qkv.weight`` ->
    ``blocks.3/attn``; PiT's ``stages.1.2.mlp.fc1.weight`` -> ``stages.1.2/mlp``), else the owner's name."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if p in ("attn", "mlp"):
            return ".".join(parts[:i]) + "/" + p
    return ".".join(parts[:-1])


def kernel_features(spec, images, seed: int) -> tuple[dict[str, float], dict[str, list[float]], torch.nn.Module]:
    """The search default's kernel for one initialisation, and its per-block pieces."""
    from pipeline.models import build_model
    from pipeline.proxies.ntk import NEGLIGIBLE_TRACE, disable_fused_attention, empirical_ntk

    model = disable_fused_attention(build_model(spec, seed=seed))
    grams: list = []
    k = empirical_ntk(model, images, params="weights", normalize=True, reduction="sum", seed=seed, grams_out=grams)
    traces = {name: float(g.trace()) for name, g in grams}
    floor = max(traces.values()) * NEGLIGIBLE_TRACE
    groups: dict[str, torch.Tensor] = {}
    for name, g in grams:
        if traces[name] > floor:
            key = block_of(name)
            groups[key] = groups.get(key, 0) + g / traces[name]
    blocks = sorted({g.split("/")[0] for g in groups if "/" in g})
    per_block = []
    for b in blocks:
        kb = sum(v for g, v in groups.items() if g.split("/")[0] == b)
        per_block.append(mean_log_eig(kb / kb.trace()))
    feats = {"kernel": mean_log_eig(k), "trace": float(k.trace()), "erank": effective_rank(k),
             "block_logdet": float(np.mean(per_block)) if per_block else math.nan}
    n = k.shape[0]
    iu = torch.triu_indices(n, n)
    return feats, {name: [round(float(x), 7) for x in g[iu[0], iu[1]]] for name, g in groups.items()}, model


def activation_pass(model: torch.nn.Module, images: torch.Tensor) -> tuple[float, list[float]]:
    """NASWOT (nan when its kernel is singular) and each block's token-feature effective rank
    (AZ-NAS's expressivity), from one forward pass."""
    from pipeline.proxies.baselines import naswot_score
    from pipeline.proxies.registry import InvalidScore

    feats: list[torch.Tensor] = []
    hooks = [blk.register_forward_hook(lambda m, a, out: feats.append(out.detach()))
             for blk in getattr(model, "blocks", [])]
    try:
        with torch.no_grad():
            naswot = naswot_score(model, images)
    except InvalidScore:
        naswot = math.nan
    finally:
        for h in hooks:
            h.remove()
    eranks = []
    for f in feats:
        x = f.reshape(-1, f.shape[-1]).double()
        x = x - x.mean(0)
        eranks.append(effective_rank(x.T @ x / x.shape[0]))
    return naswot, eranks


def activation_features(model: torch.nn.Module, images: torch.Tensor) -> dict[str, float]:
    naswot, eranks = activation_pass(model, images)
    return {"naswot": naswot, "expressivity": float(np.sum(eranks)) if eranks else math.nan,
            "expressivity_mean": float(np.mean(eranks)) if eranks else math.nan}


def structure(spec) -> dict[str, float]:
    from pipeline.models import count_flops, count_params
    from pipeline.models.complexity import autoformer_flops

    try:
        af = autoformer_flops(spec) / 1e6
    except ValueError:
        af = math.nan
    # weight tensors of linear and conv layers: patch conv + 4 per block (qkv, proj, fc1, fc2) + head (+ PiT pools)
    tensors = 2 + 4 * spec.depth + (2 * (len(spec.stage_depths) - 1) if spec.family == "pit" else 0)
    return {"params_m": count_params(spec) / 1e6, "flops_m": count_flops(spec) / 1e6, "af_flops_m": af,
            "depth": spec.depth, "embed_dim": spec.embed_dim, "mean_mlp": float(np.mean(spec.mlp_ratio)),
            "sum_heads": int(sum(spec.num_heads)), "n_weight_tensors": tensors}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--file", required=True, help="a file of ../shared/benchmarks/ (or a path)")
    ap.add_argument("--space", default=None, help="space of the benchmark JSON format")
    ap.add_argument("--limit-per-half", type=int, default=0, help="stop after this many of each half (0 = all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="", help="default: benchmarks/results/study_features_<stem>.csv")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from pipeline.data import probe_batch
    from pipeline.groundtruth import load_ground_truth, load_split, override_specs

    path = Path(args.file) if Path(args.file).is_file() else BENCH / args.file
    entries = override_specs(load_ground_truth(path, space=args.space), OVERRIDES.get(path.name, {}))
    split = load_split(REPO / "configs" / "correlate" / "splits" / f"{path.stem}.json")
    metrics = list(dict.fromkeys(m for e in entries for m in e.metrics))
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / f"study_features_{path.stem}.csv"
    grams_path = REPO / "checkpoints" / "study" / f"{path.stem}_grams.jsonl"
    grams_path.parent.mkdir(parents=True, exist_ok=True)
    cols = columns(metrics)
    done: set[str] = set()
    if out.is_file() and out.stat().st_size:
        data = out.read_bytes()
        if not data.endswith(b"\n"):                       # a row cut short by a kill: drop it
            out.write_bytes(data[: data.rfind(b"\n") + 1])
        rows = list(csv.DictReader(open(out, newline="")))
        done = {r["key"] for r in rows}
    todo = ordered(entries, split)
    if args.limit_per_half:
        count = {"tune": 0, "test": 0}
        kept = []
        for half, e in todo:
            count[half] += 1
            if count[half] <= args.limit_per_half:
                kept.append((half, e))
        todo = kept
    todo = [(h, e) for h, e in todo if e.key not in done]
    print(f"{path.name}: {len(done)} done, {len(todo)} to do -> {out}", flush=True)
    images, _ = probe_batch(8, 224, seed=0, source="photos")
    new = not out.is_file() or out.stat().st_size == 0
    with open(out, "a", newline="") as fh, open(grams_path, "a") as gh:
        writer = csv.DictWriter(fh, cols, lineterminator="\n")
        if new:
            writer.writeheader()
        t_start = time.perf_counter()
        for n, (half, e) in enumerate(todo):
            t0 = time.perf_counter()
            size = images if e.spec.img_size == 224 else probe_batch(8, e.spec.img_size, seed=0, source="photos")[0]
            row = {"file": path.name, "key": e.key, "half": half, **{f"gt_{m}": e.metrics.get(m, math.nan) for m in metrics},
                   **structure(e.spec)}
            groups_all = {}
            for s in SEEDS:
                feats, groups, model = kernel_features(e.spec, size, seed=s)
                row.update({f"{k}_s{s}": v for k, v in feats.items()})
                groups_all[s] = groups
                if s == 0:
                    row.update(activation_features(model, size))
                del model
            row["seconds"] = time.perf_counter() - t0
            writer.writerow({k: (repr(v) if isinstance(v, float) else v) for k, v in row.items()})
            fh.flush()
            os.fsync(fh.fileno())
            gh.write(json.dumps({"file": path.name, "key": e.key, "grams": groups_all}) + "\n")
            gh.flush()
            if n % 10 == 0 or n + 1 == len(todo):
                rate = (time.perf_counter() - t_start) / (n + 1)
                print(f"{n + 1}/{len(todo)} {e.key} ({half}) {row['seconds']:.1f} s; "
                      f"about {rate * (len(todo) - n - 1) / 60:.0f} min left", flush=True)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    raise SystemExit(main())
