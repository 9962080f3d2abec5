"""Exact parameter counts and FLOPs from a spec, without building the network.

Search evaluates limits on thousands of candidates, so these are closed-form. Tests hold them
equal to ``sum(p.numel())`` of the built model and to ``torch.utils.flop_counter``.

FLOPs convention: **multiply-adds (MACs)** of every matrix multiply and convolution for one
image: patch embedding, qkv/proj/MLP linears, attention scores and weighted sums, relative
position terms, token pooling and the classifier (class token only). Norms, softmax,
activations and bias additions are not counted (well under 1%). This is the convention of
AutoFormer, DeiT and fvcore ("1.3 GFLOPs" for DeiT-Ti); ``torch.utils.flop_counter`` reports
exactly twice these numbers.
"""
from __future__ import annotations

from math import gcd

from pipeline.space.spec import ArchSpec


def _block(width: int, heads: int, head_dim: int, mlp_ratio: float, tokens: int, rel_pos: bool,
           rel_rows: int) -> tuple[int, int]:
    """(params, MACs) of one pre-norm transformer block."""
    inner = heads * head_dim
    hidden = int(width * mlp_ratio)
    params = (2 * width                                # norm1
              + width * 3 * inner + 3 * inner          # qkv
              + inner * width + width                  # proj
              + 2 * width                              # norm2
              + width * hidden + hidden                # fc1
              + hidden * width + width)                # fc2
    macs = tokens * (width * 3 * inner + inner * width + 2 * width * hidden)
    attn_terms = 4 if rel_pos else 2                   # qk, av (+ q.rel_k, attn.rel_v)
    macs += attn_terms * tokens * tokens * inner
    if rel_pos:
        params += 2 * 2 * rel_rows * head_dim           # vertical + horizontal tables for k and v
    return params, macs


def complexity(spec: ArchSpec) -> tuple[int, int]:
    """(parameter count, multiply-adds) of the network ``spec`` describes."""
    classes = spec.num_classes
    grid = spec.grid_size
    patch_in = spec.in_chans * spec.patch_size ** 2
    if spec.family == "vit":
        E = spec.embed_dim
        tokens = 1 + grid * grid
        params = patch_in * E + E + E + tokens * E      # patch conv, cls token, pos embed
        macs = grid * grid * patch_in * E
        for i in range(spec.depth):
            p, m = _block(E, spec.num_heads[i], spec.layer_head_dim(i), spec.mlp_ratio[i], tokens,
                          spec.rel_pos, 2 * spec.rel_pos_max + 2)
            params += p
            macs += m
        width = E
    else:
        starts = [sum(spec.stage_depths[:s]) for s in range(len(spec.stage_depths))]
        widths = [spec.layer_width(i) for i in starts]
        params = patch_in * widths[0] + widths[0] + widths[0] * grid * grid + widths[0]
        macs = grid * grid * patch_in * widths[0]
        for s, start in enumerate(starts):
            for i in range(start, start + spec.stage_depths[s]):
                p, m = _block(widths[s], spec.num_heads[i], spec.embed_dim, spec.mlp_ratio[i],
                              1 + grid * grid, False, 0)
                params += p
                macs += m
            if s + 1 < len(starts):
                w_in, w_out = widths[s], widths[s + 1]
                k = 3  # kernel = stride + 1 with stride 2
                params += w_out * (w_in // gcd(w_in, w_out)) * k * k + w_out + w_in * w_out + w_out
                grid = _pooled(grid)
                macs += grid * grid * w_out * (w_in // gcd(w_in, w_out)) * k * k + w_in * w_out
        width = widths[-1]
    params += 2 * width + width * classes + classes     # final norm, head
    macs += width * classes
    return params, macs


def count_mlp_units(spec: ArchSpec) -> int:
    """Hidden units of every MLP over every token (class token included): the activations a
    network computes per image, and the units NASWOT reads (its kernel's diagonal)."""
    grid, units = spec.grid_size, 0
    for s, depth in enumerate(spec.stage_depths):
        start = sum(spec.stage_depths[:s])
        units += (1 + grid * grid) * sum(int(spec.layer_width(i) * spec.mlp_ratio[i]) for i in range(start, start + depth))
        grid = _pooled(grid)
    return units


def _pooled(grid: int) -> int:
    """Token grid side after a PiT pooling (depthwise conv, kernel 3 = stride + 1, stride 2, padding 1)."""
    return (grid + 2 * 1 - 3) // 2 + 1


def count_params(spec: ArchSpec) -> int:
    return complexity(spec)[0]


def count_flops(spec: ArchSpec) -> int:
    """Multiply-adds for one image (see the module docstring)."""
    return complexity(spec)[1]


def autoformer_flops(spec: ArchSpec) -> float:
    """FLOPs as AutoFormer's own code counts them (``Vision_TransformerSuper.get_complexity(196)``
    of microsoft/Cream, AutoFormer/model/), the convention of the OoD-ViT-NAS files' ``flops``.

    It differs from :func:`count_flops` (exact multiply-adds) by AutoFormer's bookkeeping, which is
    reproduced here rather than corrected: each block counts ``tokens + 1`` tokens (its caller
    already added the class token); LayerNorms count one operation per element; the position
    embedding half an operation per element; the relative-position terms count
    ``rel_pos_max`` operations per token pair and k/v table, plus a half per pair and per query
    channel; the classifier is applied to every token, not only to the pooled one. Only AutoFormer's
    own model (64-channel heads, relative positions, patch embedding with bias) has this count.
    Reproduced exactly on all 1,001 architectures of both OoD-ViT-NAS files (tests/test_models.py).
    """
    if spec.family != "vit" or not spec.rel_pos or spec.head_dim is None:
        raise ValueError("autoformer_flops is AutoFormer's count for its own model (a vit with head_dim and "
                         f"rel_pos); got family={spec.family}, head_dim={spec.head_dim}, rel_pos={spec.rel_pos}")
    width, n = spec.embed_dim, spec.grid_size ** 2
    patch = spec.in_chans * spec.patch_size ** 2 * width
    total = width + n * patch + (n + 1) * width / 2          # patch conv (+ its bias), position embedding
    s = n + 2                                                # tokens as each block's layers count them
    for i in range(spec.depth):
        inner, hidden = spec.num_heads[i] * spec.head_dim, int(width * spec.mlp_ratio[i])
        total += 2 * s * width                               # two LayerNorms
        total += s * width * 3 * inner + 2 * s * s * inner + s * inner * width   # qkv, scores, weighted sum, proj
        total += 2 * spec.rel_pos_max * s * s + s * s / 2 + s * inner / 2        # relative positions (k and v)
        total += 2 * s * width * hidden                      # fc1, fc2
    return total + (n + 1) * width * spec.num_classes        # classifier on every token
