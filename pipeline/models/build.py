"""Materialise a standalone ``nn.Module`` from an :class:`ArchSpec`."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from pipeline.models.pit import PoolingTransformer
from pipeline.models.vit import VisionTransformer
from pipeline.space.spec import ArchSpec


def build_model(spec: ArchSpec, num_classes: Optional[int] = None, seed: Optional[int] = None,
                drop_path_rate: float = 0.0, drop_rate: float = 0.0) -> nn.Module:
    """Build the network a spec describes.

    Args:
        spec: the architecture.
        num_classes: override the spec's class count (0 gives a headless backbone).
        seed: if given, initialise under this seed without touching the global RNG, so
            proxies score the same network every time.
        drop_path_rate, drop_rate: regularisation for retraining (0 for scoring).
    """
    classes = spec.num_classes if num_classes is None else num_classes
    # Construct on the meta device (no memory, no default init), then initialise once.
    with torch.device("meta"):
        model = _construct(spec, classes, drop_path_rate, drop_rate)
    model = model.to_empty(device="cpu")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model.init_weights()
    return model


def _construct(spec: ArchSpec, classes: int, drop_path_rate: float, drop_rate: float) -> nn.Module:
    if spec.family == "vit":
        return VisionTransformer(
            img_size=spec.img_size, patch_size=spec.patch_size, in_chans=spec.in_chans,
            num_classes=classes, embed_dim=spec.embed_dim, num_heads=spec.num_heads,
            mlp_ratio=spec.mlp_ratio, head_dim=spec.head_dim, rel_pos=spec.rel_pos,
            rel_pos_max=spec.rel_pos_max, global_pool=spec.global_pool, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
    return PoolingTransformer(
        img_size=spec.img_size, patch_size=spec.patch_size, patch_stride=spec.stride,
        in_chans=spec.in_chans, num_classes=classes, base_dim=spec.embed_dim,
        stage_depths=spec.stage_depths, num_heads=spec.num_heads, mlp_ratio=spec.mlp_ratio,
        drop_rate=drop_rate, drop_path_rate=drop_path_rate)
