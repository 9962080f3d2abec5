"""Transformer building blocks shared by the ViT and PiT models.

timm supplies the MLP, drop-path and init; attention is our own because search spaces need
what timm's does not offer: a head width independent of the token width (AutoFormer's 64
channels per head) and 2-D relative position embeddings for keys and values.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, resample_abs_pos_embed, use_fused_attn
from torch import nn


class RelativePosition2D(nn.Module):
    """Learned 2-D relative position embeddings (AutoFormer / iRPE style) for keys or values.

    Separate vertical and horizontal tables of ``2 * max_distance + 2`` rows: row 0 serves
    every pair involving the class token, rows 1.. the clipped distances -max..+max. The
    module applies its ``(N, N, dim)`` embedding itself, so its input and output carry the batch
    (per-sample gradients, as the NTK engine needs, then come from the module's own forward):

    * ``role="key"``: input queries ``(B, h, N, dim)`` -> extra attention scores ``(B, h, N, N)``;
    * ``role="value"``: input attention ``(B, h, N, N)`` -> extra outputs ``(B, h, N, dim)``.
    """

    def __init__(self, dim: int, max_distance: int = 14, role: str = "key") -> None:
        super().__init__()
        if role not in ("key", "value"):
            raise ValueError(f"role must be 'key' or 'value', got {role!r}")
        self.role = role
        self.max_distance = max_distance
        self.table_v = nn.Parameter(torch.zeros(2 * max_distance + 2, dim))
        self.table_h = nn.Parameter(torch.zeros(2 * max_distance + 2, dim))
        self._index_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def indices(self, grid: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(vertical, horizontal) table rows of every (query, key) token pair of a ``grid``, row 0
        for the class token (cached per grid and device); the NTK engine reads them too."""
        key = (tuple(grid), str(device))
        if key not in self._index_cache:
            h, w = grid
            rows = torch.arange(h, device=device).repeat_interleave(w)
            cols = torch.arange(w, device=device).repeat(h)
            m = self.max_distance
            dv = (rows[None, :] - rows[:, None]).clamp(-m, m) + m + 1
            dh = (cols[None, :] - cols[:, None]).clamp(-m, m) + m + 1
            self._index_cache[key] = (F.pad(dv, (1, 0, 1, 0)), F.pad(dh, (1, 0, 1, 0)))
        return self._index_cache[key]

    def embeddings(self, grid: tuple[int, int]) -> torch.Tensor:
        iv, ih = self.indices(grid, self.table_v.device)
        return self.table_v[iv] + self.table_h[ih]

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        r = self.embeddings(grid)
        if self.role == "key":
            return torch.einsum("bhnd,nmd->bhnm", x, r)
        return torch.einsum("bhnm,nmd->bhnd", x, r)


class Attention(nn.Module):
    """Multi-head self-attention with a free head width and optional relative positions.

    Args:
        dim: token width.
        num_heads: number of heads.
        head_dim: channels per head; None means ``dim // num_heads`` (the DeiT convention).
        qkv_bias: bias on the qkv projection.
        rel_pos_max: if set, add 2-D relative position embeddings to keys and values.
    """

    def __init__(self, dim: int, num_heads: int, head_dim: Optional[int] = None, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0, rel_pos_max: Optional[int] = None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        inner = self.head_dim * num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(inner, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rel_k = RelativePosition2D(self.head_dim, rel_pos_max, "key") if rel_pos_max else None
        self.rel_v = RelativePosition2D(self.head_dim, rel_pos_max, "value") if rel_pos_max else None
        # Fused SDPA is faster but cannot add relative positions; proxies may switch it off
        # (forward-mode autodiff does not support it).
        self.fused_attn = use_fused_attn() and rel_pos_max is None

    def forward(self, x: torch.Tensor, grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
        B, N, _ = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.0)
        else:
            attn = q @ k.transpose(-2, -1)
            if self.rel_k is not None:
                attn = attn + self.rel_k(q, _grid(grid, N))
            attn = self.attn_drop((attn * self.scale).softmax(dim=-1))
            x = attn @ v
            if self.rel_v is not None:
                x = x + self.rel_v(attn, _grid(grid, N))
        x = x.transpose(1, 2).reshape(B, N, self.num_heads * self.head_dim)
        return self.proj_drop(self.proj(x))


def _grid(grid: Optional[tuple[int, int]], n_tokens: int) -> tuple[int, int]:
    """The patch grid; without one, assume a square grid plus a class token."""
    if grid is not None:
        return grid
    side = int(round((n_tokens - 1) ** 0.5))
    if side * side != n_tokens - 1:
        raise ValueError(f"{n_tokens} tokens are not a square grid plus a class token; pass grid=(h, w)")
    return side, side


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, head_dim: Optional[int] = None,
                 qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 rel_pos_max: Optional[int] = None, norm_layer: type[nn.Module] = nn.LayerNorm,
                 act_layer: type[nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, head_dim, qkv_bias, attn_drop, drop, rel_pos_max)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, hidden_features=int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward_residuals(self, x: torch.Tensor, grid: Optional[tuple[int, int]] = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """The residual stream after the attention and after the MLP (AZ-NAS reads both)."""
        x = x + self.drop_path1(self.attn(self.norm1(x), grid))
        return x, x + self.drop_path2(self.mlp(self.norm2(x)))

    def forward(self, x: torch.Tensor, grid: Optional[tuple[int, int]] = None) -> torch.Tensor:
        return self.forward_residuals(x, grid)[1]


@torch.no_grad()
def trunc_normal_(tensor: torch.Tensor, std: float = 0.02, a: float = -2.0, b: float = 2.0) -> torch.Tensor:
    """Normal(0, std) truncated to [a, b] by redrawing the rare outliers.

    Same distribution as ``timm.layers.trunc_normal_`` (also absolute bounds) but ~3x faster
    on CPU than its inverse-CDF method, which keeps building an AutoFormer-B well under 1 s.
    """
    tensor.normal_(0.0, std)
    if tensor.is_meta:
        return tensor
    outside = (tensor < a) | (tensor > b)
    while outside.any():
        tensor[outside] = torch.randn(int(outside.sum()), device=tensor.device, dtype=tensor.dtype) * std
        outside = (tensor < a) | (tensor > b)
    return tensor


def init_weights(module: nn.Module) -> None:
    """ViT/AutoFormer init: normal (std 0.02) linear weights and tables, zero biases,
    PyTorch's default for convolutions. Applied once, after construction on the meta device."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        module.reset_parameters()
    elif isinstance(module, RelativePosition2D):
        trunc_normal_(module.table_v, std=0.02)
        trunc_normal_(module.table_h, std=0.02)
    elif isinstance(module, ClassToken):
        trunc_normal_(module.cls_token, std=0.02)
    elif isinstance(module, (TokenPosition, GridPosition)):
        trunc_normal_(module.pos_embed, std=0.02)


class ClassToken(nn.Module):
    """Prepend a learned class token to a token sequence (B, N, C) -> (B, 1 + N, C)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)


class TokenPosition(nn.Module):
    """Learned absolute positions for (prefix tokens + a patch grid), resampled for other grids."""

    def __init__(self, dim: int, grid: tuple[int, int], prefix_tokens: int = 1) -> None:
        super().__init__()
        self.grid = tuple(grid)
        self.prefix_tokens = prefix_tokens
        self.pos_embed = nn.Parameter(torch.zeros(1, prefix_tokens + grid[0] * grid[1], dim))

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        pos = self.pos_embed
        if tuple(grid) != self.grid:
            pos = resample_abs_pos_embed(pos, new_size=list(grid), old_size=list(self.grid),
                                         num_prefix_tokens=self.prefix_tokens)
        return x + pos


class GridPosition(nn.Module):
    """Learned absolute positions on a (B, C, H, W) map, interpolated for other sizes (PiT)."""

    def __init__(self, dim: int, grid: tuple[int, int]) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, dim, grid[0], grid[1]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.pos_embed
        if x.shape[-2:] != pos.shape[-2:]:
            pos = F.interpolate(pos, size=x.shape[-2:], mode="bicubic", align_corners=False)
        return x + pos


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over the blocks."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]
