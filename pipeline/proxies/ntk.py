"""Empirical neural tangent kernel Theta = J J^T at initialisation.

J[i] is the gradient of a scalar output f(x_i) of the network w.r.t. its parameters. Two
implementations give the same matrix:

* :func:`empirical_ntk_reference` - one backward pass per sample (the TE-NAS way). Simple and
  obviously right; kept for tests.
* :func:`empirical_ntk` - one batched forward and one batched backward. Parameters are frozen
  so autograd only propagates activation gradients; hooks catch each layer's input and output
  gradient, form that layer's *per-sample* parameter gradients and add their Gram matrix to
  Theta, then drop them. Per-sample gradients are held one layer at a time (further capped by
  splitting a linear layer's rows), never N x P. Measured (benchmarks/ntk_speed.py), the peak is
  one ordinary forward+backward's plus 8-14%: the hooks hold each layer's input until its backward
  (what autograd saves for weight gradients, which frozen parameters would otherwise not need), and
  the per-sample blocks come on top, each at most ``max_chunk_elems``.

Linear layers (almost all parameters) and LayerNorms use closed forms (``dW_i = G_i^T X_i``)
inside the backward pass. Every other module that owns parameters (convolutions, class token,
position tables) is handled generically with ``torch.func`` (vmap over samples of the gradient
of <g_i, module(x_i)>) right after the backward pass, since autograd cannot be re-entered from
its own hooks; their output gradients are activation-sized, so holding them briefly is cheap.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from pipeline.models.layers import RelativePosition2D

REDUCTIONS = ("sum", "projection", "loss")
NEGLIGIBLE_TRACE = 1e-9  # relative to the largest; a normalised kernel ignores tensors below it
PARAM_SETS = ("all", "weights", "backbone")


@dataclass
class NTKStats:
    """What one fast-engine run did (for benchmarks and memory tests)."""

    peak_chunk_bytes: int = 0   # largest per-sample gradient block held at once
    covered_params: int = 0     # parameters whose gradients entered Theta


def _outputs(logits: torch.Tensor, reduction: str, labels: Optional[torch.Tensor], seed: int) -> torch.Tensor:
    """Per-sample scalars f(x_i) whose gradients span the kernel."""
    if reduction == "sum":
        return logits.sum(dim=1)
    if reduction == "projection":
        gen = torch.Generator().manual_seed(seed)
        v = torch.randn(logits.shape[1], generator=gen).to(logits) / math.sqrt(logits.shape[1])
        return logits @ v
    if reduction == "loss":
        if labels is None:
            raise ValueError("reduction='loss' needs labels")
        return F.cross_entropy(logits, labels, reduction="none")
    raise ValueError(f"unknown reduction {reduction!r}; use one of {REDUCTIONS}")


def selected_parameters(model: nn.Module, params: str = "all") -> list[tuple[str, nn.Parameter]]:
    """``all`` parameters; only ``weights`` (kernels of linear and conv layers, as TE-NAS); or the
    ``backbone`` (everything but the classifier ``model.head``, whose gradient is just the final
    features and otherwise dominates the kernel at initialisation)."""
    if params not in PARAM_SETS:
        raise ValueError(f"unknown parameter set {params!r}; use one of {PARAM_SETS}")
    if params == "all":
        return list(model.named_parameters())
    if params == "backbone":
        return [(k, p) for k, p in model.named_parameters() if not k.startswith("head.")]
    out = []
    for mod_name, mod in model.named_modules():
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            out.append((f"{mod_name}.weight", mod.weight))
    return out


@contextlib.contextmanager
def _mode(model: nn.Module, train: bool) -> Iterator[None]:
    was = model.training
    model.train(train)
    try:
        yield
    finally:
        model.train(was)


def empirical_ntk_reference(model: nn.Module, images: torch.Tensor, labels: Optional[torch.Tensor] = None,
                            reduction: str = "sum", params: str = "all", train_mode: bool = False,
                            seed: int = 0, normalize: bool = False) -> torch.Tensor:
    """Theta by one backward pass per sample, holding the full N x P Jacobian (tests only)."""
    chosen = [p for _, p in selected_parameters(model, params)]
    rows = []
    with _mode(model, train_mode):
        for i in range(images.shape[0]):
            f = _outputs(model(images[i:i + 1]), reduction, None if labels is None else labels[i:i + 1], seed)
            grads = torch.autograd.grad(f.sum(), chosen, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).flatten()
                                   for g, p in zip(grads, chosen)]))
    jac = torch.stack(rows).double()
    if not normalize:
        return jac @ jac.T
    grams, start = [], 0
    for p in chosen:
        block = jac[:, start:start + p.numel()]
        start += p.numel()
        grams.append(block @ block.T)
    floor = max(g.trace() for g in grams) * NEGLIGIBLE_TRACE
    return sum(g / g.trace() for g in grams if g.trace() > floor)


class _GramAccumulator:
    """Hooks that turn each layer's (input, output-gradient) into per-sample Gram terms."""

    def __init__(self, model: nn.Module, chosen: set[int], n: int, max_chunk_elems: int,
                 normalize: bool = False, grams_out: Optional[list] = None) -> None:
        self.theta = torch.zeros(n, n, dtype=torch.float64, device=next(model.parameters()).device)
        self.chosen = chosen
        self.normalize = normalize
        self.grams: list[torch.Tensor] = []
        self.grams_out = grams_out
        self.names = {id(m): name for name, m in model.named_modules()}
        self.max_chunk_elems = max_chunk_elems
        self.stats = NTKStats()
        self.handles = []
        self.deferred: list[tuple] = []
        owners = 0
        for module in model.modules():
            own = [(k, p) for k, p in module.named_parameters(recurse=False) if id(p) in chosen]
            if own:
                owners += sum(p.numel() for _, p in own)
                self.handles.append(module.register_forward_hook(self._forward_hook(own), with_kwargs=True))
        self.stats.covered_params = owners

    def _gram(self, per_sample: torch.Tensor) -> torch.Tensor:
        flat = per_sample.reshape(per_sample.shape[0], -1)
        self.stats.peak_chunk_bytes = max(self.stats.peak_chunk_bytes, flat.numel() * flat.element_size())
        return (flat @ flat.T).double()

    def _add(self, gram: torch.Tensor, module: Optional[nn.Module] = None, param: str = "") -> None:
        """Add one parameter tensor's Gram matrix (kept apart for normalisation if asked)."""
        if self.grams_out is not None:
            self.grams_out.append((f"{self.names.get(id(module), '?')}.{param}", gram))
        if self.normalize:
            self.grams.append(gram)
        else:
            self.theta += gram

    def result(self) -> torch.Tensor:
        """Theta; normalised: sum of trace-1 Gram matrices, skipping tensors whose gradient is
        zero up to rounding (e.g. key biases, which softmax ignores) rather than amplifying noise."""
        if not self.normalize or not self.grams:
            return self.theta
        traces = torch.stack([g.trace() for g in self.grams])
        floor = traces.max() * NEGLIGIBLE_TRACE
        return sum(g / t for g, t in zip(self.grams, traces) if t > floor)

    def _forward_hook(self, own: list[tuple[str, nn.Parameter]]):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            if not output.requires_grad:
                return
            held = [tuple(a.detach() if torch.is_tensor(a) else a for a in args)]

            def on_grad(g: torch.Tensor) -> None:
                # Let go of the layer's input as soon as it is used: the autograd graph keeps
                # this hook until the whole backward ends, and holding every layer's input to
                # the end would keep all activations alive while autograd frees them layer by layer.
                self._backward(module, own, held.pop(), kwargs, g)

            output.register_hook(on_grad)
        return hook

    def _backward(self, module: nn.Module, own: list, inputs: tuple, kwargs: dict, g: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            self._linear(module, own, inputs[0], g)
        elif isinstance(module, nn.LayerNorm):
            self._layer_norm(module, own, inputs[0], g)
        elif isinstance(module, RelativePosition2D):
            self._relative_position(module, own, inputs[0], inputs[1], g)
        else:
            self.deferred.append((module, own, inputs, kwargs, g))

    def finish(self) -> None:
        """Per-sample gradients of the generic modules (after autograd has finished)."""
        while self.deferred:
            self._generic(*self.deferred.pop())

    def _linear(self, module: nn.Linear, own: list, x: torch.Tensor, g: torch.Tensor) -> None:
        n = x.shape[0]
        x = x.reshape(n, -1, x.shape[-1])
        g = g.reshape(n, -1, g.shape[-1])
        names = {k for k, _ in own}
        if "weight" in names:
            # Split output rows so one block of per-sample gradients stays under the cap.
            rows = max(1, self.max_chunk_elems // max(1, n * x.shape[-1]))
            gram = sum(self._gram(torch.bmm(g[..., start:start + rows].transpose(1, 2), x))
                       for start in range(0, g.shape[-1], rows))
            self._add(gram, module, "weight")
        if "bias" in names:
            self._add(self._gram(g.sum(dim=1)), module, "bias")

    def _layer_norm(self, module: nn.LayerNorm, own: list, x: torch.Tensor, g: torch.Tensor) -> None:
        n = x.shape[0]
        names = {k for k, _ in own}
        if "weight" in names:
            x_hat = F.layer_norm(x, module.normalized_shape, eps=module.eps)
            self._add(self._gram((g * x_hat).reshape(n, -1, *module.normalized_shape).sum(dim=1)), module, "weight")
        if "bias" in names:
            self._add(self._gram(g.reshape(n, -1, *module.normalized_shape).sum(dim=1)), module, "bias")

    def _relative_position(self, module: RelativePosition2D, own: list, x: torch.Tensor,
                           grid: tuple[int, int], g: torch.Tensor) -> None:
        # The embedding R[n, m] = table_v[iv[n, m]] + table_h[ih[n, m]] enters as
        # out = q.R (keys) or attn.R (values); each table row gathers the entries that index it.
        dense, scores = (x, g) if module.role == "key" else (g, x)   # (B,h,N,d), (B,h,N,N)
        iv, ih = module.indices(grid, x.device)
        for name, idx, table in (("table_v", iv, module.table_v), ("table_h", ih, module.table_h)):
            if name not in {k for k, _ in own}:
                continue
            per_row = scores.new_zeros(*scores.shape[:3], table.shape[0])
            per_row.scatter_add_(-1, idx.expand_as(scores), scores)
            self._add(self._gram(torch.einsum("bhnd,bhnr->brd", dense, per_row)), module, name)

    def _generic(self, module: nn.Module, own: list, inputs: tuple, kwargs: dict, g: torch.Tensor) -> None:
        params = {k: p.detach() for k, p in own}
        x, rest = inputs[0], inputs[1:]

        def contribution(p: dict, x_i: torch.Tensor, g_i: torch.Tensor) -> torch.Tensor:
            out = functional_call(module, p, (x_i.unsqueeze(0), *rest), kwargs)
            return (out * g_i.unsqueeze(0)).sum()

        per_sample = vmap(grad(contribution), in_dims=(None, 0, 0))(params, x, g)
        for k in params:
            self._add(self._gram(per_sample[k]), module, k)

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def empirical_ntk(model: nn.Module, images: torch.Tensor, labels: Optional[torch.Tensor] = None,
                  reduction: str = "sum", params: str = "all", train_mode: bool = False, seed: int = 0,
                  max_chunk_elems: int = 32 * 2 ** 20, stats: Optional[NTKStats] = None,
                  normalize: bool = False, grams_out: Optional[list] = None) -> torch.Tensor:
    """Theta (N x N, float64) with one batched forward and backward (see module docstring).

    Args:
        model: network returning logits (B, C); attention must not be fused SDPA (no
            per-sample rule needed there, but the generic rule vmaps modules).
        images, labels: the probe batch (labels only for ``reduction='loss'``).
        reduction: "sum" of logits (TE-NAS), a seeded random "projection", or the "loss".
        params: "all", "weights" (linear/conv kernels only) or "backbone" (all but the head).
        train_mode: forward in train mode (dropout/drop-path active) instead of eval mode.
        max_chunk_elems: cap on the elements of one per-sample gradient block.
        stats: optional :class:`NTKStats` filled with what the run held in memory.
        normalize: divide each parameter tensor's Gram matrix by its trace before summing, so
            every tensor counts equally instead of the init scale deciding (0.02-std weights
            make the classifier's term dwarf the rest).
        grams_out: if a list, receives ``("module.param", raw Gram)`` for every parameter tensor,
            so analyses can regroup the kernel (per block, attention vs MLP) without recomputing.
    """
    chosen = {id(p) for _, p in selected_parameters(model, params)}
    acc = _GramAccumulator(model, chosen, images.shape[0], max_chunk_elems, normalize, grams_out)
    requires = {p: p.requires_grad for p in model.parameters()}
    try:
        for p in requires:
            p.requires_grad_(False)   # only activation gradients flow; hooks do the rest
        with _mode(model, train_mode), torch.enable_grad():
            x = images.detach().requires_grad_(True)
            f = _outputs(model(x), reduction, labels, seed)
            f.sum().backward()
        acc.close()   # before finish(): its functional calls must not re-trigger the hooks
        acc.finish()
    finally:
        acc.close()
        for p, r in requires.items():
            p.requires_grad_(r)
    if stats is not None:
        stats.peak_chunk_bytes = acc.stats.peak_chunk_bytes
        stats.covered_params = acc.stats.covered_params
    return acc.result()


def disable_fused_attention(model: nn.Module) -> nn.Module:
    """Use explicit attention math (fused SDPA has no vmap/forward-AD rules on every backend)."""
    for m in model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    return model
