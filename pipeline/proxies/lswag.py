"""L-SWAG (Casarin, Escalera & Lanz, "L-SWAG: Layer-Sample Wise Activation with Gradients information for
Zero-Shot NAS on Vision Transformers", CVPR 2025, arXiv 2505.07300) as its paper describes it.

No code is public (the paper and its supplementary page list none). Eq. (1) of the paper::

    L-SWAG = Λ × Ψ,   Λ = Σ_{l = l̂}^{L̂} log( Σ_{w ∈ θ_l} 1 / sqrt(Var(|∇_w L(X_i, y_i; Θ)|)) ),
                      Ψ = |{ 1(p^(l)_s)_{s=1..S} : every post-activation unit p of the layers l ≤ L̂ }|

* Λ is ZiCo (Li et al., ICLR 2023) without its mean: per layer, the log of the summed inverse
  standard deviation of the gradient's magnitude across mini-batches, summed over the layers
  between two intermediate depths l̂ and L̂ (Sec. 3.1, "Layer contribution").
* Ψ is a layer-wise SWAP-Score (Peng et al., ICLR 2024): the number of distinct sample-wise
  activation patterns (one binary vector over the S samples of the batch per activation unit)
  among the GeLU/ReLU units of the layers up to L̂ (Definitions 1-2).
* Depths are percentiles: layer l of D is in bin ``int(l / D * 100 // (100 / 10))`` (Eq. 6,
  PERC_BINS = 10); l̂ and L̂ are "the beginning and the end of the spikes" of the gradient's
  standard deviation over depth, found once per benchmark on randomly initialised networks
  (Fig. 2b), before the metric is run. The paper's intervals for AutoFormer are in its
  supplementary material, which we could not read; ``benchmarks/proxy_selection/lswag_layers.py`` runs that
  procedure on a space. On AutoFormer-T it finds no spike inside the network (the default below
  takes every layer; docs/field_proxies.md).

What we had to interpret (the paper leaves it open; each is an option or stated here):

* "layer": a Linear or Conv weight (ZiCo's and NAS-Bench-Suite-Zero's unit), in the order the
  forward pass runs them (patch embedding, per block qkv, proj, fc1, fc2, then the classifier);
  only weights, as ZiCo. An activation unit belongs to the depth of the layer that feeds it (fc1).
* the variance is across ``splits`` = 2 halves of the batch, each half's gradient of its mean
  cross-entropy (NAS-Bench-Suite-Zero's ZiCo, on which the paper's code base is built, splits the
  batch in two); Var(|g|) is the population variance of the magnitudes, as Eq. (1) writes it
  (ZiCo's code takes the std of the signed gradients); elements whose variance is 0 are skipped,
  as in ZiCo (1/0).
* the batch is the probe: the paper uses 64 training images with their labels
  (``--probe.n=64``; our shipped probe is 64 crops of 10 photos labelled by photo); Ψ is counted
  over all of it, from the same two forward passes (no batch statistics in a ViT).
* the network is the candidate's own seeded initialisation (the paper trains and scores standalone
  networks of a benchmark), or with ``init="supernet"`` its slice of the space's seeded supernet.
* a unit is "on" when its post-activation value is positive (for GeLU: its input is positive).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.supernet import INITS, Init, scored_network
from pipeline.proxies.registry import InvalidScore, register
from pipeline.space.spec import ArchSpec

__all__ = ["BINS", "LSWAGProfile", "lswag_profile", "lswag_value", "percentile_bin", "LSWAG_DEFAULTS"]

BINS = 10                                    # PERC_BINS of Eq. (6): depth bins 0, 10, ..., 100
_WEIGHTED = (nn.Linear, nn.Conv2d)
_ACTIVATIONS = (nn.GELU, nn.ReLU)

_CACHE: "OrderedDict[tuple, LSWAGProfile]" = OrderedDict()
_CACHE_SIZE = 4


def percentile_bin(layer: int, depth: int, bins: int = BINS) -> int:
    """The depth percentile bin (0, 10, ..., 100) of layer ``layer`` (1-based) of ``depth`` layers (Eq. 6)."""
    return int(layer / depth * 100 // (100 / bins)) * (100 // bins)


@dataclass(frozen=True)
class LSWAGProfile:
    """What one network's L-SWAG depends on, per depth bin (index 0..BINS for percentile 0..100):

    * ``lam[b]``: the Λ terms (log Σ 1/σ) of the layers in bin b, summed;
    * ``psi_upto[b]``: distinct activation patterns among the units of bins 0..b;
    * ``log_sigma[b]``: mean over the bin's layers of log(mean σ of the layer's weights) (Fig. 2b).
    ``layers`` is the number of weighted layers D, ``samples`` the S of the patterns.
    """

    lam: tuple[float, ...]
    psi_upto: tuple[int, ...]
    log_sigma: tuple[float, ...]
    layers: int
    samples: int


def _pack(on: torch.Tensor) -> torch.Tensor:
    """(S, P) booleans -> (P, W) int64 words of up to 62 sample bits: one row per unit's pattern."""
    words = []
    weights = 2 ** torch.arange(62, dtype=torch.int64, device=on.device)
    for start in range(0, on.shape[0], 62):
        chunk = on[start:start + 62].to(torch.int64)
        words.append((chunk * weights[:chunk.shape[0], None]).sum(dim=0))
    return torch.stack(words, dim=1)


def lswag_profile(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, splits: int = 2) -> LSWAGProfile:
    """Gradients of the mean cross-entropy on each of ``splits`` parts of the batch, and the
    activation patterns of all of it, turned into per-bin L-SWAG terms (see the module docstring)."""
    if splits < 2 or images.shape[0] < splits:
        raise ValueError(f"L-SWAG needs at least 2 splits of at least one image each; got splits={splits} "
                         f"for a batch of {images.shape[0]}")
    if int(labels.max()) >= getattr(model, "num_classes", int(labels.max()) + 1):
        raise ValueError(f"probe label {int(labels.max())} is outside the network's {model.num_classes} classes")
    order: list[nn.Module] = []
    feeds: dict[int, int] = {}               # id(activation module) -> index of the weighted layer before it
    patterns: dict[int, list[torch.Tensor]] = {}

    def weighted_hook(module, _inp, _out):
        if not any(m is module for m in order):
            order.append(module)

    def activation_hook(module, _inp, out):
        feeds.setdefault(id(module), len(order))
        patterns.setdefault(id(module), []).append((out.detach() > 0).reshape(out.shape[0], -1))

    handles = [m.register_forward_hook(weighted_hook) for m in model.modules() if isinstance(m, _WEIGHTED)]
    handles += [m.register_forward_hook(activation_hook) for m in model.modules() if isinstance(m, _ACTIVATIONS)]
    grads: list[list[torch.Tensor]] = []
    try:
        model.eval()
        for part_x, part_y in zip(images.tensor_split(splits), labels.tensor_split(splits)):
            loss = F.cross_entropy(model(part_x), part_y)
            weights = [m.weight for m in order]
            grads.append([g.detach().abs().double() for g in torch.autograd.grad(loss, weights)])
    finally:
        for h in handles:
            h.remove()
    if not patterns:
        raise InvalidScore("lswag: the network has no GeLU/ReLU activations to read patterns from")
    depth = len(order)
    lam, log_sigma = [0.0] * (BINS + 1), [[] for _ in range(BINS + 1)]
    for layer in range(depth):
        magnitudes = torch.stack([g[layer] for g in grads])
        sigma = magnitudes.std(dim=0, unbiased=False)
        b = percentile_bin(layer + 1, depth) // (100 // BINS)
        nonzero = sigma[sigma > 0]
        if nonzero.numel():
            lam[b] += float(torch.log((1.0 / nonzero).sum()))
        log_sigma[b].append(float(torch.log(sigma.mean())) if float(sigma.mean()) > 0 else -math.inf)
    words_by_bin: list[list[torch.Tensor]] = [[] for _ in range(BINS + 1)]
    for key, parts in patterns.items():
        b = percentile_bin(max(feeds[key], 1), depth) // (100 // BINS)
        words_by_bin[b].append(_pack(torch.cat(parts, dim=0)))
    psi_upto, seen = [], None
    for b in range(BINS + 1):
        if words_by_bin[b]:
            new = torch.unique(torch.cat(words_by_bin[b]), dim=0)
            seen = new if seen is None else torch.unique(torch.cat([seen, new]), dim=0)
        psi_upto.append(0 if seen is None else int(seen.shape[0]))
    return LSWAGProfile(tuple(lam), tuple(psi_upto),
                        tuple(sum(v) / len(v) if v else math.nan for v in log_sigma), depth, images.shape[0])


def lswag_value(profile: LSWAGProfile, percentiles: Sequence[int], part: str = "lswag") -> float:
    """Λ over the bins l̂..L̂ times Ψ up to L̂ (``part``: ``lswag``, or ``gradient`` = Λ, ``expressivity`` = Ψ)."""
    lo, hi = _check_percentiles(percentiles)
    lam = sum(profile.lam[lo // 10:hi // 10 + 1])
    psi = profile.psi_upto[hi // 10]
    return {"lswag": lam * psi, "gradient": lam, "expressivity": float(psi)}[part]


def _check_percentiles(percentiles: Sequence[int]) -> tuple[int, int]:
    if (isinstance(percentiles, (str, bytes)) or len(percentiles) != 2
            or not all(isinstance(p, int) and not isinstance(p, bool) and p % 10 == 0 and 0 <= p <= 100
                       for p in percentiles) or percentiles[0] > percentiles[1]):
        raise ValueError(f"percentiles must be [low, high], multiples of 10 in 0..100 with low <= high (the depth "
                         f"bins l-hat and L-hat of L-SWAG's Eq. 1); got {percentiles!r}")
    return int(percentiles[0]), int(percentiles[1])


def _measure(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int, device, splits: int,
             init: str) -> LSWAGProfile:
    """The profile of ``spec`` on the probe (cached: L-SWAG and its two parts share one measurement)."""
    if init not in INITS:
        raise ValueError(f"init {init!r} is unknown; use network (each candidate's own initialisation) or supernet")
    key = (spec, seed, str(device), splits, init, tuple(images.shape), float(images.double().sum()),
           tuple(labels.tolist()))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    model = scored_network(spec, seed, init)
    profile = lswag_profile(model.to(device), images.to(device), labels.to(device), splits)
    _CACHE[key] = profile
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return profile


# The depth bins: every layer. benchmarks/proxy_selection/lswag_layers.py measured the gradient's standard deviation over
# depth on 24 random AutoFormer-T networks: flat from 10 % to 90 % (log std -9.16 to -9.35, sd over networks
# about 0.08), higher only in bin 0 (the patch embedding, -8.68) and lower in bin 100 (the classifier):
# no spike inside the network to select, so l-hat = 0 and L-hat = 100 (docs/field_proxies.md).
LSWAG_DEFAULTS = dict(percentiles=[0, 100], splits=2, init="network")


def _lswag_proxy(part: str, description: str) -> None:
    def fn(spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0, device="cpu",
           percentiles: Sequence[int] = (0, 100), splits: int = 2, init: Init = "network") -> float:
        _check_percentiles(percentiles)
        profile = _measure(spec, images, labels, seed=seed, device=device, splits=splits, init=init)
        return lswag_value(profile, percentiles, part)

    fn.__doc__ = description
    name = "lswag" if part == "lswag" else f"lswag_{part}"
    register(name, higher_is_better=True, description=description, **LSWAG_DEFAULTS)(fn)


_lswag_proxy("lswag", "L-SWAG (CVPR 2025): layer-wise gradient term (ZiCo without its mean) times the layer-wise "
                      "SWAP count of activation patterns, between the depth percentiles `percentiles`")
_lswag_proxy("gradient", "L-SWAG's gradient term Λ: Σ over the selected layers of log Σ 1/std(|grad|)")
_lswag_proxy("expressivity", "L-SWAG's expressivity term Ψ: distinct sample-wise activation patterns up to L-hat")
