"""The package carries what its commands need: shipped configs and data found through
importlib.resources, ``--config`` by name or file (the user's files win), and a wheel that runs
the demo search from a folder outside the repository."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from importlib.resources import files
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_cli
from pipeline.config import CONFIG_DIR, ConfigError, find_config, resolve_path
from pipeline.search.settings import parse_config
from pipeline.data import paths
from pipeline.space import SearchSpace
from pipeline.space.spec import ArchSpec


def test_shipped_files_live_in_the_package():
    package = Path(str(files("pipeline")))
    assert CONFIG_DIR == package / "configs"
    assert paths.SHIPPED_DATA_DIR == package / "data" / "shipped"
    assert (paths.SHIPPED_DATA_DIR / "fashion_mnist_demo.npz").is_file()
    assert sorted(p.stem for p in (CONFIG_DIR / "spaces").glob("*.yaml")) == [
        "autoformer_base", "autoformer_small", "autoformer_tiny", "demo", "pit_tiny"]


def test_config_by_shipped_name_path_or_user_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the repository: nothing relative to it
    shipped = CONFIG_DIR / "search" / "autoformer_tiny.yaml"
    assert find_config("autoformer_tiny", "search") == shipped
    assert find_config("autoformer_tiny.yaml", "search") == shipped
    assert find_config("configs/search/autoformer_tiny.yaml", "search") == shipped
    assert resolve_path("configs/train/demo_default_arch.yaml") == CONFIG_DIR / "train" / "demo_default_arch.yaml"
    assert resolve_path("data/imagenet") == Path("data/imagenet")  # only configs/... fall back to the package
    from pipeline.correlate.settings import resolve_input  # correlate's inputs (e.g. committed splits) likewise

    assert resolve_input("configs/correlate/default.yaml", "config") == (CONFIG_DIR / "correlate" / "default.yaml").resolve()
    # a user's file wins over the shipped one of the same path and over a shipped name
    mine = tmp_path / "configs" / "search" / "autoformer_tiny.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text(yaml.safe_dump({"run_name": "mine"}))
    assert find_config("configs/search/autoformer_tiny.yaml", "search") == Path("configs/search/autoformer_tiny.yaml")
    mine_cfg = parse_config(["--config=configs/search/autoformer_tiny.yaml"])
    assert mine_cfg["run_name"] == "mine" and mine_cfg["space"] == "demo"  # the rest: the parser's defaults
    (tmp_path / "demo").write_text(yaml.safe_dump({"run_name": "a file named demo"}))
    assert find_config("demo", "search") == Path("demo")
    with pytest.raises(ConfigError, match=r"cls_demo does not exist .* shipped search config.*autoformer_tiny, "
                                          r"demo, pit_tiny"):
        find_config("cls_demo", "search")  # a train config's name is not a search config


@pytest.mark.slow
def test_bad_config_name_is_one_line_and_exit_2(tmp_path):
    res = run_cli("train", "--task", "cls", "--config", "imagenet", cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-800:]
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "imagenet does not exist" in err[0] and "cls_imagenet" in err[0], err
    assert not (tmp_path / "checkpoints").exists()


def _build_wheel(dest: Path) -> Path:
    """Build from a copy of the sources, so the build leaves nothing in the repository."""
    src = dest / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "pipeline", src / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(dest / "dist")], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (dest / "dist").glob("*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_runs_the_demo_search_outside_the_repository(tmp_path):
    wheel = _build_wheel(tmp_path)
    assert wheel.name.startswith("vintk_pipeline-")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("pipeline/configs/search/demo.yaml", "pipeline/configs/spaces/autoformer_tiny.yaml",
                   "pipeline/configs/train/cls_demo.yaml", "pipeline/data/shipped/fashion_mnist_demo.npz",
                   "pipeline/data/shipped/probe_photos/00_astronaut.jpg",
                   "pipeline/data/shipped/seg_demo/images/training/0000.jpg"):
        assert needed in names, needed

    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    user = tmp_path / "elsewhere"
    user.mkdir()
    # the installed wheel first, then the dependencies of this environment -- never the repository
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIPELINE_DATA_DIR")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]])
    where = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], cwd=user, env=env,
                           capture_output=True, text=True, check=True)
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout
    started = time.time()
    res = subprocess.run([sys.executable, "-m", "pipeline", "search", "--strategy.evolution.population=4",
                          "--strategy.evolution.generations=1", "--wandb.mode=disabled"],
                         cwd=user, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    spec = ArchSpec.load(user / "checkpoints" / "search-demo" / "arch.yaml")
    assert SearchSpace.load("demo").validate(spec) == spec and spec.img_size == 32
    print(f"demo search from the wheel: {time.time() - started:.1f} s")
