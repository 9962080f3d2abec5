"""Ground truth: architectures with measured accuracy, to judge proxies and check the search's promise.

``format`` reads and writes ground-truth files (the OoD-ViT-NAS benchmark JSON and our JSON lines,
fixed tune/test halves); ``python -m pipeline groundtruth`` builds such a file for the user's own
task: ``settings`` (its typed options), ``sampling`` (which architectures), ``results`` (the JSON-lines
file, appended safely by several workers), ``claims`` (who trains what), ``training`` (one short
retraining with the classification recipe), ``command`` (the loop) and ``standing`` (where a
search's pick stands on a file).

The format's names are re-exported lazily: importing ``pipeline.groundtruth.settings`` (what the
CLI does to refuse a bad option at once) must not load torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SPLITS", "Entry", "load_budgets", "load_ground_truth", "load_split", "make_split", "override_specs",
           "params_budgets", "seed_agreement", "select_half", "write_split"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("pipeline.groundtruth.format"), name)
    raise AttributeError(f"module 'pipeline.groundtruth' has no attribute {name!r}")
