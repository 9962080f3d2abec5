"""A network as a file that loads without this package: ``torch.export`` (.pt2) and ONNX.

Both are traced on the CPU in float32, whatever device and precision trained the network, and
written atomically. The batch dimension stays free; every other dimension is fixed by the
example input.
"""
from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path

import torch
from torch import nn

from pipeline.utils.io import atomic_write


def portable_copy(net: nn.Module) -> nn.Module:
    """A CPU, float32, eval-mode copy: exporting must not touch the trained module."""
    return copy.deepcopy(net).to(device="cpu", dtype=torch.float32).eval()


def export_program(net: nn.Module, example: torch.Tensor, path: str | Path) -> Path:
    """``torch.export`` the module for inputs shaped like ``example``; load it with
    ``torch.export.load(path).module()``."""
    batch = torch.export.Dim.AUTO  # dynamic where the graph allows it, never an error
    with torch.no_grad():
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    buffer = io.BytesIO()  # (torch.export.save wants a .pt2 name; the temp file has another)
    torch.export.save(program, buffer)
    return atomic_write(path, lambda p: p.write_bytes(buffer.getvalue()))


def export_onnx(net: nn.Module, example: torch.Tensor, path: str | Path, input_name: str = "images",
                output_name: str = "logits") -> Path:
    """ONNX (opset 17, TorchScript exporter: it needs no extra package beyond ``onnx``)."""
    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python branches
            torch.onnx.export(net, (example,), str(tmp), dynamo=False, opset_version=17,
                              input_names=[input_name], output_names=[output_name],
                              dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}})

    return atomic_write(path, write)
