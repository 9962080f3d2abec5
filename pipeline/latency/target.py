"""The deployment target: device, backend, batch and threads, and what identifies the device.

A latency means something only with the conditions it was measured under; ``Target`` carries
them into every record (the resume log, ``arch.yaml``, the predictor's cache), and
``fingerprint`` names the hardware and software a cached measurement is valid for.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Optional

from pipeline.errors import UserError


@dataclass(frozen=True)
class Target:
    """Where and how a network is timed.

    Args:
        device: "cpu" or "cuda" (resolved: never "auto").
        backend: "eager", "export" or "onnx".
        batch: images per forward.
        threads: CPU threads of torch / ONNX Runtime while timing.
        cores: CPU cores the process is pinned to while timing (None: any).
        warmup: untimed forwards first.
        repeats: timed forwards (the median counts).
        clock: "wall" (the wall clock) or "cpu" (the process's CPU time; one thread on a CPU).
        min_seconds: timed rounds continue past ``repeats`` until they took this long.
        statistic: "min" (the fastest call), "median" of the timed calls, or "auto": the
            device's default (``default_statistic``).
    """

    device: str = "cpu"
    backend: str = "eager"
    batch: int = 1
    threads: int = 1
    cores: Optional[tuple[int, ...]] = None
    warmup: int = 5
    repeats: int = 20
    clock: str = "wall"
    min_seconds: float = 1.0
    statistic: str = "auto"

    def __post_init__(self) -> None:
        if self.statistic == "auto":
            object.__setattr__(self, "statistic", default_statistic(self.device))
        if self.statistic not in STATISTICS:
            raise ValueError(f"statistic must be one of {', '.join(STATISTICS)} or auto, got {self.statistic!r}")

    @classmethod
    def from_settings(cls, latency: dict[str, Any]) -> "Target":
        """The target of a search's ``latency`` section; ``device: auto`` becomes cuda or cpu, and
        ``cuda`` without a GPU (or ONNX Runtime without its CUDA provider) is a UserError."""
        device = resolve_device(latency.get("device", "auto"))
        backend = latency.get("backend", "eager")
        check_backend_on_device(backend, device)
        clock = latency.get("clock", "wall")
        if clock == "cpu" and device == "cuda":
            raise UserError("--latency.clock=cpu times the CPU's work; on cuda the GPU works asynchronously: "
                            "use --latency.clock=wall (or --latency.device=cpu)")
        cores = latency.get("cores")
        return cls(device=device, backend=backend, batch=int(latency.get("batch", 1)),
                   threads=int(latency.get("threads", 1)), cores=tuple(cores) if cores else None,
                   warmup=int(latency.get("warmup", 5)), repeats=int(latency.get("repeats", 20)), clock=clock,
                   min_seconds=float(latency.get("min_seconds", 1.0)), statistic=latency.get("statistic") or "auto")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cores"] = list(self.cores) if self.cores else None
        return d

    @property
    def conditions(self) -> str:
        """What a latency was measured under, as stored with it: a changed one is re-measured."""
        clock = "" if self.clock == "wall" else f"/{self.clock}-clock"
        statistic = "" if self.statistic == "median" else f"/{self.statistic}"
        return f"{self.device}/{self.backend}/batch{self.batch}/threads{self.threads}{clock}{statistic}"

    def latency(self, timing) -> float:
        """The latency (ms) a ``measure.Timing`` gives on this target's clock and statistic."""
        return timing.on(self.clock, self.statistic)

    def describe(self) -> str:
        threads = "" if self.device == "cuda" else f", {self.threads} thread{'s' * (self.threads > 1)}"
        clock = ", CPU-time clock" if self.clock == "cpu" else ""
        statistic = ", fastest call" if self.statistic == "min" else ""
        return f"{device_name(self.device)}, {self.backend}, batch {self.batch}{threads}{clock}{statistic}"

    def cache_key(self) -> dict[str, Any]:
        """Everything a cached measurement depends on: the device's fingerprint, the backend and its
        version, batch, threads, torch. (Warm-up and repeats only set the precision; a measurement
        holds both clocks.)"""
        return {"device": fingerprint(self.device), "backend": self.backend,
                "backend_version": _backend_version(self.backend), "batch": self.batch, "threads": self.threads,
                "torch": _torch_version()}

    def predictor_key(self) -> dict[str, Any]:
        """What a fitted predictor holds for: the measurements' key, and the clock and statistic it was fitted on."""
        return {**self.cache_key(), "clock": self.clock, "statistic": self.statistic}

    def cache_name(self) -> str:
        text = json.dumps(self.cache_key(), sort_keys=True)
        return f"{self.device}-{self.backend}-b{self.batch}-t{self.threads}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


STATISTICS = ("min", "median")


def default_statistic(device: str) -> str:
    """The statistic of a network's timed calls that the search uses unless told otherwise.

    On a CPU, the fastest call: every slower call is the same work plus interference from other
    processes (Python's ``timeit`` documentation makes the same point: "the lowest value gives a
    lower bound for how fast your machine can run the given code snippet; higher values in the
    result vector are typically not caused by variability in Python's speed, but by other
    processes interfering with your timing accuracy"). On this shared 2-core machine a network's
    fastest call, re-measured in fresh processes minutes apart, was within +-10% of itself 8-9
    times in 10, its median call 4-9 times (docs/latency.md). On a GPU, the median of
    synchronised calls: a dedicated GPU's calls repeat closely, and the median is what a stream of
    inferences costs on average, including the launch jitter a deployment sees.
    """
    return "median" if device == "cuda" else "min"


def resolve_device(device: str) -> str:
    """``auto``: cuda when torch sees a GPU, else cpu. ``cuda`` with none is a one-line error."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--latency.device={device!r} is unknown; use auto, cpu or cuda")
    has_gpu = torch.cuda.is_available()
    if device == "auto":
        return "cuda" if has_gpu else "cpu"
    if device == "cuda" and not has_gpu:
        raise UserError("--latency.device=cuda, but torch sees no GPU on this machine; use --latency.device=cpu "
                        "(or run the search on the GPU machine)")
    return device


def check_backend_on_device(backend: str, device: str) -> None:
    """ONNX Runtime on a GPU needs its CUDA provider (the onnxruntime-gpu package)."""
    from pipeline.latency.settings import check_backend_installed
    from pipeline.errors import ConfigError

    try:
        check_backend_installed(backend)
    except ConfigError as e:
        raise UserError(str(e)) from None
    if backend == "onnx" and device == "cuda":
        import onnxruntime

        if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
            raise UserError("--latency.backend=onnx on cuda needs ONNX Runtime's CUDA provider: "
                            "pip install onnxruntime-gpu (or use --latency.device=cpu)")


def fingerprint(device: str) -> str:
    """The hardware a measurement holds for: the CPU model (and cache, core count) or the GPU."""
    if device == "cuda":
        import torch

        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        return (f"{props.name} (compute {props.major}.{props.minor}, {props.total_memory // 2 ** 20} MiB, "
                f"CUDA {torch.version.cuda})")
    info = _cpuinfo()
    parts = [info.get("model name") or platform.processor() or platform.machine()]
    for key in ("cpu family", "model", "stepping", "cache size"):
        if key in info:
            parts.append(f"{key} {info[key]}")
    parts.append(f"{os.cpu_count()} logical CPUs")
    return ", ".join(parts)


def device_name(device: str) -> str:
    """A short name for people: "cpu (AMD EPYC)", "cuda (NVIDIA H200)"."""
    if device == "cuda":
        import torch

        return f"cuda ({torch.cuda.get_device_name(torch.cuda.current_device())})"
    return f"cpu ({_cpuinfo().get('model name') or platform.processor() or platform.machine()})"


def _cpuinfo() -> dict[str, str]:
    """The first processor's entries of /proc/cpuinfo (empty where there is none)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def _torch_version() -> str:
    import torch

    return torch.__version__


def _backend_version(backend: str) -> Optional[str]:
    if backend == "onnx":
        import onnxruntime

        return onnxruntime.__version__
    return None


@contextmanager
def pinned(target: Target) -> Iterator[None]:
    """Threads (torch's intra-op pool) and, if asked, CPU cores pinned while timing; restored after,
    so the proxy's own computations keep the process's settings. The C allocator is held steady
    too (``allocator.keep_freed_memory``: for the rest of the process, which cannot be undone)."""
    import torch

    from pipeline.latency.allocator import keep_freed_memory

    keep_freed_memory()

    threads = torch.get_num_threads()
    affinity = os.sched_getaffinity(0) if target.cores and hasattr(os, "sched_getaffinity") else None
    torch.set_num_threads(target.threads)
    if affinity is not None:
        os.sched_setaffinity(0, set(target.cores))
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
