"""The exported classifier ``model.pt``: a plain ``state_dict`` plus the spec it belongs to.

``python -m pipeline train --task cls`` writes ``<out_dir>/<run_name>/model.pt`` (the best
checkpoint's weights) as::

    {"spec": ArchSpec.to_dict(), "state_dict": build_model(spec).state_dict(),
     "num_classes": int, "metrics": {"val/top1": float, ...}, "format": 1}

Only tensors and plain Python types, so it loads with ``torch.load(path, weights_only=True)``;
the segmentation task uses it as its backbone::

    spec, state_dict = load_exported("checkpoints/cls-demo/model.pt")
    spec, backbone = load_backbone("checkpoints/cls-demo/model.pt")   # headless network

Beside it, :func:`export_portable` writes the same network for use without this package:
``model.pt2`` (``torch.export.load(path).module()``) and ``model.onnx``. Both take RGB images as
float in [0, 1], shape (N, 3, S, S) at the training resolution, and return logits (N, classes):
the normalisation of the training data is part of the exported graph.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import nn

from pipeline.space.sources import read_export
from pipeline.space.spec import ArchSpec, SpecError
from pipeline.utils.io import atomic_write

FORMAT = 1


def export_model(path: str | Path, spec: ArchSpec, net: nn.Module,
                 metrics: Optional[dict[str, float]] = None) -> Path:
    """Write ``model.pt`` atomically (temp file + rename)."""
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    payload = {"format": FORMAT, "spec": spec.to_dict(), "state_dict": state,
               "num_classes": int(spec.num_classes),
               "metrics": {str(k): float(v) for k, v in (metrics or {}).items()}}
    return atomic_write(path, lambda p: torch.save(payload, p))


class Normalized(nn.Module):
    """``net((images - mean) / std)``: the data pipeline's normalisation inside the network, so an
    exported file takes plain [0, 1] RGB images."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net((images - self.mean) / self.std)


def export_portable(run_dir: str | Path, net: nn.Module, image_size: int, mean: Sequence[float],
                    std: Sequence[float]) -> list[Path]:
    """Write ``model.pt2`` and ``model.onnx`` of a trained classifier; returns the files written.

    A format that cannot be exported is reported on stderr and skipped: ``model.pt`` holds the
    weights either way, so a finished training run is never lost to an export problem.
    """
    from pipeline.utils.export import export_onnx, export_program, portable_copy

    run_dir = Path(run_dir)
    model = Normalized(portable_copy(net), mean, std).eval()
    example = torch.rand(2, len(mean), int(image_size), int(image_size))
    written = []
    for name, export in (("model.pt2", export_program), ("model.onnx", export_onnx)):
        try:
            written.append(export(model, example, run_dir / name))
        except Exception as e:  # noqa: BLE001 -- any exporter failure: keep the run, say what failed
            print(f"warning: {name} not written ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                  f"model.pt holds the weights", file=sys.stderr)
    return written


def load_exported(path: str | Path) -> tuple[ArchSpec, dict[str, torch.Tensor]]:
    """``(spec, state_dict)`` of an exported model; ``build_model(spec).load_state_dict(sd)`` restores it."""
    payload = read_export(path)
    try:
        spec = ArchSpec.from_dict(payload["spec"])
    except TypeError as e:
        raise SpecError(f"exported model {path}: bad spec ({e})") from e
    return spec, payload["state_dict"]


def load_backbone(path: str | Path, num_classes: int = 0) -> tuple[ArchSpec, nn.Module]:
    """The exported network rebuilt with ``num_classes`` outputs (0: headless backbone).

    All weights but the classifier head are loaded; the head is kept only when the class
    count is unchanged.
    """
    from pipeline.models import build_model

    spec, state = load_exported(path)
    net = build_model(spec, num_classes=num_classes)
    if num_classes != spec.num_classes:
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    missing, unexpected = net.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("head.")]
    if missing or unexpected:
        raise SpecError(f"exported model {path} does not match its spec: missing {missing[:5]}, "
                        f"unexpected {unexpected[:5]}")
    return spec, net
