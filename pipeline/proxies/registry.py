"""One registry for every training-free proxy, with its direction.

A proxy is a function ``fn(spec, images, labels, *, seed, device, **options) -> float`` that
builds the network from ``spec`` itself (some proxies need a modified copy: absolute weights,
float64), scores it, and returns one number. ``compute_proxy`` times it and turns non-finite
values and failures into a flagged invalid score, so nothing downstream ever ranks a NaN.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from pipeline.space.spec import ArchSpec

ProxyFn = Callable[..., float]


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    fn: ProxyFn
    higher_is_better: bool
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    forwards: Optional[Callable[..., Any]] = None  # where ``fn`` passes its ``**options`` on to


@dataclass(frozen=True)
class ProxyScore:
    """A proxy value with its validity; ``rank_value`` is oriented so larger is always better."""

    name: str
    value: float
    valid: bool
    reason: str = ""
    seconds: float = 0.0
    higher_is_better: bool = True

    @property
    def rank_value(self) -> float:
        if not self.valid:
            return -math.inf
        return self.value if self.higher_is_better else -self.value


class InvalidScore(RuntimeError):
    """Raised by a proxy whose measurement is meaningless (e.g. a singular kernel)."""


REGISTRY: dict[str, ProxyInfo] = {}


def register(name: str, higher_is_better: bool, description: str = "", forwards: Optional[Callable[..., Any]] = None,
             **defaults: Any) -> Callable[[ProxyFn], ProxyFn]:
    """Register ``fn`` as proxy ``name``; ``defaults`` are its options, ``forwards`` the function that
    receives the options ``fn`` does not name itself (they are accepted too)."""
    def wrap(fn: ProxyFn) -> ProxyFn:
        if name in REGISTRY:
            raise ValueError(f"proxy {name!r} registered twice")
        REGISTRY[name] = ProxyInfo(name, fn, higher_is_better, description or (fn.__doc__ or "").strip().split("\n")[0],
                                   dict(defaults), forwards)
        return fn
    return wrap


def get_proxy(name: str) -> ProxyInfo:
    _load_builtin()
    if name not in REGISTRY:
        raise KeyError(f"unknown proxy {name!r}; available: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[name]


def accepted_options(name: str) -> set[str]:
    """Option names proxy ``name`` takes: its registered defaults and its keyword parameters."""
    import inspect

    info = get_proxy(name)
    named: set[str] = set(info.defaults)
    for fn in (info.fn, info.forwards):
        if fn is not None:
            named |= {p.name for p in inspect.signature(fn).parameters.values()
                      if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return named - {"spec", "images", "labels", "seed", "device"}


def check_options(name: str, options: Optional[dict[str, Any]]) -> None:
    """Refuse option names the proxy does not take (a typo would otherwise fail every candidate)."""
    unknown = sorted(set(options or {}) - accepted_options(name))
    if unknown:
        takes = ", ".join(sorted(accepted_options(name)))
        raise ValueError(f"proxy {name!r} does not take the option(s) {unknown}; "
                         + (f"it takes: {takes}" if takes else "it takes no options"))


def available_proxies() -> list[str]:
    _load_builtin()
    return sorted(REGISTRY)


def compute_proxy(name: str, spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                  device: str | torch.device = "cpu", options: Optional[dict[str, Any]] = None) -> ProxyScore:
    """Score ``spec`` with proxy ``name``; failures and non-finite values become invalid scores."""
    info = get_proxy(name)
    opts = {**info.defaults, **(options or {})}
    start = time.perf_counter()
    try:
        value = float(info.fn(spec, images.to(device), labels.to(device), seed=seed, device=device, **opts))
    except InvalidScore as e:
        return ProxyScore(name, math.nan, False, str(e), time.perf_counter() - start, info.higher_is_better)
    seconds = time.perf_counter() - start
    if not math.isfinite(value):
        return ProxyScore(name, value, False, f"non-finite value {value}", seconds, info.higher_is_better)
    return ProxyScore(name, value, True, "", seconds, info.higher_is_better)


def _load_builtin() -> None:
    """Import the modules whose decorators fill the registry."""
    from pipeline.proxies import baselines, ntk_proxies  # noqa: F401
