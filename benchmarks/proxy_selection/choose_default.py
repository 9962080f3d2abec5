"""Which ViNTK form is the search default? Issue 28's rule, applied to the study's numbers.

The rule, fixed before the comparison (docs/proxies.md, "The default: a ViNTK form that agrees with
size"):

1. **Eligible**: a form of the ViNTK kernel together with size (the kernel term of ``vintk_flops``,
   with or without its depth count, per block or whole, and log FLOPs), per architecture or as a
   rank aggregation. Other scores (NASWOT, size alone, aggregations with NASWOT) are shown for
   reference only.
2. **Agrees with size on every preset**: Kendall tau with log FLOPs >= 0.8 over the random
   networks of each space preset (``size_agreement.py``): size is the strongest known signal in
   every ViT space, so a proxy may reorder networks of similar size but must not overturn it.
3. Among those, the **lowest mean regret on the tune halves** of the three dev files
   (``regret_study.py``'s criterion; ties: band tau). The test halves are reported, never read.

    python benchmarks/proxy_selection/choose_default.py [--out docs/default_choice.md]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import publish  # noqa: E402
from regret_study import bootstrap, criterion, label, study  # noqa: E402
from size_agreement import CSV, SPACES, THRESHOLD, read_rows  # noqa: E402
from study_candidates import KERNEL_WEIGHTS, TIE_WEIGHTS, arch_scores, population_scores  # noqa: E402

ELIGIBLE = ["vintk_flops", *(f"log F + {w:g} kernel" for w in KERNEL_WEIGHTS), "kernel - log T + log F",
            *(f"log F + {w:g} (kernel - log T)" for w in TIE_WEIGHTS[:-1]), "block shape + log F",
            *(f"log F + {w:g} block shape" for w in TIE_WEIGHTS[:-1]),
            "rank[flops, kernel - log T]", "rank[flops, block shape]"]
REFERENCE = ["naswot", "rank[flops, naswot]", "rank[flops, kernel - log T, naswot]", "MLP units", "flops", "params"]


def size_agreement(path: Path) -> dict[str, dict[str, float]]:
    """candidate -> preset -> Kendall tau with log FLOPs (population forms ranked within the preset)."""
    from pipeline.metrics import kendall_tau

    rows = read_rows(path)
    out: dict[str, dict[str, float]] = {}
    for space in SPACES:
        feats = [r for (s, _), r in sorted(rows.items()) if s == space and "kernel_s2" in r]
        if not feats:
            continue
        per_arch = [arch_scores(f) for f in feats]
        table = {c: np.array([a[c] for a in per_arch], dtype=float) for c in per_arch[0]}
        table.update(population_scores({c: v for c, v in table.items() if np.isfinite(v).all()}))
        log_f = np.log([f["flops_m"] for f in feats])
        for c, v in table.items():
            ok = np.isfinite(v)
            out.setdefault(c, {})[space] = kendall_tau(v[ok], log_f[ok]) if ok.sum() > 2 else math.nan
        out.setdefault("_n", {})[space] = len(feats)
    return out


def decide(path: Path, rounds: int = 300) -> tuple[str, list[str]]:
    results, _, data = study([], {})
    tune, test = criterion(results, "tune"), criterion(results, "test")
    agree = size_agreement(path)
    spaces = [s for s in SPACES if s in agree.get("_n", {})]
    passing = [c for c in ELIGIBLE if c in tune and all(agree.get(c, {}).get(s, -1) >= THRESHOLD for s in spaces)]
    chosen = min(passing, key=lambda c: (round(tune[c][0], 3), -tune[c][1])) if passing else None
    lines = ["Size agreement: Kendall tau with log FLOPs over the networks of each preset (seeded random draws; "
             "AutoFormer-T: the ViT-Bench-101 file's, AutoFormer-S: the OoD-ViT-NAS file's; n = "
             + ", ".join(f"{s} {agree['_n'][s]}" for s in spaces) + f"); **bold** below {THRESHOLD}. Regret: mean over "
             "the budgets and columns of each dev file, then over the three files (accuracy points; tune: where the "
             "choice is made, in-sample; test: reported).", "",
             "| score | eligible | " + " | ".join(spaces) + " | passes | tune regret | tune band tau | test regret |",
             "|---|---|" + "---:|" * len(spaces) + "---|---:|---:|---:|"]
    for c in [*ELIGIBLE, *REFERENCE]:
        if c not in tune:
            continue
        taus = [agree.get(c, {}).get(s, math.nan) for s in spaces]
        cells = [("-" if math.isnan(t) else (f"**{t:.2f}**" if t < THRESHOLD else f"{t:.2f}")) for t in taus]
        ok = all(t >= THRESHOLD for t in taus)
        name = f"**{label(c)}** (chosen)" if c == chosen else label(c)
        lines.append(f"| {name} | {'yes' if c in ELIGIBLE else 'no (reference)'} | " + " | ".join(cells)
                     + f" | {'yes' if ok else 'no'} | {tune[c][0]:.3f} | {tune[c][1]:.3f} | "
                     + (f"{test[c][0]:.3f}" if c in test else "-") + " |")
    lines += ["", f"Chosen by the rule: **{label(chosen)}**." if chosen else
              "No eligible form passes: by the rule, size with the kernel as a tie-break is the default."]
    if chosen and rounds:
        others = [c for c in ("flops", "params", "vintk_flops", "naswot") if c != chosen]
        lines += ["", f"How sure (paired bootstrap over the architectures of each half, {rounds} resamples): mean regret "
                  "of each alternative minus the chosen score's (positive: the chosen one is better), its sd, and the "
                  "share of resamples where the chosen one is better.", "",
                  "| half | against | difference | sd | share better |", "|---|---|---:|---:|---:|"]
        for half in ("tune", "test"):
            for o, (mean, sd, share) in bootstrap(data, half, {}, chosen, others, rounds).items():
                lines.append(f"| {half} | {label(o)} | {mean:+.3f} | {sd:.3f} | {share:.2f} |")
    return chosen, lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--csv", type=Path, default=CSV, help="size_agreement.py's per-architecture values")
    ap.add_argument("--rounds", type=int, default=300, help="bootstrap resamples (0: none)")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    _, lines = decide(args.csv, args.rounds)
    return publish("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    raise SystemExit(main())
