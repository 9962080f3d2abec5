"""``scores.csv``: one row per (architecture, proxy), appended and fsynced as it is computed.

The file is also the resume log of a correlate run: a rerun reads it back, refuses it when it was
scored with other settings, and computes only the missing pairs.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from pipeline.correlate.plan import BASE_COLUMNS, LEGACY_BASE_COLUMNS, Plan
from pipeline.correlate.settings import names
from pipeline.errors import UserError
from pipeline.utils.io import atomic_write

SCORES_NAME = "scores.csv"
CONFIG_NAME = "config.yaml"
ERROR_PREFIX = "error: "
# Settings whose change makes earlier scores incomparable (checked before resuming).
SCORING_KEYS = ("metric", "space", "probe", "model_seed", "arch_overrides")
ABORT_AFTER = 3  # a proxy that raises on its first this-many architectures stops the run


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
    # what a population-ranked proxy measured (its value is NaN here and derived by ranking: statistics.py)
    components: Mapping[str, float] = field(default_factory=dict)

    def cells(self) -> list[str]:
        components = json.dumps(dict(self.components), sort_keys=True) if self.components else ""
        return [self.key, self.proxy, repr(float(self.value)), "1" if self.valid else "0",
                self.reason.replace("\r", " ").replace("\n", " "), repr(float(self.seconds)),
                repr(float(self.params_m)), repr(float(self.flops_m)), components,
                *(repr(float(m)) for m in self.metrics)]

    @classmethod
    def parse(cls, cells: list[str], n_metrics: int) -> "Row":
        if len(cells) != len(BASE_COLUMNS) + n_metrics:
            raise ValueError(f"{len(cells)} cells")
        key, proxy, value, valid, reason, seconds, params_m, flops_m, components = cells[:len(BASE_COLUMNS)]
        if valid not in ("0", "1"):
            raise ValueError(f"valid={valid!r}")
        parsed = json.loads(components) if components else {}
        if not isinstance(parsed, dict):
            raise ValueError(f"components={components!r}")
        return cls(key, proxy, float(value), valid == "1", reason, float(seconds), float(params_m),
                   float(flops_m), tuple(float(m) for m in cells[len(BASE_COLUMNS):]),
                   {str(k): float(v) for k, v in parsed.items()})


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
    legacy = LEGACY_BASE_COLUMNS + columns[len(BASE_COLUMNS):]
    if lines[0] == legacy:   # written before the components column: the same rows with none
        at = len(LEGACY_BASE_COLUMNS)
        lines = [columns] + [cells[:at] + [""] + cells[at:] if len(cells) == len(legacy) else cells
                             for cells in lines[1:]]
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(lines)
        atomic_write(path, lambda p: p.write_text(text.getvalue(), encoding="utf-8"))
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
                        components = dict(s.components)
                    except Exception as e:  # one failing proxy must not end a long run; recorded
                        value, valid, seconds, components = math.nan, False, 0.0, {}
                        reason = f"{ERROR_PREFIX}{type(e).__name__}: {e}"
                        errors[proxy] = errors.get(proxy, 0) + 1
                        if errors[proxy] == 1:
                            console.print(f"[yellow]warning:[/] proxy {proxy} failed on {entry.key}: "
                                          f"{type(e).__name__}: {e} (recorded as invalid; "
                                          "--retry_errors=true recomputes such rows)")
                    else:
                        successes[proxy] = successes.get(proxy, 0) + 1
                    row = Row(entry.key, proxy, value, valid, reason, seconds, params / 1e6, macs / 1e6,
                              tuple(entry.metrics[m] for m in plan.metrics), components)
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
