import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARK = Path(os.environ.get("PIPELINE_BENCHMARK",
                                REPO.parent / "shared" / "benchmarks" / "autoformer_tiny_ood_vit_nas.json"))

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture
def benchmark_path() -> Path:
    if not BENCHMARK.is_file():
        pytest.skip(f"dev benchmark not found at {BENCHMARK} (set PIPELINE_BENCHMARK)")
    return BENCHMARK


# The dev files (../shared/benchmarks/, beside the tiny one) and the space of their benchmark format.
DEV_FILES = {"autoformer_tiny_ood_vit_nas.json": "autoformer_tiny", "vitbench101_autoformer_tiny_kd.jsonl": None,
             "autoformer_small_ood_vit_nas.json": "autoformer_small"}


def dev_entries(benchmark_path: Path, name: str) -> tuple[Path, list]:
    """A dev file beside the tiny one and its entries (skips the test when the file is not there)."""
    from pipeline.groundtruth import load_ground_truth

    path = benchmark_path.parent / name
    if not path.is_file():
        pytest.skip(f"dev benchmark {path} not found")
    return path, load_ground_truth(path, space=DEV_FILES[name])


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
