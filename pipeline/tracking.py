"""Weights & Biases logging for every stage: online when logged in, else offline, never prompting.

Offline runs need no account and land in ``<run dir>/wandb/`` (sync later with ``wandb sync``).
The default mode ``auto`` logs online when the user is logged in and offline otherwise, never
prompting; ``online`` asked for without a login fails fast, before any work.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from pipeline.cli import UserError


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text()


def wandb_logger(cfg: dict[str, Any], run_dir: Path, job_type: str, name: Optional[str] = None):
    """A Lightning ``WandbLogger`` from the config's ``wandb`` section, or False when disabled.

    Keys: enabled (bool), mode (auto | offline | online | disabled), project, group. ``auto``:
    online when the user is logged in (``wandb login`` or WANDB_API_KEY), else offline.
    An explicit WANDB_MODE in the environment wins over the config.
    """
    w = cfg.get("wandb") or {}
    if not w.get("enabled", True) or w.get("mode") == "disabled":
        return False
    mode = w.get("mode") or "auto"
    if mode == "auto":
        mode = "online" if _logged_in() else "offline"
    mode = os.environ.setdefault("WANDB_MODE", mode)
    if mode == "online" and not _logged_in():
        raise UserError("wandb.mode=online needs a W&B login (`wandb login` or WANDB_API_KEY); "
                        "use --wandb.mode=offline to log locally")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    from lightning.pytorch.loggers import WandbLogger

    run_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=w.get("project") or "pipeline", group=w.get("group"), name=name or run_dir.name,
                       save_dir=str(run_dir), job_type=job_type, config=cfg)


# What the stages hand each other, by kind: W&B artifact type.
ARTIFACT_TYPES = {"arch": "architecture", "model": "model"}
# Files that travel in a hand-off's artifact when they sit beside it: the model's exports, which
# load without this package (a teammate pulls the artifact and needs nothing else).
COMPANIONS = {"model": ("model.pt2", "model.onnx")}


def artifact_name(kind: str, group: Optional[str], run_dir: Path) -> str:
    """``<kind>-<group>-<run>``: unique across the stages of one ``pipeline run`` (its W&B group)."""
    return "-".join(str(p) for p in (kind, group, run_dir.name) if p)


def handoff_artifact(kind: str, group: Optional[str], path: Path, run_dir: Optional[Path] = None,
                     metadata: Optional[dict[str, Any]] = None):
    """The W&B artifact of one hand-off file (plus its companions), named after the stage folder
    that wrote it. Producer and consumer build it alike, so online both name the same version."""
    import wandb

    art = wandb.Artifact(artifact_name(kind, group, run_dir or path.parent), type=ARTIFACT_TYPES[kind],
                         metadata=metadata)
    art.add_file(str(path))
    for name in COMPANIONS.get(kind, ()):
        companion = path.parent / name
        if name != path.name and companion.is_file():
            art.add_file(str(companion))
    return art


def record_handoff(loggers, run_dir: Path, produced: Optional[tuple[str, Path]] = None,
                   consumed: Optional[dict[str, Path]] = None) -> None:
    """Log what a stage hands on (``produced``: kind and file) and what it was handed (kind: file).

    Stages meet through files (``arch.yaml``, ``model.pt``); logging them as W&B artifacts makes
    each hand-off visible in the group. Online, a consumed file is declared with ``use_artifact``
    under the name its producer logged it with (W&B draws the lineage); W&B cannot use artifacts
    offline, so there its path and SHA-256 go into the run's config, enough to match it later.
    """
    from lightning.pytorch.loggers import WandbLogger

    wb = next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)
    if wb is None:
        return
    import hashlib

    run = wb.experiment
    offline: dict[str, dict[str, str]] = {}
    for kind, path in (consumed or {}).items():
        path = Path(path)
        if run.settings.mode == "offline":
            offline[kind] = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        else:
            run.use_artifact(handoff_artifact(kind, run.group, path))
    if offline:
        run.config.update({"handoff": offline}, allow_val_change=True)
    if produced is not None:
        kind, path = produced
        run.log_artifact(handoff_artifact(kind, run.group, Path(path), run_dir))
