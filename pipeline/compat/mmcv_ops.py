"""Pure-PyTorch stand-ins for the parts of ``mmcv.ops`` that mmsegmentation imports.

``mmcv-lite`` (the pip-installable mmcv without compiled CUDA/C++ extensions) ships the
``mmcv.ops`` package, but importing it fails (``No module named 'mmcv._ext'``), and
``mmseg.utils`` / ``mmseg.models`` import ``point_sample`` and ``sigmoid_focal_loss`` from it
at import time. :func:`install` puts a small module holding PyTorch versions of those into
``sys.modules["mmcv.ops"]`` -- only when the real ``mmcv.ops`` cannot be imported, so with a
full mmcv build installed it does nothing and mmseg uses the compiled ops.

Other names (``CrissCrossAttention``, ``PSAMask``, ``DeformConv2d``, ...) are absent. mmseg
imports those inside ``try``/``except ModuleNotFoundError`` (what mmcv-lite's own ``mmcv.ops``
raises), so ``from mmcv.ops import X`` raises a ``ModuleNotFoundError`` too -- one that says
mmcv-lite lacks X and how to get it.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

MODULE = "mmcv.ops"
_installed: Optional[types.ModuleType] = None


def point_sample(input: Tensor, points: Tensor, align_corners: bool = False, **kwargs) -> Tensor:
    """Sample ``input`` (N, C, H, W) at normalised points in [0, 1]^2, like ``mmcv.ops.point_sample``.

    ``points`` is (N, P, 2) -> output (N, C, P), or (N, Hg, Wg, 2) -> (N, C, Hg, Wg); the
    (x, y) order and the bilinear ``grid_sample`` call are mmcv's.
    """
    add_dim = points.dim() == 3
    if add_dim:
        points = points.unsqueeze(2)
    output = F.grid_sample(input, points * 2.0 - 1.0, align_corners=align_corners, **kwargs)
    return output.squeeze(3) if add_dim else output


def sigmoid_focal_loss(input: Tensor, target: Tensor, gamma: float = 2.0, alpha: float = 0.25,
                       weight: Optional[Tensor] = None, reduction: str = "mean") -> Tensor:
    """``mmcv.ops.sigmoid_focal_loss`` in PyTorch: ``input`` (N, C) logits, ``target`` (N,) labels.

    A label equal to C (or any label outside 0..C-1) is background: negative for every class.
    ``weight`` (C,) weighs the classes; ``mean`` divides the sum by N, as mmcv does.
    """
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be none, mean or sum, got {reduction!r}")
    n, c = input.shape
    target = target.long()
    valid = (target >= 0) & (target < c)
    onehot = torch.zeros_like(input)
    onehot[valid, target[valid]] = 1.0
    p = input.sigmoid()
    log_p = F.logsigmoid(input)
    log_1mp = F.logsigmoid(-input)
    loss = -(alpha * (1 - p).pow(gamma) * log_p * onehot
             + (1 - alpha) * p.pow(gamma) * log_1mp * (1 - onehot))
    if weight is not None:
        loss = loss * weight.view(1, -1)
    if reduction == "sum":
        return loss.sum()
    if reduction == "mean":
        return loss.sum() / n
    return loss


def _missing(name: str):
    if name.startswith("__"):  # dunder probes (copy, inspect, pickle) must see AttributeError
        raise AttributeError(name)
    raise ModuleNotFoundError(
        f"mmcv.ops.{name} needs mmcv's compiled extensions, which mmcv-lite lacks "
        f"(pipeline.compat provides only point_sample and sigmoid_focal_loss); install the full "
        f"mmcv (`pip install mmcv` with a matching torch/CUDA build) to use it", name=f"{MODULE}.{name}")


def real_ops_available() -> bool:
    """True when the real ``mmcv.ops`` (compiled extensions) imports."""
    current = sys.modules.get(MODULE)
    if current is not None and current is _installed:
        return False
    try:
        importlib.import_module(MODULE)
        return True
    except ImportError:  # ModuleNotFoundError: No module named 'mmcv._ext', or no mmcv at all
        return False


def install() -> bool:
    """Provide ``mmcv.ops`` for mmseg if the real one cannot be imported.

    Returns True when the stand-in is (now or already) installed, False when the real
    ``mmcv.ops`` works and was left alone. Idempotent; import this before mmseg.
    """
    global _installed
    if _installed is not None and sys.modules.get(MODULE) is _installed:
        return True
    if real_ops_available():
        return False
    try:
        import mmcv
    except ImportError:  # no mmcv at all: mmseg will say so itself
        return False
    # A failed import can leave half-imported submodules behind; drop them.
    for name in [m for m in sys.modules if m.startswith(MODULE + ".")]:
        del sys.modules[name]
    module = types.ModuleType(MODULE, __doc__)
    module.__file__ = __file__
    module.__path__ = []  # a package, so `import mmcv.ops.x` fails with a clear ImportError
    module.point_sample = point_sample
    module.sigmoid_focal_loss = sigmoid_focal_loss
    module.__getattr__ = _missing
    module.__all__ = ["point_sample", "sigmoid_focal_loss"]
    module.PIPELINE_COMPAT = True
    sys.modules[MODULE] = module
    mmcv.ops = module
    _installed = module
    return True
