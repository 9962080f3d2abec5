"""The trained segmentor as a file that loads with torch alone: ``model.pt2``.

mmseg's whole-image inference -- normalise, backbone, neck, decode head, logits resized to the
input -- as one ``torch.export`` program at a fixed input size (the training crop): RGB images
as float in [0, 1], shape (N, 3, H, W), give class logits (N, classes, H, W), and
``logits.argmax(1)`` is the predicted mask. The auxiliary head (a training loss) is left out.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class WholeImageInference(nn.Module):
    """An mmseg ``EncoderDecoder``'s ``whole`` inference on [0, 1] RGB images, as a plain module."""

    def __init__(self, segmentor: nn.Module) -> None:
        super().__init__()
        pre = segmentor.data_preprocessor  # mean/std in 0-255 units, RGB order (after bgr_to_rgb)
        self.register_buffer("mean", pre.mean.detach().reshape(1, -1, 1, 1) / 255)
        self.register_buffer("std", pre.std.detach().reshape(1, -1, 1, 1) / 255)
        self.backbone = segmentor.backbone
        self.neck = segmentor.neck if segmentor.with_neck else None
        self.decode_head = segmentor.decode_head
        self.align_corners = bool(segmentor.align_corners)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.backbone((images - self.mean) / self.std)
        if self.neck is not None:
            feats = self.neck(feats)
        logits = self.decode_head(feats)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=self.align_corners)


def export_segmentor(run_dir: str | Path, segmentor: nn.Module, size: tuple[int, int]) -> Optional[Path]:
    """Write ``<run_dir>/model.pt2`` for (H, W) = ``size`` inputs; None (and a warning) if it fails.

    best.ckpt holds the weights either way, so a finished run is never lost to an export problem.
    """
    from mmengine.model import revert_sync_batchnorm

    from pipeline.utils.export import export_program, portable_copy

    model = WholeImageInference(revert_sync_batchnorm(portable_copy(segmentor))).eval()
    try:
        return export_program(model, torch.rand(2, 3, *size), Path(run_dir) / "model.pt2")
    except Exception as e:  # noqa: BLE001 -- any exporter failure: keep the run, say what failed
        print(f"warning: model.pt2 not written ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
              file=sys.stderr)
        return None
