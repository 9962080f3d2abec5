"""Weights & Biases logging for every stage: offline by default, never prompting.

Offline runs need no account and land in ``<run dir>/wandb/`` (sync later with ``wandb sync``);
online mode is used only when asked for and fails fast, before any work, without a login.
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

    Keys: enabled (bool), mode (offline | online | disabled), project, group.
    An explicit WANDB_MODE in the environment (as sweep agents set) wins over the config.
    """
    w = cfg.get("wandb") or {}
    if not w.get("enabled", True) or w.get("mode") == "disabled":
        return False
    mode = os.environ.setdefault("WANDB_MODE", w.get("mode") or "offline")
    if mode == "online" and not _logged_in():
        raise UserError("wandb.mode=online needs a W&B login (`wandb login` or WANDB_API_KEY); "
                        "use --wandb.mode=offline to log locally")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    from lightning.pytorch.loggers import WandbLogger

    run_dir.mkdir(parents=True, exist_ok=True)
    return WandbLogger(project=w.get("project") or "pipeline", group=w.get("group"), name=name or run_dir.name,
                       save_dir=str(run_dir), job_type=job_type, config=cfg)
