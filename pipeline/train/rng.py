"""``RngState``: checkpoints carry the random state, so a resumed run draws what the first one would.

Lightning's checkpoints hold weights, optimiser, scheduler and loop counters, but not the random
number generators. A run killed in epoch ``k`` resumes from ``last.ckpt`` (written at the end of
epoch ``k-1``) with freshly seeded generators, so epoch ``k`` would see another data order, other
augmentations and other dropout masks than the uninterrupted run. This callback stores the
Python, NumPy and torch (CPU and CUDA) generator states in every checkpoint and puts them back
when a run resumes from it: the resumed run then trains exactly like the uninterrupted one (bit
for bit on the CPU at the same thread count). Only plain types and tensors are stored, so the
checkpoint still loads with ``torch.load(path, weights_only=True)``.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback


def rng_state() -> dict[str, Any]:
    """The generators' states as plain types and tensors."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "gauss": float(gauss)}}


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))


class RngState(Callback):
    """Save the random state with every checkpoint; put it back when a run resumes from one.

    Restored as the checkpoint is loaded: nothing draws from the generators between there and the
    first training batch (Lightning runs the sanity check under ``isolate_rng``), just as nothing
    draws between writing ``last.ckpt`` at an epoch's end and the next epoch's first batch.
    """

    def state_dict(self) -> dict[str, Any]:
        return rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        set_rng_state(state_dict)
