"""Search strategies: which architectures to score next.

A strategy proposes candidates one generation at a time and learns only through the scores
it is given back. It owns a seeded ``random.Random``, so the same seed and the same scores
always produce the same proposals: that is what makes a search reproducible and lets a
resumed search replay its history from the saved scores.
"""
from __future__ import annotations

import random
from typing import Iterator, Optional

from pipeline.search.settings import EvolutionSettings
from pipeline.space import ArchSpec, Limits, SearchSpace


# The evolution's settings are the command's typed option section (one declaration).
EvolutionConfig = EvolutionSettings


class Strategy:
    """Base: ``generations()`` yields lists of new specs; ``tell()`` receives their scores."""

    def __init__(self, space: SearchSpace, limits: Limits, seed: int) -> None:
        self.space = space
        self.limits = limits
        self.rng = random.Random(seed)
        self.seen: set[ArchSpec] = set()
        self.scores: dict[ArchSpec, float] = {}   # oriented: larger is better; -inf = invalid

    def _fresh_random(self) -> ArchSpec:
        for _ in range(1000):
            spec = self.space.sample_within(self.rng, self.limits)
            if spec not in self.seen:
                return spec
        raise RuntimeError("the space (within the limits) seems exhausted: no unseen architecture "
                           "after 1000 draws; lower the number of candidates")

    def _take(self, spec: ArchSpec, batch: list[ArchSpec]) -> None:
        self.seen.add(spec)
        batch.append(spec)

    def tell(self, spec: ArchSpec, score: float) -> None:
        """The score of a proposed spec. Telling a spec again replaces its score: a population-ranked
        proxy (AZ-NAS) re-ranks every candidate seen so far whenever a generation arrives, and the
        strategy's parents and best then follow the new values."""
        self.scores[spec] = score

    def generations(self) -> Iterator[list[ArchSpec]]:
        raise NotImplementedError

    def best(self) -> Optional[tuple[ArchSpec, float]]:
        valid = [(s, v) for s, v in self.scores.items() if v > float("-inf")]
        return max(valid, key=lambda sv: sv[1]) if valid else None


class RandomSearch(Strategy):
    """TF-TAS style: score ``samples`` random architectures within the limits, keep the best."""

    def __init__(self, space: SearchSpace, limits: Limits, seed: int, samples: int = 1000,
                 per_generation: int = 50) -> None:
        super().__init__(space, limits, seed)
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

    def __init__(self, space: SearchSpace, limits: Limits, seed: int, config: Optional[EvolutionConfig] = None) -> None:
        super().__init__(space, limits, seed)
        self.cfg = config or EvolutionConfig()

    def _parents(self) -> list[ArchSpec]:
        ranked = sorted(self.scores.items(), key=lambda sv: -sv[1])
        return [s for s, v in ranked[: self.cfg.parents] if v > float("-inf")]

    def _offspring(self, make, count: int, batch: list[ArchSpec]) -> None:
        for _ in range(count):
            for _ in range(self.cfg.max_tries):
                child = make()
                if child not in self.seen and self.space.admits(child, self.limits):
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


def make_strategy(name: str, space: SearchSpace, limits: Limits, seed: int, **options) -> Strategy:
    if name == "evolution":
        return EvolutionSearch(space, limits, seed, EvolutionConfig(**options))
    if name == "random":
        return RandomSearch(space, limits, seed, **options)
    raise ValueError(f"unknown strategy {name!r}; use 'evolution' or 'random'")
