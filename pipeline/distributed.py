"""The one rank rule: rank 0 reads and decides, every rank computes, all ranks fail together.

Under DDP each rank is a separate process, possibly on a machine of its own, without a shared
filesystem. Whatever decides *which* work is done -- a resume log, the probe batch, an output
folder's state -- is therefore read on rank 0 only and broadcast (:func:`rank_zero_decides`),
so ranks can never disagree on it and then hang in a collective that no longer matches. Files
are written and cleaned up by rank 0 only (:func:`is_rank_zero`). A fault seen by one rank
(a non-finite loss) is agreed on before anyone raises (:func:`any_rank`), so every rank stops
with the same error instead of the others waiting in an all-reduce until the timeout.

Outside a process group (one process) every helper is a plain local call.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def _group_ready() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def launched_rank() -> int:
    """This process's global rank as its launcher set it; 0 when alone. Exact where it matters: 0 or not.

    Usable before any process group exists, e.g. to let only rank 0 check and create folders.
    """
    if _group_ready():
        import torch.distributed as dist

        return dist.get_rank()
    for var in ("RANK", "SLURM_PROCID"):   # torchrun, SLURM srun
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    local, node = os.environ.get("LOCAL_RANK", "0"), os.environ.get("NODE_RANK", "0")
    if local.isdigit() and node.isdigit():   # Lightning's own launcher: LOCAL_RANK / NODE_RANK
        return int(local) + int(node) * max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    return 0


def is_rank_zero() -> bool:
    """True on the process that owns reads and writes that decide work (always, when alone)."""
    return launched_rank() == 0


def under_launcher() -> bool:
    """True when a launcher started this process as one of several (torchrun, srun, Lightning DDP)."""
    counts = (os.environ.get("WORLD_SIZE"), os.environ.get("SLURM_STEP_NUM_TASKS"))
    return any(c and c.isdigit() and int(c) > 1 for c in counts)


def rank_zero_decides(decide: Callable[[], T]) -> T:
    """Run ``decide()`` on rank 0 and give every rank its result (or its error).

    The result is broadcast with ``broadcast_object_list`` (picklable values, tensors included).
    If rank 0 raises, the other ranks raise the same exception type with the same message, so a
    bad resume log or a missing probe folder ends the whole run with one clear error.
    """
    if not _group_ready():
        return decide()
    import torch.distributed as dist

    box: list[object] = [None]
    error: BaseException | None = None
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", decide())
        except Exception as e:   # handed to every rank, then re-raised here
            error = e
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if error is not None:
        raise error
    if status == "error":
        raise value
    return value


def any_rank(flag: bool) -> bool:
    """True on every rank if ``flag`` is true on any rank (one all-reduce; local when alone)."""
    if not _group_ready():
        return bool(flag)
    import torch
    import torch.distributed as dist

    backend = dist.get_backend()
    device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
