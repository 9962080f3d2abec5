"""What a retraining task (``train --task cls|seg``) gives the shared training runner.

The runner (:mod:`pipeline.train.runner`) knows no task: it is handed one that follows
:class:`TrainingTask` (:mod:`pipeline.classification.task`, :mod:`pipeline.segmentation.task`),
and the tasks import nothing of the runner. This module is what both sides share.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol

from pipeline.space.sources import SpecChoice
from pipeline.space.spec import ArchSpec


@dataclass
class Built:
    """A task's LightningModule and DataModule for one spec, checked, with lines to print first."""

    spec: ArchSpec
    module: Any
    datamodule: Any
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)   # what finish() needs (data report, baseline...)


class TrainingTask(Protocol):
    name: str      # cls | seg: the W&B job type is train-<name>
    monitor: str   # the validation metric best.ckpt maximises

    def default_spec(self, cfg: dict[str, Any]) -> SpecChoice:
        """The architecture when the config names none (no ``arch``, no run being resumed): e.g.
        the backbone checkpoint's, else the newest searched spec; UserError when there is none."""

    def build(self, cfg: dict[str, Any], spec: ArchSpec, source: str) -> Built:
        """Module and DataModule from the config; every check that needs no training (data layout,
        class counts, settings, the backbone checkpoint); bad input raises UserError / ConfigError /
        DataError."""

    def validate(self, trainer, built: Built, best: str) -> dict[str, float]:
        """Final metrics: the best checkpoint validated (the last epoch's when there is none)."""

    def finish(self, trainer, built: Built, run_dir: Path,
               metrics: dict[str, float]) -> tuple[dict[str, Any], Optional[tuple[str, Path]], list[str]]:
        """Rank 0 after training: exports; returns (metrics.json content, the W&B hand-off it
        produced as (kind, file), report lines)."""

    def consumed(self, cfg: dict[str, Any], choice: SpecChoice) -> Optional[dict[str, Path]]:
        """The files this run was handed by an earlier stage, by hand-off kind."""
