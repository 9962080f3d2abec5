"""Candidate scores of the proxy study (issue 21), from per-architecture features.

One definition shared by ``benchmarks/proxy_selection/regret_study.py`` (the three dev files) and
``benchmarks/proxy_selection/proxy_scaling.py`` (one params band per space preset), so a candidate means the same
in both. Every score is oriented "higher = predicted better".

Features (``benchmarks/proxy_selection/study_features.py``): ``kernel_s{0,1,2}`` (mean log eigenvalue of the
Adam-normalised weight NTK, one per initialisation), ``trace_s*`` (its trace: the number of weight
tensors T, since every tensor is normalised to trace 1), ``block_logdet_s*`` (mean over blocks of
each block's own trace-normalised kernel), ``naswot``, ``expressivity``, size and structure.

Why these candidates (each has a reason that does not depend on the dev files):

* ``kernel - log T``: the normalised kernel's mean log eigenvalue is log(T / N) plus a scale-free
  shape term; subtracting log T (equivalently, dividing the kernel by its trace) removes the count
  of weight tensors, which grows with depth whatever the network computes.
* ``block shape``: normalisation per layer: each block's kernel on its own, averaged over blocks;
  no depth count and no size in it.
* ``log F + w x shape``: size first (FLOPs rank best of the size measures on every file), with a
  scale-free kernel term to separate networks of nearly equal size; small ``w`` only breaks near-ties.
* ``naswot shape``: NASWOT's kernel counts, for each pair of probe images, the units whose on/off
  state agrees; its diagonal is the number of units U (tokens x MLP hidden units, summed over
  layers), so ``naswot = N log U + log det(K / U)``. The second term, how distinct the images'
  activation codes are, is scale-free; the first is a size count.
* rank aggregations (AZ-NAS's rule: sum of log ranks within the scored population) of size with a
  shape term: robust to the scale of each term, but the score of a network depends on the others.
"""
from __future__ import annotations

import math
from typing import Mapping

import numpy as np

SEEDS = (0, 1, 2)
PROBE_N = 8          # probe images: the kernels are N x N
TIE_WEIGHTS = (0.1, 0.25, 0.5, 1.0)
# Issue 28: the weight of the kernel term against log FLOPs in ``log F + w x kernel`` (w = 1 is vintk_flops).
KERNEL_WEIGHTS = (0.1, 0.25, 0.5, 0.75)


def _mean(f: Mapping[str, float], name: str) -> float:
    values = [float(f[f"{name}_s{s}"]) for s in SEEDS if f"{name}_s{s}" in f and f[f"{name}_s{s}"] not in ("", None)]
    return float(np.mean(values)) if values else math.nan


def arch_scores(f: Mapping[str, float]) -> dict[str, float]:
    """Per-architecture candidates (no population needed)."""
    params, flops = float(f["params_m"]), float(f["flops_m"])
    log_f = math.log(flops)
    kernel = _mean(f, "kernel")
    log_t = math.log(_mean(f, "trace")) if "trace_s0" in f else math.log(float(f["n_weight_tensors"]))
    shape = kernel - log_t
    block = _mean(f, "block_logdet")
    naswot = float(f["naswot"]) if f.get("naswot") not in ("", None) else math.nan
    out = {
        "params": params, "flops": flops, "depth": float(f["depth"]),
        "vintk_flops": kernel + log_f,                 # today's default
        "kernel": kernel,                              # its kernel term alone
        "kernel - log T": shape,                       # the kernel without its depth count
        "kernel - log T + log F": shape + log_f,
        "block shape": block,                          # per-block normalised kernel
        "block shape + log F": block + log_f,
        "naswot": naswot,
        "naswot shape": naswot - PROBE_N * math.log(float(f["n_units"])) if "n_units" in f else math.nan,
        "MLP units": float(f["n_units"]) if "n_units" in f else math.nan,   # NASWOT's size term alone
        "expressivity": float(f["expressivity"]) if f.get("expressivity") not in ("", None) else math.nan,
    }
    for w in KERNEL_WEIGHTS:
        out[f"log F + {w:g} kernel"] = log_f + w * kernel
    for w in TIE_WEIGHTS[:-1]:
        out[f"log F + {w:g} (kernel - log T)"] = log_f + w * shape
        out[f"log F + {w:g} block shape"] = log_f + w * block
        out[f"log F + {w:g} naswot shape / N"] = log_f + w * out["naswot shape"] / PROBE_N
    return out


def log_rank(x: np.ndarray) -> np.ndarray:
    """AZ-NAS's aggregation term: log of the ascending rank within the set (ties share the mean rank)."""
    from scipy.stats import rankdata

    return np.log(rankdata(x, method="average") / len(x))


AGGREGATIONS = {  # name: the scores whose log ranks are summed
    "rank[flops, kernel - log T]": ("flops", "kernel - log T"),
    "rank[flops, block shape]": ("flops", "block shape"),
    "rank[flops, naswot]": ("flops", "naswot"),
    "rank[flops, kernel - log T, naswot]": ("flops", "kernel - log T", "naswot"),
    "rank[flops, naswot shape]": ("flops", "naswot shape"),
}


def population_scores(table: Mapping[str, np.ndarray], extra: Mapping[str, tuple[str, ...]] = ()) -> dict[str, np.ndarray]:
    """Rank aggregations over one scored population (``table``: score name -> values, one per network);
    ``extra`` adds aggregations of other columns (e.g. AZ-NAS components when present)."""
    out = {}
    for name, parts in {**AGGREGATIONS, **dict(extra)}.items():
        if all(p in table and np.all(np.isfinite(table[p])) for p in parts):
            out[name] = sum(log_rank(np.asarray(table[p], dtype=float)) for p in parts)
    return out
