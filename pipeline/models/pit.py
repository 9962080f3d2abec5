"""Pooling-based Vision Transformer (PiT, Heo et al., ICCV 2021) with searchable stages."""
from __future__ import annotations

import math
from functools import partial
from typing import Sequence

import torch
from torch import nn

from pipeline.models.layers import Block, ClassToken, GridPosition, drop_path_rates, init_weights


class TokenPooling(nn.Module):
    """Halve the patch grid with a strided depthwise conv; project the class token linearly."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 2) -> None:
        super().__init__()
        groups = math.gcd(in_dim, out_dim)  # depthwise when out_dim is a multiple of in_dim
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size=stride + 1, stride=stride,
                              padding=stride // 2, groups=groups)
        self.fc = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor, cls: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.conv(x), self.fc(cls)


# PiT (naver-ai/pit, pit.py) normalises with eps=1e-6 in every block and before the head.
PIT_NORM = partial(nn.LayerNorm, eps=1e-6)


class PoolingTransformer(nn.Module):
    """PiT: stages of transformer blocks, pooling the token grid between stages.

    Args:
        img_size, patch_size, patch_stride, in_chans, num_classes: geometry (PiT uses 16/8).
        base_dim: channels per head; a stage's width is ``base_dim * heads`` of that stage.
        stage_depths: blocks per stage.
        num_heads: heads per block (constant within a stage).
        mlp_ratio: MLP ratio per block.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, patch_stride: int = 8, in_chans: int = 3,
                 num_classes: int = 1000, base_dim: int = 32, stage_depths: Sequence[int] = (2, 6, 4),
                 num_heads: Sequence[int] = (2,) * 2 + (4,) * 6 + (8,) * 4,
                 mlp_ratio: Sequence[float] = (4.0,) * 12, qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 block_fn: type[nn.Module] = Block) -> None:
        super().__init__()
        self.num_classes = num_classes
        starts = [sum(stage_depths[:s]) for s in range(len(stage_depths))]
        widths = [base_dim * num_heads[i] for i in starts]
        self.widths = widths
        self.num_features = widths[-1]
        self.patch_embed = nn.Conv2d(in_chans, widths[0], kernel_size=patch_size, stride=patch_stride)
        grid = (img_size - patch_size) // patch_stride + 1
        self.grid_size = (grid, grid)
        self.pos_embed = GridPosition(widths[0], self.grid_size)
        self.cls_token = ClassToken(widths[0])
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, sum(stage_depths))
        self.stages = nn.ModuleList()
        self.pools = nn.ModuleList()
        for s, (start, depth) in enumerate(zip(starts, stage_depths)):
            self.stages.append(nn.ModuleList([
                block_fn(widths[s], num_heads[i], mlp_ratio[i], qkv_bias=qkv_bias, drop=drop_rate,
                         attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=PIT_NORM)
                for i in range(start, start + depth)
            ]))
            if s + 1 < len(stage_depths):
                self.pools.append(TokenPooling(widths[s], widths[s + 1]))
        self.norm = PIT_NORM(widths[-1])
        self.head = nn.Linear(widths[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        self.apply(init_weights)

    @property
    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.stages for b in stage]

    def _run(self, x: torch.Tensor, keep: set[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        x = self.pos_drop(self.pos_embed(self.patch_embed(x)))
        cls = None
        maps, i = {}, 0
        for s, stage in enumerate(self.stages):
            B, C, H, W = x.shape
            tokens = x.flatten(2).transpose(1, 2)
            t = self.cls_token(tokens) if cls is None else torch.cat([cls, tokens], dim=1)
            for blk in stage:
                t = blk(t, (H, W))
                if i in keep:
                    maps[i] = t[:, 1:].transpose(1, 2).reshape(B, C, H, W)
                i += 1
            cls, x = t[:, :1], t[:, 1:].transpose(1, 2).reshape(B, C, H, W)
            if s < len(self.pools):
                x, cls = self.pools[s](x, cls)
        return cls, maps

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised class token (B, 1, C); PiT's pooled grid is not kept."""
        cls, _ = self._run(x, set())
        return self.norm(cls)

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        n = len(self.blocks)
        _, maps = self._run(x, {i % n for i in indices})
        return [maps[i % n] for i in indices]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
