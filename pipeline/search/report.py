"""What a search leaves for people: a CSV of candidates, two plots and a summary table."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.search.store import Candidate  # noqa: E402
from pipeline.space import ArchSpec  # noqa: E402
from pipeline.utils.io import atomic_write  # noqa: E402

CSV_COLUMNS = ["generation", "score", "rank_value", "valid", "reason", "params_m", "flops_m", "seconds",
               "embed_dim", "depth", "num_heads", "mlp_ratio", "stage_depths", "arch", "components"]


def write_candidates_csv(candidates: Sequence[Candidate], path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for c in candidates:
                s = c.spec
                w.writerow([c.generation, c.score, c.rank_value, c.valid, c.reason, f"{c.params_m:.6f}",
                            f"{c.flops_m:.3f}", f"{c.seconds:.3f}", s.embed_dim, s.depth,
                            " ".join(map(str, s.num_heads)), " ".join(f"{m:g}" for m in s.mlp_ratio),
                            " ".join(map(str, s.stage_depths)), s.to_json(),
                            json.dumps(c.components, sort_keys=True) if c.components else ""])
    atomic_write(path, write)


def pareto_front(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Candidates no other beats on both score (higher) and params (lower)."""
    front, best = [], -math.inf
    for c in sorted((c for c in candidates if c.valid), key=lambda c: (c.params_m, -c.rank_value)):
        if c.rank_value > best:
            front.append(c)
            best = c.rank_value
    return front


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_pareto(candidates: Sequence[Candidate], chosen: ArchSpec, path: Path, proxy: str) -> None:
    valid = [c for c in candidates if c.valid]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([c.params_m for c in valid], [c.rank_value for c in valid], s=10, alpha=0.5,
               c=[c.generation for c in valid], cmap="viridis", label="candidates (colour = generation)")
    front = pareto_front(valid)
    ax.plot([c.params_m for c in front], [c.rank_value for c in front], "r-", lw=1, label="Pareto front")
    pick = [c for c in valid if c.spec == chosen]
    if pick:
        ax.scatter([pick[0].params_m], [pick[0].rank_value], marker="*", s=200, c="red", label="chosen")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel(f"{proxy} score (higher is better)")
    ax.legend(fontsize=7)
    ax.set_title("Search: score vs size")
    _save(fig, path)


def plot_convergence(history: Sequence[dict], path: Path, proxy: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    gens = [h["generation"] for h in history]
    ax.plot(gens, [h["best_so_far"] for h in history], "r-o", ms=3, label="best so far")
    ax.plot(gens, [h["gen_best"] for h in history], "b--", lw=1, label="generation best")
    ax.plot(gens, [h["gen_mean"] for h in history], "g:", lw=1, label="generation mean")
    ax.set_xlabel("generation")
    ax.set_ylabel(f"{proxy} score (higher is better)")
    ax.legend(fontsize=7)
    ax.set_title("Search convergence")
    _save(fig, path)


def summary_table(candidates: Sequence[Candidate], chosen: ArchSpec, proxy: str, seconds: float,
                  top: int = 10) -> Table:
    valid = sorted({c.spec: c for c in candidates if c.valid}.values(), key=lambda c: -c.rank_value)
    invalid = len({c.spec for c in candidates if not c.valid})
    table = Table(title=f"Top {min(top, len(valid))} of {len(valid) + invalid} architectures by {proxy} "
                        f"({invalid} invalid, {seconds:.0f} s)")
    for col in ("#", "score", "params (M)", "FLOPs (M)", "architecture"):
        table.add_column(col)
    for i, c in enumerate(valid[:top], 1):
        mark = " (chosen)" if c.spec == chosen else ""
        table.add_row(str(i), f"{c.score:.4g}", f"{c.params_m:.3f}", f"{c.flops_m:.1f}", c.spec.short() + mark)
    return table
