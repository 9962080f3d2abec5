"""Our searched ViT / PiT as an mmsegmentation backbone (``MODELS`` type ``SpecViT``).

The network is built exactly as the spec describes (:func:`pipeline.models.build_model`,
headless) and returns patch-token maps (B, C, H, W) after the chosen blocks, like mmseg's
``VisionTransformer`` with ``out_indices`` (whose maps a ``MultiLevelNeck`` then rescales).
Position embeddings live at the segmentation resolution (``img_size``); other input sizes
(sliding windows, whole images) are resampled on the fly by the model itself.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

import pipeline.compat  # noqa: F401  (mmcv.ops stand-in before mmseg)
from mmseg.registry import MODELS

from pipeline.models.build import build_model
from pipeline.space.spec import ArchSpec

Size = Union[int, Sequence[int]]


def as_hw(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = (int(s) for s in size)
    return h, w


def patch_grid(spec: ArchSpec, img_size: Size) -> tuple[int, int]:
    """Tokens per side (rows, cols) after the patch embedding of an image of ``img_size``."""
    h, w = as_hw(img_size)
    return (h - spec.patch_size) // spec.stride + 1, (w - spec.patch_size) // spec.stride + 1


def default_out_indices(spec: ArchSpec) -> list[int]:
    """mmseg's choice for ViT-UPerNet generalised: blocks at 1/4, 2/4, 3/4 and 4/4 of the depth
    (2, 5, 8, 11 for 12 blocks); for PiT the last block of every stage."""
    if spec.family == "pit":
        ends, edge = [], 0
        for d in spec.stage_depths:
            edge += d
            ends.append(edge - 1)
        return ends
    return [max(0, math.ceil((k + 1) * spec.depth / 4) - 1) for k in range(4)]


def out_channels(spec: ArchSpec, out_indices: Sequence[int]) -> list[int]:
    """Channels of each returned map (PiT stages differ), for the neck/heads' ``in_channels``."""
    return [spec.layer_width(i % spec.depth) for i in out_indices]


def out_strides(spec: ArchSpec, out_indices: Sequence[int]) -> list[int]:
    """Input pixels per map pixel of each returned map (PiT halves the grid every stage)."""
    return [spec.stride * (2 ** spec.stage_of(i % spec.depth) if spec.family == "pit" else 1)
            for i in out_indices]


def resize_abs_pos(pos: torch.Tensor, new_grid: tuple[int, int], old_grid: Optional[tuple[int, int]] = None,
                   prefix_tokens: int = 1) -> torch.Tensor:
    """Resample a position embedding to another patch grid (bicubic, like timm / mmseg).

    ViT tokens: ``(1, prefix + H*W, C)`` (class token kept as is); PiT maps: ``(1, C, H, W)``.
    """
    if pos.dim() == 4:
        if tuple(pos.shape[-2:]) == tuple(new_grid):
            return pos
        return F.interpolate(pos.float(), size=new_grid, mode="bicubic", align_corners=False).to(pos.dtype)
    from timm.layers import resample_abs_pos_embed

    if old_grid is None:
        side = math.isqrt(pos.shape[1] - prefix_tokens)
        old_grid = (side, side)
    return resample_abs_pos_embed(pos, new_size=list(new_grid), old_size=list(old_grid),
                                  num_prefix_tokens=prefix_tokens)


def resize_rel_table(table: torch.Tensor, max_distance: int) -> torch.Tensor:
    """Relative position table with ``2 * max_distance + 2`` rows from one of another size.

    Row 0 (pairs with the class token) is kept; rows 1.. (clipped distances -m..m) are
    linearly interpolated along the distance axis, the 1-D analogue of resizing an absolute
    position embedding.
    """
    rows = 2 * max_distance + 2
    if table.shape[0] == rows:
        return table
    cls_row, dist = table[:1], table[1:]
    dist = F.interpolate(dist.t()[None].float(), size=rows - 1, mode="linear", align_corners=True)
    return torch.cat([cls_row, dist[0].t().to(table.dtype)], dim=0)


def set_pos_grid(model: nn.Module, grid: tuple[int, int]) -> None:
    """Make the model's position embedding live on ``grid`` (resampling its current values)."""
    pos = model.pos_embed
    if hasattr(pos, "grid"):  # ViT TokenPosition
        if tuple(pos.grid) != tuple(grid):
            new = resize_abs_pos(pos.pos_embed.data, grid, tuple(pos.grid), pos.prefix_tokens)
            pos.pos_embed = nn.Parameter(new.contiguous())
            pos.grid = tuple(grid)
    else:  # PiT GridPosition
        if tuple(pos.pos_embed.shape[-2:]) != tuple(grid):
            pos.pos_embed = nn.Parameter(resize_abs_pos(pos.pos_embed.data, grid).contiguous())
    model.grid_size = tuple(grid)


def trim_unused(model: nn.Module, last: int) -> None:
    """Drop what a dense backbone never runs: blocks after ``last``, the final norm, the head.

    Parameters without gradients would break DDP (unless it searches for unused ones every
    step); the classification checkpoint's weights for them are simply not loaded.
    """
    model.norm = nn.Identity()
    model.head = nn.Identity()
    if hasattr(model, "stages"):  # PiT: keep stages up to the one holding `last`
        edge = 0
        for s, stage in enumerate(model.stages):
            if last < edge + len(stage):
                model.stages = model.stages[:s + 1]
                model.stages[s] = stage[:last - edge + 1]
                model.pools = model.pools[:s]
                break
            edge += len(stage)
    else:
        model.blocks = model.blocks[:last + 1]


@MODELS.register_module()
class SpecViT(nn.Module):
    """A searched ViT/PiT (:class:`ArchSpec`) as an mmseg backbone.

    Args:
        spec: the architecture (``ArchSpec.to_dict()``; an ``ArchSpec`` is accepted too).
        out_indices: blocks whose patch-token maps are returned (negative counts from the end);
            None = :func:`default_out_indices`.
        img_size: segmentation input size (int or (h, w)); position embeddings are stored
            for this patch grid. None keeps the spec's image size.
        rel_pos_max: clipping distance of the relative position tables (ViT with rel_pos);
            None keeps the spec's.
        drop_path_rate: stochastic depth for retraining.
        min_input_size: smaller inputs (tiny sliding windows) are zero-padded to this size, so
            that a neck's coarsest level keeps at least one pixel.
    """

    def __init__(self, spec: Union[dict[str, Any], ArchSpec], out_indices: Optional[Sequence[int]] = None,
                 img_size: Optional[Size] = None, rel_pos_max: Optional[int] = None,
                 drop_path_rate: float = 0.0, min_input_size: int = 0, init_cfg: Optional[dict] = None) -> None:
        super().__init__()
        spec = spec if isinstance(spec, ArchSpec) else ArchSpec.from_dict(dict(spec))
        self.source_spec = spec
        h, w = as_hw(img_size if img_size is not None else spec.img_size)
        changes: dict[str, Any] = {"img_size": h, "num_classes": 0}  # built at the seg resolution
        if rel_pos_max is not None and spec.rel_pos:
            changes["rel_pos_max"] = int(rel_pos_max)
        self.spec = dataclasses.replace(spec, **changes)
        self.out_indices = list(default_out_indices(spec) if out_indices is None else out_indices)
        bad = [i for i in self.out_indices if not -spec.depth <= i < spec.depth]
        if bad:
            raise ValueError(f"out_indices {bad} are outside the {spec.depth} blocks of {spec.short()}")
        self.img_size = (h, w)
        self.grid = patch_grid(self.spec, (h, w))
        self.out_indices = [i % spec.depth for i in self.out_indices]
        self.model = build_model(self.spec, num_classes=0, drop_path_rate=drop_path_rate)
        set_pos_grid(self.model, self.grid)
        trim_unused(self.model, max(self.out_indices))
        self.channels = out_channels(spec, self.out_indices)
        self.strides = out_strides(spec, self.out_indices)
        self.min_input_size = int(min_input_size)
        self.is_init = True  # weights come from build_model (and maybe a checkpoint), never mmengine

    def init_weights(self) -> None:
        """Already initialised by :func:`build_model`; mmseg's init must not overwrite it."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Pad bottom/right so the patches tile the input (mmseg's ViT: AdaptivePadding "corner"):
        # whole-image inference then takes images of any size.
        p, s = self.spec.patch_size, self.spec.stride
        h, w = x.shape[-2:]
        m = max(p, self.min_input_size)  # tiny inputs: the coarsest neck level keeps >= 1 pixel
        pad_h = (-(max(h, m) - p)) % s + max(0, m - h)
        pad_w = (-(max(w, m) - p)) % s + max(0, m - w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        return tuple(self.model.forward_intermediates(x, self.out_indices))
