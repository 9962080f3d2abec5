"""Peak inference memory: weights, input, and the most tensor memory alive at once during a forward.

Counted tensor by tensor, not read from the process's resident size: the resident size
includes the libraries (hundreds of MB) and whatever the allocator keeps cached, and moves by
pages, so for a small network it measures everything but the network. On a GPU torch's
allocator keeps the count itself (``torch.cuda.max_memory_allocated``). On a CPU torch keeps no
such count, so :class:`LiveTensorMemory` keeps it: every tensor storage an operator creates during
the forward is added when it appears and taken off when Python frees it, and the running sum's
maximum is the peak. Operator-internal scratch buffers are not seen; on the presets the count
equals the profiler's (``torch.profiler`` with ``profile_memory=True``, which sees every
allocation) within 0.1% (tests/test_latency.py), without the profiler's C++ log lines on stderr.

The forward counted is the network's first, so what the network builds on first use and keeps
(the relative-position index tables of AutoFormer's blocks) counts, as it does in deployment.
The count is of the eager network on the target device, whatever the latency backend: ONNX
Runtime plans its own buffers and exposes no counter (docs/latency.md).
"""
from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pipeline.space.spec import ArchSpec

MB = 2 ** 20


class LiveTensorMemory(TorchDispatchMode):
    """Inside ``with LiveTensorMemory() as m:``, ``m.peak`` is the most bytes of tensor storage
    created in the block and alive at one time (views and in-place results share their storage
    and count once)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._counted: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._count(t.untyped_storage())
        return out

    def _count(self, storage) -> None:
        key, size = storage._cdata, storage.nbytes()
        if key in self._counted or size == 0:
            return
        self._counted.add(key)
        self.live += size
        self.peak = max(self.peak, self.live)
        weakref.finalize(storage, self._freed, key, size)

    def _freed(self, key: int, size: int) -> None:
        if key in self._counted:
            self._counted.discard(key)
            self.live -= size


def resident_bytes(model: nn.Module) -> int:
    """Bytes of the network's parameters and buffers (shared storages once)."""
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes()
                for t in [*model.parameters(), *model.buffers()]}
    return sum(storages.values())


def peak_memory_mb(spec: ArchSpec, device: str, batch: int) -> float:
    """Peak memory (MiB) of one forward of ``spec``'s network over ``batch`` images on ``device``."""
    from pipeline.latency.measure import example_input
    from pipeline.models import build_model

    model = build_model(spec, seed=0).eval()
    images = example_input(spec, batch)
    if device == "cuda":
        return _cuda_peak(model, images) / MB
    with torch.inference_mode(), LiveTensorMemory() as counter:
        model(images)
    return (resident_bytes(model) + images.numel() * images.element_size() + counter.peak) / MB


def _cuda_peak(model: nn.Module, images: torch.Tensor) -> int:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    model, images = model.cuda(), images.cuda()
    with torch.inference_mode():
        model(images)
        torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before
