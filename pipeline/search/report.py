"""What a search leaves for people: the chosen spec, a CSV of candidates, two plots, a summary table
(and, for a Pareto search, every front member as a spec file)."""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Optional, Sequence

import matplotlib
import yaml

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from pipeline.search.objective import front  # noqa: E402
from pipeline.search.store import Candidate  # noqa: E402
from pipeline.space import ArchSpec  # noqa: E402
from pipeline.utils.io import atomic_write, atomic_write_text  # noqa: E402

CSV_COLUMNS = ["generation", "score", "rank_value", "valid", "reason", "params_m", "flops_m", "seconds",
               "latency_ms", "latency_source", "memory_mb",
               "embed_dim", "depth", "num_heads", "mlp_ratio", "stage_depths", "arch"]


def write_arch(path: Path, spec: ArchSpec, latency: Optional[dict] = None) -> Path:
    """The chosen spec; with a latency record, as ``{arch: spec, latency: record}`` (``ArchSpec.load``
    and so ``train --arch`` read the ``arch`` mapping and ignore the rest)."""
    if latency is None:
        return spec.save(path)
    text = ("# The architecture chosen by `python -m pipeline search` (`arch`, what `train --arch` reads) and its\n"
            "# latency on the target: in the search, and re-measured in a fresh process (docs/latency.md).\n"
            + yaml.safe_dump({"arch": spec.to_dict(), "latency": latency}, sort_keys=False))
    return atomic_write_text(path, text)


def write_front(candidates: Sequence[Candidate], folder: Path, objective) -> list[Path]:
    """Every member of the score-vs-latency front as a spec file, by increasing latency
    (``front/01.yaml`` is the fastest); any of them can be passed to ``train --arch``."""
    latest = {c.spec: c for c in candidates}
    members = objective.front({s: c.rank_value for s, c in latest.items()},
                              {s: c.latency_ms if c.latency_ms is not None else math.nan for s, c in latest.items()})
    for old in folder.glob("*.yaml") if folder.is_dir() else []:
        old.unlink()
    written = []
    for i, spec in enumerate(members, 1):
        c = latest[spec]
        written.append(write_arch(folder / f"{i:02d}.yaml", spec, {
            "search_ms": round(c.latency_ms, 4), "search_source": c.latency_source,
            "memory_mb": round(c.memory_mb, 3) if c.memory_mb is not None else None,
            "conditions": c.latency_on, "score": c.score}))
    return written


def write_candidates_csv(candidates: Sequence[Candidate], path: Path) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(CSV_COLUMNS)
            for c in candidates:
                s = c.spec
                w.writerow([c.generation, c.score, c.rank_value, c.valid, c.reason, f"{c.params_m:.6f}",
                            f"{c.flops_m:.3f}", f"{c.seconds:.3f}", _number(c.latency_ms, 4), c.latency_source,
                            _number(c.memory_mb, 3), s.embed_dim, s.depth,
                            " ".join(map(str, s.num_heads)), " ".join(f"{m:g}" for m in s.mlp_ratio),
                            " ".join(map(str, s.stage_depths)), s.to_json()])
    atomic_write(path, write)


def _number(value: Optional[float], digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def pareto_front(candidates: Sequence[Candidate], cost: str = "params_m") -> list[Candidate]:
    """Candidates no other beats on both score (higher) and ``cost`` (lower: params_m or latency_ms)."""
    return front([c for c in candidates if c.valid and getattr(c, cost) is not None],
                 lambda c: getattr(c, cost), lambda c: c.rank_value)


def _save(fig, path: Path) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(fig)


def plot_pareto(candidates: Sequence[Candidate], chosen: ArchSpec, path: Path, proxy: str, by_latency: bool = False,
                max_latency_ms: Optional[float] = None) -> None:
    """Score against parameters, or against latency on the target (a latency limit or objective)."""
    cost = "latency_ms" if by_latency else "params_m"
    valid = [c for c in candidates if c.valid and getattr(c, cost) is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([getattr(c, cost) for c in valid], [c.rank_value for c in valid], s=10, alpha=0.5,
               c=[c.generation for c in valid], cmap="viridis", label="candidates (colour = generation)")
    members = pareto_front(valid, cost)
    ax.plot([getattr(c, cost) for c in members], [c.rank_value for c in members], "r-", lw=1, label="Pareto front")
    pick = [c for c in valid if c.spec == chosen]
    if pick:
        ax.scatter([getattr(pick[-1], cost)], [pick[-1].rank_value], marker="*", s=200, c="red", label="chosen")
    if by_latency and max_latency_ms is not None:
        ax.axvline(max_latency_ms, color="grey", ls="--", lw=1, label="latency limit")
    if by_latency:
        source = {c.latency_source for c in valid} or {"measured"}
        ax.set_xlabel(f"latency (ms, {'/'.join(sorted(source))}; {valid[0].latency_on if valid else ''})")
        ax.set_title("Search: score vs latency")
    else:
        ax.set_xlabel("parameters (M)")
        ax.set_title("Search: score vs size")
    ax.set_ylabel(f"{proxy} score (higher is better)")
    ax.legend(fontsize=7)
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
    costed = any(c.latency_ms is not None for c in valid)
    for col in ("#", "score", "params (M)", "FLOPs (M)") + (("latency (ms)", "memory (MB)") if costed else ()) \
            + ("architecture",):
        table.add_column(col)
    shown = valid[:top] + [c for c in valid[top:] if c.spec == chosen]   # the pick, even when not a top score
    for c in shown:
        mark = " (chosen)" if c.spec == chosen else ""
        costs = (_number(c.latency_ms, 3) + (" p" if c.latency_source == "predicted" else ""),
                 _number(c.memory_mb, 2)) if costed else ()
        table.add_row(str(valid.index(c) + 1), f"{c.score:.4g}", f"{c.params_m:.3f}", f"{c.flops_m:.1f}", *costs,
                      c.spec.short() + mark)
    if costed:
        table.caption = "latency: p = predicted by the calibrated predictor, else measured"
    return table
