"""``python -m pipeline correlate``: how well do training-free proxies rank real architectures?

Reads a ground-truth file (architectures with measured accuracy), scores every selected
architecture with every selected proxy on one fixed probe batch, and reports per proxy Kendall
tau, Spearman rho, tau within parameter-count bands and top-10% precision (``pipeline.metrics``).

Outputs, in ``output_dir``:

* ``config.yaml`` - the resolved config (paths absolute); ``--config`` it to rerun/resume.
* ``scores.csv`` - one row per (architecture, proxy), appended and fsynced as soon as it is
  computed: columns ``key, proxy, value, valid, reason, seconds, params_m, flops_m, <metric>``.
  A rerun with the same ``output_dir`` keeps every pair already there and computes only the
  missing ones (a truncated last line, left by a crash mid-write, is dropped). ``--fresh=true``
  starts over. Rerunning with settings that change scores (probe, model seed, proxy options,
  metric, ground truth) into a non-empty ``output_dir`` is refused rather than mixing results.
* ``summary.csv`` / ``summary.md`` - the statistics table (also printed).
* ``scatter_<proxy>.png`` - proxy value against the metric, one per proxy.

Invalid scores (a singular kernel, a non-finite value, a proxy that raised) are kept in
``scores.csv`` with their reason, counted in the summary and left out of the statistics.
"""
from __future__ import annotations

import csv
import inspect
import io
import math
import os
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, get_args, get_origin, get_type_hints

import yaml

from pipeline.cli import UserError
from pipeline.config import load_config, save_config
from pipeline.utils.io import atomic_write, atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "configs" / "correlate" / "default.yaml"
SCORES_NAME = "scores.csv"
CONFIG_NAME = "config.yaml"
BASE_COLUMNS = ["key", "proxy", "value", "valid", "reason", "seconds", "params_m", "flops_m"]
ERROR_PREFIX = "error: "
# Settings whose change makes earlier scores incomparable (checked before resuming).
SCORING_KEYS = ("metric", "space", "probe", "model_seed")
ABORT_AFTER = 3  # a proxy that raises on its first this-many architectures stops the run

USAGE = """\
usage: python -m pipeline correlate [--config FILE] [--KEY=VALUE | --SECTION.KEY=VALUE ...]

Score the architectures of a ground-truth file with training-free proxies and report, per proxy,
Kendall tau, Spearman rho, tau within parameter-count bands (size-weighted mean of the per-band
taus) and top-10% precision. Results go to OUTPUT_DIR: config.yaml, scores.csv (appended after
every score; rerunning resumes and never recomputes a pair), summary.csv, summary.md and
scatter_<proxy>.png.

  --config FILE   YAML config (default: configs/correlate/default.yaml)
  --limit N       shorthand override of the top-level key 'limit' (likewise --seed S, --fresh=true)

Config keys (the default config, with its documentation):

"""


# ----------------------------------------------------------------------------- config


@dataclass
class Plan:
    """Everything a run needs, validated before any work starts."""

    cfg: dict[str, Any]
    gt_path: Path
    out_dir: Path
    metric: str
    proxies: list[str]
    higher_is_better: dict[str, bool]
    options: dict[str, dict[str, Any]]
    entries: list[Any]                       # selected groundtruth.Entry objects
    device: str
    n_without_metric: int = 0
    probes: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # image size -> (images, labels)

    @property
    def columns(self) -> list[str]:
        return BASE_COLUMNS + [self.metric]


def _split_args(argv: Sequence[str]) -> tuple[Optional[str], list[str]]:
    config, rest, i = None, [], 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg == "--config":
            if i + 1 >= len(argv):
                raise UserError("--config needs a file path: --config FILE")
            config, i = argv[i + 1], i + 2
            continue
        if arg.startswith("--config="):
            config = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    return config, rest


def resolve_input(path: str | Path, what: str) -> Path:
    """A relative path is looked up in the current directory, then in the repository root."""
    p = Path(str(path)).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, REPO_ROOT / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise UserError(f"{what} {str(path)!r} does not exist (looked for {' and '.join(str(c) for c in candidates)})")


def _int(key: str, value: Any, minimum: Optional[int] = None, allow_none: bool = False) -> Optional[int]:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or float(value) != int(value):
        raise UserError(f"{key} must be an integer{' or null' if allow_none else ''}, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise UserError(f"{key} must be >= {minimum}, got {value}")
    return value


def _proxy_list(value: Any) -> list[str]:
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise UserError(f"proxies must be a list of names or a comma-separated string, got {value!r}")
    names: list[str] = []
    for v in value:
        v = str(v).strip()
        if v and v not in names:
            names.append(v)
    if not names:
        raise UserError("proxies is empty; name at least one proxy")
    return names


def _check_options(name: str, info: Any, options: Any) -> dict[str, Any]:
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise UserError(f"proxy_options.{name} must be a mapping of option: value, got {options!r}")
    try:
        sig = inspect.signature(info.fn)
    except (TypeError, ValueError):
        return dict(options)
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return dict(options)
    allowed = {p.name for p in params[3:] if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                        inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    allowed = (allowed | set(info.defaults)) - {"seed", "device"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UserError(f"unknown option(s) {unknown} for proxy {name!r}; it accepts: {sorted(allowed) or 'none'}"
                        + (f" (defaults {info.defaults})" if info.defaults else ""))
    try:  # an option annotated Literal[...] takes only those values
        hints = get_type_hints(info.fn)
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
    from pipeline.groundtruth import load_ground_truth

    cfg = dict(cfg)
    if not cfg.get("ground_truth"):
        raise UserError("ground_truth is not set; pass --ground_truth=PATH")
    gt_path = resolve_input(cfg["ground_truth"], "ground-truth file")
    cfg["ground_truth"] = str(gt_path)
    metric = str(cfg.get("metric") or "")
    proxies = _proxy_list(cfg.get("proxies"))
    cfg["proxies"] = proxies
    limit = _int("limit", cfg.get("limit"), 1, allow_none=True)
    seed = _int("seed", cfg.get("seed", 0))
    cfg["bands"] = _int("bands", cfg.get("bands"), 1)
    cfg["model_seed"] = _int("model_seed", cfg.get("model_seed", 0))
    cfg["threads"] = _int("threads", cfg.get("threads"), 1, allow_none=True)
    frac = cfg.get("top_fraction")
    if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
        raise UserError(f"top_fraction must be a number in (0, 1], got {frac!r}")
    probe = dict(cfg.get("probe") or {})
    from pipeline.data.probe import SOURCES

    if probe.get("source") not in (*SOURCES, "folder"):
        raise UserError(f"probe.source must be one of {[*SOURCES, 'folder']}, got {probe.get('source')!r}")
    if probe["source"] == "folder" and not probe.get("root"):
        raise UserError("probe.source=folder needs --probe.root=/path/to/dataset (root/train/<class>/*)")
    probe["n"] = _int("probe.n", probe.get("n"), 1)
    probe["image_size"] = _int("probe.image_size", probe.get("image_size"), 1, allow_none=True)
    probe["seed"] = _int("probe.seed", probe.get("seed", 0))
    cfg["probe"] = probe

    # proxies and their options (importing the registry loads torch: after the cheap checks)
    from pipeline.proxies.registry import available_proxies, get_proxy

    known = available_proxies()
    unknown = [p for p in proxies if p not in known]
    if unknown:
        raise UserError(f"unknown proxy name(s) {unknown}; available proxies: {', '.join(known)}")
    raw_options = cfg.get("proxy_options") or {}
    if not isinstance(raw_options, dict):
        raise UserError(f"proxy_options must map proxy names to option mappings, got {raw_options!r}")
    stray = sorted(set(raw_options) - set(known))
    if stray:
        raise UserError(f"proxy_options names unknown proxy(ies) {stray}; available proxies: {', '.join(known)}")
    infos = {p: get_proxy(p) for p in proxies}
    options = {p: _check_options(p, infos[p], raw_options.get(p)) for p in proxies}

    entries = load_ground_truth(gt_path, space=cfg.get("space"))
    if not entries:
        raise UserError(f"ground-truth file {gt_path} holds no architectures")
    present = sorted({m for e in entries for m in e.metrics})
    if metric not in present:
        raise UserError(f"metric {metric!r} is not in {gt_path}; metrics present: {present or 'none'}")
    seen: set[str] = set()
    for e in entries:
        if e.key in seen:
            raise UserError(f"ground-truth file {gt_path} has two architectures with key {e.key!r}; "
                            "keys must be unique")
        seen.add(e.key)
    usable = [e for e in entries if metric in e.metrics and math.isfinite(e.metrics[metric])]
    order = list(range(len(usable)))
    if limit is not None:
        random.Random(seed).shuffle(order)  # a smaller limit with the same seed is a prefix
        order = sorted(order[:limit])       # file order: results never depend on the shuffle order
    selected = [usable[i] for i in order]

    device = resolve_device(cfg.get("device", "auto"))
    out = cfg.get("output_dir") or Path("checkpoints") / "correlate" / gt_path.stem
    out_dir = Path(str(out)).expanduser().resolve()
    cfg["output_dir"] = str(out_dir)

    plan = Plan(cfg, gt_path, out_dir, metric, proxies, {p: infos[p].higher_is_better for p in proxies},
                options, selected, device, n_without_metric=len(entries) - len(usable))
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
    metric: float

    def cells(self) -> list[str]:
        return [self.key, self.proxy, repr(float(self.value)), "1" if self.valid else "0",
                self.reason.replace("\r", " ").replace("\n", " "), repr(float(self.seconds)),
                repr(float(self.params_m)), repr(float(self.flops_m)), repr(float(self.metric))]

    @classmethod
    def parse(cls, cells: list[str]) -> "Row":
        key, proxy, value, valid, reason, seconds, params_m, flops_m, metric = cells
        if valid not in ("0", "1"):
            raise ValueError(f"valid={valid!r}")
        return cls(key, proxy, float(value), valid == "1", reason, float(seconds), float(params_m),
                   float(flops_m), float(metric))


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
        raise UserError(f"{path} has columns {lines[0]} but this run writes {columns} (another metric?); "
                        "pass --fresh=true to start over or choose another --output_dir")
    rows: dict[tuple[str, str], Row] = {}
    for cells in lines[1:]:
        try:
            row = Row.parse(cells)
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
    for k in SCORING_KEYS:
        if prev.get(k) != cfg.get(k):
            diffs.append(f"{k}: {prev.get(k)!r} -> {cfg.get(k)!r}")
    if Path(str(prev.get("ground_truth", ""))).name != plan.gt_path.name:
        diffs.append(f"ground_truth: {prev.get('ground_truth')!r} -> {str(plan.gt_path)!r}")
    prev_opts = prev.get("proxy_options") or {}
    scored = {p for (_, p), r in rows.items() if not r.reason.startswith(ERROR_PREFIX)}
    for proxy in sorted(scored):  # options only matter for proxies with real scores
        old, new = prev_opts.get(proxy) or {}, (cfg.get("proxy_options") or {}).get(proxy) or {}
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

    retry = bool(plan.cfg.get("retry_errors"))

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
                              entry.metrics[plan.metric])
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


def summarize_scores(plan: Plan, rows: dict[tuple[str, str], Row]) -> list[dict[str, Any]]:
    from pipeline.metrics import summarize
    from pipeline.models.complexity import count_params

    params = {e.key: count_params(e.spec) / 1e6 for e in plan.entries}
    frac = float(plan.cfg["top_fraction"])
    out = []
    for proxy in plan.proxies:
        present = [(e, rows[(e.key, proxy)]) for e in plan.entries if (e.key, proxy) in rows]
        valid = [(e, r) for e, r in present if r.valid and math.isfinite(r.value)]
        hib = plan.higher_is_better[proxy]
        stats = summarize([r.value for _, r in valid], [e.metrics[plan.metric] for e, _ in valid],
                          [params[e.key] for e, _ in valid], higher_is_better=hib,
                          bands=plan.cfg["bands"], fraction=frac)
        out.append({
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
            "_points": ([r.value for _, r in valid], [e.metrics[plan.metric] for e, _ in valid]),
        })
    return out


def _top_label(frac: float) -> str:
    return f"top{100 * frac:g}_precision"


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def summary_columns(plan: Plan) -> list[tuple[str, str]]:
    """(summary key, column name) pairs of summary.csv / summary.md."""
    return [("proxy", "proxy"), ("direction", "direction"), ("n_valid", "n_valid"), ("n_invalid", "n_invalid"),
            ("n_missing", "n_missing"), ("kendall_tau", "kendall_tau"), ("spearman_rho", "spearman_rho"),
            ("band_tau", f"band_tau_{plan.cfg['bands']}"), ("top_precision", _top_label(plan.cfg["top_fraction"])),
            ("mean_seconds", "mean_seconds")]


def write_summary(plan: Plan, summary: list[dict[str, Any]]) -> None:
    cols = summary_columns(plan)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([name for _, name in cols])
    for s in summary:
        w.writerow([_fmt(s[k], 6) for k, _ in cols])
    atomic_write_text(plan.out_dir / "summary.csv", buf.getvalue())

    n = len(plan.entries)
    md = [f"# Proxy correlation: {plan.gt_path.name}, metric `{plan.metric}`, {n} architectures", "",
          (f"Kendall tau-b and Spearman rho over valid scores (proxy oriented so that larger = better); "
           f"band tau = size-weighted mean tau within {plan.cfg['bands']} equal-count parameter bands; "
           f"{_top_label(plan.cfg['top_fraction'])} = share of the true top {100 * plan.cfg['top_fraction']:g}% "
           f"that the proxy also ranks in its top {100 * plan.cfg['top_fraction']:g}%. "
           f"Probe: {plan.cfg['probe']}; model seed {plan.cfg['model_seed']}."), "",
          "| " + " | ".join(name for _, name in cols) + " |",
          "|" + "|".join("---" if k in ("proxy", "direction") else "---:" for k, _ in cols) + "|"]
    for s in summary:
        md.append("| " + " | ".join(_fmt(s[k], 3) for k, _ in cols) + " |")
    atomic_write_text(plan.out_dir / "summary.md", "\n".join(md) + "\n")


def print_summary(plan: Plan, summary: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{plan.gt_path.name}: {len(plan.entries)} architectures, metric {plan.metric}")
    cols = summary_columns(plan)
    labels = {"n_valid": "valid", "n_invalid": "invalid", "n_missing": "missing", "kendall_tau": "tau",
              "spearman_rho": "rho", "band_tau": f"band tau ({plan.cfg['bands']})",
              "top_precision": f"top{100 * plan.cfg['top_fraction']:g}% prec", "mean_seconds": "s/arch"}
    for k, name in cols:
        table.add_column(labels.get(k, name), justify="left" if k in ("proxy", "direction") else "right")
    for s in summary:
        table.add_row(*[_fmt(s[k], 3) for k, _ in cols])
    console.print(table)


def write_plots(plan: Plan, summary: list[dict[str, Any]]) -> list[Path]:
    from matplotlib.figure import Figure

    written = []
    for s in summary:
        xs, ys = s["_points"]
        if not xs:
            continue
        fig = Figure(figsize=(5, 4), dpi=100)
        ax = fig.add_subplot()
        ax.scatter(xs, ys, s=10, alpha=0.7)
        if min(xs) > 0 and max(xs) / min(xs) > 1e3:
            ax.set_xscale("log")
        ax.set_xlabel(f"{s['proxy']} ({s['direction']} is better)")
        ax.set_ylabel(plan.metric)
        ax.set_title(f"{s['proxy']}: Kendall tau (oriented) = {_fmt(s['kendall_tau'], 3)} (n = {s['n_valid']})")
        fig.tight_layout()
        path = plan.out_dir / f"scatter_{s['proxy']}.png"
        atomic_write(path, lambda p, fig=fig: fig.savefig(p, format="png"))
        written.append(path)
    return written


# ----------------------------------------------------------------------------- entry point


def run(plan: Plan, console: Any, err_console: Any) -> list[dict[str, Any]]:
    plan.out_dir.mkdir(parents=True, exist_ok=True)
    scores_path = plan.out_dir / SCORES_NAME
    if plan.cfg.get("fresh"):
        for old in [scores_path, plan.out_dir / "summary.csv", plan.out_dir / "summary.md",
                    *plan.out_dir.glob("scatter_*.png")]:
            old.unlink(missing_ok=True)
    rows, dropped = read_scores(scores_path, plan.columns)
    if dropped:
        err_console.print(f"[yellow]warning:[/] dropped {dropped} unreadable line(s) of {scores_path} "
                          "(a write cut short); those pairs are recomputed")
    check_resume(plan, rows)
    # fresh is a one-off action: the saved config resumes (--config OUT/config.yaml), never wipes
    save_config({**plan.cfg, "fresh": False}, plan.out_dir / CONFIG_NAME)

    n_done = sum(1 for e in plan.entries for p in plan.proxies if (e.key, p) in rows)
    extra = f", {plan.n_without_metric} without metric {plan.metric!r} skipped" if plan.n_without_metric else ""
    err_console.print(f"correlate: {len(plan.entries)} architectures x {len(plan.proxies)} proxies on "
                      f"{plan.device}{extra}; {n_done} score(s) already in {scores_path}")
    computed = compute_scores(plan, rows, err_console)

    summary = summarize_scores(plan, rows)
    write_summary(plan, summary)
    print_summary(plan, summary, console)
    invalid = {s["proxy"]: s["n_invalid"] for s in summary if s["n_invalid"]}
    if invalid:
        console.print(f"invalid scores (kept in scores.csv, left out of the statistics): {invalid}")
    if plan.cfg.get("plots", True):
        write_plots(plan, summary)
    console.print(f"computed {computed} new score(s); results in {plan.out_dir}")
    return summary


def main(argv: Sequence[str]) -> int:
    argv = list(argv)
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE + DEFAULT_CONFIG.read_text())
        return 0
    config, overrides = _split_args(argv)
    config_path = resolve_input(config, "config file") if config else DEFAULT_CONFIG
    cfg = load_config(config_path, overrides)

    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)
    err_console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
    plan = prepare(cfg)
    import torch

    threads = torch.get_num_threads()
    if plan.cfg.get("threads"):
        torch.set_num_threads(plan.cfg["threads"])
    try:
        run(plan, console, err_console)
    except KeyboardInterrupt:
        err_console.print(f"interrupted; scores so far are in {plan.out_dir / SCORES_NAME}. "
                          "Rerun the same command to resume.")
        return 130
    finally:
        torch.set_num_threads(threads)  # main() may be called in-process (tests, notebooks)
    return 0
