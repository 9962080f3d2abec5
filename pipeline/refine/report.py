"""What a race shows: the plan before it starts, ``rungs.csv`` and ``refine.png`` as it goes, W&B per rung.

Everything here is drawn from the race's state (:func:`pipeline.refine.race.race_state`), itself a
function of the log, so every file can be rewritten at any time and says the same after a resume.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any, Sequence

from pipeline.refine.plan import Rung, plan_cost, plan_table, standard_error
from pipeline.utils.io import atomic_write, atomic_write_text

CSV_COLUMNS = ["rung", "entrant", "arch", "roles", "params_m", "flops_m", "epochs", "selection_top1", "se",
               "n_images", "wall_s", "kept", "worker"]


def plan_lines(plan: Sequence[Rung], recipe_epochs: int, budget: Any, entrants: int) -> list[str]:
    """The plan as a table, and its cost, printed before the first training."""
    head = f"{'rung':>4}  {'entrants':>8}  {'epochs each':>11}  {'new each':>8}  {'epochs':>6}  {'cumulative':>10}  " \
           f"{'full retrains':>13}  {'go on':>5}"
    rows = [f"{r:>4}  {n:>8}  {e:>11}  {new:>8}  {c:>6}  {cum:>10}  {ret:>13.2f}  {k:>5}"
            for r, n, e, new, c, cum, ret, k in plan_table(plan, recipe_epochs)]
    total = plan_cost(plan)
    return [f"refine plan: {entrants} entrants, successive halving (each rung keeps 1/eta and trains them eta times "
            f"longer); budget {budget if budget is not None else 'none'}", head, *rows,
            f"cost: {total} epochs of one network = {total / recipe_epochs:.2f} full retrains of the recipe "
            f"({recipe_epochs} epochs); every entrant's learning-rate schedule spans {plan[-1].epochs} epochs"]


def rung_rows(state, entrants: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per (rung, entrant trained in it), in rung order, entrants by their selection metric."""
    rows = []
    for r in state.rungs:
        ordered = sorted(r.lines.items(), key=lambda kv: -float(kv[1]["top1"]))
        for c, line in ordered:
            e = entrants[c]
            kept = "" if r.kept is None else ("yes" if c in r.kept else "no")
            rows.append({"rung": r.rung.number, "entrant": c, "arch": e.spec.short(), "roles": e.label(),
                         "params_m": e.params_m, "flops_m": e.flops_m, "epochs": int(line["epochs"]),
                         "selection_top1": float(line["top1"]),
                         "se": round(standard_error(float(line["top1"]), int(line["n_images"])), 3),
                         "n_images": int(line["n_images"]), "wall_s": float(line["wall_s"]), "kept": kept,
                         "worker": line.get("worker", "")})
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write_text(path, buf.getvalue())


def plot_race(path: Path, state, entrants: Sequence[Any], plan: Sequence[Rung], title: str) -> Path:
    """Selection top-1 against epochs, +- its standard error: one line per entrant through the rungs it reached;
    the winner bold, the largest networks that fit dashed, an x where an entrant was dropped."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    colors = [f"C{i % 10}" for i in range(len(entrants))]
    for c, e in enumerate(entrants):
        points = [(r.rung.epochs, float(r.lines[c]["top1"]), standard_error(float(r.lines[c]["top1"]),
                                                                            int(r.lines[c]["n_images"])))
                  for r in state.rungs if c in r.lines]
        if not points:
            continue
        xs, ys, ses = zip(*points)
        ax.errorbar(xs, ys, yerr=ses, fmt="none", ecolor=colors[c], alpha=0.35, capsize=2)
        winner = state.winner == c
        largest = any(role.startswith("largest") for role in e.roles)
        ax.plot(xs, ys, marker="o", color=colors[c], linewidth=3 if winner else 1.2,
                linestyle="--" if largest else "-",
                label=f"{'WINNER ' if winner else ''}#{c} {e.spec.short()} ({e.params_m:.2f}M; {e.label()})")
        dropped = [r for r in state.rungs if r.kept is not None and c in r.lines and c not in r.kept]
        if dropped:
            ax.scatter([dropped[0].rung.epochs], [float(dropped[0].lines[c]["top1"])], marker="x", s=60,
                       color=colors[c], zorder=3)
    ax.set_xticks([r.epochs for r in plan])
    ax.set_xlabel("epochs trained (rung boundaries)")
    ax.set_ylabel("top-1 on the selection split (%, +- SE)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    return atomic_write(path, lambda p: fig.savefig(p, format="png"))


def log_rung(logger, r, entrants: Sequence[Any]) -> None:
    """A decided rung into the command's W&B run: its table and each entrant's selection metric (step = rung)."""
    rows = [[c, entrants[c].spec.short(), entrants[c].label(), entrants[c].params_m, entrants[c].flops_m,
             int(line["epochs"]), float(line["top1"]), c in r.kept] for c, line in sorted(r.lines.items())]
    logger.log_table(f"refine/rung{r.rung.number}", columns=["entrant", "arch", "roles", "params_m", "flops_m",
                                                              "epochs", "selection_top1", "kept"], data=rows)
    metrics = {f"refine/selection_top1/entrant{c}": float(line["top1"]) for c, line in r.lines.items()}
    metrics.update({"refine/rung": r.rung.number, "refine/epochs": r.rung.epochs,
                    "refine/best_selection_top1": max(float(line["top1"]) for line in r.lines.values())})
    logger.log_metrics(metrics, step=r.rung.number)


def log_result(logger, run_dir: Path, files: Sequence[Path]) -> None:
    """The winner (arch.yaml, the hand-off `train` and `run` read) and the race's files as W&B artifacts."""
    import wandb

    from pipeline.tracking import record_handoff

    record_handoff([logger], run_dir, produced=("arch", run_dir / "arch.yaml"))
    art = wandb.Artifact(f"refine-{run_dir.name}", type="refine")
    for f in files:
        if Path(f).is_file():
            art.add_file(str(f))
    logger.experiment.log_artifact(art)
