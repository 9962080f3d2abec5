"""What a search maximises: the proxy's score under the limits, or score traded against latency.

* ``score`` (the default): the best score within the limits wins; parents are the best scores.
* ``pareto``: candidates are ranked by Pareto dominance on (score higher, latency lower) --
  non-dominated fronts first, within a front the less crowded first (NSGA-II's order), so the
  evolution spreads along the whole trade-off instead of climbing to the largest network. The
  pick is the front's knee: the member farthest above the line joining the front's ends, with
  score and log latency each scaled to [0, 1] over the front. Every front member is written out
  (``front/``), so a user who wants another trade-off takes that file instead.
"""
from __future__ import annotations

import math
from typing import Callable, Hashable, Iterable, Optional, Sequence, TypeVar

OBJECTIVES = ("score", "pareto")
K = TypeVar("K", bound=Hashable)


def front(items: Iterable[K], cost: Callable[[K], float], value: Callable[[K], float]) -> list[K]:
    """The items no other beats on both cost (lower) and value (higher), by increasing cost."""
    out, best = [], -math.inf
    for item in sorted(items, key=lambda i: (cost(i), -value(i))):
        if value(item) > best:
            out.append(item)
            best = value(item)
    return out


def fronts(points: dict[K, tuple[float, float]]) -> list[list[K]]:
    """Non-dominated sorting of (value, cost) points: the first front, then the next once it is removed."""
    left, out = dict(points), []
    while left:
        first = front(left, lambda k: left[k][1], lambda k: left[k][0])
        out.append(first)
        for k in first:
            del left[k]
    return out


def _crowding(members: Sequence[K], points: dict[K, tuple[float, float]]) -> dict[K, float]:
    """NSGA-II's crowding distance within one front: ends infinite, others the sides of their box."""
    distance = {k: 0.0 for k in members}
    for axis in (0, 1):
        ranked = sorted(members, key=lambda k: points[k][axis])
        span = points[ranked[-1]][axis] - points[ranked[0]][axis]
        distance[ranked[0]] = distance[ranked[-1]] = math.inf
        if span <= 0:
            continue
        for before, k, after in zip(ranked, ranked[1:], ranked[2:]):
            distance[k] += (points[after][axis] - points[before][axis]) / span
    return distance


def knee(members: Sequence[K], points: dict[K, tuple[float, float]]) -> K:
    """The front member farthest above the chord between the front's ends (score and log latency
    scaled to [0, 1]); with two members or fewer, the higher score."""
    if len(members) <= 2:
        return max(members, key=lambda k: points[k][0])
    xs = {k: math.log(max(points[k][1], 1e-12)) for k in members}
    ys = {k: points[k][0] for k in members}
    x0, x1 = min(xs.values()), max(xs.values())
    y0, y1 = min(ys.values()), max(ys.values())
    if x1 <= x0 or y1 <= y0:
        return max(members, key=lambda k: ys[k])
    scaled = {k: ((xs[k] - x0) / (x1 - x0), (ys[k] - y0) / (y1 - y0)) for k in members}
    # ends of the front: the cheapest (lowest score) and the dearest (highest score); above the chord
    # y = x is where a member buys more score than its latency costs
    return max(members, key=lambda k: (scaled[k][1] - scaled[k][0], ys[k]))


class Objective:
    """Orders scored candidates, best first, and picks the search's answer.

    ``scores`` are oriented (higher is better; -inf = invalid); ``latencies`` in ms.
    """

    def __init__(self, name: str = "score") -> None:
        if name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r}; use one of {OBJECTIVES}")
        self.name = name

    def _points(self, scores: dict[K, float], latencies: dict[K, float]) -> dict[K, tuple[float, float]]:
        return {k: (v, latencies[k]) for k, v in scores.items()
                if v > -math.inf and math.isfinite(latencies.get(k, math.nan))}

    def order(self, scores: dict[K, float], latencies: dict[K, float]) -> list[K]:
        """Valid candidates, best first."""
        if self.name == "score":
            return [k for k, v in sorted(scores.items(), key=lambda kv: -kv[1]) if v > -math.inf]
        points = self._points(scores, latencies)
        out: list[K] = []
        for members in fronts(points):
            crowd = _crowding(members, points)
            out += sorted(members, key=lambda k: (-crowd[k], -points[k][0]))
        return out

    def pick(self, scores: dict[K, float], latencies: dict[K, float]) -> Optional[K]:
        if self.name == "score":
            valid = [(k, v) for k, v in scores.items() if v > -math.inf]
            return max(valid, key=lambda kv: kv[1])[0] if valid else None
        points = self._points(scores, latencies)
        return knee(fronts(points)[0], points) if points else None

    def front(self, scores: dict[K, float], latencies: dict[K, float]) -> list[K]:
        """The Pareto front of score against latency, by increasing latency."""
        points = self._points(scores, latencies)
        return fronts(points)[0] if points else []
