"""DataLoader settings sized from the machine: worker processes and pinned memory.

``num_workers: auto`` gives every training process (one per device) an equal share of the CPU
cores it may run on, less one core for the process itself (capped at ``MAX_WORKERS``), so an
8-GPU node with 96 cores runs 11 workers per GPU and a 2-core laptop 1. ``pin_memory: auto``
pins batches exactly when they go to a CUDA device (faster, asynchronous copies). Workers are
kept alive between epochs (``persistent_workers``) whenever there are any.
"""
from __future__ import annotations

import os
from typing import Any

MAX_WORKERS = 16


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM allocation)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def resolve_workers(value: Any, processes: int = 1, key: str = "data.num_workers") -> int:
    """Worker processes per DataLoader: an int >= 0, or ``auto`` (see the module docstring)."""
    if value in ("auto", None):
        return max(0, min(MAX_WORKERS, available_cpus() // max(1, int(processes)) - 1))
    try:
        workers = int(value)
    except (TypeError, ValueError):
        workers = -1
    if workers < 0 or isinstance(value, bool) or (isinstance(value, float) and value != workers):
        raise ValueError(f"{key}={value!r} must be a number of worker processes (>= 0) or auto")
    return workers


def resolve_pin_memory(value: Any, on_cuda: bool, key: str = "data.pin_memory") -> bool:
    """``auto``: pin host memory when batches go to a CUDA device; else the bool given."""
    if value in ("auto", None):
        return bool(on_cuda)
    if not isinstance(value, bool):
        raise ValueError(f"{key}={value!r} must be true, false or auto")
    return value


def trainer_placement(trainer: Any) -> tuple[int, bool]:
    """(training processes on this node, whether they train on CUDA) for an attached Trainer."""
    if trainer is None:
        return 1, False
    root = getattr(getattr(trainer, "strategy", None), "root_device", None)
    return max(1, int(getattr(trainer, "num_devices", 1) or 1)), getattr(root, "type", "cpu") == "cuda"
