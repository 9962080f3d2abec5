"""``python -m pipeline run``: search, then classification retraining, then segmentation retraining.

One command for the whole product. Each stage is the ordinary command (``search``, ``train --task
cls``, ``train --task seg``) run as a subprocess on a config derived from the run config, so a
stage behaves exactly as it does alone, frees its memory when done, and can use DDP. Stages meet
through files in ``<out_dir>/<run_name>/``::

    search/arch.yaml  --(arch)-->  cls/model.pt  --(backbone_ckpt)-->  seg/metrics.json

With the ``refine`` stage (only when ``--stages`` or the run config names it) the search's folder goes
to refine, which races its best candidates with the cls stage's recipe and data
(``stages/refine-recipe.yaml``), and cls trains refine's winner::

    search/  --(search_dir)-->  refine/arch.yaml  --(arch)-->  cls/model.pt  --> ...

and through W&B: every stage is a run of the W&B group ``<run_name>``, and the hand-offs are
logged as artifacts (``arch-<run>-search``, ``model-<run>-cls``).

A stage that finished writes ``stages/<stage>.done.json`` (its config and wall time); a rerun of
the same command skips it. An interrupted stage continues where it stopped (the search from its
resume log, training from ``last.ckpt``). ``report.md`` is rewritten after every stage.
"""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pipeline.errors import UserError
from pipeline.config import resolve_path, save_config
from pipeline.run.settings import parse_config
from pipeline.utils.io import atomic_write_text, remove_stale_temps

COMMANDS = {"search": ["search"], "refine": ["refine"], "cls": ["train", "--task", "cls"],
            "seg": ["train", "--task", "seg"]}


# ---------------------------------------------------------------------------- config
def stage_config(cfg: dict[str, Any], stage: str, run_dir: Path) -> dict[str, Any]:
    """A stage's own config, wired to the run folder, the W&B group and the previous stage."""
    c = copy.deepcopy(cfg[stage])
    c["out_dir"], c["run_name"] = str(run_dir), stage
    c["wandb"] = {**c["wandb"], **cfg["wandb"], "group": cfg["run_name"]}
    arch, model = run_dir / "search" / "arch.yaml", run_dir / "cls" / "model.pt"
    refined = run_dir / "refine" / "arch.yaml"
    if stage == "refine":   # the search stage's folder, raced with the cls stage's recipe and data
        c["search_dir"] = str(run_dir / "search")
        c["recipe"] = str(run_dir / "stages" / "refine-recipe.yaml")
    if stage == "cls" and (refined.is_file() or arch.is_file()):   # refine's winner when that stage ran
        c["arch"] = str(refined if refined.is_file() else arch)
    if stage == "seg":
        if model.is_file():
            c["arch"], c["backbone_ckpt"] = None, str(model)  # the spec comes with the checkpoint
        elif arch.is_file():
            c["arch"] = str(arch)
    return c


def preflight(cfg: dict[str, Any]) -> None:
    """Check the stages' data roots now, not after an hours-long search.

    Each stage validates its data fully when it starts; this only catches a missing root early.
    """
    roots = []
    if "search" in cfg["stages"] and cfg["search"]["probe"]["source"] == "folder":
        roots.append(("search.probe.root", cfg["search"]["probe"]["root"]))
    if "cls" in cfg["stages"] and cfg["cls"]["data"].get("source") == "folder":
        roots.append(("cls.data.root", cfg["cls"]["data"].get("root")))
    if "seg" in cfg["stages"] and cfg["seg"]["data"].get("data_root") is not None:
        roots.append(("seg.data.data_root", cfg["seg"]["data"]["data_root"]))
    for key, root in roots:
        if not root or not resolve_path(root).is_dir():
            raise UserError(f"--{key}={root}: no such dataset folder; pass --{key}=/path/to/dataset "
                            "(see the README's 'Real data' section for the layouts)")


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [k for key in keys for k in _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [prefix.rstrip(".")]


# ----------------------------------------------------------------------------- stages
def run_stage(stage: str, stage_cfg: dict[str, Any], run_dir: Path) -> Optional[float]:
    """Run one stage unless it already finished with this config; returns its seconds (None: skipped)."""
    stages_dir = run_dir / "stages"
    done = stages_dir / f"{stage}.done.json"
    if done.is_file():
        record = json.loads(done.read_text())
        changed = _changed_keys(record["config"], stage_cfg)
        if not changed:
            print(f"[run] {stage}: finished earlier ({record['seconds']:.0f} s), skipped")
            return None
        raise UserError(f"stage {stage!r} of {run_dir} finished with other settings ({', '.join(changed[:5])}); "
                        f"use another --run_name, or delete {run_dir / stage} and {done} to redo it")
    config_file = save_config(stage_cfg, stages_dir / f"{stage}.yaml")
    argv = [*COMMANDS[stage], "--config", str(config_file)]
    if stage != "search" and (run_dir / stage / "last.ckpt").is_file():
        argv.append("--resume=true")  # an interrupted training run continues (the search resumes by itself)
    print(f"[run] {stage}: python -m pipeline {' '.join(argv)}", flush=True)
    start = time.time()
    code = subprocess.call([sys.executable, "-m", "pipeline", *argv], cwd=Path.cwd())
    if code != 0:
        raise SystemExit(f"[run] stage {stage!r} failed (exit status {code}); fix the cause and rerun the "
                         "same command: finished stages are skipped, this one continues")
    seconds = time.time() - start
    atomic_write_text(done, json.dumps({"config": stage_cfg, "seconds": round(seconds, 1),
                                        "finished": time.strftime("%Y-%m-%d %H:%M:%S")}, indent=1))
    print(f"[run] {stage}: done in {seconds / 60:.1f} min", flush=True)
    return seconds


def run(cfg: dict[str, Any]) -> int:
    """Run the configured stages in order (parse_config has checked every key of every stage)."""
    preflight(cfg)
    run_dir = Path(cfg["out_dir"]) / cfg["run_name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    # a run killed while writing its own files leaves their temp files; it owns them, so it removes them
    remove_stale_temps(run_dir, ["config.yaml", "report.md", *(f"{s}_curves.png" for s in COMMANDS)])
    remove_stale_temps(run_dir / "stages", [f"{s}.{ext}" for s in COMMANDS for ext in ("yaml", "done.json")]
                       + ["refine-recipe.yaml"])
    save_config(cfg, run_dir / "config.yaml")

    from pipeline.report import write_report

    for stage in cfg["stages"]:   # the report is rewritten after each stage: a stopped run has one too
        if stage == "refine":   # the race trains with the cls stage's recipe: its data; its max_epochs, the cost unit
            save_config(stage_config(cfg, "cls", run_dir), run_dir / "stages" / "refine-recipe.yaml")
        run_stage(stage, stage_config(cfg, stage, run_dir), run_dir)
        report = write_report(run_dir)
    print(f"[run] finished: {', '.join(cfg['stages'])}; report: {report}")
    return 0


def main(argv: list[str]) -> int:
    return run(parse_config(argv))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
