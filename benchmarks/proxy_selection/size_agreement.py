"""Does a score agree with size across a whole space? Kendall tau of every candidate with log FLOPs.

The rule of issue 28 (docs/proxies.md, "Size agreement"): size is the strongest known signal in every
ViT space, so a score may reorder networks of similar size but must not overturn size where no ground
truth exists. A candidate whose Kendall tau with log FLOPs is below 0.8 over random networks of any
space preset (demo, AutoFormer-T/S/B, PiT-T) cannot be the search default.

Per preset, ``--per-space`` seeded random networks of the whole space (``SearchSpace.sample``, seed 0,
no limits), each scored with the features of the dev-file study (``benchmarks/proxy_selection/study_features.py``:
the ViNTK kernel at 3 initialisations, NASWOT, size), so each candidate of
``benchmarks/proxy_selection/study_candidates.py`` means here what it means on the dev files. The probe is the one the
preset's shipped search uses (Fashion-MNIST for the demo, natural photos otherwise), 8 images.
AutoFormer-S reads the 641 networks of its OoD-ViT-NAS dev file that ``study_features.py`` scored
(a uniform sample of the space, the same features) unless the CSV holds networks of its own.

Per-architecture values go to ``benchmarks/results/size_agreement.csv`` (long format: one row per
architecture and value, each architecture's rows appended at once under a lock and fsynced; a rerun
computes only what is missing). ``--shard i/n`` lets n processes share one space (one thread each is
the fastest use of a CPU's cores). The table goes to stdout and ``--out``.

    python benchmarks/proxy_selection/size_agreement.py --spaces autoformer_base --shard 0/2 --threads 1 &
    python benchmarks/proxy_selection/size_agreement.py --spaces autoformer_base --shard 1/2 --threads 1
    python benchmarks/proxy_selection/size_agreement.py --table-only --out docs/size_agreement.md
"""
from __future__ import annotations

import argparse
import csv
import fcntl
import json
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402
from study_candidates import arch_scores  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
SPACES = ("demo", "autoformer_tiny", "autoformer_small", "autoformer_base", "pit_tiny")
THRESHOLD = 0.8
CSV = REPO / "benchmarks" / "results" / "size_agreement.csv"
# Candidates shown: the kernel forms in the running for the default, the field's size-led scores, size.
SHOWN = ["vintk_flops", "log F + 0.75 kernel", "log F + 0.5 kernel", "log F + 0.25 kernel", "log F + 0.1 kernel",
         "kernel", "kernel - log T + log F", "block shape + log F", "log F + 0.25 (kernel - log T)",
         "naswot", "MLP units", "params"]


def specs_of(name: str, n: int) -> list:
    from pipeline.space import SearchSpace

    space = SearchSpace.load(name)
    rng = random.Random(0)
    return [space.sample(rng) for _ in range(n)]


def probe_source(name: str) -> str:
    import yaml

    from pipeline.resources import shipped

    path = shipped("configs", "search", f"{name}.yaml")
    return yaml.safe_load(path.read_text())["probe"]["source"] if path.is_file() else "photos"


# Presets whose random networks are those of a dev file, already scored by study_features.py with the
# same features: the preset -> that file's features. OoD-ViT-NAS sampled its 1,001 AutoFormer-S networks
# uniformly from the space (641 of them scored); for AutoFormer-T, the 100 networks of the ViT-Bench-101 file
# (the OoD-ViT-NAS AutoFormer-T file has only GPU estimates of the whole-network kernel, not the per-block
# features). Scoring 200 random networks of each here would cost ~2 CPU-hours per preset.
DEV_FEATURES = {
    "autoformer_tiny": REPO / "benchmarks" / "results" / "study_features_vitbench101_autoformer_tiny_kd.csv",
    "autoformer_small": REPO / "benchmarks" / "results" / "study_features_autoformer_small_ood_vit_nas.csv"}


def dev_rows(space: str) -> dict[tuple[str, int], dict[str, float]]:
    """The dev file's scored networks of ``space`` in read_rows' form (index: row order)."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    path = DEV_FEATURES.get(space)
    if path is None or not path.is_file():
        return out
    skip = {"file", "key", "half"}
    for i, r in enumerate(csv.DictReader(open(path, newline=""))):
        if r.get("kernel_s2") not in ("", None):
            out[(space, i)] = {k: float(v) for k, v in r.items() if k not in skip and not k.startswith("gt_") and v != ""}
    return out


def read_rows(path: Path) -> dict[tuple[str, int], dict[str, float]]:
    """(space, index) -> {name: value}; a line cut short by a kill is ignored (and rewritten). Presets
    with dev-file features (DEV_FEATURES) and no rows of their own read those."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    if not path.is_file():
        return out
    for r in csv.DictReader(open(path, newline="")):
        if None in r.values() or r["name"] == "spec":
            continue
        try:
            out.setdefault((r["space"], int(r["index"])), {})[r["name"]] = float(r["value"])
        except ValueError:
            continue
    for space in DEV_FEATURES:
        if not any(s == space for s, _ in out):
            out.update(dev_rows(space))
    return out


def append(path: Path, rows: list[list]) -> None:
    """One architecture's rows in one locked, fsynced write (several shards share the file)."""
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_size == 0:
            os.write(fd, b"space,index,name,value\n")
        else:                               # a row cut short by a kill: start on a fresh line
            with open(path, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    os.write(fd, b"\n")
        os.write(fd, buf.getvalue().encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def score_space(name: str, n: int, shard: tuple[int, int], path: Path) -> None:
    from study_features import activation_features, kernel_features, structure

    from pipeline.data import probe_batch
    from pipeline.models import count_mlp_units

    done = read_rows(path)
    specs = specs_of(name, n)
    mine = [i for i in range(n) if i % shard[1] == shard[0] and "kernel_s2" not in done.get((name, i), {})]
    images, _ = probe_batch(8, specs[0].img_size, seed=0, source=probe_source(name))
    print(f"{name}: {n} networks, shard {shard[0]}/{shard[1]}: {len(mine)} to score", flush=True)
    t0 = time.perf_counter()
    for k, i in enumerate(mine):
        spec = specs[i]
        row = {**structure(spec), "n_units": count_mlp_units(spec)}
        for s in (0, 1, 2):
            feats, _, model = kernel_features(spec, images, seed=s)
            row.update({f"{key}_s{s}": v for key, v in feats.items()})
            if s == 0:
                row.update(activation_features(model, images))
            del model
        append(path, [[name, i, "spec", json.dumps(spec.to_dict())]]
               + [[name, i, key, repr(float(v))] for key, v in row.items()])
        if k % 10 == 0 or k + 1 == len(mine):
            rate = (time.perf_counter() - t0) / (k + 1)
            print(f"  {name} {k + 1}/{len(mine)}: {rate:.1f} s per network, about "
                  f"{rate * (len(mine) - k - 1) / 60:.0f} min left", flush=True)


def agreement(rows: dict, name: str) -> tuple[int, dict[str, float]]:
    """Per candidate, Kendall tau with log FLOPs over the preset's scored networks."""
    from pipeline.metrics import kendall_tau

    feats = [r for (s, _), r in sorted(rows.items()) if s == name and "kernel_s2" in r]
    if not feats:
        return 0, {}
    scores = [arch_scores(f) for f in feats]
    log_f = np.log([f["flops_m"] for f in feats])
    out = {}
    for c in scores[0]:
        v = np.array([s[c] for s in scores], dtype=float)
        ok = np.isfinite(v)
        out[c] = kendall_tau(v[ok], log_f[ok]) if ok.sum() > 2 else math.nan
    return len(feats), out


def table(rows: dict, spaces: list[str], shown: list[str]) -> str:
    res = {s: agreement(rows, s) for s in spaces}
    spaces = [s for s in spaces if res[s][0]]
    lines = [f"Kendall tau with log FLOPs over random networks of each preset (rule: at least {THRESHOLD} on every "
             "preset; **bold**: below it).", "",
             "| score | " + " | ".join(f"{s} (n={res[s][0]})" for s in spaces) + " | worst | passes |",
             "|---|" + "---:|" * (len(spaces) + 2)]
    for c in shown:
        vals = [res[s][1].get(c, math.nan) for s in spaces]
        worst = min(vals) if vals else math.nan
        cells = [("nan" if math.isnan(v) else (f"**{v:.2f}**" if v < THRESHOLD else f"{v:.2f}")) for v in vals]
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {worst:.2f} | {'yes' if worst >= THRESHOLD else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--spaces", nargs="+", default=list(SPACES), choices=SPACES)
    ap.add_argument("--per-space", type=int, default=200)
    ap.add_argument("--shard", default="0/1", help="i/n: score every n-th network starting at i")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--csv", type=Path, default=CSV)
    ap.add_argument("--table-only", action="store_true", help="print the table of what the CSV holds")
    ap.add_argument("--scores", nargs="+", default=SHOWN, help="candidates of study_candidates.py to show")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    try:
        shard = tuple(int(x) for x in args.shard.split("/"))
        assert len(shard) == 2 and 0 <= shard[0] < shard[1]
    except (ValueError, AssertionError):
        ap.error(f"--shard {args.shard!r}: give i/n with 0 <= i < n, e.g. 0/2")
    if not args.table_only:
        import torch

        torch.set_num_threads(args.threads)
        for name in args.spaces:
            score_space(name, args.per_space, shard, args.csv)
    return publish(table(read_rows(args.csv), args.spaces, args.scores), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
