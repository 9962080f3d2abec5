"""What a correlate run shows: summary.csv, summary.md, regret.csv, the printed tables and the
scatter plots."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from pipeline.correlate.plan import Plan
from pipeline.correlate.statistics import BASELINES, LARGEST_FLOPS, LARGEST_PARAMS, mean_regret
from pipeline.utils.io import atomic_write, atomic_write_text


def _top_label(frac: float) -> str:
    return f"top{100 * frac:g}_precision"


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def summary_columns(plan: Plan) -> list[tuple[str, str]]:
    """(summary key, column name) pairs of summary.csv / the detailed tables of summary.md."""
    return [("metric", "metric"), ("proxy", "proxy"), ("direction", "direction"), ("n_valid", "n_valid"),
            ("n_invalid", "n_invalid"), ("n_missing", "n_missing"), ("kendall_tau", "kendall_tau"),
            ("spearman_rho", "spearman_rho"), ("band_tau", f"band_tau_{plan.cfg['bands']}"),
            ("top_precision", _top_label(plan.cfg["top_fraction"])), ("mean_regret", "mean_regret"),
            ("mean_seconds", "mean_seconds")]


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _md_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def compact_table(plan: Plan, summary: list[dict[str, Any]],
                  regret: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Rows = proxies, then the two "largest that fits" baselines; for each metric its tau, band tau
    and mean regret over the budgets; last, the mean regret over budgets and metrics."""
    by = {(s["metric"], s["proxy"]): s for s in summary}
    means = mean_regret(regret)
    header = (["proxy"] + [f"{m} {c}" for m in plan.metrics for c in ("tau", "band tau", "regret")]
              + ["mean regret"])
    rows = []
    for p in [*plan.proxies, *BASELINES]:
        cells = []
        for m in plan.metrics:
            stats = by.get((m, p))
            cells += [_fmt(stats[k], 3) if stats else "-" for k in ("kendall_tau", "band_tau")]
            cells.append(_fmt(means.get((m, p), math.nan), 3))
        rows.append([p, *cells, _fmt(means.get(("all", p), math.nan), 3)])
    return header, rows


def regret_tables(plan: Plan, regret: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per metric: rows = best in file, proxies, both baselines; columns = budgets, then the mean
    regret; cells = pick (regret)."""
    out = {}
    means = mean_regret(regret)
    for metric in plan.metrics:
        mine = [r for r in regret if r["metric"] == metric]
        by = {(r["proxy"], r["budget_m"]): r for r in mine}
        header = [""] + [f"<= {b:g} M (n={by[(LARGEST_PARAMS, b)]['n_under']})" for b in plan.budgets] + ["mean regret"]
        rows = [["best in file"] + [_fmt(by[(LARGEST_PARAMS, b)]["best_metric"], 2) for b in plan.budgets] + [""]]
        for name in [*plan.proxies, *BASELINES]:
            rows.append([name] + [f"{_fmt(by[(name, b)]['pick_metric'], 2)} ({_fmt(by[(name, b)]['regret'], 2)})"
                                  for b in plan.budgets] + [_fmt(means[(metric, name)], 3)])
        out[metric] = (header, rows)
    return out


def noise_ceiling_line(plan: Plan) -> str:
    """The file's own noise ceiling, when its architectures were trained with several seeds."""
    parts = [f"`{m}` tau {_fmt(tau, 3)} between seeds {a} and {b} over {n} architectures"
             for m, (tau, n, (a, b)) in plan.noise_ceiling.items() if n]
    if not parts:
        return ""
    return ("Noise ceiling (how well a second training run ranks the same architectures; no proxy can be "
            "expected to rank better): " + "; ".join(parts) + ". Metrics are the mean over seeds.")


def _selection_line(plan: Plan) -> str:
    if plan.split == "tune":
        what = f"tune half of the file ({plan.split_path.name}): in-sample for anything chosen on it"
    elif plan.split == "test":
        what = f"test half of the file ({plan.split_path.name})"
    else:
        what = "whole file (no split: in-sample for anything chosen on it)"
    limit = plan.cfg["limit"]
    extra = f", limited to {limit} by a shuffle with seed {plan.cfg['seed']}" if limit else ""
    overrides = plan.cfg["arch_overrides"]
    return (f"Architectures: {len(plan.entries)} of the {what}{extra}."
            + (f" Spec overrides applied to every architecture: {overrides}." if overrides else "")
            + (f" {noise_ceiling_line(plan)}" if plan.noise_ceiling else ""))


def population_line(plan: Plan, summary: list[dict[str, Any]]) -> str:
    """Which proxies are ranked within the reported architectures, and among how many."""
    from pipeline.proxies.registry import get_proxy

    ranked = {s["proxy"]: s["n_valid"] for s in summary if get_proxy(s["proxy"]).population is not None}
    if not ranked:
        return ""
    return ("Population-ranked: " + ", ".join(f"`{p}` among the {n} architectures above with a valid score"
                                              for p, n in ranked.items())
            + " (its value for an architecture is a rank aggregate of its components, in scores.csv, over those "
              "architectures: it changes with the split and the limit).")


def write_summary(plan: Plan, summary: list[dict[str, Any]], regret: list[dict[str, Any]]) -> None:
    cols = summary_columns(plan)
    atomic_write_text(plan.out_dir / "summary.csv",
                      _csv([name for _, name in cols], [[_fmt(s[k], 6) for k, _ in cols] for s in summary]))
    regret_cols = list(regret[0]) if regret else ["metric", "budget_m", "proxy", "regret"]
    atomic_write_text(plan.out_dir / "regret.csv",
                      _csv(regret_cols, [[_fmt(r[c], 6) for c in regret_cols] for r in regret]))

    frac = 100 * plan.cfg["top_fraction"]
    population = population_line(plan, summary)
    md = [f"# Proxy correlation: {plan.gt_path.name}, {len(plan.entries)} architectures ({plan.split}), "
          f"metrics {', '.join(f'`{m}`' for m in plan.metrics)}", "", _selection_line(plan), "",
          *([population, ""] if population else []),
          (f"Kendall tau-b and Spearman rho over valid scores (proxy oriented so that larger = better); "
           f"band tau = size-weighted mean tau within {plan.cfg['bands']} equal-count parameter bands; "
           f"{_top_label(plan.cfg['top_fraction'])} = share of the true top {frac:g}% "
           f"that the proxy also ranks in its top {frac:g}%. "
           f"Probe: {plan.cfg['probe']}; model seed {plan.cfg['model_seed']}."), "",
          "## Tau, band tau and mean regret per metric", "",
          (f"Regret is the mean over the params budgets below ({plan.budget_source}); `mean regret` "
           f"averages it over the metrics too. `{LARGEST_PARAMS}` and `{LARGEST_FLOPS}` are what a user "
           "gets without any proxy: the architecture within the budget with the most parameters, or the "
           "most FLOPs."), "", *_md_table(*compact_table(plan, summary, regret)), "",
          "## Regret under params budgets", "",
          ("True metric of the proxy's top pick among the architectures with at most the budget's "
           "parameters (our count), and in brackets its regret = best in file under the budget - pick. "
           f"`{LARGEST_PARAMS}` / `{LARGEST_FLOPS}` take the architecture with the most parameters / "
           f"FLOPs within the budget. Budgets: {', '.join(f'{b:g}' for b in plan.budgets)} M "
           f"({plan.budget_source}). Ties count as their mean. All rows in regret.csv."), ""]
    for metric, (header, rows) in regret_tables(plan, regret).items():
        md += [f"### `{metric}`", "", *_md_table(header, rows), ""]
    for metric in plan.metrics:
        detail = [c for c in cols if c[0] != "metric"]
        md += [f"## Details: `{metric}`", "",
               *_md_table([name for _, name in detail],
                          [[_fmt(s[k], 3) for k, _ in detail] for s in summary if s["metric"] == metric], left=2), ""]
    atomic_write_text(plan.out_dir / "summary.md", "\n".join(md))


def print_summary(plan: Plan, summary: list[dict[str, Any]], regret: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    def show(title: str, header: list[str], rows: list[list[str]]) -> None:
        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i == 0 else "right")
        for r in rows:
            table.add_row(*r)
        console.print(table)

    show(f"{plan.gt_path.name} ({plan.split}): {len(plan.entries)} architectures, Kendall tau, band tau "
         f"({plan.cfg['bands']} params bands) and mean regret over the budgets {', '.join(f'{b:g}' for b in plan.budgets)} M",
         *compact_table(plan, summary, regret))
    population = population_line(plan, summary)
    if population:
        console.print(population.replace("`", ""))
    for metric, (header, rows) in regret_tables(plan, regret).items():
        show(f"{metric}: true metric of the top pick under each params budget (regret)", header, rows)


def write_plots(plan: Plan, summary: list[dict[str, Any]]) -> list[Path]:
    """One figure per proxy, one panel per metric."""
    from matplotlib.figure import Figure

    written = []
    for proxy in plan.proxies:
        panels = [s for s in summary if s["proxy"] == proxy and s["_points"][0]]
        if not panels:
            continue
        fig = Figure(figsize=(5 * len(panels), 4), dpi=100)
        for i, s in enumerate(panels):
            xs, ys = s["_points"]
            ax = fig.add_subplot(1, len(panels), i + 1)
            ax.scatter(xs, ys, s=10, alpha=0.7)
            if min(xs) > 0 and max(xs) / min(xs) > 1e3:
                ax.set_xscale("log")
            ax.set_xlabel(f"{proxy} ({s['direction']} is better)")
            ax.set_ylabel(s["metric"])
            ax.set_title(f"tau (oriented) = {_fmt(s['kendall_tau'], 3)} (n = {s['n_valid']})")
        fig.tight_layout()
        path = plan.out_dir / f"scatter_{proxy}.png"
        atomic_write(path, lambda p, fig=fig: fig.savefig(p, format="png"))
        written.append(path)
    return written
