"""Initialise the segmentation backbone from a classification export (``model.pt``).

The classification task writes ``{"spec": spec.to_dict(), "state_dict": ..., "num_classes": int,
"metrics": {...}}`` (plain tensors and containers: ``torch.load(weights_only=True)`` reads it).
Its spec must describe the same network as the one being trained -- same family, widths,
heads, MLP ratios, stages, patch geometry, head width and relative positions. What may differ:
the image size (absolute position embeddings are resampled, bicubic, to the segmentation patch
grid), ``rel_pos_max`` (relative position tables are interpolated along the distance axis),
the class count (the classifier head is dropped) and the space name.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch

from pipeline.errors import UserError
from pipeline.segmentation.backbone import SpecViT, patch_grid, resize_abs_pos, resize_rel_table
from pipeline.space.sources import exported_spec, read_export
from pipeline.space.spec import ArchSpec, SpecError

#: spec fields allowed to differ between the classification checkpoint and the seg backbone
ADAPTABLE = ("img_size", "num_classes", "rel_pos_max", "space")


class CheckpointError(UserError):
    """A backbone checkpoint that cannot initialise the network being trained."""


def checkpoint_spec(path: Union[str, Path]) -> ArchSpec:
    """The spec of a classification export, its weights left unread: the architecture a
    segmentation run trains when it names none."""
    try:
        return exported_spec(path)
    except SpecError as e:
        raise CheckpointError(f"backbone checkpoint: {e}") from e


def load_export(path: Union[str, Path]) -> tuple[ArchSpec, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a classification export: (spec, state_dict, the rest), with clear errors."""
    try:
        blob = read_export(path)
        spec = ArchSpec.from_dict(dict(blob["spec"]))
    except (SpecError, TypeError) as e:
        raise CheckpointError(f"backbone checkpoint: {e}") from e
    state = _strip_prefix(dict(blob["state_dict"]))
    rest = {k: v for k, v in blob.items() if k not in ("spec", "state_dict")}
    return spec, state, rest


def _strip_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop a wrapper prefix ('module.', 'model.', '_orig_mod.') shared by every key."""
    changed = True
    while changed and state:
        changed = False
        for prefix in ("module.", "_orig_mod.", "model."):
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def spec_differences(ckpt: ArchSpec, target: ArchSpec) -> dict[str, tuple[Any, Any]]:
    """Fields (other than the adaptable ones) where two specs disagree: {field: (ckpt, target)}."""
    a, b = ckpt.to_dict(), target.to_dict()
    return {k: (a[k], b[k]) for k in a if k not in ADAPTABLE and a[k] != b[k]}


def check_same_arch(ckpt: ArchSpec, target: ArchSpec, path: Union[str, Path] = "checkpoint") -> None:
    diff = spec_differences(ckpt, target)
    if diff:
        lines = "; ".join(f"{k}: checkpoint {v[0]} vs trained {v[1]}" for k, v in diff.items())
        raise CheckpointError(
            f"backbone checkpoint {path} holds a different architecture than the one being trained "
            f"({ckpt.short()} vs {target.short()}): {lines}. Train with the checkpoint's own spec "
            f"(leave arch unset / drop --arch) or pass the matching checkpoint")


def adapt_state_dict(state: dict[str, torch.Tensor], ckpt: ArchSpec, backbone: SpecViT) -> tuple[dict, list[str]]:
    """The checkpoint tensors reshaped for ``backbone``: position embeddings resampled to its
    grid, relative tables to its ``rel_pos_max``. Returns (state, notes on what was resized)."""
    target = backbone.model.state_dict()
    out, notes = {}, []
    old_grid = patch_grid(ckpt, ckpt.img_size)
    for key, ref in target.items():
        if key not in state:
            continue
        value = state[key]
        if key.endswith("pos_embed.pos_embed") and value.shape != ref.shape:
            if value.dim() == 4:  # PiT (1, C, H, W)
                new = resize_abs_pos(value, tuple(ref.shape[-2:]))
            else:  # ViT (1, 1 + H*W, C)
                new = resize_abs_pos(value, backbone.grid, old_grid, prefix_tokens=1)
            notes.append(f"{key}: {tuple(value.shape)} -> {tuple(new.shape)} "
                         f"(grid {old_grid[0]}x{old_grid[1]} -> {backbone.grid[0]}x{backbone.grid[1]})")
            value = new
        elif key.endswith((".table_v", ".table_h")) and value.shape != ref.shape:
            new = resize_rel_table(value, (ref.shape[0] - 2) // 2)
            if not notes or "relative position tables" not in notes[-1]:
                notes.append(f"relative position tables: {value.shape[0]} -> {new.shape[0]} rows "
                             f"(rel_pos_max {ckpt.rel_pos_max} -> {(ref.shape[0] - 2) // 2})")
            value = new
        out[key] = value
    return out, notes


def init_backbone(backbone: SpecViT, path: Union[str, Path]) -> dict[str, Any]:
    """Load a classification export into the segmentation backbone; returns a short report.

    Raises :class:`CheckpointError` (exit status 2 from the CLI) when the file is not a
    classification export, its spec differs, or a backbone weight is missing / misshaped.
    """
    ckpt_spec, state, rest = load_export(path)
    check_same_arch(ckpt_spec, backbone.source_spec, path)
    adapted, notes = adapt_state_dict(state, ckpt_spec, backbone)
    target = backbone.model.state_dict()
    missing = [k for k in target if k not in adapted]
    wrong = [f"{k} {tuple(adapted[k].shape)} vs {tuple(target[k].shape)}" for k in adapted
             if adapted[k].shape != target[k].shape]
    if missing or wrong:
        raise CheckpointError(f"backbone checkpoint {path} does not fit the backbone: missing {missing[:8]}"
                              f"{' ...' if len(missing) > 8 else ''}; wrong shapes {wrong[:8]}")
    backbone.model.load_state_dict(adapted, strict=True)
    unused = sorted(set(state) - set(adapted))
    return {"path": str(path), "loaded": len(adapted), "unused": unused, "resized": notes,
            "metrics": rest.get("metrics")}
