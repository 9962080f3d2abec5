"""Search throughput: candidates scored per minute with the default proxy and probe batch.

Runs the real ArchitectureSearch (random strategy, W&B off) under a Lightning Trainer and prints
candidates/minute and the projected time of AutoFormer's 1,000-candidate evolutionary schedule:

* per space (``--spaces``, default the demo, AutoFormer-T, -S and -B spaces), one process;
* ``--parallel``: the AutoFormer-T search with 2 processes (CPU DDP, ``ddp_spawn``) against
  1 process, with the same total number of threads (2 x T/2 vs 1 x T), alternating runs.

Each rate is (K2 - K1) / (t2 - t1) from runs of K1 and K2 candidates, so process start-up,
model-free set-up and the probe batch cancel out.

    python benchmarks/search_speed.py [--spaces autoformer_tiny demo] [--device cpu]
    python benchmarks/search_speed.py --parallel [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parents[1]))   # after PYTHONPATH

from lightning.pytorch import Trainer  # noqa: E402

from pipeline.search.command import _NothingToTrain, build_search  # noqa: E402
from pipeline.search.settings import parse_config  # noqa: E402

# candidates per timed run (K1, K2) for each space on a CPU; a GPU takes 5x more
CANDIDATES = {"demo": (10, 60), "autoformer_tiny": (3, 15), "autoformer_small": (2, 6), "autoformer_base": (1, 4)}


def timed_search(config: str, candidates: int, device: str, processes: int = 1) -> float:
    """Seconds of ``Trainer.fit`` for a random search of ``candidates`` candidates."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = parse_config(["--config", config, "--strategy.name=random", f"--strategy.random.samples={candidates}",
                            f"--out_dir={tmp}", "--wandb.enabled=false"])
        search, _ = build_search(cfg)
        search.strategy_options["per_generation"] = candidates
        trainer = Trainer(accelerator=device, devices=processes, strategy="ddp_spawn" if processes > 1 else "auto",
                          max_epochs=0, logger=False, callbacks=[search], enable_checkpointing=False,
                          enable_model_summary=False, enable_progress_bar=False)
        start = time.perf_counter()
        trainer.fit(_NothingToTrain())
        return time.perf_counter() - start


def rate(config: str, device: str, processes: int = 1, scale: int = 1) -> float:
    """Candidates per minute, start-up cancelled: (K2 - K1) / (t2 - t1)."""
    k1, k2 = (k * scale for k in CANDIDATES[config])
    t1 = timed_search(config, k1, device, processes)
    t2 = timed_search(config, k2, device, processes)
    return (k2 - k1) / max(t2 - t1, 1e-9) * 60


def parallel(device: str, threads: int, repeats: int) -> None:
    """2 processes x threads/2 against 1 process x threads on AutoFormer-T, alternating."""
    results: dict[int, list[float]] = {1: [], 2: []}
    for r in range(repeats):
        for processes in ((1, 2) if r % 2 == 0 else (2, 1)):
            per_process = max(1, threads // processes)
            os.environ["OMP_NUM_THREADS"] = str(per_process)   # read by the spawned ranks
            torch.set_num_threads(threads)                      # the single process
            results[processes].append(rate("autoformer_tiny", device, processes))
    one, two = statistics.median(results[1]), statistics.median(results[2])
    print(f"autoformer_tiny: 1 process x {threads} threads {one:.1f} candidates/min, 2 processes x "
          f"{max(1, threads // 2)} threads {two:.1f} candidates/min (medians of {repeats}) ratio {two / one:.2f}",
          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spaces", nargs="*", default=["demo", "autoformer_tiny", "autoformer_small", "autoformer_base"])
    ap.add_argument("--device", default="gpu" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--parallel", action="store_true", help="2 processes vs 1 instead of the per-space rates")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads(), help="total threads (--parallel)")
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}", flush=True)
    if args.parallel:
        parallel(args.device, args.threads, args.repeats)
        return
    scale = 5 if args.device == "gpu" else 1
    for config in args.spaces:
        per_min = rate(config, args.device, scale=scale)
        print(f"{config:16s} {per_min:7.1f} candidates/min -> 1,000 candidates in {1000 / per_min:5.1f} min",
              flush=True)


if __name__ == "__main__":
    main()
