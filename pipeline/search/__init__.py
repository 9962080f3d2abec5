"""Training-free architecture search: strategies, the Lightning callback and its outputs.

The names below load on first use: ``pipeline.search.settings`` (the command's options) must
import without torch, so that a bad option is refused before anything heavy loads.
"""
import importlib

_EXPORTS = {"ArchitectureSearch": "pipeline.search.callback", "EvolutionSearch": "pipeline.search.strategies",
            "RandomSearch": "pipeline.search.strategies", "make_strategy": "pipeline.search.strategies"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.search' has no attribute {name!r}")
