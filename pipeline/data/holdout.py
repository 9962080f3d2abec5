"""A selection split held out of the training images: seeded, class-stratified, recorded.

Choosing among networks by their accuracy on the validation set would make that accuracy an
optimistic estimate of the winner's (the winner is, in part, the network that got lucky on
those images). ``refine`` therefore ranks its candidates on images taken out of the *training*
split, and never looks at the validation split: ``train``'s final validation accuracy of the
pick stays an honest estimate.

The split is a pure function of the labels, the fraction and the seed: in every class the same
share of images, drawn by NumPy's seeded generator, so every worker of a race (and a rerun)
holds out exactly the same images. :func:`split_record` is what a run writes down to prove it.
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence


def stratified_holdout(labels: Sequence[int], fraction: float, seed: int) -> list[int]:
    """Sorted indices of the held-out images: ``round(fraction x n_c)`` of every class c with n_c images,
    at least one and at most n_c - 1 where the class has two or more (so each class stays in training)."""
    import numpy as np

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"a held-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[int] = []
    for c in np.unique(labels):   # classes in sorted order: the draw does not depend on the data's order
        members = np.flatnonzero(labels == c)
        if len(members) < 2:
            continue
        k = min(len(members) - 1, max(1, round(fraction * len(members))))
        held.extend(int(i) for i in rng.permutation(members)[:k])
    return sorted(held)


def indices_digest(indices: Sequence[int]) -> str:
    """SHA-256 of the sorted indices (comma-separated decimal): two splits are the same iff it is."""
    return hashlib.sha256(",".join(str(int(i)) for i in sorted(indices)).encode()).hexdigest()


def split_record(held: Sequence[int], total: int, fraction: float, seed: int) -> dict[str, Any]:
    """What a run records about its split: enough to rebuild it (fraction, seed) and to check it (digest)."""
    return {"fraction": float(fraction), "seed": int(seed), "held_out": len(held), "trained_on": total - len(held),
            "of": total, "sha256": indices_digest(held), "indices": [int(i) for i in held]}
