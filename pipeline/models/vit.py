"""Isotropic Vision Transformer with per-layer heads and MLP ratios (AutoFormer / DeiT spaces)."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from timm.layers import PatchEmbed
from torch import nn

from pipeline.models.layers import Block, ClassToken, TokenPosition, drop_path_rates, init_weights


class VisionTransformer(nn.Module):
    """ViT with a class token, absolute position embedding and heterogeneous blocks.

    Args:
        img_size: training image size (position embeddings are resampled for other sizes).
        patch_size: patch side, also the patch stride.
        in_chans: input channels.
        num_classes: classifier outputs; 0 for a headless backbone.
        embed_dim: token width shared by all blocks.
        num_heads: heads per block (its length is the depth).
        mlp_ratio: MLP hidden ratio per block.
        head_dim: channels per head (64 in AutoFormer); None splits embed_dim across heads.
        rel_pos: add 2-D relative position embeddings for keys and values in every block.
        rel_pos_max: clipping distance of the relative positions.
        global_pool: "token" (classify the class token) or "avg" (mean of the patch tokens; the
            class token is still there and attended to, as in AutoFormer's ``--gp``).
        qkv_bias: bias on the qkv projections.
        drop_rate, attn_drop_rate, drop_path_rate: regularisation (drop-path rises linearly).
        block_fn: the block class, swappable like timm's.
    """

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3, num_classes: int = 1000,
                 embed_dim: int = 192, num_heads: Sequence[int] = (3,) * 12,
                 mlp_ratio: Sequence[float] = (4.0,) * 12, head_dim: Optional[int] = None,
                 rel_pos: bool = False, rel_pos_max: int = 14, global_pool: str = "token", qkv_bias: bool = True, drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 block_fn: type[nn.Module] = Block) -> None:
        super().__init__()
        if len(num_heads) != len(mlp_ratio):
            raise ValueError("num_heads and mlp_ratio need one entry per block")
        if global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool must be 'token' or 'avg', got {global_pool!r}")
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.embed_dim = self.num_features = embed_dim
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim, strict_img_size=False,
                                      output_fmt="NHWC")
        self.grid_size = self.patch_embed.grid_size
        self.cls_token = ClassToken(embed_dim)
        self.pos_embed = TokenPosition(embed_dim, self.grid_size, prefix_tokens=1)
        self.pos_drop = nn.Dropout(drop_rate)
        dpr = drop_path_rates(drop_path_rate, len(num_heads))
        self.blocks = nn.ModuleList([
            block_fn(embed_dim, h, m, head_dim=head_dim, qkv_bias=qkv_bias, drop=drop_rate,
                     attn_drop=attn_drop_rate, drop_path=dpr[i], rel_pos_max=rel_pos_max if rel_pos else None)
            for i, (h, m) in enumerate(zip(num_heads, mlp_ratio))
        ])
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.init_weights()

    def init_weights(self) -> None:
        self.apply(init_weights)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.patch_embed(x)  # B, H, W, C
        grid = (x.shape[1], x.shape[2])
        x = self.pos_embed(self.cls_token(x.flatten(1, 2)), grid)
        return self.pos_drop(x), grid

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised tokens (B, 1 + H*W, C), class token first."""
        x, grid = self._embed(x)
        for blk in self.blocks:
            x = blk(x, grid)
        return self.norm(x)

    def forward_residuals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream (B, 1 + H*W, C) after every attention and every MLP of every block,
        in order (2 x depth tensors), without the final norm: what AZ-NAS's expressivity and
        trainability read (AutoFormer's ``extract_res_features``)."""
        x, grid = self._embed(x)
        stream = []
        for blk in self.blocks:
            after_attn, x = blk.forward_residuals(x, grid)
            stream += [after_attn, x]
        return stream

    def forward_intermediates(self, x: torch.Tensor, indices: Sequence[int]) -> list[torch.Tensor]:
        """Patch-token maps (B, C, H, W) after each block in ``indices`` (for dense heads)."""
        wanted = {i % len(self.blocks) for i in indices}
        x, grid = self._embed(x)
        maps = {}
        for i, blk in enumerate(self.blocks):
            x = blk(x, grid)
            if i in wanted:
                maps[i] = x[:, 1:].reshape(x.shape[0], grid[0], grid[1], -1).permute(0, 3, 1, 2)
        return [maps[i % len(self.blocks)] for i in indices]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x[:, 1:].mean(dim=1) if self.global_pool == "avg" else x[:, 0]
        return self.head(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
