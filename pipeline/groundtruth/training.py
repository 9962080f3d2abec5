"""One ground-truth measurement: an architecture retrained with ``train --task cls``'s recipe.

The recipe is the classification training config (a shipped one by name, or the user's file)
with the command's overrides (e.g. a shorter schedule); it is parsed by ``train``'s own parser,
so every key means what it means there. The module, the data and the checks come from the same
:class:`ClassificationTask` the runner uses. What a ground-truth run leaves out is what only a
kept model needs: checkpoints, exports and a W&B run per network (the worker has one W&B run).
"""
from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

from pipeline.space import ArchSpec


def recipe_config(recipe: str, train_args: Sequence[str]) -> dict[str, Any]:
    """The resolved training config of the recipe and its overrides (bad keys: one-line ConfigError)."""
    from pipeline.train.cli import parse_config

    cfg, _ = parse_config("cls", ["--config", str(recipe), *train_args])
    return cfg


def train_architecture(recipe: dict[str, Any], spec: ArchSpec, seed: int) -> dict[str, Any]:
    """Train ``spec`` with the recipe and training seed ``seed``: the last epoch's validation top-1 (in %;
    not the best epoch's, which would select on the validation set), the epochs trained, the wall time."""
    from lightning.fabric.utilities.seed import seed_everything

    from pipeline.classification.task import ClassificationTask
    from pipeline.config import make_trainer
    from pipeline.train.runner import resolve_machine_settings

    start = time.perf_counter()
    cfg = copy.deepcopy(recipe)
    cfg["arch"], cfg["seed_everything"] = spec.to_dict(), seed
    resolve_machine_settings(cfg)
    cfg["trainer"]["enable_progress_bar"] = False   # the command shows one bar for the whole file
    seed_everything(seed, workers=True, verbose=False)   # data order and augmentation, as `train` seeds them
    built = ClassificationTask().build(cfg, spec, f"ground-truth architecture (seed {seed})")
    with tempfile.TemporaryDirectory(prefix="groundtruth-") as tmp:
        trainer = make_trainer(cfg, Path(tmp), logger=False, callbacks=[], enable_checkpointing=False,
                               enable_model_summary=False, default_root_dir=tmp)
        trainer.fit(built.module, datamodule=built.datamodule)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    if "val/top1" not in metrics:
        raise RuntimeError("training ended without a validation top-1 (is trainer.limit_val_batches 0?)")
    return {"metrics": {"top1": round(100 * metrics["val/top1"], 4)}, "epochs": int(trainer.current_epoch),
            "wall_s": round(time.perf_counter() - start, 2)}
