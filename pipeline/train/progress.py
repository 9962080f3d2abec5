"""A progress bar that reads the logged metrics only every ``log_every_n_steps`` steps.

Lightning's progress bars fetch the progress-bar metrics after every training batch, and
turning a CUDA tensor into the number shown waits for the device: one host synchronisation per
step, which stalls the GPU queue on fast networks. This bar shows metrics as fresh as the
loggers' (refreshed every ``log_every_n_steps`` steps) and costs no synchronisation in between.

Rich redraws its bar from a thread that wakes ``RICH_REFRESH_PER_SECOND`` times a second. At
Lightning's default of 100 that thread alone took about 0.5% of a CPU core while training, and on
a 2-core machine each wake-up preempts one of the training threads (benchmarks/train_profile.py,
docs/train_speed.md); 10 redraws a second look as live.
"""
from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar

RICH_REFRESH_PER_SECOND = 10


class ThrottledMetrics:
    """Mixin for a Lightning progress bar: the metrics shown are re-read every ``every`` steps."""

    def __init__(self, every: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.every = max(1, int(every))
        self._shown: dict[str, Any] = {}
        self._reuse = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._reuse = bool(self._shown) and (batch_idx + 1) % self.every != 0
        try:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        finally:
            self._reuse = False

    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        if not self._reuse:
            self._shown = super().get_metrics(trainer, pl_module)
        return self._shown


class ThrottledRichProgressBar(ThrottledMetrics, RichProgressBar):
    """Lightning's rich bar (needs the ``rich`` package), throttled."""


class ThrottledTQDMProgressBar(ThrottledMetrics, TQDMProgressBar):
    """Lightning's tqdm bar, throttled."""


def progress_bar(trainer_cfg: dict[str, Any]) -> list:
    """The bar for a Trainer config (as a callback list; empty when the bar is disabled)."""
    if trainer_cfg.get("enable_progress_bar", True) is False:
        return []
    every = int(trainer_cfg.get("log_every_n_steps") or 50)
    try:
        return [ThrottledRichProgressBar(every, refresh_rate=RICH_REFRESH_PER_SECOND)]
    except ModuleNotFoundError:   # Lightning's rich bar without rich installed: its plain bar
        return [ThrottledTQDMProgressBar(every)]
