"""``python -m pipeline train --task cls|seg``: retrain a chosen architecture with Lightning.

``--task`` picks the task; everything else is the task's LightningCLI options
(:mod:`pipeline.train.cli`: ``--model.*``, ``--data.*``, ``--trainer.*``, ``--optim.*``, ...), and
one runner (:mod:`pipeline.train.runner`) does the run for either task. ``--help`` after
``--task X`` lists that task's options with their types and defaults.

Several GPUs / nodes use Lightning's DDP::

    python -m pipeline train --task cls --config configs/train/cls_imagenet.yaml \\
        --arch checkpoints/search-tiny/arch.yaml --data.root=/data/imagenet \\
        --trainer.devices=8 --trainer.strategy=ddp [--trainer.num_nodes=2]

(multi-node: start the same command on every node under SLURM ``srun`` or ``torchrun``).
``--data.batch_size`` is per device; the classification learning rate is scaled by the global
batch (devices x nodes x ``trainer.accumulate_grad_batches``) when ``optim.base_batch`` is set.
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pipeline.errors import UserError

TASKS = {"cls": "pipeline.classification.task:ClassificationTask",
         "seg": "pipeline.segmentation.task:SegmentationTask"}


def _task_option(argv: Sequence[str]) -> tuple[str, list[str]]:
    """``--task`` (required, cls or seg) and the task's own arguments."""
    parser = argparse.ArgumentParser(prog="python -m pipeline train", add_help=False, exit_on_error=False)
    parser.add_argument("--task", choices=sorted(TASKS))
    try:
        known, rest = parser.parse_known_args(list(argv))
    except argparse.ArgumentError as e:
        raise UserError(f"--task: {e.message}; use --task cls (classification) or --task seg (segmentation)") \
            from None
    if known.task is None:
        if any(a in ("-h", "--help") for a in argv):
            print("usage: python -m pipeline train --task cls|seg [options]\n\nRetrain a chosen architecture: "
                  "--task cls (image classification) or --task seg (semantic segmentation).\n"
                  "python -m pipeline train --task cls --help lists that task's options.")
            raise SystemExit(0)
        raise UserError("--task is required: --task cls (classification) or --task seg (segmentation)")
    return known.task, rest


def main(argv: Sequence[str]) -> int:
    task_name, rest = _task_option(argv)   # before Lightning is imported: a wrong --task is refused at once
    import importlib

    from pipeline.config import resolve_path
    from pipeline.train.cli import parse_config
    from pipeline.train.runner import train

    cfg, callbacks = parse_config(task_name, rest)
    if cfg.get("backbone_ckpt"):
        cfg["backbone_ckpt"] = str(resolve_path(cfg["backbone_ckpt"]))
    module, cls = TASKS[task_name].split(":")
    task = getattr(importlib.import_module(module), cls)()
    return train(task, cfg, callbacks)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
