"""Which score should the search use? Mean regret on the tune halves of the three dev files.

The protocol of issue 21: a candidate's criterion is its **mean regret** under the committed params
budgets of each dev file (``budgets_m`` in ``configs/correlate/splits/<stem>.json``): the true
accuracy of the best network within the budget minus that of the candidate's top pick (ties count
as their mean, as ``correlate``). Per file it is averaged over the budgets and the file's metric
columns, then over the three files (each file counts once: ViT-Bench-101's three columns share one
weight). Ties are broken by band tau (Kendall tau within 5 equal-count params bands). The choice is
made on the tune halves only; the test halves are reported.

Inputs, all committed under ``benchmarks/results/``:

* ``study_features_<stem>.csv`` (``benchmarks/proxy_selection/study_features.py``): per architecture, the features
  every candidate is computed from (``benchmarks/proxy_selection/study_candidates.py``), exactly as the shipped
  proxies compute them;
* ``proxy_scores_dev.csv`` (issue 10's GPU study) for tiny-file architectures the first lacks (its
  kernel comes from a two-view normalisation: an estimate of the shipped kernel term);
* ``--extra CSV`` files with columns ``file`` (the ground-truth file name), ``key`` and any numeric
  score columns (higher = better), e.g. AZ-NAS's components and L-SWAG from issue 21's other half;
  ``--aggregate "name=col1+col2"`` adds a rank aggregation of such columns.

    python benchmarks/proxy_selection/regret_study.py --out docs/regret_study.md [--extra benchmarks/results/aznas.csv]
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402
from study_candidates import arch_scores, population_scores  # noqa: E402

from pipeline.correlate.statistics import top_pick  # noqa: E402
from pipeline.groundtruth import load_budgets, load_ground_truth, load_split  # noqa: E402
from pipeline.models import count_mlp_units  # noqa: E402
from pipeline.metrics import banded_kendall_tau, kendall_tau  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "benchmarks" / "results"
BENCH = REPO.parent / "shared" / "benchmarks"
FILES = {  # ground-truth file -> (short name, metric columns, tag in proxy_scores_dev.csv, space)
    "autoformer_tiny_ood_vit_nas.json": ("OoD-T", ["top1"], "ood", "autoformer_tiny"),
    "vitbench101_autoformer_tiny_kd.jsonl": ("VB101", ["cifar100_kd", "flowers102_kd", "chaoyang_kd"], "vb101", None),
    "autoformer_small_ood_vit_nas.json": ("OoD-S", ["top1"], None, "autoformer_small"),
}
BASELINES = {"params": "#params (= largest that fits by params)", "flops": "FLOPs (= largest that fits by FLOPs)"}


def _num(v: str) -> float:
    return float(v) if v not in ("", None) else math.nan


def load_features(name: str, tag: str | None) -> dict[str, dict[str, float]]:
    """Per key, the feature row: exact (study_features) first, the GPU study's estimate otherwise."""
    rows: dict[str, dict] = {}
    if tag is not None and (RESULTS / "proxy_scores_dev.csv").is_file():
        for r in csv.DictReader(open(RESULTS / "proxy_scores_dev.csv")):
            if r["file"] != tag:
                continue
            rows[r["key"]] = {"source": "estimate", "params_m": _num(r["params"]), "flops_m": _num(r["flops"]),
                              "depth": _num(r["depth"]), "n_weight_tensors": _num(r["n_weight_tensors"]),
                              "kernel_s0": _num(r["vintk_identity_3seeds"]), "block_logdet_s0": _num(r["block_logdet"]),
                              "naswot": _num(r["naswot"]), "expressivity": _num(r["expressivity"]),
                              **{k: _num(v) for k, v in r.items() if k.startswith("gt_")}}
    path = RESULTS / f"study_features_{Path(name).stem}.csv"
    if path.is_file():
        for r in csv.DictReader(open(path)):
            rows[r["key"]] = {"source": "exact", **{k: _num(v) for k, v in r.items() if k not in ("file", "key", "half")}}
    return rows


def load_extra(paths: list[str]) -> dict[tuple[str, str], dict[str, float]]:
    out: dict[tuple[str, str], dict[str, float]] = {}
    for p in paths:
        for r in csv.DictReader(open(p)):
            file = r["file"] if r["file"] in FILES else next((f for f in FILES if Path(f).stem == r["file"]), r["file"])
            out.setdefault((file, r["key"]), {}).update(
                {k: _num(v) for k, v in r.items() if k not in ("file", "key", "half") and not k.startswith("gt_")})
    return out


def evaluate(scores: dict[str, np.ndarray], truth: np.ndarray, params: np.ndarray, budgets: list[float],
             with_tau: bool = True) -> dict:
    out = {}
    for name, v in scores.items():
        ok = np.isfinite(v)
        regrets = []
        for b in budgets:
            under = params <= b
            best, _ = top_pick(truth, truth, under)
            pick, _ = top_pick(v, truth, under)
            regrets.append(best - pick)
        out[name] = {"tau": kendall_tau(v[ok], truth[ok]),
                     "band": banded_kendall_tau(v[ok], truth[ok], params[ok], 5)[0],
                     "regrets": regrets, "regret": float(np.mean(regrets))}
    return out


def study(extra_paths: list[str], aggregates: dict[str, tuple[str, ...]]) -> tuple[dict, dict, dict]:
    """results[half][file][metric][candidate], per (file, half) what was scored, and the data
    (per-architecture candidate values, truth, params, budgets) for the bootstrap."""
    extra = load_extra(extra_paths)
    results: dict = {"tune": {}, "test": {}}
    info: dict = {}
    data: dict = {}
    for name, (short, metrics, tag, space) in FILES.items():
        split_path = REPO / "configs" / "correlate" / "splits" / f"{Path(name).stem}.json"
        halves, budgets = load_split(split_path), load_budgets(split_path)
        feats = load_features(name, tag)
        for e in load_ground_truth(BENCH / name, space=space):   # what the features need from the spec
            if e.key in feats:
                feats[e.key]["n_units"] = count_mlp_units(e.spec)
        for half in ("tune", "test"):
            keys = [k for k in halves[half] if k in feats]
            if not keys:
                continue
            table = [{**arch_scores(feats[k]), **extra.get((name, k), {})} for k in keys]
            names = list(dict.fromkeys(n for t in table for n in t))
            base = {n: np.array([t.get(n, math.nan) for t in table], dtype=float) for n in names}
            base = {n: v for n, v in base.items() if np.isfinite(v).all()}   # a candidate must score every network
            cols = {**base, **population_scores(base, aggregates)}
            params = np.array([feats[k]["params_m"] for k in keys])
            sources = {feats[k]["source"] for k in keys}
            info[(name, half)] = {"n": len(keys), "of": len(halves[half]), "budgets": budgets,
                                  "source": "/".join(sorted(sources)),
                                  "n_under": [int((params <= b).sum()) for b in budgets]}
            truth = {m: np.array([feats[k][f"gt_{m}"] for k in keys]) for m in metrics}
            data[(name, half)] = {"base": base, "truth": truth, "params": params, "budgets": budgets}
            for m in metrics:
                results[half].setdefault(name, {})[m] = evaluate(cols, truth[m], params, budgets)
    return results, info, data


def bootstrap(data: dict, half: str, aggregates: dict, chosen: str, others: list[str], rounds: int = 300,
              seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """How sure is "chosen has a lower mean regret than X"? Resample each file-half's architectures
    with replacement (population candidates re-ranked on the resample), recompute the three-file mean
    regret of both: per X, (mean of X - chosen, its standard deviation, share of resamples where
    chosen is lower)."""
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {o: [] for o in others}
    for _ in range(rounds):
        per_file: dict[str, list[float]] = {c: [] for c in [chosen, *others]}
        for (name, h), d in data.items():
            if h != half:
                continue
            idx = rng.integers(0, len(d["params"]), len(d["params"]))
            base = {n: v[idx] for n, v in d["base"].items()}
            cols = {**base, **population_scores(base, aggregates)}
            for c in per_file:
                regrets = [r for m, truth in d["truth"].items()
                           for r in evaluate({c: cols[c]}, truth[idx], d["params"][idx], d["budgets"], False)[c]["regrets"]]
                per_file[c].append(float(np.mean(regrets)))
        for o in others:
            diffs[o].append(float(np.mean(per_file[o]) - np.mean(per_file[chosen])))
    return {o: (float(np.mean(v)), float(np.std(v)), float(np.mean(np.array(v) > 0))) for o, v in diffs.items()}


def criterion(results: dict, half: str) -> dict[str, tuple[float, float, dict]]:
    """Per candidate scored on every file of the half: (mean regret, mean band tau, per-file values)."""
    out = {}
    files = list(results[half])
    if not files:
        return out
    common = set.intersection(*(set(results[half][f][m]) for f in files for m in results[half][f]))
    for c in common:
        per_file = {}
        for f in files:
            cols = results[half][f]
            per_file[f] = {k: float(np.mean([cols[m][c][k] for m in cols])) for k in ("regret", "tau", "band")}
        out[c] = (float(np.mean([v["regret"] for v in per_file.values()])),
                  float(np.mean([v["band"] for v in per_file.values()])), per_file)
    return out


# Candidates that joined after a look at both halves (MLP units: found by splitting NASWOT into its
# terms on both halves). Shown and labelled, but the protocol does not choose them.
POST_HOC = {"MLP units"}


def label(c: str) -> str:
    return BASELINES.get(c, c) + (" (post hoc: not eligible)" if c in POST_HOC else "")


SUMMARY = ["vintk_flops", "params", "flops", "naswot", "MLP units", "kernel - log T + log F", "block shape + log F",
           "rank[flops, naswot]"]


def per_file(results: dict, half: str, c: str, f: str) -> dict[str, float] | None:
    """Candidate ``c`` on file ``f``: regret, tau and band tau averaged over the file's metric columns
    (None where ``c`` did not score every network of the file's half)."""
    cols = results[half].get(f, {})
    if not cols or any(c not in res for res in cols.values()):
        return None
    return {k: float(np.mean([cols[m][c][k] for m in cols])) for k in ("regret", "tau", "band")}


def summary(results: dict, tune: dict, test: dict, files: list[str], rows: list[str]) -> list[str]:
    """The docs table: per half, each file's tau / band tau / mean regret, and the three-file mean regret.
    A candidate scored on only some files (an expensive proxy still being computed) is shown on those,
    with "-" elsewhere and no three-file mean: it cannot be compared on the criterion."""
    lines = []
    for half, res in (("tune", tune), ("test", test)):
        lines += ["", f"**{half} half**" + (" (the choice is made here: in-sample)" if half == "tune" else " (reported)"), "",
                  "| score | mean regret | " + " | ".join(f"{FILES[f][0]} tau / band tau / regret" for f in files) + " |",
                  "|---|---:|" + "---|" * len(files)]
        for c in rows:
            if c in res:
                lines.append(f"| {label(c)} | {res[c][0]:.3f} | " + " | ".join(
                    f"{res[c][2][f]['tau']:.3f} / {res[c][2][f]['band']:.3f} / {res[c][2][f]['regret']:.3f}"
                    for f in files) + " |")
                continue
            cells = {f: per_file(results, half, c, f) for f in files}
            if any(cells.values()):
                lines.append(f"| {label(c)} | - ({sum(1 for v in cells.values() if v)} of {len(files)} files) | "
                             + " | ".join(f"{v['tau']:.3f} / {v['band']:.3f} / {v['regret']:.3f}" if v else "-"
                                          for v in cells.values()) + " |")
    return lines


def report(results: dict, info: dict, top: int, extra_rows: list[str] = ()) -> tuple[str, list[str]]:
    tune, test = criterion(results, "tune"), criterion(results, "test")
    order = sorted(tune, key=lambda c: (round(tune[c][0], 3), -tune[c][1]))
    # a candidate added after both halves were read may be shown, never chosen by the protocol
    order = [c for c in order if c not in POST_HOC] + [c for c in order if c in POST_HOC]
    chosen = order[0] if order else None
    files = [f for f in FILES if f in results["tune"]]
    lines = ["## Summary", "", "Mean regret (accuracy points): over the budgets and a file's metric columns, then "
             "over the three files. The chosen score first, then the runner-up, today's and the baselines."]
    lines += summary(results, tune, test, files, list(dict.fromkeys([*order[:2], *SUMMARY, *extra_rows])))
    lines += ["", "## Scored architectures", "",
             "| file | half | scored | budgets (M params) | networks within each budget | features |",
             "|---|---|---:|---|---|---|"]
    for (f, half), d in info.items():
        lines.append(f"| {FILES[f][0]} | {half} | {d['n']} of {d['of']} | {', '.join(f'{b:g}' for b in d['budgets'])} | "
                     f"{', '.join(map(str, d['n_under']))} | {d['source']} |")
    head = " | ".join(f"{FILES[f][0]} regret / tau / band" for f in files)
    lines += ["", "## Candidates: mean regret (criterion), tau and band tau, per half", "",
              "Mean regret: over the budgets and the file's metric columns, then over the files. "
              "Sorted by the tune criterion (ties: band tau). The test columns are reported, not used.", "",
              f"| candidate | tune mean regret | tune mean band tau | {head} | test mean regret | test mean band tau | "
              + " | ".join(f"test {FILES[f][0]} regret / tau / band" for f in files) + " |",
              "|---|---:|---:|" + "---|" * len(files) + "---:|---:|" + "---|" * len(files)]
    for c in order[:top] + [c for c in ("vintk_flops", "params", "flops", "naswot") if c in order[top:]]:
        cells = [f"{tune[c][2][f]['regret']:.3f} / {tune[c][2][f]['tau']:.3f} / {tune[c][2][f]['band']:.3f}"
                 for f in files]
        t = test.get(c)
        tcells = [f"{t[2][f]['regret']:.3f} / {t[2][f]['tau']:.3f} / {t[2][f]['band']:.3f}" if t and f in t[2] else "-"
                  for f in files]
        mark = "**" if c == chosen else ""
        tail = f"{t[0]:.3f} | {t[1]:.3f} | " + " | ".join(tcells) if t else "- | - | " + " | ".join(tcells)
        lines.append(f"| {mark}{label(c)}{mark} | {tune[c][0]:.3f} | {tune[c][1]:.3f} | " + " | ".join(cells)
                     + f" | {tail} |")
    shown = list(dict.fromkeys([chosen, "vintk_flops", "params", "flops", "naswot"]))
    for half in ("tune", "test"):
        lines += ["", f"## Regret per file, column and budget ({half} half)", "",
                  "| file | column | budget (M) | " + " | ".join(label(c) for c in shown if c) + " |",
                  "|---|---|---:|" + "---:|" * len([c for c in shown if c])]
        for f, cols in results[half].items():
            budgets = info[(f, half)]["budgets"]
            for m, res in cols.items():
                for i, b in enumerate(budgets):
                    lines.append(f"| {FILES[f][0]} | {m} | {b:g} | "
                                 + " | ".join(f"{res[c]['regrets'][i]:.2f}" if c in res else "-" for c in shown if c) + " |")
                lines.append(f"| {FILES[f][0]} | {m} | mean | "
                             + " | ".join(f"**{res[c]['regret']:.3f}**" if c in res else "-" for c in shown if c) + " |")
    return "\n".join(lines) + "\n", order


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extra", action="append", default=[], help="CSV of extra per-architecture scores")
    ap.add_argument("--aggregate", action="append", default=[], help='rank aggregation "name=col1+col2"')
    ap.add_argument("--top", type=int, default=25, help="candidates shown in the main table")
    ap.add_argument("--rounds", type=int, default=300, help="bootstrap resamples (0: none)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    aggregates = {a.split("=", 1)[0]: tuple(a.split("=", 1)[1].split("+")) for a in args.aggregate}
    results, info, data = study(args.extra, aggregates)
    extra_cols = [c for p in args.extra for c in next(csv.reader(open(p))) if c not in ("file", "key", "half")
                  and not c.startswith("gt_")]
    text, order = report(results, info, args.top, [*extra_cols, *aggregates])
    chosen = order[0]
    text = (f"# Regret study (generated by benchmarks/proxy_selection/regret_study.py)\n\nChosen on the tune halves: "
            f"**{label(chosen)}**\n\n" + text)
    if args.rounds:
        others = [c for c in dict.fromkeys(("params", "flops", "vintk_flops", order[1])) if c != chosen]  # + runner-up
        lines = ["", f"## How sure: paired bootstrap over architectures ({args.rounds} resamples per half)", "",
                 "Mean regret of each baseline minus the chosen candidate's (positive: the chosen one is better), "
                 "its standard deviation over resamples, and the share of resamples where the chosen one is better.",
                 "", "| half | against | difference | sd | share better |", "|---|---|---:|---:|---:|"]
        for half in ("tune", "test"):
            for o, (mean, sd, share) in bootstrap(data, half, aggregates, chosen, others, args.rounds).items():
                lines.append(f"| {half} | {label(o)} | {mean:+.3f} | {sd:.3f} | {share:.2f} |")
        text += "\n".join(lines) + "\n"
    return publish(text, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
