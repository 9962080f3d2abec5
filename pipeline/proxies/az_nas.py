"""AZ-NAS (Lee & Ham, "AZ-NAS: Assembling Zero-Cost Proxies for Network Architecture Search",
CVPR 2024) as its authors compute it on the AutoFormer space.

Read in cvlab-yonsei/AZ-NAS, ``ImageNet_AutoFormer/``: ``lib/training_free/indicators/az_nas.py``
(identical to ``etf.py`` at commit 3d2b539, the one ``correlation.ipynb`` imports when it reports
Kendall tau 0.516 on 1,000 AutoFormer-T subnets), ``search_autoformer_az.py``,
``model/autoformer_space.py`` and ``model/module/*.py``. Nothing of it is copied here.

* **Network**: the candidate's slice of one randomly initialised AutoFormer supernet (the
  notebook and the search build ``Vision_TransformerSuper`` once, never load weights, and call
  ``set_sample_config`` per candidate), in eval mode: truncated-normal (std 0.02) Linear weights,
  tokens and relative-position tables, zero biases, LayerNorm 1/0, PyTorch's default patch
  convolution. Ours: ``init="supernet"`` (:func:`pipeline.models.supernet.build_from_supernet`).
* **Input**: no data: ``torch.randn(64, 3, 224, 224)`` (``trainloader=None``, ``--batch-size 64``).
* **Features**: the residual stream after every attention and every MLP of every block
  (``extract_res_features``: 2 x depth tensors of shape (B, 1 + 196, C), no final norm, no head).
* **Expressivity**: for each feature, the entropy of the normalised eigenvalues of the covariance
  of its B x N token vectors, ``sum -p log(p + 1e-8)``; summed over the features.
* **Progressivity**: the smallest increase of that entropy from one feature to the next. The
  paper defines it, but the AutoFormer code comments it out and the notebook's 0.516 aggregates
  without it; it is measured here (``az_nas_progressivity``) and left out of the default aggregate.
* **Trainability**: for each consecutive pair of features (input x, output y), a random sign
  pattern g (Rademacher, one per element) is back-propagated from y to x; with G_x, G_y the
  (B*N, C) matrices of the gradient at x and of g, the score of the pair is ``-s - 1/(s + 1e-6) + 2``
  where s is the largest singular value of ``G_x^T G_y / (B*N)`` (0 when s = 1: the block neither
  amplifies nor damps gradients); averaged over the pairs.
* **Complexity**: AutoFormer's own FLOPs count (``get_complexity``), reproduced by
  :func:`pipeline.models.complexity.autoformer_flops` (it counts the blocks' linear layers over 198 tokens).
* **Aggregate**: ``sum over components of log(rank / N)`` with ranks (ties averaged) among the N
  networks scored together; every component is "higher is better" (more FLOPs ranks higher).

Our departures, all deliberate: the random input and the gradient signs come from a generator
seeded by the model seed (theirs continue the global RNG, so each candidate saw other numbers:
ours score every candidate on the same input, like the shared supernet weights); the covariance
eigenvalues and singular values are computed in float64 (theirs in float32 on a GPU); a component
that is not finite makes the network invalid (theirs becomes -inf and ranks last).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Literal, Mapping, Optional, Sequence, get_args

import numpy as np
import torch
from scipy import stats
from torch import nn

from pipeline.models.complexity import autoformer_flops
from pipeline.models.supernet import INITS, Init, scored_network
from pipeline.proxies.registry import InvalidScore, Population, register
from pipeline.space.spec import ArchSpec

__all__ = ["AZ_COMPONENTS", "AZ_NAS_DEFAULTS", "az_nas_measure", "feature_entropy",
           "log_rank_sum", "needs_isotropic_vit", "pair_trainability"]

AZ_COMPONENTS = ("expressivity", "progressivity", "trainability", "complexity")
# What the released AutoFormer search and correlation.ipynb aggregate (progressivity commented out).
RELEASED_AGGREGATE = ["expressivity", "trainability", "complexity"]
Input = Literal["random", "probe"]

_CACHE: "OrderedDict[tuple, dict[str, float]]" = OrderedDict()
_CACHE_SIZE = 4


def needs_isotropic_vit(spec: ArchSpec) -> Optional[str]:
    """AZ-NAS compares each block's output with its input; only an isotropic ViT keeps one token
    width and token count through every block."""
    if spec.family != "vit":
        return (f"it compares every block's output with its input (trainability), which needs one token width "
                f"and count through the whole network, and a {spec.family} network pools between stages")
    return None


def feature_entropy(feature: torch.Tensor) -> float:
    """Entropy of the normalised eigenvalue spectrum of the token covariance of ``feature`` (B, N, C)
    (AZ-NAS's expressivity of one feature; at most log C)."""
    x = feature.detach().reshape(-1, feature.shape[-1])
    x = x - x.mean(dim=0, keepdim=True)
    eig = torch.linalg.eigvalsh((x.T @ x / x.shape[0]).double())   # the product in float32 as theirs, the spectrum in float64
    p = eig / eig.sum()
    return float(-(p * torch.log(p + 1e-8)).sum())


def pair_trainability(grad_in: torch.Tensor, grad_out: torch.Tensor) -> float:
    """``-s - 1/(s + 1e-6) + 2`` for s the largest singular value of the (C_in x C_out) matrix
    ``G_in^T G_out / rows`` (both gradients flattened to rows of channels)."""
    g_in = grad_in.detach().reshape(-1, grad_in.shape[-1])
    g_out = grad_out.detach().reshape(-1, grad_out.shape[-1])
    s = float(torch.linalg.matrix_norm((g_in.T @ g_out / g_out.shape[0]).double(), ord=2))
    return -s - 1.0 / (s + 1e-6) + 2.0


def _signs(shape: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """+-1 with probability 1/2 each (their ``(bernoulli(0.5) - 0.5) * 2``)."""
    return (torch.bernoulli(torch.full(tuple(shape), 0.5), generator=generator) - 0.5) * 2


def az_nas_measure(model: nn.Module, inputs: torch.Tensor, generator: torch.Generator) -> dict[str, float]:
    """Expressivity, progressivity and trainability of ``model`` (a ViT with ``forward_residuals``)
    on ``inputs``; the gradient signs are drawn from ``generator``. The model is left in eval mode
    with no ``.grad`` (only gradients with respect to features are taken)."""
    model.eval()
    with torch.enable_grad():
        stream = model.forward_residuals(inputs)
        entropies = [feature_entropy(f) for f in stream]
        pairs = []
        for i in reversed(range(1, len(stream))):   # from the output back, freeing the graph as it goes
            out, inp = stream[i], stream[i - 1]
            g_out = _signs(out.shape, generator).to(out)
            (g_in,) = torch.autograd.grad(out, inp, grad_outputs=g_out, retain_graph=False)
            if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
                continue                            # an identity block (theirs skips it the same way)
            pairs.append(pair_trainability(g_in, g_out))
    if not pairs:
        raise InvalidScore("az_nas: the network has fewer than two residual features to compare")
    return {"expressivity": float(np.sum(entropies)),
            "progressivity": float(np.min(np.diff(entropies))) if len(entropies) > 1 else math.nan,
            "trainability": float(np.mean(pairs))}


def _check_components(components: Sequence[str]) -> list[str]:
    if isinstance(components, str) or not components:
        raise ValueError(f"components must be a non-empty list of {list(AZ_COMPONENTS)}; got {components!r}")
    unknown = [c for c in components if c not in AZ_COMPONENTS]
    if unknown:
        raise ValueError(f"components {unknown} are not AZ-NAS components; use some of {list(AZ_COMPONENTS)}")
    return list(dict.fromkeys(components))


def _measure(spec: ArchSpec, images: torch.Tensor, *, seed: int, device, batch_size: int, input: str,
             init: str) -> dict[str, float]:
    """All four components of ``spec`` (cached, so that AZ-NAS and its component proxies asked about
    the same network share one measurement, as correlate asks them)."""
    if input not in get_args(Input):
        raise ValueError(f"input {input!r} is unknown; use random (AZ-NAS's Gaussian batch) or probe")
    if init not in INITS:
        raise ValueError(f"init {init!r} is unknown; use supernet (AZ-NAS's shared weights) or network")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    reason = needs_isotropic_vit(spec)
    if reason:
        raise ValueError(f"az_nas cannot score {spec.short()}: {reason}")
    probe_key = (tuple(images.shape), float(images.double().sum())) if input == "probe" else tuple(images.shape[1:])
    key = (spec, seed, str(device), batch_size, input, init, probe_key)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return dict(_CACHE[key])
    generator = torch.Generator().manual_seed(seed)
    if input == "random":
        x = torch.randn((batch_size, *images.shape[1:]), generator=generator)
    else:
        x = images[:batch_size].detach().cpu()
    model = scored_network(spec, seed, init)
    values = az_nas_measure(model.to(device), x.to(device), generator)
    values["complexity"] = autoformer_flops(spec)
    _CACHE[key] = values
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return dict(values)


def log_rank_sum(population: Sequence[Mapping[str, float]], options: Mapping[str, Any]) -> list[float]:
    """AZ-NAS's aggregate: ``sum_c log(rank_c / N)`` over the components named by
    ``options["components"]``, ranks 1..N of each among the N networks (ties averaged,
    ``scipy.stats.rankdata``), larger component = higher rank. 0 for a network first in every one."""
    components = list(dict.fromkeys(options["components"]))
    n = len(population)
    total = np.zeros(n)
    for c in components:
        total += np.log(stats.rankdata([p[c] for p in population]) / n)
    return total.tolist()


AZ_NAS_DEFAULTS = dict(batch_size=64, input="random", init="supernet")


@register("az_nas", higher_is_better=True, requires=needs_isotropic_vit,
          description="AZ-NAS (CVPR 2024): log-rank sum of expressivity, trainability and complexity over the "
                      "networks scored together, as its AutoFormer code computes it",
          population=Population(AZ_COMPONENTS, log_rank_sum), components=list(RELEASED_AGGREGATE), **AZ_NAS_DEFAULTS)
def az_nas(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0, device="cpu",
           batch_size: int = 64, input: Input = "random", init: Init = "supernet",
           components: Sequence[str] = tuple(RELEASED_AGGREGATE)) -> dict[str, float]:
    """The four AZ-NAS components of ``spec``; ``components`` names those the aggregate ranks."""
    _check_components(components)
    return _measure(spec, images, seed=seed, device=device, batch_size=batch_size, input=input, init=init)


def _register_component(component: str, description: str) -> None:
    def fn(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0, device="cpu",
           batch_size: int = 64, input: Input = "random", init: Init = "supernet") -> float:
        return _measure(spec, images, seed=seed, device=device, batch_size=batch_size, input=input,
                        init=init)[component]

    fn.__doc__ = description
    register(f"az_nas_{component}", higher_is_better=True, requires=needs_isotropic_vit, description=description,
             **AZ_NAS_DEFAULTS)(fn)


_register_component("expressivity", "AZ-NAS expressivity: eigen-entropy of the token covariance, summed over the "
                                    "residual stream")
_register_component("progressivity", "AZ-NAS progressivity: smallest rise of that entropy from one residual "
                                     "feature to the next (left out of AZ-NAS's AutoFormer aggregate)")
_register_component("trainability", "AZ-NAS trainability: -s - 1/s + 2 of each block's gradient map "
                                    "(s its spectral norm), averaged")


@register("az_nas_complexity", higher_is_better=True, requires=needs_isotropic_vit,
          description="AZ-NAS complexity: AutoFormer's own FLOPs count (get_complexity); no network is built")
def az_nas_complexity(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                      device="cpu") -> float:
    """AZ-NAS's complexity component alone (:func:`pipeline.models.complexity.autoformer_flops`)."""
    return autoformer_flops(spec)
