"""The ``latency`` section of the search's options: the deployment target and how it is measured.

Free of torch imports, like the rest of the search's options: a bad device, backend or thread
count is refused in a fraction of a second. What needs torch (is there a GPU?) is checked when
the search builds its target, still before any work.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Literal, Optional

from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveInt

from pipeline.errors import ConfigError

BACKENDS = ("eager", "export", "onnx")
# The pip package each backend needs beyond the pipeline's own dependencies.
BACKEND_PACKAGES = {"onnx": ("onnxruntime", "onnxruntime")}


@dataclass
class LatencySettings:
    """The device a network will run on, and how its latency and peak memory are measured there.

    Args:
        enabled: null = on when --limits.max_latency_ms, --limits.max_memory_mb or
            --objective=pareto asks for it; true = record every candidate's latency anyway;
            false = off.
        device: auto (cuda when a GPU is present, else cpu), cpu or cuda.
        backend: eager (the PyTorch module), export (the torch.export program, as in model.pt2)
            or onnx (ONNX Runtime, as model.onnx; pip install onnxruntime).
        method: predict (a per-device predictor calibrated from block measurements on first use
            and cached; the pick is re-measured) or measure (every candidate measured).
        batch: images per forward.
        threads: CPU threads of torch / ONNX Runtime while measuring (pinned).
        cores: CPU cores the measuring process is pinned to (null: any core).
        warmup: untimed forwards before timing.
        repeats: timed forwards, in 3 runs; the latency is the median over runs of each run's
            statistic (its fastest call, or its median).
        min_seconds: more timed forwards than repeats, until they took this long (fast networks
            are then timed over a window in which a burst of other work moves the median little).
        statistic: auto (min on a CPU, median on a GPU), min (the fastest timed forward: the
            same work without other processes' interference; it repeats on a shared machine,
            docs/latency.md) or median (of the timed forwards).
        clock: wall (the wall clock: what a user of a dedicated device waits) or cpu (the
            process's CPU time: on a machine shared with other jobs it leaves out the time the
            scheduler gives them; with one thread it equals an idle machine's wall time).
    """

    enabled: Optional[bool] = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["eager", "export", "onnx"] = "eager"
    method: Literal["predict", "measure"] = "predict"
    batch: PositiveInt = 1
    threads: PositiveInt = 1
    cores: Optional[list[NonNegativeInt]] = None
    warmup: NonNegativeInt = 5
    repeats: PositiveInt = 20
    min_seconds: NonNegativeFloat = 1.0
    statistic: Literal["auto", "min", "median"] = "auto"
    clock: Literal["wall", "cpu"] = "wall"


def latency_wanted(cfg: dict[str, Any]) -> bool:
    """Whether a search measures latency: asked for directly, or needed by a limit or the objective."""
    limits, latency = cfg.get("limits") or {}, cfg.get("latency") or {}
    needed = (limits.get("max_latency_ms") is not None or limits.get("max_memory_mb") is not None
              or cfg.get("objective", "score") != "score")
    return needed if latency.get("enabled") is None else bool(latency["enabled"])


def check_latency_settings(cfg: dict[str, Any]) -> None:
    """Refuse, before torch loads, what is wrong whatever the machine's GPUs: a missing backend
    package, threads or cores the machine does not have, a limit with latency switched off."""
    latency, limits = cfg.get("latency") or {}, cfg.get("limits") or {}
    if latency.get("enabled") is False:
        asked = [f"--limits.{k}" for k in ("max_latency_ms", "max_memory_mb") if limits.get(k) is not None]
        if cfg.get("objective", "score") != "score":
            asked.append(f"--objective={cfg['objective']}")
        if asked:
            raise ConfigError(f"{', '.join(asked)} needs latency measurements, but --latency.enabled=false; "
                              "drop one of them")
    if not latency_wanted(cfg):
        return
    check_backend_installed(latency.get("backend", "eager"))
    if latency.get("clock") == "cpu" and int(latency.get("threads") or 1) > 1:
        raise ConfigError(f"--latency.clock=cpu adds up the CPU time of all {latency['threads']} threads, which is "
                          "not a latency; use it with --latency.threads=1, or --latency.clock=wall")
    cpus = os.cpu_count() or 1
    if int(latency.get("threads") or 1) > cpus:
        raise ConfigError(f"--latency.threads={latency['threads']}: this machine has {cpus} CPU(s); "
                          f"use at most {cpus}")
    bad = [c for c in latency.get("cores") or [] if c not in _usable_cores()]
    if bad:
        raise ConfigError(f"--latency.cores: no CPU core(s) {bad} for this process; usable: "
                          f"{sorted(_usable_cores())}")


def check_backend_installed(backend: str) -> None:
    """A backend whose package is missing is one line naming the pip package."""
    if backend not in BACKENDS:
        raise ConfigError(f"--latency.backend={backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    module, package = BACKEND_PACKAGES.get(backend, (None, None))
    if module is not None and importlib.util.find_spec(module) is None:
        raise ConfigError(f"--latency.backend={backend} needs ONNX Runtime, which is not installed: "
                          f"pip install {package}")


def _usable_cores() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return set(range(os.cpu_count() or 1))
