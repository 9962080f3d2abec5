"""Ground truth: architectures with measured accuracy, to judge proxies and check the search's promise.

``format`` reads and writes ground-truth files (the OoD-ViT-NAS benchmark JSON and our JSON lines,
fixed tune/test halves); ``python -m pipeline groundtruth`` builds such a file for the user's own
task: ``settings`` (its typed options), ``sampling`` (which architectures), ``results`` (the JSON-lines
file, appended safely by several workers), ``claims`` (who trains what), ``training`` (one short
retraining with the classification recipe) and ``command`` (the loop).
"""
from pipeline.groundtruth.format import (SPLITS, Entry, load_ground_truth, load_split, make_split, override_specs,
                                         seed_agreement, select_half, write_split)

__all__ = ["SPLITS", "Entry", "load_ground_truth", "load_split", "make_split", "override_specs", "seed_agreement",
           "select_half", "write_split"]
