"""``python -m pipeline correlate``: how well do training-free proxies rank real architectures?

Reads a ground-truth file (architectures with measured accuracy), scores every selected
architecture with every selected proxy on one fixed probe batch, and reports, per metric column
of the file and per proxy, Kendall tau, Spearman rho, tau within parameter-count bands and
top-10% precision (``pipeline.metrics``), plus the regret of the proxy's top pick under a few
parameter budgets. ``split: tune | test`` scores one fixed half of the file (choose settings on
tune, report on test); ``arch_overrides`` states what a file's format cannot (e.g. a
mean-pooled classifier).

Outputs, in ``output_dir``:

* ``config.yaml`` - the resolved config (paths absolute); ``--config`` it to rerun/resume.
* ``scores.csv`` - one row per (architecture, proxy), appended and fsynced as soon as it is
  computed: columns ``key, proxy, value, valid, reason, seconds, params_m, flops_m, components``
  and one per metric (every metric is stored once per pair, so one scoring serves every metric).
  A population-ranked proxy (AZ-NAS) stores what it measured in ``components`` (JSON) and NaN as
  its value: its values are ranks among the architectures reported, derived at report time, so
  the same file serves any split or limit (the summary says over how many).
  A rerun with the same ``output_dir`` keeps every pair already there and computes only the
  missing ones (a truncated last line, left by a crash mid-write, is dropped). ``--fresh=true``
  starts over. Rerunning with settings that change scores (probe, model seed, proxy options,
  metrics, ground truth, arch_overrides) into a non-empty ``output_dir`` is refused rather than
  mixing results. The split is not among them: both halves can share one ``scores.csv``.
* ``summary.csv`` - one row per (metric, proxy). ``summary.md`` - a compact table (tau and band
  tau per metric, also printed), the regret tables, then the detailed table of each metric.
* ``regret.csv`` - per params budget, metric and proxy, and for the two baselines a user has
  without any proxy (``largest_params`` / ``largest_flops``: the architecture within the budget
  with the most parameters / FLOPs): the true metric of the top pick among architectures with
  params <= budget, the best one there, and regret = best - pick. Ties (equal proxy values,
  equal sizes) count as the mean metric of the tied architectures (the expected value of a
  random tie-break). The budgets are ``--budgets``, else the ones committed with the file's
  halves (``budgets_m`` in ``configs/correlate/splits/<stem>.json``: the same for both halves
  and every run), else the 25/50/75/100 % quantiles of the scored architectures' params.
  ``summary.csv`` and the printed table carry each proxy's mean regret over the budgets.
* ``scatter_<proxy>.png`` - proxy value against each metric (one panel per metric), one per proxy.

Invalid scores (a singular kernel, a non-finite value, a proxy that raised) are kept in
``scores.csv`` with their reason, counted in the summary and left out of the statistics.
"""
from __future__ import annotations

import sys
from typing import Any, Sequence

from pipeline.config import save_config
from pipeline.correlate.plan import Plan, prepare
from pipeline.correlate.report import noise_ceiling_line, print_summary, write_plots, write_summary
from pipeline.correlate.scores import CONFIG_NAME, SCORES_NAME, check_resume, compute_scores, read_scores
from pipeline.correlate.settings import parse_config
from pipeline.correlate.statistics import mean_regret, rank_populations, regret_table, summarize_scores


def score_and_report(plan: Plan, console: Any, err_console: Any) -> list[dict[str, Any]]:
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    scores_path = plan.out_dir / SCORES_NAME
    if plan.cfg["fresh"]:
        for old in [scores_path, plan.out_dir / "summary.csv", plan.out_dir / "summary.md",
                    plan.out_dir / "regret.csv", *plan.out_dir.glob("scatter_*.png")]:
            old.unlink(missing_ok=True)
    rows, dropped = read_scores(scores_path, plan.columns)
    if dropped:
        err_console.print(f"[yellow]warning:[/] dropped {dropped} unreadable line(s) of {scores_path} "
                          "(a write cut short); those pairs are recomputed")
    check_resume(plan, rows)
    # fresh is a one-off action: the saved config resumes (--config OUT/config.yaml), never wipes
    save_config({**plan.cfg, "fresh": False}, plan.out_dir / CONFIG_NAME)

    n_done = sum(1 for e in plan.entries for p in plan.proxies if (e.key, p) in rows)
    extra = (f", {plan.n_without_metric} without a finite {'/'.join(plan.metrics)} skipped"
             if plan.n_without_metric else "")
    err_console.print(f"correlate: {len(plan.entries)} architectures x {len(plan.proxies)} proxies on "
                      f"{plan.device}{extra}; {n_done} score(s) already in {scores_path}")
    computed = compute_scores(plan, rows, err_console)

    ranked = rank_populations(plan, rows)   # population-ranked proxies: ranks among the reported architectures
    regret = regret_table(plan, ranked)
    summary = summarize_scores(plan, ranked, mean_regret(regret))
    write_summary(plan, summary, regret)
    print_summary(plan, summary, regret, console)
    if noise_ceiling_line(plan):
        console.print(noise_ceiling_line(plan))
    invalid = {s["proxy"]: s["n_invalid"] for s in summary if s["n_invalid"]}
    if invalid:
        console.print(f"invalid scores (kept in scores.csv, left out of the statistics): {invalid}")
    if plan.cfg["plots"]:
        write_plots(plan, summary)
    console.print(f"computed {computed} new score(s); results in {plan.out_dir}")
    return summary


def run(cfg: dict[str, Any]) -> int:
    """Check what parsing could not (proxies, device, the architectures), then score and report."""
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)
    err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
    plan = prepare(cfg)
    import torch

    threads = torch.get_num_threads()
    if plan.cfg["threads"]:
        torch.set_num_threads(plan.cfg["threads"])
    try:
        score_and_report(plan, console, err_console)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; scores so far are in {plan.out_dir / SCORES_NAME}. "
                          "Rerun the same command to resume.")
        return 130
    finally:
        torch.set_num_threads(threads)  # run() may be called in-process (tests, notebooks)
    return 0


def main(argv: Sequence[str]) -> int:
    return run(parse_config(argv))
