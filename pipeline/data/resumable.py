"""A training DataLoader that a killed run resumes part-way through an epoch, drawing what it would have drawn.

Iteration-based training (mmseg's 160k ADE20K iterations) checkpoints at validations that fall
anywhere inside an epoch. Resuming such a checkpoint bit-identically needs three things a plain
``DataLoader(shuffle=True)`` does not give:

* the **order** of epoch ``e`` must be a function of ``(seed, e)``, not of a generator that has
  advanced through earlier epochs: :class:`EpochOrder` is a ``DistributedSampler`` (also with one
  process; Lightning keeps a sampler of that type under DDP instead of wrapping it) that can
  start its next pass ``skip`` samples in;
* each sample's **random augmentation** must be a function of ``(seed, epoch, index)``, not of the
  global NumPy / ``random`` state, which differs after a restart and in every worker process:
  :class:`SeededDraws` seeds both for the one sample and puts the caller's state back;
* the **position** must be saved: Lightning stores a loader's ``state_dict()`` in every
  checkpoint and hands it back with ``load_state_dict`` when resuming (its documented interface
  for resumable loaders), so :class:`ResumableLoader` counts the batches it has yielded this epoch.
  Lightning fetches no batch ahead of the training step when the loader has a length, so the count
  is exactly the batches trained on.

The loader's own ``generator`` (seeded) also keeps the DataLoader from drawing its worker base seed
from torch's global generator, which would shift dropout masks after a restart.
"""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class EpochOrder(DistributedSampler):
    """This process's share of a shuffled epoch, a function of ``(seed, epoch)``; yields ``(epoch, index)``.

    ``skip`` samples of the next pass are left out (those a resumed run already trained on).
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.skip = 0   # the restored position belongs to the restored epoch only
        super().set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter([(self.epoch, i) for i in indices[skip:]])


class SeededDraws(Dataset):
    """``dataset[index]`` with NumPy's and Python's global generators seeded from ``(seed, epoch, index)``.

    mmcv / mmseg transforms draw crops, flips and colour jitter from those global generators; seeding
    them per sample makes the augmentation independent of the process (main or worker) and of what was
    drawn before, so a resumed run and any number of workers see the same images.
    """

    def __init__(self, dataset: Dataset, seed: int = 0) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        sample_seed = int(np.random.SeedSequence([self.seed, int(epoch), int(index)]).generate_state(1)[0])
        saved = random.getstate(), np.random.get_state()
        random.seed(sample_seed)
        np.random.seed(sample_seed)
        try:
            return self.dataset[index]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])


class ResumableLoader(DataLoader):
    """Shuffled training batches (incomplete last batch dropped) that resume where a checkpoint left off.

    Args:
        dataset: a map-style dataset whose randomness comes from NumPy / ``random`` (mmseg's).
        batch_size: samples per batch and process.
        seed: the order and the augmentation draws.
        num_replicas: training processes; each takes its own share of every epoch.
        rank: this process's index among them.
        **kwargs: further ``DataLoader`` arguments (workers, collate_fn, pin_memory...).
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0,
                 **kwargs: Any) -> None:
        order = EpochOrder(dataset, num_replicas=num_replicas, rank=rank, seed=seed)
        super().__init__(SeededDraws(dataset, seed), batch_size=batch_size, sampler=order, drop_last=True,
                         generator=torch.Generator().manual_seed(int(seed)), **kwargs)
        self.batches = 0   # yielded in the current epoch (restored ones included)

    def __iter__(self) -> Iterator[Any]:
        self.batches = self.sampler.skip // self.batch_size
        for batch in super().__iter__():
            self.batches += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": int(self.sampler.epoch), "batches": int(self.batches)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.set_epoch(int(state["epoch"]))
        self.sampler.skip = int(state["batches"]) * int(self.batch_size)
