"""The resumable training loader: order and draws are functions of (seed, epoch, index), a restored state resumes."""
import random

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from pipeline.data.resumable import ResumableLoader


class Noisy(Dataset):
    """Index plus draws from NumPy's and Python's global generators, like an mmseg pipeline."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.tensor([float(i), np.random.rand(), random.random()])


def batches(loader, n=None):
    out = []
    for b in loader:
        out.append(b)
        if n is not None and len(out) == n:
            break
    return out


def test_order_is_the_distributed_samplers_and_draws_do_not_depend_on_global_state():
    loader = ResumableLoader(Noisy(), batch_size=3, seed=7)
    loader.sampler.set_epoch(2)
    np.random.seed(1)
    random.seed(1)
    first = batches(loader)
    after = np.random.rand(), random.random()
    np.random.seed(1)
    random.seed(1)
    assert after == (np.random.rand(), random.random())    # the caller's generators are left as they were
    np.random.seed(99)
    random.seed(99)
    again = batches(loader)
    assert all(torch.equal(a, b) for a, b in zip(first, again))   # other global state, same images
    sampler = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=7, drop_last=True)
    sampler.set_epoch(2)
    assert torch.cat(first)[:, 0].long().tolist() == list(sampler)[:9]   # 3 full batches, last one dropped
    loader.sampler.set_epoch(3)
    assert not torch.equal(torch.cat(batches(loader)), torch.cat(first))  # another epoch, another order


def test_ranks_take_disjoint_shares():
    shares = [torch.cat(batches(ResumableLoader(Noisy(), 2, seed=0, num_replicas=2, rank=r)))[:, 0] for r in (0, 1)]
    assert len(set(shares[0].tolist()) | set(shares[1].tolist())) == 8 and len(shares[0]) == 4


def test_a_restored_state_resumes_mid_epoch_and_only_in_its_epoch():
    loader = ResumableLoader(Noisy(), batch_size=2, seed=3)
    loader.sampler.set_epoch(1)
    full = batches(loader)                  # 5 batches
    loader.sampler.set_epoch(1)
    batches(loader, 2)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 2}

    resumed = ResumableLoader(Noisy(), batch_size=2, seed=3)
    resumed.load_state_dict(state)
    rest = batches(resumed)
    assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(rest, full[2:]))
    assert resumed.state_dict() == {"epoch": 1, "batches": 5}
    resumed.sampler.set_epoch(2)
    assert len(batches(resumed)) == 5       # the next epoch is whole

    moved_on = ResumableLoader(Noisy(), batch_size=2, seed=3)
    moved_on.load_state_dict({"epoch": 1, "batches": 5})   # saved at the epoch's last batch
    assert batches(moved_on) == []
    moved_on.load_state_dict(state)
    moved_on.sampler.set_epoch(2)           # the trainer moved on: the saved position is dropped
    assert len(batches(moved_on)) == 5
