import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# pytest-xdist (`-n auto` in pyproject's addopts) runs one worker per core. Each worker takes its share
# of the cores for torch, in-process and in the subprocesses its tests start, so the workers do not
# oversubscribe the machine.
if os.environ.get("PYTEST_XDIST_WORKER"):
    _share = max(1, (os.cpu_count() or 1) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    os.environ.setdefault("OMP_NUM_THREADS", str(_share))


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``CI=true`` no test passes by skipping: however it skipped (``pytest.skip``, a ``skipif``
    mark, a missing file), its report becomes a failure that gives the reason."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and under_ci() and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"{reason} (CI=true: a test may not skip in CI)"


def missing_shared(reason: str) -> None:
    """A test whose data only our CI provides (``../shared/``) skips in a plain clone, saying why;
    under ``CI=true`` it fails instead, so CI never passes by skipping."""
    if under_ci():
        pytest.fail(f"{reason} (CI=true: CI must provide it)")
    pytest.skip(reason)


def dev_benchmark(name: str = "ood_vit_nas_tiny") -> Path:
    """A named dev benchmark's file from the cache or ``../shared/benchmarks`` (pipeline.benchmark_files),
    SHA-256 checked; never downloaded (tests do not reach the internet)."""
    from pipeline.benchmark_files import BENCHMARKS, SHARED_DIR, cache_dir, find_benchmark

    path = find_benchmark(name)
    if path is None:
        missing_shared(f"dev benchmark {BENCHMARKS[name].file} is in neither {SHARED_DIR} nor the cache "
                       f"{cache_dir()} (set PIPELINE_BENCHMARKS to a folder holding it)")
    return path


@pytest.fixture
def benchmark_path() -> Path:
    return dev_benchmark("ood_vit_nas_tiny")


# The dev files by file name: their benchmark name (pipeline.benchmark_files) and the space of their format.
DEV_FILES = {"autoformer_tiny_ood_vit_nas.json": ("ood_vit_nas_tiny", "autoformer_tiny"),
             "vitbench101_autoformer_tiny_kd.jsonl": ("vitbench101_autoformer_tiny_kd", None),
             "autoformer_small_ood_vit_nas.json": ("ood_vit_nas_small", "autoformer_small")}


def dev_entries(name: str) -> tuple[Path, list]:
    """A dev file and its entries (found as :func:`dev_benchmark` finds it: skipped when absent, except
    under CI=true)."""
    from pipeline.groundtruth import load_ground_truth

    benchmark, space = DEV_FILES[name]
    path = dev_benchmark(benchmark)
    return path, load_ground_truth(path, space=space)


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 600):
    """Run ``python -m pipeline ARGS`` in a subprocess, as a user would."""
    import subprocess

    full_env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def offline_artifact_has(run_dir: Path, *files: Path) -> bool:
    """Whether the offline W&B run under ``run_dir/wandb`` logged an artifact holding these exact files.

    An artifact's manifest records each file's MD5 (base64) in the run's log, ``run-*.wandb``.
    """
    import base64
    import hashlib

    logs = b"".join(p.read_bytes() for p in run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    return bool(logs) and all(base64.b64encode(hashlib.md5(Path(f).read_bytes()).digest()) in logs for f in files)
