"""What a Trainer config's accelerator decides: CUDA or not, precision, compile, fused Adam.

The training runner resolves precision and compile; the tasks pick the seg heads' SyncBN and
the optimisers' fused kernels by the same rule. The rule lives here, below both, so that
neither imports the other.
"""
from __future__ import annotations

from typing import Any, Optional


def on_cuda(trainer_cfg: dict[str, Any]) -> bool:
    """Whether a Trainer config trains on CUDA devices."""
    import torch

    accel = str(trainer_cfg.get("accelerator") or "auto").lower()
    return accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available())


def resolve_precision(trainer_cfg: dict[str, Any]) -> str:
    """``null``: bf16 mixed precision on GPUs that support it, else fp16 mixed; fp32 on CPU."""
    precision = trainer_cfg.get("precision")
    if precision is not None:
        return str(precision)
    import torch

    if not on_cuda(trainer_cfg):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def resolve_compile(value: Any, trainer_cfg: dict[str, Any]) -> bool | dict[str, Any]:
    """``model.compile``: false, true, a mapping of ``torch.compile`` options, or ``auto`` (= on CUDA).

    Compiling costs a minute or two up front and pays back over long GPU runs; on a CPU the
    demo's short runs would not win it back, hence ``auto``.
    """
    if value == "auto":
        return on_cuda(trainer_cfg)
    return value or False


def resolve_fused(value: Any) -> Optional[bool]:
    """``optim.fused``: ``auto`` (None: fused Adam/AdamW when the parameters are on CUDA) or a bool."""
    return None if value in ("auto", None) else bool(value)


def use_fused(opt: str, groups, fused: Optional[bool] = None) -> bool:
    """Whether to ask for torch's fused Adam/AdamW: one kernel per step instead of a few per tensor.

    ``fused=None`` (auto): when the optimiser is Adam or AdamW and every parameter is on CUDA
    (``configure_optimizers`` runs after Lightning moved the network to its device); True
    forces it (torch also has fused CPU kernels), False turns it off.
    """
    if opt.lower() not in ("adam", "adamw") or fused is False:
        return False
    if fused:
        return True
    params = [p for g in groups for p in (g["params"] if isinstance(g, dict) else [g])]
    return bool(params) and all(p.is_cuda for p in params)
