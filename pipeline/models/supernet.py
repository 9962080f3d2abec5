"""Networks whose weights are slices of one shared, randomly initialised supernet.

Weight-sharing NAS (AutoFormer, and TF-TAS which scores AutoFormer's subnets) never builds a
candidate on its own: every candidate reads the leading channels, heads and blocks of one
supernet. At initialisation the slices have the same distribution as a fresh network, but all
candidates share their random numbers, so a score's differences between candidates come from
the architecture and not from the draw. Proxies that want to reproduce such a search build
their networks here.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Literal, Optional, get_args

import torch
from torch import nn

from pipeline.models.build import build_model
from pipeline.space.space import SearchSpace
from pipeline.space.spec import ArchSpec, SpecError

__all__ = ["supernet_spec", "build_from_supernet", "scored_network", "Init", "INITS"]

Init = Literal["supernet", "network"]   # what a scored network's weights are: see scored_network
INITS = get_args(Init)


def supernet_spec(spec: ArchSpec) -> Optional[ArchSpec]:
    """The largest network of ``spec``'s search space, or None when there is no supernet to
    slice: a spec that names no known space, lies outside it, or is a PiT (PiT's stages are
    not a weight-sharing supernet in any reference code)."""
    if spec.family != "vit" or not spec.space:
        return None
    try:
        space = SearchSpace.load(spec.space)
    except SpecError:
        return None
    if not space.contains(spec):
        return None
    return space.extreme_spec(largest=True)


@lru_cache(maxsize=2)
def _supernet_state(spec: ArchSpec, seed: int) -> dict[str, torch.Tensor]:
    """The supernet's seeded weights (read-only by convention; kept for the next candidate)."""
    return {k: v.detach() for k, v in build_model(spec, seed=seed).state_dict().items()}


def _slice(name: str, sub: torch.Tensor, sup: torch.Tensor) -> torch.Tensor:
    """Leading slice of ``sup`` with ``sub``'s shape. ``qkv`` stacks [q; k; v], each
    heads x head_dim rows, so it is sliced per part: the sub's head j reads the supernet's
    head j of q, k and v (AutoFormer's ``qkv_super``)."""
    if sub.dim() != sup.dim() or any(a > b for a, b in zip(sub.shape, sup.shape)):
        raise ValueError(f"{name}: {tuple(sub.shape)} is not a slice of the supernet's {tuple(sup.shape)}")
    if name.endswith(("attn.qkv.weight", "attn.qkv.bias")):
        parts = sup.reshape(3, sup.shape[0] // 3, *sup.shape[1:])
        index = (slice(None), slice(0, sub.shape[0] // 3)) + tuple(slice(0, n) for n in sub.shape[1:])
        return parts[index].reshape(sub.shape)
    return sup[tuple(slice(0, n) for n in sub.shape)]


def build_from_supernet(spec: ArchSpec, seed: int, supernet: Optional[ArchSpec] = None) -> nn.Module:
    """``spec``'s network with the weights of its slice of ``supernet`` (default
    :func:`supernet_spec`) initialised under ``seed``. Without a supernet, ``spec`` is built
    on its own (``build_model(spec, seed=seed)``)."""
    supernet = supernet or supernet_spec(spec)
    model = build_model(spec, seed=seed)
    if supernet is None:
        return model
    state = _supernet_state(supernet, seed)
    missing = sorted(set(model.state_dict()) - set(state))
    if missing:
        raise ValueError(f"the supernet has no {missing[:3]}: {spec.short()} is not a subnet of {supernet.short()}")
    model.load_state_dict({k: _slice(k, v, state[k]) for k, v in model.state_dict().items()})
    return model


def scored_network(spec: ArchSpec, seed: int, init: Init) -> nn.Module:
    """The network a proxy scores. ``init="supernet"``: the spec's slice of its space's seeded
    largest network (every candidate shares the supernet's random numbers, as in TF-TAS's and
    AZ-NAS's searches); ``"network"``: the spec's own seeded initialisation. Specs without a
    supernet (PiT, no known space) fall back to their own initialisation."""
    if init not in INITS:
        raise ValueError(f"init {init!r} is unknown; use one of {INITS}")
    if init == "network":
        return build_model(spec, seed=seed)
    return build_from_supernet(spec, seed)
