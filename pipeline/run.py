"""``python -m pipeline run``: search, then classification retraining, then segmentation retraining.

One command for the whole product. Each stage is the ordinary command (``search``, ``train --task
cls``, ``train --task seg``) run as a subprocess on a config derived from the run config, so a
stage behaves exactly as it does alone, frees its memory when done, and can use DDP. Stages meet
through files in ``<out_dir>/<run_name>/``::

    search/arch.yaml  --(--arch)-->  cls/model.pt  --(--backbone-ckpt)-->  seg/metrics.json

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
from typing import Any, Iterator, Optional

from pipeline.cli import UserError
from pipeline.config import (CONFIG_DIR, ConfigError, apply_overrides, expand_run_name, find_config, load_yaml,
                             parse_overrides, pop_option, resolve_path, save_config)
from pipeline.distributed import under_launcher
from pipeline.utils.io import atomic_write_text

DEFAULT_CONFIG = CONFIG_DIR / "run" / "demo.yaml"
SHIPPED = CONFIG_DIR.parent  # shipped configs are shown as configs/..., which resolve_path finds
STAGES = ("search", "cls", "seg")
COMMANDS = {"search": ["search"], "cls": ["train", "--task", "cls"], "seg": ["train", "--task", "seg"]}

HELP = f"""usage: python -m pipeline run [--config FILE] [--section.key=value ...]

Search, then retrain the chosen architecture for classification, then for segmentation; each
stage reads the previous stage's outputs from <out_dir>/<run_name>/. With no options: the
embedded demo data on the CPU (about 20 minutes on 2 cores).

  --config FILE   run config file or shipped name (default: {DEFAULT_CONFIG.relative_to(SHIPPED)})
  --KEY=VALUE     override a run key (--run_name=my-run, --stages=[search,cls]) or any key of a
                  stage's own config: --search.strategy.name=random --cls.trainer.max_epochs=5
                  --seg.trainer.max_steps=300 --cls.data.batch_size=128 --wandb.mode=disabled

Outputs in <out_dir>/<run_name>/: search/ (arch.yaml, candidates, plots), cls/ (checkpoints,
model.pt, metrics.json), seg/ (checkpoints, metrics.json, val_examples.png), stages/ (the config
each stage ran with; <stage>.done.json once finished), config.yaml, report.md.
Rerunning the same command skips finished stages and continues an interrupted one.
"""


# ---------------------------------------------------------------------------- config
def _leaves(extra: dict[str, Any], base: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[list[str], Any]]:
    """Override paths for a nested mapping: recurse where the base config has a mapping too."""
    for key, value in extra.items():
        if isinstance(value, dict) and value and isinstance(base, dict) and isinstance(base.get(key), dict):
            yield from _leaves(value, base[key], prefix + (key,))
        else:
            yield list(prefix + (key,)), value


def load_run_config(path: str | Path, argv: list[str]) -> dict[str, Any]:
    """The run config with each stage's whole config inlined under its name, overrides applied.

    Inlining makes ``--cls.optim.lr=1e-3`` a checked key like any other (a typo is an error) and
    makes the saved ``config.yaml`` alone reproduce the run.
    """
    cfg = load_yaml(path)
    overrides = parse_overrides(argv)
    cfg = apply_overrides(cfg, [o for o in overrides if o[0][0] not in STAGES or len(o[0]) == 1])
    stages = cfg.get("stages")
    if isinstance(stages, str):
        stages = [s.strip() for s in stages.split(",") if s.strip()]
    if not stages or not isinstance(stages, list) or any(s not in STAGES for s in stages):
        raise ConfigError(f"stages={cfg.get('stages')!r}: give a list drawn from {list(STAGES)}, "
                          "e.g. --stages=[search,cls]")
    cfg["stages"] = [s for s in STAGES if s in stages]  # always in pipeline order
    for stage in STAGES:
        extra = cfg.get(stage) or {}
        if not isinstance(extra, dict):
            raise ConfigError(f"`{stage}` must be a mapping of values for the {stage} config, got {extra!r}")
        base = load_yaml(resolve_path(cfg["configs"][stage]))
        try:
            cfg[stage] = apply_overrides(base, _leaves(extra, base))
        except ConfigError as e:
            raise ConfigError(f"in `{stage}`: {e}") from None
    cfg = apply_overrides(cfg, [o for o in overrides if o[0][0] in STAGES and len(o[0]) > 1])
    return expand_run_name(cfg)


def stage_config(cfg: dict[str, Any], stage: str, run_dir: Path) -> dict[str, Any]:
    """A stage's own config, wired to the run folder, the W&B group and the previous stage."""
    c = copy.deepcopy(cfg[stage])
    c["out_dir"], c["run_name"] = str(run_dir), stage
    c["wandb"] = {**(c.get("wandb") or {}), **cfg["wandb"], "group": cfg["run_name"]}
    arch, model = run_dir / "search" / "arch.yaml", run_dir / "cls" / "model.pt"
    if stage == "cls" and arch.is_file():
        c["arch"] = str(arch)
    if stage == "seg":
        if model.is_file():
            c["arch"], c["backbone_ckpt"] = None, str(model)  # the spec comes with the checkpoint
        elif arch.is_file():
            c["arch"] = str(arch)
    return c


def preflight(cfg: dict[str, Any]) -> None:
    """Check the later stages' data roots now, not after an hours-long search.

    Each stage validates its data fully when it starts; this only catches a missing root early.
    """
    roots = []
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
        argv.append("--resume")  # an interrupted training run continues (the search resumes by itself)
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


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    if under_launcher():   # every rank would start its own stages and write the same files
        raise UserError("`python -m pipeline run` starts its stages itself; run it once, not under torchrun/"
                        "srun, and give the stages devices instead: --search.trainer.devices=N "
                        "--cls.trainer.devices=N --seg.trainer.devices=N (with --<stage>.trainer.strategy=ddp)")
    config_path, argv = pop_option(list(argv), "--config", DEFAULT_CONFIG)
    cfg = load_run_config(find_config(config_path, "run"), argv)
    name = str(cfg["run_name"]).strip()
    if not name or "/" in name:
        raise ConfigError(f"run_name={cfg['run_name']!r} must be a non-empty folder name")
    preflight(cfg)
    run_dir = Path(cfg["out_dir"]) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")

    from pipeline.report import write_report

    for stage in cfg["stages"]:   # the report is rewritten after each stage: a stopped run has one too
        run_stage(stage, stage_config(cfg, stage, run_dir), run_dir)
        report = write_report(run_dir)
    print(f"[run] finished: {', '.join(cfg['stages'])}; report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
