"""Search strategies: which architectures to score next.

A strategy proposes candidates one generation at a time and learns only through the scores
it is given back. It owns a seeded ``random.Random``, so the same seed and the same scores
always produce the same proposals: that is what makes a search reproducible and lets a
resumed search replay its history from the saved scores.
"""
from __future__ import annotations

import math
import random
from typing import Callable, Iterator, Optional

from pipeline.search.objective import Objective
from pipeline.search.settings import EvolutionSettings
from pipeline.space import ArchSpec, Limits, SearchSpace


# The evolution's settings are the command's typed option section (one declaration).
EvolutionConfig = EvolutionSettings


class Strategy:
    """Base: ``generations()`` yields lists of new specs; ``tell()`` receives their scores.

    ``accept(spec)`` is a further test every proposal must pass (the device's limits: predicted
    latency); ``objective`` orders the scored candidates (parents) and picks the answer.
    """

    def __init__(self, space: SearchSpace, limits: Limits, seed: int,
                 accept: Optional[Callable[[ArchSpec], bool]] = None, objective: Optional[Objective] = None) -> None:
        self.space = space
        self.limits = limits
        self.rng = random.Random(seed)
        self.accept = accept or (lambda spec: True)
        self.objective = objective or Objective("score")
        self.seen: set[ArchSpec] = set()
        self.scores: dict[ArchSpec, float] = {}   # oriented: larger is better; -inf = invalid
        self.latencies: dict[ArchSpec, float] = {}

    def _admits(self, spec: ArchSpec) -> bool:
        return self.space.admits(spec, self.limits) and self.accept(spec)

    def _fresh_random(self, draws: int = 20000) -> ArchSpec:
        for _ in range(draws):
            spec = self.space.sample_within(self.rng, self.limits)
            if spec not in self.seen and self.accept(spec):
                return spec
        raise RuntimeError(f"no unseen architecture within the limits after {draws} draws: the space (within "
                           "the limits) seems exhausted or the window very narrow; lower the number of "
                           "candidates or widen the limits")

    def _take(self, spec: ArchSpec, batch: list[ArchSpec]) -> None:
        self.seen.add(spec)
        batch.append(spec)

    def tell(self, spec: ArchSpec, score: float, latency_ms: Optional[float] = None) -> None:
        self.scores[spec] = score
        self.latencies[spec] = math.nan if latency_ms is None else latency_ms

    def generations(self) -> Iterator[list[ArchSpec]]:
        raise NotImplementedError

    def ranked(self) -> list[ArchSpec]:
        """Valid candidates, best first under the objective."""
        return self.objective.order(self.scores, self.latencies)

    def best(self) -> Optional[tuple[ArchSpec, float]]:
        """The objective's pick and its score."""
        pick = self.objective.pick(self.scores, self.latencies)
        return (pick, self.scores[pick]) if pick is not None else None


class RandomSearch(Strategy):
    """TF-TAS style: score ``samples`` random architectures within the limits, keep the best."""

    def __init__(self, space: SearchSpace, limits: Limits, seed: int, samples: int = 1000,
                 per_generation: int = 50, **kwargs) -> None:
        super().__init__(space, limits, seed, **kwargs)
        self.samples = samples
        self.per_generation = per_generation

    def generations(self) -> Iterator[list[ArchSpec]]:
        left = self.samples
        while left > 0:
            batch: list[ArchSpec] = []
            for _ in range(min(self.per_generation, left)):
                self._take(self._fresh_random(), batch)
            left -= len(batch)
            yield batch


class EvolutionSearch(Strategy):
    """AutoFormer's evolution: a random first population, then per generation mutations and
    crossovers of the top ``parents`` so far, topped up with random architectures."""

    def __init__(self, space: SearchSpace, limits: Limits, seed: int, config: Optional[EvolutionConfig] = None,
                 **kwargs) -> None:
        super().__init__(space, limits, seed, **kwargs)
        self.cfg = config or EvolutionConfig()

    def _parents(self) -> list[ArchSpec]:
        return self.ranked()[: self.cfg.parents]

    def _offspring(self, make, count: int, batch: list[ArchSpec]) -> None:
        for _ in range(count):
            for _ in range(self.cfg.max_tries):
                child = make()
                if child not in self.seen and self._admits(child):
                    self._take(child, batch)
                    break

    def generations(self) -> Iterator[list[ArchSpec]]:
        cfg = self.cfg
        for gen in range(cfg.generations):
            batch: list[ArchSpec] = []
            parents = self._parents() if gen else []
            if parents:
                self._offspring(lambda: self.space.mutate(self.rng.choice(parents), self.rng,
                                                          cfg.layer_prob, cfg.global_prob), cfg.mutations, batch)
                self._offspring(lambda: self.space.crossover(self.rng.choice(parents), self.rng.choice(parents),
                                                             self.rng), cfg.crossovers, batch)
            while len(batch) < cfg.population:
                self._take(self._fresh_random(), batch)
            yield batch


def make_strategy(name: str, space: SearchSpace, limits: Limits, seed: int,
                  accept: Optional[Callable[[ArchSpec], bool]] = None, objective: Optional[Objective] = None,
                  **options) -> Strategy:
    if name == "evolution":
        return EvolutionSearch(space, limits, seed, EvolutionConfig(**options), accept=accept, objective=objective)
    if name == "random":
        return RandomSearch(space, limits, seed, accept=accept, objective=objective, **options)
    raise ValueError(f"unknown strategy {name!r}; use 'evolution' or 'random'")
