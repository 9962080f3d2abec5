"""Baseline training-free proxies: size, NASWOT, SynFlow, GradNorm, SNIP and TF-TAS's DSS.

Every proxy is a small pure function on an ``nn.Module`` (so it can be checked by hand on a
tiny network) plus a registered wrapper that builds the spec's network with
``build_model(spec, seed=seed)``, moves it to ``device`` and calls the pure function.

Conventions shared by all of them:

* Pure functions never change the model they are given: proxies that need modified weights
  (absolute values, float64) work on a deep copy, gradients are taken with
  ``torch.autograd.grad`` (no ``.grad`` is left behind) and the train/eval mode is untouched.
* "Weights" means the ``weight`` tensors of ``nn.Linear`` and ``nn.Conv{1,2,3}d`` modules,
  the synapses the original papers score (biases, norms, embeddings and tokens are left out).
* Everything runs in float32 (the dtype ``build_model`` gives) except SynFlow (float64).
* DSS and SynFlow can score a spec's own network (``init="network"``) or its slice of the
  space's seeded supernet (``init="supernet"``, as weight-sharing searches such as TF-TAS do).
"""
from __future__ import annotations

import copy
from typing import Iterable, Literal, Optional, Sequence, get_args

import torch
import torch.nn.functional as F
from timm.layers import Mlp
from torch import nn

from pipeline.models.build import build_model
from pipeline.models.complexity import count_flops, count_mlp_units, count_params
from pipeline.models.layers import Attention, ClassToken, GridPosition, TokenPosition
from pipeline.models.supernet import INITS, Init, scored_network
from pipeline.proxies.registry import InvalidScore, register
from pipeline.space.spec import ArchSpec

__all__ = ["naswot_score", "synflow_score", "grad_norm_score", "snip_score", "dss_score", "dss_parts",
           "dss_layers", "find_head", "token_parameters", "weight_tensors", "DSS_VARIANTS", "INITS"]

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Piecewise-linear-ish units whose on/off pattern NASWOT reads. In our ViT/PiT models the only
# such modules are the ``act`` of every timm ``Mlp``.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.LeakyReLU, nn.SiLU, nn.ELU)


# ----------------------------------------------------------------------------- helpers
def weight_tensors(model: nn.Module) -> list[nn.Parameter]:
    """The ``weight`` of every Linear / Conv module, in module order, each once."""
    out, seen = [], set()
    for m in model.modules():
        if isinstance(m, _WEIGHTED) and m.weight is not None and id(m.weight) not in seen:
            seen.add(id(m.weight))
            out.append(m.weight)
    return out


def _grads(output: torch.Tensor, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """d output / d params without touching ``.grad``; unused parameters get zero gradients."""
    grads = torch.autograd.grad(output, list(params), allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def _absolute_copy(model: nn.Module, dtype: Optional[torch.dtype] = None) -> nn.Module:
    """A deep copy in eval mode with every parameter replaced by its absolute value."""
    net = copy.deepcopy(model)
    if dtype is not None:
        net = net.to(dtype)
    net.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
            p.requires_grad_(True)
    return net


def _ones_input(model: nn.Module, input_shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
    device, _ = _model_device_dtype(model)
    return torch.ones(tuple(input_shape), dtype=dtype, device=device)


def _probe_shape(images: torch.Tensor) -> tuple[int, ...]:
    """A single all-ones image at the resolution the caller scores at: (1, C, H, W)."""
    return (1, *images.shape[1:])


def _build(spec: ArchSpec, seed: int, device: str | torch.device) -> nn.Module:
    return build_model(spec, seed=seed).to(device)


# ----------------------------------------------------------------------------- size
@register("params", higher_is_better=True, description="parameter count in millions")
def params_proxy(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                 device: str | torch.device = "cpu") -> float:
    """Parameters (millions), exact and closed-form (``count_params``); no network is built."""
    return count_params(spec) / 1e6


@register("flops", higher_is_better=True, description="multiply-adds per image in millions")
def flops_proxy(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                device: str | torch.device = "cpu") -> float:
    """Multiply-adds for one image (millions, ``count_flops``); no network is built."""
    return count_flops(spec) / 1e6


@register("mlp_units", higher_is_better=True, description="MLP hidden units over all tokens, in millions")
def mlp_units_proxy(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                    device: str | torch.device = "cpu") -> float:
    """MLP hidden units over every token (millions, ``count_mlp_units``): a size count, NASWOT's
    dominant term (its kernel's diagonal); no network is built."""
    return count_mlp_units(spec) / 1e6


# ----------------------------------------------------------------------------- NASWOT
@torch.no_grad()
def naswot_score(model: nn.Module, images: torch.Tensor) -> float:
    """NASWOT (Mellor et al., "Neural Architecture Search without Training", ICML 2021).

    Each sample's binary code ``c`` is the on/off pattern (pre-activation > 0) of every unit
    feeding an activation module (ReLU/GELU...; in a ViT the ``act`` of each MLP), over all
    tokens and layers. With ``K_H = c c^T + (1 - c)(1 - c)^T`` (units on which two samples
    agree) the score is ``log|det K_H|`` in float64. A singular kernel (two samples with the
    same code, e.g. identical images) has no meaningful score: ``InvalidScore``.
    """
    n = images.shape[0]
    _, dtype = _model_device_dtype(model)
    kernel = torch.zeros(n, n, dtype=torch.float64, device=images.device)
    units = [0]

    def hook(_module: nn.Module, inputs: tuple) -> None:
        code = (inputs[0] > 0).reshape(inputs[0].shape[0], -1).to(torch.float64)
        kernel.add_(code @ code.T).add_((1 - code) @ (1 - code).T)  # accumulated layer by layer
        units[0] += code.shape[1]

    handles = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    if not handles:
        raise InvalidScore("naswot: the network has no activation modules to read codes from")
    try:
        model(images.to(dtype))
    finally:
        for h in handles:
            h.remove()
    sign, logdet = torch.linalg.slogdet(kernel)
    if sign.item() <= 0 or not torch.isfinite(logdet) or torch.linalg.matrix_rank(kernel, hermitian=True) < n:
        raise InvalidScore(f"naswot: singular {n}x{n} activation kernel ({units[0]} units); "
                           "some samples share the same activation code")
    return float(logdet)


@register("naswot", higher_is_better=True, description="NASWOT log-det of the activation-code kernel "
          "(Mellor et al., ICML 2021)")
def naswot_proxy(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                 device: str | torch.device = "cpu") -> float:
    """NASWOT on the probe images (see :func:`naswot_score`)."""
    return naswot_score(_build(spec, seed, device), images)


# ----------------------------------------------------------------------------- SynFlow
def synflow_score(model: nn.Module, input_shape: Sequence[int], weights_only: bool = True) -> float:
    """SynFlow (Tanaka et al., "Pruning neural networks without any data by iteratively
    conserving synaptic flow", NeurIPS 2020).

    On a float64 copy with every parameter replaced by its absolute value (eval mode), an
    all-ones input gives ``R = sum(outputs)``; the score is ``sum |theta * dR/dtheta|``.

    ``weights_only=True`` (default) sums over Linear/Conv weights only, the common ViT
    adaptation. SynFlow's rationale is that in a network of positive, homogeneous layers the
    synaptic flow is conserved (each layer's saliency sums to the same R), so the score counts
    synapses along the flow. LayerNorm breaks this: it is invariant to the scale of its input,
    so the weights feeding a norm no longer carry the flow, while the norm's own gain (the
    final norm's gain gets exactly the head's saliency, being in series with it), biases,
    position embeddings and class token pick up saliency that comes from the normalisation,
    not from any synapse. Restricting the sum to the weight matrices scores the layers the
    search actually changes; it is also what the zero-cost-proxies reference code
    (Abdelfattah et al., ICLR 2021) sums: the weights of every Conv2d and Linear.
    ``weights_only=False`` sums over every parameter (Tanaka et al.'s pruning form).
    """
    net = _absolute_copy(model, torch.float64)
    params = weight_tensors(net) if weights_only else [p for p in net.parameters()]
    out = net(_ones_input(net, input_shape, torch.float64))
    grads = _grads(out.sum(), params)
    with torch.no_grad():
        return float(sum((p * g).abs().sum() for p, g in zip(params, grads)))


@register("synflow", higher_is_better=True, description="SynFlow saliency of the |weights| on an "
          "all-ones input, float64 (Tanaka et al., NeurIPS 2020)", weights_only=True, init="network")
def synflow_proxy(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                  device: str | torch.device = "cpu", weights_only: bool = True, init: Init = "network") -> float:
    """SynFlow at the probe resolution (see :func:`synflow_score`) of the spec's own network,
    as the zero-cost-proxies reference scores each candidate; ``init="supernet"`` scores its
    slice of the space's supernet instead (see :func:`dss_proxy`)."""
    return synflow_score(scored_network(spec, seed, init).to(device), _probe_shape(images),
                         weights_only=weights_only)


# ----------------------------------------------------------------------------- GradNorm / SNIP
def _loss_grads(model: nn.Module, images: torch.Tensor, labels: torch.Tensor
                ) -> tuple[list[nn.Parameter], list[torch.Tensor]]:
    """Weights and d(mean cross-entropy)/d(weights) on the batch."""
    _, dtype = _model_device_dtype(model)
    weights = [w for w in weight_tensors(model) if w.requires_grad]
    loss = F.cross_entropy(model(images.to(dtype)), labels)
    return weights, _grads(loss, weights)


def grad_norm_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """GradNorm (Abdelfattah et al., "Zero-Cost Proxies for Lightweight NAS", ICLR 2021):
    the sum over Linear/Conv weight tensors of the L2 norm of d(mean cross-entropy)/dW."""
    _, grads = _loss_grads(model, images, labels)
    with torch.no_grad():
        return float(sum(g.norm() for g in grads))


def snip_score(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """SNIP (Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity",
    ICLR 2019), as a zero-cost proxy: ``sum |W * dL/dW|`` over Linear/Conv weights, with L the
    mean cross-entropy on the batch."""
    weights, grads = _loss_grads(model, images, labels)
    with torch.no_grad():
        return float(sum((w * g).abs().sum() for w, g in zip(weights, grads)))


@register("grad_norm", higher_is_better=True, description="sum of per-weight-tensor gradient L2 norms of "
          "the cross-entropy (Abdelfattah et al., ICLR 2021)")
def grad_norm_proxy(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                    device: str | torch.device = "cpu") -> float:
    """GradNorm on the probe batch (see :func:`grad_norm_score`)."""
    return grad_norm_score(_build(spec, seed, device), images, labels)


@register("snip", higher_is_better=True, description="SNIP connection sensitivity sum |W dL/dW| "
          "(Lee et al., ICLR 2019)")
def snip_proxy(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
               device: str | torch.device = "cpu") -> float:
    """SNIP on the probe batch (see :func:`snip_score`)."""
    return snip_score(_build(spec, seed, device), images, labels)


# ----------------------------------------------------------------------------- DSS (TF-TAS)
# "released": what TF-TAS's released search (and OoD-ViT-NAS, which reuses it) computes on
# AutoFormer's weight-sharing supernet; "intended": what its code and paper describe (the
# form Auto-Prox runs on standalone subnets). docs/baseline_fidelity.md derives both.
Variant = Literal["released", "intended"]
DSS_VARIANTS = get_args(Variant)


def find_head(model: nn.Module, output: Optional[torch.Tensor] = None,
              produced: Iterable[tuple[nn.Module, torch.Tensor]] = ()) -> Optional[nn.Linear]:
    """The classifier: ``model.head`` if it is an ``nn.Linear``; otherwise the Linear module
    whose output *is* the model's output (``produced`` lists the (Linear, output tensor) pairs
    of the forward pass). Never guessed from a layer's width."""
    head = getattr(model, "head", None)
    if isinstance(head, nn.Linear):
        return head
    if output is not None:
        for module, tensor in produced:
            if tensor is output:
                return module
    return None


def _check_variant(variant: str) -> None:
    if variant not in DSS_VARIANTS:
        raise ValueError(f"dss variant {variant!r} is unknown; use one of {DSS_VARIANTS}")


def token_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Class token and absolute position embeddings: the only parameters an AutoFormer
    supernet reads directly, and so the only ones TF-TAS's sign flip reaches."""
    return [p for m in model.modules() if isinstance(m, (ClassToken, TokenPosition, GridPosition))
            for p in m.parameters(recurse=False)]


def dss_layers(model: nn.Module, head: Optional[nn.Linear] = None, variant: Variant = "released"
               ) -> tuple[list[nn.Linear], list[nn.Linear]]:
    """(MSA layers, MLP layers) DSS scores.

    * ``released``: the ``proj`` of every ``Attention``; the ``fc1``/``fc2`` of every timm
      ``Mlp``. (TF-TAS's code also lists ``qkv`` and the classifier, but their gradients never
      reach the tensors it reads, so they add exactly 0.)
    * ``intended``: ``qkv`` and ``proj``; ``fc1``, ``fc2`` and the classifier ``head`` (if any).
    """
    _check_variant(variant)
    msa, mlp, seen = [], [], set()

    def add(bucket: list, layer: nn.Module) -> None:
        if isinstance(layer, _WEIGHTED) and id(layer) not in seen:
            seen.add(id(layer))
            bucket.append(layer)

    for m in model.modules():
        if isinstance(m, Attention):
            if variant == "intended":
                add(msa, m.qkv)
            add(msa, m.proj)
        elif isinstance(m, Mlp):
            add(mlp, m.fc1)
            add(mlp, m.fc2)
    if head is not None and variant == "intended":
        add(mlp, head)
    return msa, mlp


def dss_parts(model: nn.Module, input_shape: Sequence[int], variant: Variant = "released") -> tuple[float, float]:
    """The two halves of TF-TAS's DSS-indicator: (MSA synaptic diversity, MLP synaptic saliency).

    On a copy in eval mode, one all-ones input gives ``R = sum(outputs)``. Each MSA layer W
    contributes ``||dR/dW||_nuc * ||W||_nuc`` (nuclear norms), each MLP layer
    ``sum |W * dR/dW|`` (:func:`dss_layers` says which layers). The variants differ in which
    parameters are made absolute before the forward pass:

    * ``released`` (TF-TAS's code as run on AutoFormer's supernet): only the class token and
      position embeddings (:func:`token_parameters`). Its ``abs_`` reaches the supernet's
      parameters, while the forward pass reads per-subnet slices cached before the deep
      copy, which the copy detaches from those parameters: every weight stays signed.
    * ``intended``: every parameter, as the code means to (synflow's linearisation).

    Runs in the model's dtype; the model itself is left untouched.
    """
    _check_variant(variant)
    net = copy.deepcopy(model).eval()
    made_absolute = list(net.parameters()) if variant == "intended" else token_parameters(net)
    with torch.no_grad():
        for p in made_absolute:
            p.abs_()
    for p in net.parameters():
        p.requires_grad_(True)
    _, dtype = _model_device_dtype(net)
    produced: list[tuple[nn.Module, torch.Tensor]] = []

    def remember(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        produced.append((module, output))

    handles = [m.register_forward_hook(remember) for m in net.modules() if isinstance(m, nn.Linear)]
    try:
        out = net(_ones_input(net, input_shape, dtype))
    finally:
        for h in handles:
            h.remove()
    head = find_head(net, out, produced)
    produced.clear()
    msa_layers, mlp_layers = dss_layers(net, head, variant)
    layers = msa_layers + mlp_layers
    grads = _grads(out.sum(), [m.weight for m in layers])
    with torch.no_grad():
        g_msa, g_mlp = grads[:len(msa_layers)], grads[len(msa_layers):]
        msa = sum(float(torch.linalg.matrix_norm(g.flatten(1), ord="nuc")
                        * torch.linalg.matrix_norm(m.weight.flatten(1), ord="nuc"))
                  for m, g in zip(msa_layers, g_msa))
        mlp = sum(float((m.weight * g).abs().sum()) for m, g in zip(mlp_layers, g_mlp))
    return float(msa), float(mlp)


def dss_score(model: nn.Module, input_shape: Sequence[int], variant: Variant = "released") -> float:
    """DSS-indicator (Zhou et al., "Training-free Transformer Architecture Search", CVPR 2022):
    MSA synaptic diversity + MLP synaptic saliency (see :func:`dss_parts`)."""
    msa, mlp = dss_parts(model, input_shape, variant)
    return msa + mlp


@register("dss", higher_is_better=True, description="TF-TAS DSS-indicator: MSA synaptic diversity + "
          "MLP synaptic saliency, as TF-TAS's released search computes it (Zhou et al., CVPR 2022)",
          variant="released", init="supernet")
def dss_proxy(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
              device: str | torch.device = "cpu", variant: Variant = "released", init: Init = "supernet") -> float:
    """DSS at the probe resolution (see :func:`dss_score`) of the spec's supernet slice."""
    _check_variant(variant)
    return dss_score(scored_network(spec, seed, init).to(device), _probe_shape(images), variant)
