"""How fast is the empirical-NTK engine compared with the cheapest possible work?

For each network and probe size N it prints, measured in one run:
  * fwd+bwd: one batched forward + backward of the same batch (the floor),
  * fast:    pipeline.proxies.ntk.empirical_ntk,
  * loop:    the reference, one backward per sample (TE-NAS),
and the ratios fast/fwd+bwd (target <= 1.3 for AutoFormer-T, N=32, 224x224 on CPU) and
loop/fast (target >= 1.5), plus the largest per-sample gradient block the fast engine held and
what holding the whole N x P Jacobian would take.

    python benchmarks/ntk_speed.py                 # AutoFormer-T N=32 and a size/N sweep
    python benchmarks/ntk_speed.py --quick         # one row, for a smoke test
"""
from __future__ import annotations

import argparse
import random
import time

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

    fwd_bwd()  # warm-up
    t_floor = _best_of(lambda: (fwd_bwd(), sync()), repeats)
    stats = NTKStats()
    empirical_ntk(model, images)
    t_fast = _best_of(lambda: (empirical_ntk(model, images, stats=stats), sync()), repeats)
    t_loop = _best_of(lambda: (empirical_ntk_reference(model, images), sync()), 1) if loop else float("nan")
    p = sum(q.numel() for q in model.parameters())
    return dict(net=f"{space}:{'max' if largest else 'min' if largest is not None else 'rand'}",
                params_m=p / 1e6, n=n, floor=t_floor, fast=t_fast, loop=t_loop,
                fast_over_floor=t_fast / t_floor, loop_over_fast=t_loop / t_fast,
                block_mb=stats.peak_chunk_bytes / 2**20, full_jacobian_mb=n * p * 4 / 2**20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_grad_enabled(True)
    rows = [measure("autoformer_tiny", 32, None, args.repeats, True, args.device)]
    if not args.quick:
        for n in (8, 16, 64):
            rows.append(measure("autoformer_tiny", n, None, args.repeats, n <= 16, args.device))
        rows.append(measure("autoformer_tiny", 32, True, args.repeats, False, args.device))
        rows.append(measure("autoformer_small", 32, False, 1, False, args.device))
        rows.append(measure("demo", 32, True, args.repeats, True, args.device))
    head = (f"{'network':22} {'params':>7} {'N':>3} {'fwd+bwd':>8} {'fast':>7} {'loop':>7} "
            f"{'fast/fb':>7} {'loop/fast':>9} {'block MB':>8} {'N*P MB':>8}")
    print(f"device: {args.device}, threads: {torch.get_num_threads()}")
    print(head)
    for r in rows:
        print(f"{r['net']:22} {r['params_m']:6.2f}M {r['n']:3d} {r['floor']:7.2f}s {r['fast']:6.2f}s "
              f"{r['loop']:6.2f}s {r['fast_over_floor']:7.2f} {r['loop_over_fast']:9.2f} "
              f"{r['block_mb']:8.1f} {r['full_jacobian_mb']:8.0f}")


if __name__ == "__main__":
    main()
