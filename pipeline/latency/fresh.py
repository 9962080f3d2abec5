"""Measure one network in a fresh Python process: nothing of the caller's state (allocator
caches, warmed-up kernels, threads, other networks' weights in the processor's caches) reaches
the number. The search re-measures its pick this way, and the predictor's benchmark measures
every held-out network this way.

    python -m pipeline.latency.fresh arch.yaml --device cpu --backend eager --batch 1 --threads 1

prints one JSON line: ``{"latency_ms": ..., "spread": ..., "memory_mb": ..., "timing": {...}}``
(``latency_ms`` on the ``--clock`` and ``--statistic`` asked for; ``timing`` holds every clock and statistic).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from pipeline.latency.target import Target
from pipeline.space.spec import ArchSpec


def measure_in_fresh_process(spec: ArchSpec, target: Target, memory: bool = True,
                             timeout: Optional[float] = None) -> dict[str, Any]:
    """Latency (and peak memory) of ``spec`` on ``target``, measured by a new interpreter."""
    with tempfile.TemporaryDirectory() as tmp:
        path = spec.save(Path(tmp) / "arch.json")
        argv = [sys.executable, "-m", "pipeline.latency.fresh", str(path), "--device", target.device,
                "--backend", target.backend, "--batch", str(target.batch), "--threads", str(target.threads),
                "--warmup", str(target.warmup), "--repeats", str(target.repeats), "--clock", target.clock,
                "--min-seconds", str(target.min_seconds), "--statistic", target.statistic]
        if target.cores:
            argv += ["--cores", *map(str, target.cores)]
        if not memory:
            argv.append("--no-memory")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [_package_root(), os.environ.get("PYTHONPATH")]))}
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"measuring {spec.short()} in a fresh process failed: "
                           f"{(done.stderr.strip().splitlines() or ['(no output)'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _package_root() -> str:
    """The folder holding this ``pipeline`` package, so the child imports the same code."""
    return str(Path(__file__).resolve().parents[2])


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.latency.fresh", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("spec", help="an arch.yaml / spec JSON file")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--backend", default="eager", choices=["eager", "export", "onnx"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cores", type=int, nargs="*")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"])
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--statistic", default="auto", choices=["auto", "min", "median"],
                    help="auto: min on cpu, median on cuda")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory count")
    args = ap.parse_args(argv)
    from pipeline.latency.measure import measure_latency
    from pipeline.latency.memory import peak_memory_mb

    spec = ArchSpec.load(args.spec)
    target = Target(device=args.device, backend=args.backend, batch=args.batch, threads=args.threads,
                    cores=tuple(args.cores) if args.cores else None, warmup=args.warmup, repeats=args.repeats,
                    clock=args.clock, min_seconds=args.min_seconds, statistic=args.statistic)
    timing = measure_latency({0: spec}, target)[0]
    result = {"latency_ms": target.latency(timing), "spread": timing.cpu_spread if args.clock == "cpu" else timing.spread,
              "timing": timing.to_dict()}
    if not args.no_memory:   # after the timing: counting allocations must not touch the timed calls
        result["memory_mb"] = peak_memory_mb(spec, args.device, args.batch)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
