"""Peak inference memory: weights, input and the most activations alive at once during a forward.

Counted by torch's own allocator, not read from the process's resident size: the resident size
includes the libraries (hundreds of MB) and whatever the allocator keeps cached, and moves by
pages, so for a small network it measures everything but the network. On a GPU the allocator
keeps the count itself (``torch.cuda.max_memory_allocated``); on a CPU the profiler records
every allocation and free of the forward (``profile_memory=True``), whose running sum's maximum
is the activations' peak.

The count is of the eager network on the target device, whatever the latency backend: ONNX
Runtime plans its own buffers and exposes no counter (docs/latency.md).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from pipeline.latency.measure import example_input
from pipeline.space.spec import ArchSpec

MB = 2 ** 20


def peak_memory_mb(spec: ArchSpec, device: str, batch: int) -> float:
    """Peak memory (MiB) of one forward of ``spec``'s network over ``batch`` images on ``device``."""
    from pipeline.models import build_model

    model = build_model(spec, seed=0).eval()
    images = example_input(spec, batch)
    if device == "cuda":
        return _cuda_peak(model, images) / MB
    resident = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    return (resident + images.numel() * images.element_size() + _cpu_activation_peak(model, images)) / MB


def _cuda_peak(model: nn.Module, images: torch.Tensor) -> int:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    model, images = model.cuda(), images.cuda()
    with torch.inference_mode():
        model(images)   # warm-up: cuBLAS workspaces and lazy state are not the network's
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        model(images)
        torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _cpu_activation_peak(model: nn.Module, images: torch.Tensor) -> int:
    """The maximum over time of the bytes allocated and not yet freed during one forward."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode():
        model(images)   # warm-up outside the count (lazy initialisation, index caches)
        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model(images)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """The profiler's C++ library logs to file descriptor 2 (on a CUDA build without a GPU, an
    "ERROR ... gpuGetDeviceCount failed" line that is not an error); keep it off the user's terminal."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
