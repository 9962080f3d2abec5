"""``<run>/report.md``: one page that says what a ``pipeline run`` chose and what it achieved.

Built only from the files the stages leave behind (``search/arch.yaml`` and ``candidates.jsonl``,
``cls/`` and ``seg/`` ``metrics.json`` and ``csv/version_*/metrics.csv``), so it can be rewritten
at any time, also for a run whose later stages have not finished. Curves are drawn to PNG files
beside the report and embedded with relative links (they render on GitHub and in VS Code).
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, Optional

from pipeline.space.spec import ArchSpec
from pipeline.utils.io import atomic_write, atomic_write_text


def _csv_history(stage_dir: Path) -> list[dict[str, float]]:
    """Rows of every ``csv/version_*/metrics.csv`` (a resumed run adds a version), in order."""
    rows: list[dict[str, float]] = []
    versions = sorted((stage_dir / "csv").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name[8:]))
    for path in versions:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                rows.append({k: float(v) for k, v in row.items() if v not in ("", None)})
    return rows


def _series(rows: list[dict[str, float]], key: str, x: str) -> tuple[list[float], list[float]]:
    pairs = [(r[x], r[key]) for r in rows if key in r and x in r and math.isfinite(r[key])]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _plot_curves(rows: list[dict[str, float]], panels: list[tuple[str, str, str]], path: Path) -> Optional[Path]:
    """One panel per (metric, x-axis key, title); None when there is nothing to draw."""
    panels = [p for p in panels if _series(rows, p[0], p[1])[0]]
    if not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (key, x, title) in zip(axes[0], panels):
        xs, ys = _series(rows, key, x)
        ax.plot(xs, ys, marker="o" if len(xs) < 60 else None, markersize=3)
        ax.set(title=title, xlabel=x)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path


def _read_json(path: Path) -> Optional[dict[str, Any]]:
    return json.loads(path.read_text()) if path.is_file() else None


def _search_section(run_dir: Path) -> list[str]:
    from pipeline.models import count_flops, count_params

    d = run_dir / "search"
    spec = ArchSpec.load(d / "arch.yaml")
    rows = [json.loads(line) for line in (d / "candidates.jsonl").read_text().splitlines() if line.strip()] \
        if (d / "candidates.jsonl").is_file() else []
    chosen = next((r for r in rows if ArchSpec.from_dict(r["spec"]) == spec), None)
    import yaml

    cfg = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else {}
    proxy = (cfg.get("proxy") or {}).get("name", "?")
    invalid = sum(1 for r in rows if not r.get("valid", True))
    lines = ["## 1. Search (training-free)", "",
             f"Space `{spec.space}`, proxy `{proxy}`, strategy `{(cfg.get('strategy') or {}).get('name', '?')}`; "
             f"{len(rows)} candidates scored ({invalid} invalid).", "",
             "| chosen architecture | params | FLOPs (multiply-adds) | proxy score |", "|---|---|---|---|",
             f"| `{spec.short()}` | {count_params(spec) / 1e6:.3f} M | {count_flops(spec) / 1e6:.1f} M | "
             f"{chosen['score']:.4f} |" if chosen else
             f"| `{spec.short()}` | {count_params(spec) / 1e6:.3f} M | {count_flops(spec) / 1e6:.1f} M | - |", "",
             f"Embed dim {spec.embed_dim}, depth {sum(spec.stage_depths)}, heads per layer "
             f"{list(spec.num_heads)}, MLP ratios {list(spec.mlp_ratio)}. Spec: [search/arch.yaml](search/arch.yaml).", ""]
    latency = (yaml.safe_load((d / "arch.yaml").read_text()) or {}).get("latency")
    if latency:   # the search ran for a device: its latency in the search and re-measured in a fresh process
        from pipeline.latency.costs import latency_line

        lines += [f"Latency of the chosen architecture: {latency_line(latency)}.", ""]
    by_latency = latency and ((cfg.get("limits") or {}).get("max_latency_ms") is not None
                              or cfg.get("objective", "score") != "score")
    for name, caption in (("pareto.png", "score vs latency" if by_latency else "score vs params"),
                          ("convergence.png", "best score per generation")):
        if (d / name).is_file():
            lines.append(f"![{caption}](search/{name})")
    return lines + [""]


def _training_results(run_dir: Path, stage: str, panels: list[tuple[str, str, str]]):
    """A training stage's ``metrics.json`` (empty until it finished) and its curves' PNG, if any."""
    metrics = _read_json(run_dir / stage / "metrics.json") or {}
    return metrics, _plot_curves(_csv_history(run_dir / stage), panels, run_dir / f"{stage}_curves.png")


def _cls_section(run_dir: Path) -> list[str]:
    metrics, curves = _training_results(run_dir, "cls", [
        ("train/loss_epoch", "epoch", "train loss"), ("val/loss", "epoch", "val loss"), ("val/top1", "epoch", "val top-1")])
    lines = ["## 2. Classification retraining", ""]
    if metrics:
        shown = ", ".join(f"{k} **{v:.4f}**" for k, v in sorted(metrics.items())
                          if k.startswith("val/") and isinstance(v, (int, float)))
        lines += [f"Final validation metrics (best checkpoint): {shown}.",
                  f"Epochs: {metrics.get('epochs', '?')}, in {metrics.get('wall_time_s', 0) / 60:.1f} min; "
                  "exported backbone for segmentation: [cls/model.pt](cls/model.pt).", ""]
    else:
        lines += ["Not finished yet.", ""]
    if curves:
        lines.append(f"![classification curves]({curves.name})")
    return lines + [""]


def _seg_section(run_dir: Path) -> list[str]:
    m, curves = _training_results(run_dir, "seg", [("train/loss", "step", "train loss"),
                                                  ("val/mIoU", "step", "val mIoU")])
    lines = ["## 3. Segmentation retraining", ""]
    if m:
        base = m.get("majority_baseline") or {}
        lines += [f"Final validation **mIoU {m['mIoU']:.2f}**, aAcc {m['aAcc']:.2f}"
                  + (f" (majority-class baseline: mIoU {base['mIoU']:.2f}, aAcc {base['aAcc']:.2f})" if base else "")
                  + f"; {m.get('steps', '?')} steps in {m.get('wall_time_s', 0) / 60:.1f} min; backbone "
                  + ("initialised from the classification checkpoint." if m.get("backbone_init")
                     else "trained from a random initialisation."), "",
                  "| class | IoU |", "|---|---|"]
        lines += [f"| {name} | {v:.2f} |" for name, v in (m.get("per_class_IoU") or {}).items()]
        lines.append("")
    else:
        lines += ["Not finished yet.", ""]
    if curves:
        lines.append(f"![segmentation curves]({curves.name})")
    if (run_dir / "seg" / "val_examples.png").is_file():
        lines.append("![validation images | ground truth | prediction](seg/val_examples.png)")
    return lines + [""]


def _ground_truth_section(run_dir: Path) -> list[str]:
    """Where the pick stands on the run's ``ground_truth`` file (``pipeline run --ground_truth=FILE``)."""
    import yaml

    from pipeline.groundtruth import load_ground_truth
    from pipeline.groundtruth.standing import standing, standing_lines
    from pipeline.space import Limits

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    pick = ArchSpec.load(run_dir / "search" / "arch.yaml")
    entries = load_ground_truth(cfg["ground_truth"])
    metric = cfg.get("ground_truth_metric") or next(iter(entries[0].metrics), "top1")
    s = standing(entries, pick, Limits.of_space((cfg.get("search") or {}).get("limits")), metric)
    return ["## The pick against the largest that fits", "", *standing_lines(s, pick, cfg["ground_truth"])]


def _refine_section(run_dir: Path) -> list[str]:
    """The training race's winner (what cls trained), its cost and the race (refine/refine.json, refine.png)."""
    r = json.loads((run_dir / "refine" / "refine.json").read_text())
    w = r["winner"]
    lines = ["## Refine: the training race", "",
             f"Winner: `{w['short']}` ({w['params_m']:.3f} M params, {w['flops_m']:.1f} M FLOPs; "
             f"{' + '.join(w['roles'])}), out of {len(r['entrants'])} entrants, chosen on "
             f"{r['selection_split']['held_out']} training images held out of training. Cost: "
             f"{r['epochs_trained']} epochs = {r['full_retrains']:.2f} full retrains. Every entrant and rung: "
             "[refine/rungs.csv](refine/rungs.csv).", ""]
    if (run_dir / "refine" / "refine.png").is_file():
        lines += ["![the race](refine/refine.png)", ""]
    return lines


def _wants_ground_truth(run_dir: Path) -> bool:
    import yaml

    path = run_dir / "config.yaml"
    return path.is_file() and bool((yaml.safe_load(path.read_text()) or {}).get("ground_truth"))


def write_report(run_dir: Path) -> Path:
    """(Re)write ``run_dir/report.md`` from whatever stages have finished."""
    run_dir = Path(run_dir)
    done = [(stage, run_dir / "stages" / f"{stage}.done.json") for stage in ("search", "refine", "cls", "seg")]
    timings = {stage: json.loads(p.read_text())["seconds"] for stage, p in done if p.is_file()}
    lines = [f"# Run `{run_dir.name}`", ""]
    if timings:
        lines += ["Stage wall times: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in timings.items()) + ".", ""]
    if (run_dir / "search" / "arch.yaml").is_file():
        lines += _search_section(run_dir)
    if (run_dir / "search" / "arch.yaml").is_file() and _wants_ground_truth(run_dir):
        lines += _ground_truth_section(run_dir)
    if (run_dir / "refine" / "refine.json").is_file():
        lines += _refine_section(run_dir)
    if (run_dir / "cls").is_dir():
        lines += _cls_section(run_dir)
    if (run_dir / "seg").is_dir():
        lines += _seg_section(run_dir)
    return atomic_write_text(run_dir / "report.md", "\n".join(lines))
