"""A NaN or infinite training loss stops the run on every rank, without a host sync per step.

Both tasks' LightningModules note each step's loss as a flag that stays on the device, and look
at it every ``log_every_n_steps`` steps and before each validation (which precedes the
checkpoint callback: no checkpoint holds weights a bad step has spoilt). The ranks agree on
the flag before any of them raises (:func:`pipeline.distributed.any_rank`), so all stop with
the same error instead of the others waiting in an all-reduce.
"""
from __future__ import annotations

from typing import Optional

import torch

from pipeline.distributed import any_rank


class FiniteLossCheck:
    """Mixin for a LightningModule: call :meth:`note_loss` in ``training_step`` and
    :meth:`check_finite` wherever the run must stop on a bad loss (validation start, epoch end)."""

    _nonfinite: Optional[torch.Tensor] = None   # device flag: a non-finite loss since the last check
    _checked_step = 0

    def note_loss(self, loss: torch.Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())   # stays on the device
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad

    def check_finite(self) -> None:
        """Raise FloatingPointError on every rank if a loss since the last check was NaN or infinite
        on any rank."""
        flag, self._nonfinite = self._nonfinite, None
        first, self._checked_step = self._checked_step, self.global_step
        if any_rank(flag is not None and bool(flag)):
            raise FloatingPointError(f"the training loss became NaN or infinite between optimiser steps "
                                     f"{first} and {self.global_step}; lower --optim.lr or check the data")

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if (batch_idx + 1) % max(1, int(self.trainer.log_every_n_steps or 1)) == 0:
            self.check_finite()
