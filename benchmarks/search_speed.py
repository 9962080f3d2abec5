"""Search throughput: candidates scored per minute with the default proxy and probe batch.

Runs the real ArchitectureSearch (random strategy, W&B off) for a fixed number of candidates on
the AutoFormer-T space at 224x224 and on the demo space, and prints candidates/minute and the
projected time of AutoFormer's 1,000-candidate evolutionary schedule.

    python benchmarks/search_speed.py [--candidates 20] [--device cpu]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from lightning.pytorch import Trainer

from pipeline.config import CONFIG_DIR, load_config
from pipeline.search.command import _NothingToTrain, build_search


def measure(config: str, candidates: int, device: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(CONFIG_DIR / "search" / f"{config}.yaml",
                          ["--strategy.name=random", f"--strategy.random.samples={candidates}", f"--out_dir={tmp}"])
        search, _ = build_search(cfg)
        search.strategy_options["per_generation"] = candidates
        trainer = Trainer(accelerator=device, devices=1, max_epochs=0, logger=False, callbacks=[search],
                          enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
        start = time.perf_counter()
        trainer.fit(_NothingToTrain())
        return candidates / (time.perf_counter() - start) * 60


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", type=int, default=20)
    ap.add_argument("--device", default="gpu" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}")
    for config, n in (("autoformer_tiny", args.candidates), ("demo", args.candidates * 5)):
        per_min = measure(config, n, args.device)
        print(f"{config:16s} {per_min:7.1f} candidates/min -> 1,000 candidates in {1000 / per_min:5.1f} min")


if __name__ == "__main__":
    main()
