"""The three ways a network is run in deployment, each as a zero-argument call to time.

* ``eager``: the PyTorch module under ``torch.inference_mode``;
* ``export``: the ``torch.export`` program's module, as ``model.pt2`` is loaded;
* ``onnx``: an ONNX Runtime session over the network exported as ``model.onnx`` is.

The exports are the ones ``train --task cls`` writes (``pipeline.utils.export``), so the
latency measured is that of the files a user deploys. Inputs are made once, on the device,
before timing; a call returns only when the device has finished.
"""
from __future__ import annotations

import logging
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from pipeline.latency.target import Target

Run = Callable[[], object]


def make_runner(model: nn.Module, example: torch.Tensor, target: Target) -> Run:
    """``run()`` performs one forward of ``model`` on ``example`` with ``target``'s backend and
    device (the model and example are on the CPU; they are moved or exported here)."""
    model = model.eval()
    if target.backend == "eager":
        return _eager(model.to(target.device), example.to(target.device), target)
    if target.backend == "export":
        from pipeline.utils.export import export_program

        with tempfile.TemporaryDirectory() as tmp, _quiet("torch._export"):   # the file a user would load
            path = export_program(model, example, Path(tmp) / "model.pt2")
            program = torch.export.load(str(path))
        return _eager(program.module().to(target.device), example.to(target.device), target)
    if target.backend == "onnx":
        return _onnx(model, example, target)
    raise ValueError(f"unknown backend {target.backend!r}")


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """torch.export notes that a batch of 1 fixes the batch dimension: true, and not the user's concern."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _eager(module: nn.Module, example: torch.Tensor, target: Target) -> Run:
    sync = torch.cuda.synchronize if target.device == "cuda" else None

    def run() -> object:
        with torch.inference_mode():
            out = module(example)
        if sync is not None:
            sync()
        return out

    return run


def _onnx(model: nn.Module, example: torch.Tensor, target: Target) -> Run:
    import onnxruntime as ort

    from pipeline.utils.export import export_onnx

    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, example, Path(tmp) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads = target.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3   # warnings about unused initialisers are not the user's concern
        providers = ["CUDAExecutionProvider"] if target.device == "cuda" else ["CPUExecutionProvider"]
        session = ort.InferenceSession(str(path), options, providers=providers)
    name = session.get_inputs()[0].name
    if target.device != "cuda":
        feed = {name: example.numpy()}
        return lambda: session.run(None, feed)
    # On a GPU the input stays on the device, as a deployed pipeline keeps it (no host copy timed).
    binding = session.io_binding()
    value = ort.OrtValue.ortvalue_from_numpy(example.numpy(), "cuda", 0)
    binding.bind_ortvalue_input(name, value)
    binding.bind_output(session.get_outputs()[0].name, "cuda")

    def run() -> object:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return None

    return run
