"""The pipeline's promise, measured end to end on the demo: does the searched network retrain better
than the obvious choice?

Under the demo search's budget (configs/search/demo.yaml: at most 0.8 M params, 25 M multiply-adds),
four networks are retrained with the full demo recipe (`train --task cls`, 40 epochs) on several
training seeds:

* **pick**: what `python -m pipeline search` (the shipped default) chooses;
* **largest**: the largest network that fits, by params (ties: more FLOPs, then larger MLP ratios
  first; 4 heads per layer, which changes neither params nor FLOPs in the demo space) -- what a user
  takes without searching;
* **random1**, **random2**: two networks drawn uniformly within the budget (seeds 1 and 2).

Every run is an ordinary `python -m pipeline train` in its own folder under ``--out``; rerunning the
script skips finished runs and resumes an interrupted one (``--resume``). Results: the table on
stdout, ``benchmarks/results/end_to_end.csv`` (one row per run), ``docs/end_to_end.md`` (the table) and
``docs/img/end_to_end.png``.

    python benchmarks/end_to_end.py [--out checkpoints/end_to_end] [--seeds 0 1 2] [--threads 2] [--networks ...]
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.models.complexity import complexity  # noqa: E402
from pipeline.space import ArchSpec, Limits, SearchSpace  # noqa: E402
from pipeline.utils.io import atomic_write, atomic_write_text  # noqa: E402

NAMES = ("pick", "largest", "random1", "random2")


def largest_that_fits(space: SearchSpace, limits: Limits) -> ArchSpec:
    """The most parameters within ``limits`` (exhaustive over width, depth and per-layer MLP ratios)."""
    best, best_key = None, None
    heads = max(space.num_heads.values)
    for embed in space.embed_dim:
        for depths in itertools.product(*space.stage_depths):
            depth = sum(depths)
            for mlps in itertools.product(sorted(space.mlp_ratio.values, reverse=True), repeat=depth):
                spec = space.make_spec(embed, depths, [heads] * depth, mlps)
                params, macs = complexity(spec)
                if not limits.admits(params / 1e6, macs / 1e6):
                    continue
                key = (params, macs, mlps)
                if best_key is None or key > best_key:
                    best, best_key = spec, key
    return best


def pipeline(*args: str, threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled"}
    cmd = [sys.executable, "-m", "pipeline", *args]
    print("$ python -m pipeline " + " ".join(args), flush=True)
    subprocess.run(cmd, cwd=REPO, env=env, check=True)


def networks(out: Path, threads: int) -> dict[str, ArchSpec]:
    import yaml

    cfg = yaml.safe_load((REPO / "configs/search/demo.yaml").read_text())
    space, limits = SearchSpace.load(cfg["space"]), Limits.of_space(cfg["limits"])
    if not (out / "search" / "arch.yaml").is_file():
        pipeline("search", f"--out_dir={out}", "--run_name=search", "--wandb.mode=disabled", threads=threads)
    nets = {"pick": ArchSpec.load(out / "search" / "arch.yaml"), "largest": largest_that_fits(space, limits)}
    for i in (1, 2):
        rng = random.Random(i)
        spec = space.sample_within(rng, limits)
        while spec in nets.values():
            spec = space.sample_within(rng, limits)
        nets[f"random{i}"] = spec
    for name, spec in nets.items():
        path = out / f"arch-{name}.yaml"
        if not path.is_file():
            spec.save(path)
    return nets


def train(out: Path, name: str, seed: int, threads: int) -> dict:
    run = out / f"cls-{name}-s{seed}"
    if not (run / "metrics.json").is_file():
        resume = ["--resume"] if (run / "last.ckpt").is_file() else []
        pipeline("train", "--task", "cls", f"--arch={out / f'arch-{name}.yaml'}", f"--seed_everything={seed}",
                 f"--out_dir={out}", f"--run_name={run.name}", "--wandb.mode=disabled",
                 "--trainer.enable_progress_bar=false", *resume, threads=threads)
    return json.loads((run / "metrics.json").read_text())


def write_outputs(rows: list[dict], nets: dict[str, ArchSpec], seeds: list[int]) -> None:
    header = ["network", "arch", "params_m", "flops_m", "seed", "top1", "wall_min"]
    atomic_write_text(REPO / "benchmarks/results/end_to_end.csv",
                      "\n".join([",".join(header)] + [",".join(str(r[h]) for h in header) for r in rows]) + "\n")
    lines = ["| network | architecture | params | FLOPs (MACs) | " + " | ".join(f"seed {s}" for s in seeds)
             + " | mean | spread (sd) |", "|---|---|---:|---:|" + "---:|" * (len(seeds) + 2)]
    stats = {}
    for name in NAMES:
        mine = [r for r in rows if r["network"] == name]
        if not mine:
            continue
        acc = {r["seed"]: r["top1"] for r in mine}
        vals = list(acc.values())
        stats[name] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else float("nan"), vals)
        spec = nets[name]
        lines.append(f"| {name} | `{spec.short()}` | {mine[0]['params_m']:.3f} M | {mine[0]['flops_m']:.1f} M | "
                     + " | ".join(f"{acc[s]:.2f}" if s in acc else "-" for s in seeds)
                     + f" | **{stats[name][0]:.2f}** | {stats[name][1]:.2f} |")
    print("\n".join(lines))
    done = sum(len(v[2]) for v in stats.values())
    verdict = []
    if "pick" in stats and "largest" in stats:   # the user's question: is the pick better than the largest that fits?
        pick = {r["seed"]: r["top1"] for r in rows if r["network"] == "pick"}
        largest = {r["seed"]: r["top1"] for r in rows if r["network"] == "largest"}
        both = sorted(set(pick) & set(largest))
        wins = sum(pick[s] > largest[s] for s in both)
        diff = stats["pick"][0] - stats["largest"][0]
        verdict = [f"**The pick against the largest that fits: {diff:+.2f} points** (mean over its seeds); the pick "
                   f"is better on {wins} of the {len(both)} seeds both were trained with. "
                   + ("On the demo, the search's pick is not better than the largest network that fits." if diff <= 0
                      else "On the demo, the search's pick beats the largest network that fits."), ""]
    doc = ["# End to end: the search's pick against the largest network that fits (demo)", "",
           "Written by `python benchmarks/end_to_end.py` (rerun it to refresh; finished runs are kept). Under the "
           "demo search's budget (at most 0.8 M params and 25 M multiply-adds), each network is retrained with the "
           "full demo recipe (`python -m pipeline train --task cls`: 40 epochs on 5,000 Fashion-MNIST images) "
           "once per training seed; the cell is the validation top-1 (%) of the best checkpoint, as `train` "
           "reports it, on the 1,000 validation images (one accuracy has a standard error of about 1.1 points).", "",
           "* **pick**: the shipped search's choice (`python -m pipeline search`, its default proxy and seed);",
           "* **largest**: the network with the most parameters that fits (what a user takes without searching);",
           "* **random1 / random2**: drawn uniformly within the budget (seeds 1 and 2).", "",
           *lines, "", *verdict, f"{done} of {len(NAMES) * len(seeds)} runs finished.", "",
           "![pick vs largest vs random](img/end_to_end.png)", ""]
    atomic_write_text(REPO / "docs/end_to_end.md", "\n".join(doc))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, (mean, _, vals)) in enumerate(stats.items()):
        ax.scatter([i] * len(vals), vals, color="tab:blue", alpha=0.6, label="one training seed" if i == 0 else None)
        ax.scatter([i], [mean], color="tab:red", marker="_", s=400, label="mean" if i == 0 else None)
    ax.set_xticks(range(len(stats)), [f"{n}\n{nets[n].short()}" for n in stats], fontsize=7)
    ax.set_ylabel("val top-1 (%), 40 epochs")
    ax.set_title("Demo: search pick vs the largest that fits vs random")
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(REPO / "docs/img/end_to_end.png", lambda p: fig.savefig(p, format="png"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "checkpoints" / "end_to_end")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--networks", nargs="+", choices=NAMES, default=list(NAMES),
                    help="train only these (the table shows every finished run)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    nets = networks(args.out, args.threads)
    rows = []
    for seed in args.seeds:   # seed-major: a stopped run has every network on the first seeds
        for name in NAMES:
            run = args.out / f"cls-{name}-s{seed}"
            if name not in args.networks and not (run / "metrics.json").is_file():
                continue
            start = time.time()
            m = train(args.out, name, seed, args.threads)
            params, macs = complexity(nets[name])
            rows.append({"network": name, "arch": nets[name].short(), "params_m": round(params / 1e6, 4),
                         "flops_m": round(macs / 1e6, 2), "seed": seed, "top1": round(100 * m["val/top1"], 2),
                         "wall_min": round(m.get("wall_time_s", time.time() - start) / 60, 1)})
            write_outputs(rows, nets, args.seeds)


if __name__ == "__main__":
    main()
