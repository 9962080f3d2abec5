"""Training-free architecture search: strategies, the Lightning callback and its outputs."""
from pipeline.search.callback import ArchitectureSearch
from pipeline.search.strategies import EvolutionSearch, RandomSearch, make_strategy

__all__ = ["ArchitectureSearch", "EvolutionSearch", "RandomSearch", "make_strategy"]
