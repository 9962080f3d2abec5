"""How fast is the empirical-NTK engine compared with the cheapest possible work?

For each network and probe size N it prints, measured in one run:
  * fwd+bwd: one batched forward + backward of the same batch (the floor),
  * fast:    pipeline.proxies.ntk.empirical_ntk,
  * loop:    the reference, one backward per sample (TE-NAS),
and the ratios fast/fwd+bwd (target <= 1.3 for AutoFormer-T, N=32, 224x224 on CPU) and
loop/fast (target >= 1.5); then memory: the measured peak of the fast engine and of one
fwd+bwd above what the process held before (CUDA: ``max_memory_allocated``; CPU: the resident
set's high-water mark, reset through ``/proc/self/clear_refs``), the largest per-sample gradient
block the engine held, and what holding the whole N x P Jacobian would take. The engine's
peak should stay near the fwd+bwd peak plus one block, far below N x P.

    python benchmarks/ntk_speed.py                 # AutoFormer-T N=32, a size/N sweep, AutoFormer-B N=64
    python benchmarks/ntk_speed.py --quick         # AutoFormer-T N=32 and AutoFormer-B N=64 (~3 min on a GPU)
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import random
import time
from pathlib import Path

import torch

from pipeline.data import probe_batch
from pipeline.models import build_model
from pipeline.proxies.ntk import NTKStats, disable_fused_attention, empirical_ntk, empirical_ntk_reference
from pipeline.space import SearchSpace


def _best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


class PeakMemory:
    """Peak memory (MB) of a block of work above what the process held when it started."""

    def __init__(self, device: str) -> None:
        self.device, self.mb = device, float("nan")

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
            return self
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)   # hand freed heap pages back first
            Path("/proc/self/clear_refs").write_text("5")   # VmHWM := current RSS
            self.base = _status_mb("VmRSS")
        except OSError:   # not Linux: no resettable high-water mark
            self.base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
        elif self.base is not None:
            self.mb = _status_mb("VmHWM") - self.base


def measure(space: str, n: int, largest: bool, repeats: int, loop: bool, device: str) -> dict:
    spec = SearchSpace.load(space).extreme_spec(largest) if largest is not None else \
        SearchSpace.load(space).sample(random.Random(0))
    model = disable_fused_attention(build_model(spec, seed=0)).to(device)
    images, labels = probe_batch(n, image_size=spec.img_size, seed=0)
    images = images.to(device)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        model(images).sum().backward()

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    # repeats=0 (big rows): one call of each, timed and measured, no warm-up
    with PeakMemory(device) as mem_floor:
        t_floor = _best_of(lambda: (fwd_bwd(), sync()), 1)
    model.zero_grad(set_to_none=True)
    if repeats:
        t_floor = min(t_floor, _best_of(lambda: (fwd_bwd(), sync()), repeats))
        model.zero_grad(set_to_none=True)
    stats = NTKStats()
    with PeakMemory(device) as mem_fast:
        t_fast = _best_of(lambda: (empirical_ntk(model, images, stats=stats), sync()), 1)
    if repeats:
        t_fast = min(t_fast, _best_of(lambda: (empirical_ntk(model, images), sync()), repeats))
    t_loop = _best_of(lambda: (empirical_ntk_reference(model, images), sync()), 1) if loop else float("nan")
    p = sum(q.numel() for q in model.parameters())
    return dict(net=f"{space}:{'max' if largest else 'min' if largest is not None else 'rand'}",
                params_m=p / 1e6, n=n, floor=t_floor, fast=t_fast, loop=t_loop,
                fast_over_floor=t_fast / t_floor, loop_over_fast=t_loop / t_fast,
                block_mb=stats.peak_chunk_bytes / 2**20, full_jacobian_mb=n * p * 4 / 2**20,
                peak_fast_mb=mem_fast.mb, peak_floor_mb=mem_floor.mb)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only-base", action="store_true", help="only the AutoFormer-B row")
    ap.add_argument("--base-n", type=int, default=64,
                    help="probe images of the AutoFormer-B row (N=64 needs ~12 GB of host memory on a CPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    plan = [("autoformer_tiny", 32, None, args.repeats, True)]
    if not args.quick:
        plan += [("autoformer_tiny", n, None, args.repeats, n <= 16) for n in (8, 16, 64)]
        plan += [("autoformer_tiny", 32, True, args.repeats, False), ("autoformer_small", 32, False, 1, False),
                 ("demo", 32, True, args.repeats, True)]
    plan.append(("autoformer_base", args.base_n, None, 0 if args.device == "cpu" else 1, False))
    if args.only_base:
        plan = plan[-1:]
    head = (f"{'network':22} {'params':>7} {'N':>3} {'fwd+bwd':>8} {'fast':>7} {'loop':>7} "
            f"{'fast/fb':>7} {'loop/fast':>9} {'peak fb':>8} {'peak fast':>9} {'block':>7} {'N*P':>8}")
    where = "CUDA max_memory_allocated" if args.device.startswith("cuda") else "process RSS high-water mark"
    print(f"device: {args.device}, threads: {torch.get_num_threads()}; memory in MB above the start of each "
          f"call ({where})")
    print(head, flush=True)
    for item in plan:
        r = measure(*item, args.device)
        print(f"{r['net']:22} {r['params_m']:6.2f}M {r['n']:3d} {r['floor']:7.2f}s {r['fast']:6.2f}s "
              f"{r['loop']:6.2f}s {r['fast_over_floor']:7.2f} {r['loop_over_fast']:9.2f} "
              f"{r['peak_floor_mb']:8.0f} {r['peak_fast_mb']:9.0f} {r['block_mb']:7.1f} {r['full_jacobian_mb']:8.0f}",
              flush=True)


if __name__ == "__main__":
    main()
