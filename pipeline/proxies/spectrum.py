"""Spectral statistics of a kernel matrix, in float64, with invalid kernels flagged.

Every statistic is also available *oriented* (larger = predicted better) for ViNTK:
condition number -> -log(cond), log-determinant -> mean log eigenvalue, trace -> log trace,
effective rank -> exp(entropy of the normalised spectrum).
"""
from __future__ import annotations

import math

import torch

from pipeline.proxies.registry import InvalidScore

STATISTICS = ("cond", "logdet", "trace", "erank")
RELATIVE_FLOOR = 1e-12  # eigenvalues below this fraction of the largest count as zero


def eigenvalues(theta: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues of a symmetric kernel (float64); non-finite kernels are invalid."""
    theta = theta.detach().double()
    if not torch.isfinite(theta).all():
        raise InvalidScore("kernel has non-finite entries")
    theta = 0.5 * (theta + theta.T)
    return torch.linalg.eigvalsh(theta.cpu())


def _check_positive(ev: torch.Tensor) -> None:
    if ev[-1] <= 0 or ev[0] <= ev[-1] * RELATIVE_FLOOR:
        raise InvalidScore(f"kernel is singular (eigenvalues {ev[0].item():.3g} .. {ev[-1].item():.3g})")


def condition_number(ev: torch.Tensor) -> float:
    _check_positive(ev)
    return float(ev[-1] / ev[0])


def statistic(ev: torch.Tensor, name: str) -> float:
    """Oriented statistic: larger means the proxy predicts a better network."""
    if name == "cond":
        return -math.log(condition_number(ev))
    if name == "logdet":
        _check_positive(ev)
        return float(torch.log(ev).mean())
    if name == "trace":
        if ev.sum() <= 0:
            raise InvalidScore("kernel has zero trace")
        return math.log(float(ev.sum()))
    if name == "erank":
        ev = ev.clamp_min(0)
        if ev.sum() <= 0:
            raise InvalidScore("kernel has zero trace")
        p = ev / ev.sum()
        p = p[p > 0]
        return float(torch.exp(-(p * p.log()).sum()))
    raise ValueError(f"unknown statistic {name!r}; use one of {STATISTICS}")
