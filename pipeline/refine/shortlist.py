"""The race's entrants: the search's best distinct candidates, plus the obvious choice.

From a search's output folder (``candidates.jsonl``: every scored candidate; ``config.yaml``: its
space and limits) the shortlist takes the best ``top_k`` distinct candidates by the search's
``rank_value`` that are valid and within the search's limits, and always the largest network that
fits those limits by params and by FLOPs (:meth:`SearchSpace.largest_within`): the network a user
would take without searching is in the race and loses only on evidence. When a largest network is
not among the best already, the lowest-ranked search candidates make room, so the race keeps
``top_k`` entrants.

Under a device limit (latency, memory) the space cannot say what fits, so the largest networks are
taken among the search's own candidates, which the search costed on the device.

:func:`check_search_dir` needs neither torch nor the space: the options are refused at parse time
when the folder holds no candidates.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.config import ConfigError

CANDIDATES = "candidates.jsonl"
DEVICE_LIMITS = ("max_latency_ms", "max_memory_mb")


def check_search_dir(search_dir: str | Path) -> Path:
    """The folder of a search with at least one valid candidate; ConfigError naming the problem otherwise."""
    from pipeline.config import resolve_path

    folder = resolve_path(search_dir)
    hint = "run `python -m pipeline search` first, or pass --search_dir=<out_dir>/<run_name> of a finished search"
    if not folder.is_dir():
        raise ConfigError(f"--search_dir={search_dir}: no such folder; {hint}")
    log = folder / CANDIDATES
    if not log.is_file() or not (folder / "config.yaml").is_file():
        raise ConfigError(f"--search_dir={search_dir} is not a search's output folder (no {CANDIDATES} and config.yaml "
                          f"there); {hint}")
    for line in log.read_text().splitlines():
        try:
            if json.loads(line).get("valid"):
                return folder
        except (ValueError, AttributeError):
            continue   # a line cut short by an interrupted search
    raise ConfigError(f"--search_dir={search_dir}: {log} holds no valid candidate; {hint}")


@dataclass(frozen=True)
class Entrant:
    """One network of the race.

    Args:
        spec: the architecture.
        params_m, flops_m: its size (millions; FLOPs = multiply-adds).
        search_rank: its place in the search's ranking (1 = the search's pick), None if not scored there.
        roles: why it is in the race: "search", "largest (params)", "largest (FLOPs)".
    """

    spec: Any
    params_m: float
    flops_m: float
    search_rank: Optional[int]
    roles: tuple[str, ...] = field(default_factory=tuple)

    def label(self) -> str:
        return " + ".join(self.roles)

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.spec.to_dict(), "short": self.spec.short(), "params_m": self.params_m,
                "flops_m": self.flops_m, "search_rank": self.search_rank, "roles": list(self.roles)}


@dataclass
class SearchOutput:
    """What the race reads from a search's folder."""

    folder: Path
    space: Any                 # SearchSpace
    limits: dict[str, Any]     # the search's limits section (params/FLOPs and device limits)
    ranked: list[Any]          # valid candidates within the limits, best first (search.store.Candidate)


def read_search(search_dir: str | Path) -> SearchOutput:
    """The search's space, limits and ranked valid candidates (the folder checked by :func:`check_search_dir`)."""
    import yaml

    from pipeline.search.store import CandidateStore
    from pipeline.space import Limits, SearchSpace

    folder = check_search_dir(search_dir)
    cfg = yaml.safe_load((folder / "config.yaml").read_text()) or {}
    space = SearchSpace.load(cfg.get("space", "demo"))
    limits = dict(cfg.get("limits") or {})
    window = Limits.of_space(limits)
    found = list(CandidateStore.read(folder / CANDIDATES).values())
    found = _population_ranks(found, cfg.get("proxy") or {})
    fits = [c for c in found if c.valid and math.isfinite(c.rank_value) and window.admits(c.params_m, c.flops_m)
            and space.contains(c.spec) and _on_device(c, limits)]
    ranked = sorted(fits, key=lambda c: -c.rank_value)   # stable: equal scores keep the search's order
    if not ranked:
        raise ConfigError(f"--search_dir={search_dir}: none of its candidates is valid within its limits "
                          f"({window}); run the search again with these limits")
    return SearchOutput(folder, space, limits, ranked)


def _on_device(c, limits: dict[str, Any]) -> bool:
    """Within the search's device limits, where it set any (the candidate's recorded costs)."""
    for key, value in (("max_latency_ms", c.latency_ms), ("max_memory_mb", c.memory_mb)):
        if limits.get(key) is not None and (value is None or value > limits[key]):
            return False
    return True


def _population_ranks(found: list, proxy: dict[str, Any]) -> list:
    """Candidates of a population-ranked proxy (AZ-NAS) log components, not scores: rank them as the search did."""
    from dataclasses import replace

    if not any(c.valid and c.components and not math.isfinite(c.rank_value) for c in found):
        return found
    from pipeline.proxies.registry import get_proxy, population_values

    values = population_values(proxy["name"], [c.components if c.valid else None for c in found],
                               proxy.get("options") or {})
    sign = 1.0 if get_proxy(proxy["name"]).higher_is_better else -1.0
    return [replace(c, rank_value=sign * v) if c.valid else c for c, v in zip(found, values)]


def largest(search: SearchOutput, by: str):
    """The largest network that fits the search's limits, by params or FLOPs (see the module)."""
    from pipeline.space import Limits

    if any(search.limits.get(k) is not None for k in DEVICE_LIMITS):
        index = 0 if by == "params" else 1
        return max(search.ranked, key=lambda c: ((c.params_m, c.flops_m)[index], (c.params_m, c.flops_m)[1 - index],
                                                 sum(c.spec.num_heads))).spec
    return search.space.largest_within(Limits.of_space(search.limits), by=by)


def size_key(params_m: float, flops_m: float) -> tuple[float, float]:
    """Two networks of this size are the same to the race's budget and its tie-break."""
    return round(params_m, 6), round(flops_m, 6)


def shortlist(search: SearchOutput, top_k: int, distinct: str = "size") -> list[Entrant]:
    """The ``top_k`` entrants (fewer when the search has fewer distinct candidates): the search's best, in its
    order, then the largest networks by params and by FLOPs where they were not among them.

    ``distinct="size"``: at most one entrant per (params, FLOPs), the best-ranked one; in an isotropic space
    that is one per multiset of per-layer choices (layer order changes neither), and in the demo space, where a
    layer's head count changes neither, the default search's seven best differ only in head counts: seven
    entrants of one size would spend the race on what only the proxy tells apart. ``"spec"``: every distinct
    architecture counts.
    """
    from pipeline.models.complexity import complexity

    rank_of = {c.spec: i + 1 for i, c in enumerate(search.ranked)}
    roles: dict[Any, list[str]] = {}
    for by, name in (("params", "largest (params)"), ("flops", "largest (FLOPs)")):
        roles.setdefault(largest(search, by), []).append(name)
    taken = {size_key(*(x / 1e6 for x in complexity(s))) for s in roles} if distinct == "size" else set()
    others = []
    for c in search.ranked:
        key = size_key(c.params_m, c.flops_m)
        if c.spec in roles or (distinct == "size" and key in taken):
            continue
        taken.add(key)
        others.append(c.spec)
    others = others[:max(0, top_k - len(roles))]
    ordered = sorted(others + list(roles), key=lambda s: rank_of.get(s, math.inf))   # unranked largest ones last
    entrants = []
    for spec in ordered:
        params, macs = complexity(spec)
        role = (["search"] if spec in others or rank_of.get(spec, math.inf) <= top_k else []) + roles.get(spec, [])
        entrants.append(Entrant(spec, round(params / 1e6, 6), round(macs / 1e6, 6), rank_of.get(spec), tuple(role)))
    return entrants
