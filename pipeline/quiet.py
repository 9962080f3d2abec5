"""Known-harmless third-party output, silenced narrowly so that a run prints our own lines.

Each entry names one message (a regular expression matched at its start) and the module that
emits it, with the reason it says nothing to our user; nothing is silenced by category or
library alone, so a new warning still shows. What pointed at our own misuse is fixed where it
happened instead (the search's W&B plots of two sizes, its Trainer's logging interval and empty
fit loop). ``python -m pipeline COMMAND --verbose`` (or
``PIPELINE_VERBOSE=1``) installs none of this and shows everything.
"""
from __future__ import annotations

import logging
import os
import re
import warnings

VERBOSE_ENV = "PIPELINE_VERBOSE"

# warnings.filterwarnings(message=, module=): (message at its start, emitting module, why harmless)
WARNINGS: tuple[tuple[str, str, str], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree",
     "torch 2.14 deprecates LeafSpec; Lightning 2.6 still builds one per batch"),
    (r"The '\w+_dataloader' does not have many workers", r"lightning\.pytorch\.trainer\.connectors\.data_connector",
     "the demo configs load in the main process on purpose (data.num_workers: 0, fastest for tiny images)"),
    (r"Checkpoint directory .* exists and is not empty", r"lightning\.pytorch\.callbacks\.model_checkpoint",
     "best.ckpt and last.ckpt live in the run folder beside our other outputs, by design"),
)

# Lightning's info lines (logger lightning.pytorch.utilities.rank_zero) that describe its own
# machinery rather than the run: (message at its start, why it says nothing to our user).
LIGHTNING_INFO: tuple[tuple[str, str], ...] = (
    ("💡 Tip:", "an advertisement for another logger"),
    (r"[GTH]PU available:", "our own lines say where the work runs"),
    (r"`Trainer\((limit_\w+|val_check_interval)=1(\.0)?\)` was configured so",
     "the shipped configs spell out Lightning's defaults"),
    (r"Loading `train_dataloader` to estimate number of stepping batches\.", "an internal step of the LR schedule"),
    (r"`Trainer\.fit` stopped: `max_(epochs|steps)=", "the planned end of training, which our summary reports"),
    (r"(Restoring states|Loaded model weights) from the checkpoint (path )?at",
     "the final validation of best.ckpt, reported by our own lines"),
    (r"Restored all states from the checkpoint at",
     "a refine rung continuing from the previous rung's checkpoint, which the race's own lines report"),
    (r"(\[rank: \d+\] )?Seed set to -?\d+", "LightningCLI seeds every training run; the seed is in its config.yaml"),
)
LIGHTNING_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                     "lightning.fabric.utilities.seed")


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").lower() not in ("", "0", "false", "no")


class _KnownLightningInfo(logging.Filter):
    """Drops the records of :data:`LIGHTNING_INFO` (only those, and only below WARNING)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        text = str(record.msg)
        return not any(re.match(pattern, text) for pattern, _ in LIGHTNING_INFO)


def install() -> None:
    """Silence the known-harmless messages above for this process (no-op under ``--verbose``)."""
    if verbose():
        return
    for message, module, _ in WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)
    for name in LIGHTNING_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _KnownLightningInfo) for f in log.filters):
            log.addFilter(_KnownLightningInfo())

