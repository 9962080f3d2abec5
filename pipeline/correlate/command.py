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
  computed: columns ``key, proxy, value, valid, reason, seconds, params_m, flops_m`` and one per
  metric (every metric is stored once per pair, so one scoring serves every metric).
  A rerun with the same ``output_dir`` keeps every pair already there and computes only the
  missing ones (a truncated last line, left by a crash mid-write, is dropped). ``--fresh=true``
  starts over. Rerunning with settings that change scores (probe, model seed, proxy options,
  metrics, ground truth, arch_overrides) into a non-empty ``output_dir`` is refused rather than
  mixing results. The split is not among them: both halves can share one ``scores.csv``.
* ``summary.csv`` - one row per (metric, proxy). ``summary.md`` - a compact table (tau and band
  tau per metric, also printed), the regret tables, then the detailed table of each metric.
* ``regret.csv`` - per params budget, metric and proxy (and ``largest``: simply taking the
  biggest architecture): the true metric of the top pick among architectures with params <=
  budget, the best one there, and regret = best - pick. Ties (equal proxy values, equal params)
  count as the mean metric of the tied architectures (the expected value of a random tie-break).
* ``scatter_<proxy>.png`` - proxy value against each metric (one panel per metric), one per proxy.

Invalid scores (a singular kernel, a non-finite value, a proxy that raised) are kept in
``scores.csv`` with their reason, counted in the summary and left out of the statistics.
"""
from __future__ import annotations

import csv
import io
import math
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, get_args, get_origin, get_type_hints

import yaml

from pipeline.errors import UserError
from pipeline.config import save_config
from pipeline.correlate.settings import names, parse_config
from pipeline.utils.io import atomic_write, atomic_write_text

SCORES_NAME = "scores.csv"
CONFIG_NAME = "config.yaml"
BASE_COLUMNS = ["key", "proxy", "value", "valid", "reason", "seconds", "params_m", "flops_m"]
ERROR_PREFIX = "error: "
# Settings whose change makes earlier scores incomparable (checked before resuming).
SCORING_KEYS = ("metric", "space", "probe", "model_seed", "arch_overrides")
ABORT_AFTER = 3  # a proxy that raises on its first this-many architectures stops the run

# ----------------------------------------------------------------------------- plan


@dataclass
class Plan:
    """Everything a run needs, validated before any work starts."""

    cfg: dict[str, Any]
    gt_path: Path
    out_dir: Path
    metrics: list[str]                       # metric columns reported (and stored in scores.csv)
    proxies: list[str]
    higher_is_better: dict[str, bool]
    options: dict[str, dict[str, Any]]
    entries: list[Any]                       # selected groundtruth.Entry objects
    device: str
    n_without_metric: int = 0
    split: str = "all"                       # which half of the file: all, tune, test
    split_path: Optional[Path] = None
    budgets: list[float] = field(default_factory=list)  # params budgets (millions) of the regret
    probes: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # image size -> (images, labels)

    @property
    def columns(self) -> list[str]:
        return BASE_COLUMNS + list(self.metrics)


def default_budgets(params_m: Sequence[float]) -> list[float]:
    """The 25/50/75/100 % quantiles of the parameter counts, rounded *up* to 0.01 M so that each
    budget admits the architecture at its quantile (and the last one every architecture)."""
    import numpy as np

    if not len(params_m):
        return []
    qs = np.quantile(np.asarray(params_m, dtype=float), [0.25, 0.5, 0.75, 1.0])
    return sorted({math.ceil(round(q * 100, 6)) / 100 for q in qs})


def check_proxy_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Option names the proxy takes (registry), and values within an option's ``Literal`` choices."""
    from pipeline.proxies import check_options, get_proxy

    try:
        check_options(name, options)
    except ValueError as e:
        raise UserError(f"--proxy_options.{name}: {e}") from None
    try:
        hints = get_type_hints(get_proxy(name).fn)
    except (NameError, TypeError):
        hints = {}
    for key, value in options.items():
        choices = get_args(hints.get(key)) if get_origin(hints.get(key)) is Literal else ()
        if choices and value not in choices:
            raise UserError(f"proxy_options.{name}.{key}={value!r} is not one of {list(choices)}")
    return dict(options)


def resolve_device(name: Any) -> str:
    import torch

    name = str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"device {name!r} is not a torch device (use auto, cpu, cuda, cuda:N): {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was requested but CUDA is not available; use --device=cpu or auto")
    return name


def prepare(cfg: dict[str, Any]) -> Plan:
    """Validate the config, load and select the ground truth, build the probe batches."""
    from pipeline.groundtruth import load_ground_truth, load_split, override_specs, select_half

    cfg = dict(cfg)
    gt_path = Path(cfg["ground_truth"])
    split_path = Path(cfg["split_file"]) if cfg["split"] != "all" else None
    metrics, proxies, overrides = cfg["metric"], cfg["proxies"], cfg["arch_overrides"]

    # proxies and their options (importing the registry loads torch: after the parse-time checks)
    from pipeline.proxies.registry import available_proxies, get_proxy

    known = available_proxies()
    unknown = [p for p in proxies if p not in known]
    if unknown:
        raise UserError(f"--proxies: unknown proxy name(s) {unknown}; available proxies: {', '.join(known)}")
    stray = sorted(set(cfg["proxy_options"]) - set(known))
    if stray:
        raise UserError(f"--proxy_options names unknown proxy(ies) {stray}; available proxies: {', '.join(known)}")
    infos = {p: get_proxy(p) for p in proxies}
    options = {p: check_proxy_options(p, cfg["proxy_options"].get(p) or {}) for p in proxies}

    entries = load_ground_truth(gt_path, space=cfg["space"])
    if not entries:
        raise UserError(f"ground-truth file {gt_path} holds no architectures")
    present = list(dict.fromkeys(m for e in entries for m in e.metrics))  # file order
    if metrics == ["all"]:
        metrics = present
    missing = [m for m in metrics if m not in present]
    if missing or not metrics:
        raise UserError(f"metric(s) {missing} not in {gt_path}; metrics present: {present or 'none'} "
                        "(--metric=all reports every one)")
    cfg["metric"] = metrics
    seen: set[str] = set()
    for e in entries:
        if e.key in seen:
            raise UserError(f"ground-truth file {gt_path} has two architectures with key {e.key!r}; "
                            "keys must be unique")
        seen.add(e.key)
    entries = override_specs(entries, overrides)
    if split_path is not None:
        try:
            halves = load_split(split_path)
        except ValueError as e:  # includes JSONDecodeError
            raise UserError(f"split file {split_path} is not a split (pipeline.groundtruth.write_split makes "
                            f"one): {e}") from e
        entries = select_half(entries, halves, cfg["split"], source=f"split file {split_path}")
    usable = [e for e in entries if all(m in e.metrics and math.isfinite(e.metrics[m]) for m in metrics)]
    order = list(range(len(usable)))
    if cfg["limit"] is not None:
        random.Random(cfg["seed"]).shuffle(order)  # a smaller limit with the same seed is a prefix
        order = sorted(order[:cfg["limit"]])       # file order: results never depend on the shuffle order
    selected = [usable[i] for i in order]

    device = resolve_device(cfg["device"])
    out = cfg["output_dir"] or Path("checkpoints") / "correlate" / gt_path.stem
    out_dir = Path(str(out)).expanduser().resolve()
    cfg["output_dir"] = str(out_dir)

    from pipeline.models.complexity import count_params

    plan = Plan(cfg, gt_path, out_dir, metrics, proxies, {p: infos[p].higher_is_better for p in proxies},
                options, selected, device, n_without_metric=len(entries) - len(usable),
                split=cfg["split"], split_path=split_path)
    plan.budgets = cfg["budgets"] or default_budgets([count_params(e.spec) / 1e6 for e in selected])
    plan.probes = _probe_batches(plan)
    return plan


def _probe_batches(plan: Plan) -> dict[int, tuple[Any, Any]]:
    from pipeline.data.errors import DataError
    from pipeline.data.probe import folder_probe_batch, probe_batch

    probe = plan.cfg["probe"]
    sizes = {probe["image_size"] or e.spec.img_size for e in plan.entries}
    batches = {}
    for size in sorted(sizes):
        try:
            if probe["source"] == "folder":
                batches[size] = folder_probe_batch(probe["root"], probe["n"], image_size=size, seed=probe["seed"])
            else:
                batches[size] = probe_batch(probe["n"], size, seed=probe["seed"], source=probe["source"])
        except (DataError, ValueError) as e:
            raise UserError(f"cannot build the probe batch (probe.source={probe['source']}, n={probe['n']}, "
                            f"image size {size}): {e}") from e
    return batches


# ----------------------------------------------------------------------------- scores.csv


@dataclass(frozen=True)
class Row:
    key: str
    proxy: str
    value: float
    valid: bool
    reason: str
    seconds: float
    params_m: float
    flops_m: float
    metrics: tuple[float, ...]  # the ground truth, one value per metric column (Plan.metrics order)

    def cells(self) -> list[str]:
        return [self.key, self.proxy, repr(float(self.value)), "1" if self.valid else "0",
                self.reason.replace("\r", " ").replace("\n", " "), repr(float(self.seconds)),
                repr(float(self.params_m)), repr(float(self.flops_m)), *(repr(float(m)) for m in self.metrics)]

    @classmethod
    def parse(cls, cells: list[str], n_metrics: int) -> "Row":
        if len(cells) != len(BASE_COLUMNS) + n_metrics:
            raise ValueError(f"{len(cells)} cells")
        key, proxy, value, valid, reason, seconds, params_m, flops_m = cells[:len(BASE_COLUMNS)]
        if valid not in ("0", "1"):
            raise ValueError(f"valid={valid!r}")
        return cls(key, proxy, float(value), valid == "1", reason, float(seconds), float(params_m),
                   float(flops_m), tuple(float(m) for m in cells[len(BASE_COLUMNS):]))


def read_scores(path: Path, columns: list[str]) -> tuple[dict[tuple[str, str], Row], int]:
    """Rows of ``scores.csv`` by (key, proxy) (the last row wins) and the number of lines dropped.

    A last line without its newline was cut short by a crash: it is dropped, and removed from
    the file so that appending starts on a fresh line.
    """
    if not path.is_file():
        return {}, 0
    data, dropped = path.read_bytes(), 0
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        dropped += 1
        atomic_write(path, lambda p: p.write_bytes(data))
    lines = list(csv.reader(io.StringIO(data.decode("utf-8", errors="replace"), newline="")))
    if not lines:
        return {}, dropped
    if lines[0] != columns:
        raise UserError(f"{path} has columns {lines[0]} but this run writes {columns} (other metrics: pass "
                        f"--metric=[{','.join(lines[0][len(BASE_COLUMNS):])}] to resume it); pass --fresh=true to start "
                        "over or choose another --output_dir")
    rows: dict[tuple[str, str], Row] = {}
    for cells in lines[1:]:
        try:
            row = Row.parse(cells, len(columns) - len(BASE_COLUMNS))
        except ValueError:
            dropped += 1
            continue
        rows[(row.key, row.proxy)] = row
    return rows, dropped


class ScoreWriter:
    """Appends rows to ``scores.csv``, each flushed and fsynced before the next is computed."""

    def __init__(self, path: Path, columns: list[str]) -> None:
        new = not path.is_file() or path.stat().st_size == 0
        self._f = open(path, "a", newline="", encoding="utf-8")
        self._w = csv.writer(self._f, lineterminator="\n")
        if new:
            self._write(columns)

    def _write(self, cells: list[str]) -> None:
        self._w.writerow(cells)
        self._f.flush()
        os.fsync(self._f.fileno())

    def write(self, row: Row) -> None:
        self._write(row.cells())

    def close(self) -> None:
        self._f.close()


def check_resume(plan: Plan, rows: dict[tuple[str, str], Row]) -> None:
    """Refuse to add scores computed with other settings to an existing scores.csv."""
    prev_path = plan.out_dir / CONFIG_NAME
    if not rows or not prev_path.is_file():
        return
    try:
        prev = yaml.safe_load(prev_path.read_text()) or {}
    except yaml.YAMLError:
        return
    cfg, diffs = plan.cfg, []
    # configs saved before a key existed, or with a metric name instead of a list, mean the same
    legacy = {"metric": lambda v: names(v, "") if v else v, "arch_overrides": lambda v: v or {}}
    for k in SCORING_KEYS:
        old, new = (legacy.get(k, lambda v: v)(c.get(k)) for c in (prev, cfg))
        if old != new:
            diffs.append(f"{k}: {prev.get(k)!r} -> {cfg.get(k)!r}")
    if Path(str(prev.get("ground_truth", ""))).name != plan.gt_path.name:
        diffs.append(f"ground_truth: {prev.get('ground_truth')!r} -> {str(plan.gt_path)!r}")
    prev_opts = prev.get("proxy_options") or {}
    scored = {p for (_, p), r in rows.items() if not r.reason.startswith(ERROR_PREFIX)}
    for proxy in sorted(scored):  # options only matter for proxies with real scores
        old, new = prev_opts.get(proxy) or {}, cfg["proxy_options"].get(proxy) or {}
        if old != new:
            diffs.append(f"proxy_options.{proxy}: {old!r} -> {new!r}")
    if diffs:
        raise UserError(f"{plan.out_dir / SCORES_NAME} holds scores computed with other settings ("
                        + "; ".join(diffs) + "); pass --fresh=true to discard them or choose another --output_dir")


# ----------------------------------------------------------------------------- scoring


def compute_scores(plan: Plan, rows: dict[tuple[str, str], Row], console: Any) -> int:
    """Score every missing (architecture, proxy) pair, appending each row at once."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from pipeline.models.complexity import complexity
    from pipeline.proxies.registry import compute_proxy

    retry = plan.cfg["retry_errors"]

    def needed(key: str, proxy: str) -> bool:
        row = rows.get((key, proxy))
        return row is None or (retry and row.reason.startswith(ERROR_PREFIX))

    todo = [(e, [p for p in plan.proxies if needed(e.key, p)]) for e in plan.entries]
    todo = [(e, ps) for e, ps in todo if ps]
    total = sum(len(ps) for _, ps in todo)
    if not total:
        return 0
    probe = plan.cfg["probe"]
    writer = ScoreWriter(plan.out_dir / SCORES_NAME, plan.columns)
    errors: dict[str, int] = {}
    successes: dict[str, int] = {}
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("scoring", total=total)
            for entry, proxies in todo:
                params, macs = complexity(entry.spec)
                images, labels = plan.probes[probe["image_size"] or entry.spec.img_size]
                for proxy in proxies:
                    progress.update(task, description=f"{entry.key} {proxy}")
                    try:
                        s = compute_proxy(proxy, entry.spec, images, labels, seed=plan.cfg["model_seed"],
                                          device=plan.device, options=plan.options[proxy])
                        value, valid, reason, seconds = s.value, s.valid, s.reason, s.seconds
                    except Exception as e:  # one failing proxy must not end a long run; recorded
                        value, valid, seconds = math.nan, False, 0.0
                        reason = f"{ERROR_PREFIX}{type(e).__name__}: {e}"
                        errors[proxy] = errors.get(proxy, 0) + 1
                        if errors[proxy] == 1:
                            console.print(f"[yellow]warning:[/] proxy {proxy} failed on {entry.key}: "
                                          f"{type(e).__name__}: {e} (recorded as invalid; "
                                          "--retry_errors=true recomputes such rows)")
                    else:
                        successes[proxy] = successes.get(proxy, 0) + 1
                    row = Row(entry.key, proxy, value, valid, reason, seconds, params / 1e6, macs / 1e6,
                              tuple(entry.metrics[m] for m in plan.metrics))
                    writer.write(row)
                    rows[(entry.key, proxy)] = row
                    progress.advance(task)
                    if errors.get(proxy, 0) >= ABORT_AFTER and not successes.get(proxy):
                        raise UserError(f"proxy {proxy} raised on each of its first {ABORT_AFTER} architectures "
                                        f"(last: {reason[len(ERROR_PREFIX):]}); a wrong proxy_options.{proxy} or a "
                                        "bug, not a property of the architectures. Fix it and rerun with "
                                        "--retry_errors=true to recompute the failed pairs")
    finally:
        writer.close()
    for proxy, n in errors.items():
        console.print(f"[yellow]warning:[/] proxy {proxy} raised on {n} architecture(s)")
    return total


# ----------------------------------------------------------------------------- statistics


def _params(plan: Plan) -> dict[str, float]:
    from pipeline.models.complexity import count_params

    return {e.key: count_params(e.spec) / 1e6 for e in plan.entries}


def summarize_scores(plan: Plan, rows: dict[tuple[str, str], Row]) -> list[dict[str, Any]]:
    """One statistics row per (metric, proxy), metric-major."""
    from pipeline.metrics import summarize

    params = _params(plan)
    frac = float(plan.cfg["top_fraction"])
    out = []
    for metric in plan.metrics:
        for proxy in plan.proxies:
            present = [(e, rows[(e.key, proxy)]) for e in plan.entries if (e.key, proxy) in rows]
            valid = [(e, r) for e, r in present if r.valid and math.isfinite(r.value)]
            hib = plan.higher_is_better[proxy]
            truth = [e.metrics[metric] for e, _ in valid]
            stats = summarize([r.value for _, r in valid], truth, [params[e.key] for e, _ in valid],
                              higher_is_better=hib, bands=plan.cfg["bands"], fraction=frac)
            out.append({
                "metric": metric,
                "proxy": proxy,
                "direction": "higher" if hib else "lower",
                "n_valid": len(valid),
                "n_invalid": len(present) - len(valid),
                "n_missing": len(plan.entries) - len(present),
                "kendall_tau": stats["kendall_tau"],
                "spearman_rho": stats["spearman_rho"],
                "band_tau": stats["band_tau"],
                "top_precision": stats["top_precision"],
                "mean_seconds": (sum(r.seconds for _, r in present) / len(present)) if present else math.nan,
                "_points": ([r.value for _, r in valid], truth),
            })
    return out


def top_pick(score: Any, truth: Any, allowed: Any) -> tuple[float, list[int]]:
    """Mean ``truth`` of the allowed items with the largest finite ``score``, and their indices.

    Tied items count as their mean: the expected value of picking one of them at random.
    """
    import numpy as np

    score, truth, allowed = np.asarray(score, dtype=float), np.asarray(truth, dtype=float), np.asarray(allowed)
    ok = allowed & np.isfinite(score)
    if not ok.any():
        return math.nan, []
    idx = np.flatnonzero(ok & (score == score[ok].max()))
    return float(truth[idx].mean()), idx.tolist()


LARGEST = "largest"  # the regret table's baseline: take the architecture with the most parameters


def regret_table(plan: Plan, rows: dict[tuple[str, str], Row]) -> list[dict[str, Any]]:
    """Per metric, params budget and proxy (then ``largest``): the true metric of the top pick
    among the architectures within the budget, the best there, and regret = best - pick."""
    import numpy as np

    from pipeline.metrics import orient

    keys = [e.key for e in plan.entries]
    by_key = _params(plan)
    params = np.array([by_key[k] for k in keys])
    scores = {}
    for proxy in plan.proxies:
        raw = [rows[(k, proxy)] if (k, proxy) in rows else None for k in keys]
        values = [r.value if r is not None and r.valid else math.nan for r in raw]
        scores[proxy] = orient(values, plan.higher_is_better[proxy])
    scores[LARGEST] = params
    out = []
    for metric in plan.metrics:
        truth = np.array([e.metrics[metric] for e in plan.entries])
        for budget in plan.budgets:
            under = params <= budget
            best, best_idx = top_pick(truth, truth, under)
            for name in [*plan.proxies, LARGEST]:
                pick, idx = top_pick(scores[name], truth, under)
                out.append({
                    "metric": metric, "budget_m": budget, "n_under": int(under.sum()), "proxy": name,
                    "n_scored": int((under & np.isfinite(scores[name])).sum()),
                    "pick_keys": " ".join(keys[i] for i in idx),
                    "pick_params_m": float(params[idx].mean()) if idx else math.nan,
                    "pick_metric": pick, "best_metric": best,
                    "best_keys": " ".join(keys[i] for i in best_idx),
                    "regret": best - pick,
                })
    return out


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
            ("top_precision", _top_label(plan.cfg["top_fraction"])), ("mean_seconds", "mean_seconds")]


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _md_table(header: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < left else "---:" for i in range(len(header))) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def compact_table(plan: Plan, summary: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Rows = proxies; for each metric its tau and band tau."""
    by = {(s["metric"], s["proxy"]): s for s in summary}
    header = ["proxy"] + [f"{m} {c}" for m in plan.metrics for c in ("tau", "band tau")]
    rows = [[p] + [_fmt(by[(m, p)][k], 3) for m in plan.metrics for k in ("kendall_tau", "band_tau")]
            for p in plan.proxies]
    return header, rows


def regret_tables(plan: Plan, regret: list[dict[str, Any]]) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Per metric: rows = best in file, proxies, largest; columns = budgets; cells = pick (regret)."""
    out = {}
    for metric in plan.metrics:
        mine = [r for r in regret if r["metric"] == metric]
        by = {(r["proxy"], r["budget_m"]): r for r in mine}
        header = [""] + [f"<= {b:g} M (n={by[(LARGEST, b)]['n_under']})" for b in plan.budgets]
        rows = [["best in file"] + [_fmt(by[(LARGEST, b)]["best_metric"], 2) for b in plan.budgets]]
        for name in [*plan.proxies, LARGEST]:
            rows.append([name] + [f"{_fmt(by[(name, b)]['pick_metric'], 2)} ({_fmt(by[(name, b)]['regret'], 2)})"
                                  for b in plan.budgets])
        out[metric] = (header, rows)
    return out


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
            + (f" Spec overrides applied to every architecture: {overrides}." if overrides else ""))


def write_summary(plan: Plan, summary: list[dict[str, Any]], regret: list[dict[str, Any]]) -> None:
    cols = summary_columns(plan)
    atomic_write_text(plan.out_dir / "summary.csv",
                      _csv([name for _, name in cols], [[_fmt(s[k], 6) for k, _ in cols] for s in summary]))
    regret_cols = list(regret[0]) if regret else ["metric", "budget_m", "proxy", "regret"]
    atomic_write_text(plan.out_dir / "regret.csv",
                      _csv(regret_cols, [[_fmt(r[c], 6) for c in regret_cols] for r in regret]))

    frac = 100 * plan.cfg["top_fraction"]
    md = [f"# Proxy correlation: {plan.gt_path.name}, {len(plan.entries)} architectures ({plan.split}), "
          f"metrics {', '.join(f'`{m}`' for m in plan.metrics)}", "", _selection_line(plan), "",
          (f"Kendall tau-b and Spearman rho over valid scores (proxy oriented so that larger = better); "
           f"band tau = size-weighted mean tau within {plan.cfg['bands']} equal-count parameter bands; "
           f"{_top_label(plan.cfg['top_fraction'])} = share of the true top {frac:g}% "
           f"that the proxy also ranks in its top {frac:g}%. "
           f"Probe: {plan.cfg['probe']}; model seed {plan.cfg['model_seed']}."), "",
          "## Tau and band tau per metric", "", *_md_table(*compact_table(plan, summary)), "",
          "## Regret under params budgets", "",
          ("True metric of the proxy's top pick among the architectures with at most the budget's "
           "parameters (our count), and in brackets its regret = best in file under the budget - pick; "
           f"`{LARGEST}` simply takes the biggest architecture. Ties count as their mean. "
           "All rows in regret.csv."), ""]
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

    show(f"{plan.gt_path.name} ({plan.split}): {len(plan.entries)} architectures, Kendall tau and band tau "
         f"({plan.cfg['bands']} params bands)", *compact_table(plan, summary))
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


# ----------------------------------------------------------------------------- entry point


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

    summary = summarize_scores(plan, rows)
    regret = regret_table(plan, rows)
    write_summary(plan, summary, regret)
    print_summary(plan, summary, regret, console)
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
