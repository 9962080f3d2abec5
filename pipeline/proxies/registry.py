"""One registry for every training-free proxy, with its direction.

A proxy is a function ``fn(spec, images, labels, *, seed, device, **options) -> float`` that
builds the network from ``spec`` itself (some proxies need a modified copy: absolute weights,
float64), scores it, and returns one number. ``compute_proxy`` times it and turns non-finite
values and failures into a flagged invalid score, so nothing downstream ever ranks a NaN.

A *population-ranked* proxy (AZ-NAS) has no value of its own: its ``fn`` returns named
components (each oriented "higher is better"), and its :class:`Population` rule turns the
components of every network scored together into one value each (AZ-NAS: the sum of the logs
of the component ranks). ``compute_proxy`` returns such a score with its components and a NaN
value; :func:`population_values` ranks a population, and whoever owns the population (the
search: every candidate seen so far; correlate: the architectures reported) calls it again
whenever the population grows, since a new network changes every other network's ranks.

A proxy may also declare what it needs from a network (``requires``): a function of a spec that
returns why the proxy cannot score it (None when it can), so that a command refuses an
unsuitable space with one line before any work.

This module imports no proxy (as timm's ``_registry.py`` imports no model): the package face,
``pipeline/proxies/__init__.py``, imports the families, whose decorators fill the registry, so any
import from ``pipeline.proxies`` finds every proxy registered.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import torch

from pipeline.space.spec import ArchSpec

ProxyFn = Callable[..., Any]          # -> float, or the components (name -> float) of a population proxy
Components = Mapping[str, float]


@dataclass(frozen=True)
class Population:
    """How a population-ranked proxy turns its components into values.

    ``aggregate(population, options)`` receives the components of every valid network scored
    together (one mapping each, in population order) and the proxy's options, and returns one
    value per network ("higher is better"). ``components`` names what ``fn`` returns.
    """

    components: tuple[str, ...]
    aggregate: Callable[[Sequence[Components], Mapping[str, Any]], Sequence[float]]


@dataclass(frozen=True)
class ProxyInfo:
    name: str
    fn: ProxyFn
    higher_is_better: bool
    description: str = ""
    defaults: dict[str, Any] = field(default_factory=dict)
    forwards: Optional[Callable[..., Any]] = None  # where ``fn`` passes its ``**options`` on to
    population: Optional[Population] = None        # set: the value is a rank aggregate over a population
    requires: Optional[Callable[[ArchSpec], Optional[str]]] = None  # why a spec cannot be scored, or None


@dataclass(frozen=True)
class ProxyScore:
    """A proxy value with its validity; ``rank_value`` is oriented so larger is always better.

    A population-ranked proxy's score carries its ``components``; its ``value`` is NaN until
    :func:`population_values` ranks it among others (``dataclasses.replace(score, value=v)``).
    """

    name: str
    value: float
    valid: bool
    reason: str = ""
    seconds: float = 0.0
    higher_is_better: bool = True
    components: Mapping[str, float] = field(default_factory=dict)

    @property
    def rank_value(self) -> float:
        if not self.valid:
            return -math.inf
        return self.value if self.higher_is_better else -self.value


class InvalidScore(RuntimeError):
    """Raised by a proxy whose measurement is meaningless (e.g. a singular kernel)."""


REGISTRY: dict[str, ProxyInfo] = {}


def register(name: str, higher_is_better: bool, description: str = "", forwards: Optional[Callable[..., Any]] = None,
             population: Optional[Population] = None, requires: Optional[Callable[[ArchSpec], Optional[str]]] = None,
             **defaults: Any) -> Callable[[ProxyFn], ProxyFn]:
    """Register ``fn`` as proxy ``name``; ``defaults`` are its options, ``forwards`` the function that
    receives the options ``fn`` does not name itself (they are accepted too). ``population``: the
    value is a rank aggregate of the components ``fn`` returns; ``requires``: see the module docstring."""
    def wrap(fn: ProxyFn) -> ProxyFn:
        if name in REGISTRY:
            raise ValueError(f"proxy {name!r} registered twice")
        REGISTRY[name] = ProxyInfo(name, fn, higher_is_better, description or (fn.__doc__ or "").strip().split("\n")[0],
                                   dict(defaults), forwards, population, requires)
        return fn
    return wrap


def get_proxy(name: str) -> ProxyInfo:
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


def unsupported_reason(name: str, spec: ArchSpec) -> Optional[str]:
    """Why proxy ``name`` cannot score ``spec`` (its ``requires``), or None when it can."""
    info = get_proxy(name)
    return info.requires(spec) if info.requires is not None else None


def available_proxies() -> list[str]:
    return sorted(REGISTRY)


def compute_proxy(name: str, spec: ArchSpec, images: torch.Tensor, labels: torch.Tensor, *, seed: int = 0,
                  device: str | torch.device = "cpu", options: Optional[dict[str, Any]] = None) -> ProxyScore:
    """Score ``spec`` with proxy ``name``; failures and non-finite values become invalid scores."""
    info = get_proxy(name)
    opts = {**info.defaults, **(options or {})}
    start = time.perf_counter()
    try:
        raw = info.fn(spec, images.to(device), labels.to(device), seed=seed, device=device, **opts)
    except InvalidScore as e:
        return ProxyScore(name, math.nan, False, str(e), time.perf_counter() - start, info.higher_is_better)
    seconds = time.perf_counter() - start
    if info.population is not None:
        components = {k: float(v) for k, v in dict(raw).items()}
        bad = [f"{k} {v}" for k, v in components.items() if not math.isfinite(v)]
        reason = f"non-finite component(s): {', '.join(bad)}" if bad else ""
        return ProxyScore(name, math.nan, not bad, reason, seconds, info.higher_is_better, components)
    value = float(raw)
    if not math.isfinite(value):
        return ProxyScore(name, value, False, f"non-finite value {value}", seconds, info.higher_is_better)
    return ProxyScore(name, value, True, "", seconds, info.higher_is_better)


def population_values(name: str, population: Sequence[Optional[Components]],
                      options: Optional[dict[str, Any]] = None) -> list[float]:
    """The values of population-ranked proxy ``name`` for every network of ``population``.

    ``population`` holds each network's components, None for an invalid network (its value is
    NaN; the valid ones are ranked among themselves). The values depend on the whole population:
    call again when it changes. Deterministic: the same components in any order give each
    network the same value.
    """
    info = get_proxy(name)
    if info.population is None:
        raise ValueError(f"proxy {name!r} is not population-ranked; its values come from compute_proxy alone")
    opts = {**info.defaults, **(options or {})}
    valid = [i for i, c in enumerate(population) if c is not None]
    out = [math.nan] * len(population)
    if valid:
        values = info.population.aggregate([population[i] for i in valid], opts)
        for i, v in zip(valid, values):
            out[i] = float(v)
    return out

