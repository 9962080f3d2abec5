"""Issue 12: ranks agree, faults end every rank with one clear error, files are shared-readable.

The multi-process tests run real 2-process gloo groups on the CPU (torchrun, or Lightning's own
DDP launcher through the CLI), each bounded by a timeout: a hang fails the test instead of
blocking it.
"""
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import REPO, run_cli
from pipeline.cli import UserError
from pipeline.space import ArchSpec, SearchSpace, SpecError
from pipeline.utils.io import atomic_write_text

ENV1 = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


# ----------------------------------------------------------------------------- files
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}")
        ArchSpec(family="vit", embed_dim=32, num_heads=(2,), mlp_ratio=(2.0,)).save(tmp_path / "arch.yaml")
    finally:
        os.umask(old)
    for name in ("metrics.json", "arch.yaml"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.yaml", "metrics.json"]   # no temp file left


# ----------------------------------------------------------------------------- W&B login
KEY = "a" * 40


@pytest.fixture
def fake_home(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_CONFIG_DIR", "WANDB_IDENTITY_TOKEN_FILE", "NETRC",
                "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _netrc(home: Path, host: str) -> None:
    (home / ".netrc").write_text(f"machine {host}\n  login user\n  password {KEY}\n")
    (home / ".netrc").chmod(0o600)


def test_wandb_login_to_a_self_hosted_server_counts(fake_home, monkeypatch):
    from pipeline.tracking import _logged_in, wandb_logger

    _netrc(fake_home, "wandb.example.com")
    assert not _logged_in()                        # the public cloud is configured: no key for it
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert _logged_in()                            # WANDB_BASE_URL names the self-hosted server
    monkeypatch.delenv("WANDB_BASE_URL")
    (fake_home / ".config" / "wandb").mkdir(parents=True)
    (fake_home / ".config" / "wandb" / "settings").write_text("[default]\nbase_url = https://wandb.example.com\n")
    assert _logged_in()                            # what `wandb login --host` leaves behind
    logger = wandb_logger({"wandb": {"mode": "online"}}, fake_home / "run", job_type="test")
    assert logger and os.environ["WANDB_MODE"] == "online"


def test_wandb_login_is_per_host(fake_home, monkeypatch):
    from pipeline.tracking import _logged_in, wandb_logger

    _netrc(fake_home, "api.wandb.ai")
    assert _logged_in()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert not _logged_in()                        # a cloud key is no login to another server
    with pytest.raises(UserError, match="needs a W&B login for the configured host"):
        wandb_logger({"wandb": {"mode": "online"}}, fake_home / "run", job_type="test")
    monkeypatch.setenv("WANDB_API_KEY", "short")   # a key wandb would reject
    assert not _logged_in()
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert _logged_in()


# ----------------------------------------------------------------------------- bad specs / probes
def test_probe_labels_outside_the_classes_are_an_error(tmp_path):
    from pipeline.proxies.ntk_proxies import _minimal_training
    from pipeline.search.callback import check_probe_labels

    space = SearchSpace.load("demo")   # 10 classes
    check_probe_labels(torch.arange(10), space)
    with pytest.raises(ValueError, match=r"labels run up to 11.*10 classes.*--probe.source=photos"):
        check_probe_labels(torch.arange(12), space)
    net = torch.nn.Linear(3, 4)
    net.num_classes = 4
    with pytest.raises(ValueError, match="outside the network's 4 classes"):
        _minimal_training(net, torch.randn(2, 3), torch.tensor([1, 7]), steps=1, lr=0.1)

    # the CLI: a folder probe with 12 classes for the 10-class demo space, refused before any work
    root = tmp_path / "data"
    for c in range(12):
        (root / "train" / f"c{c:02d}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (20 * c, 0, 0)).save(root / "train" / f"c{c:02d}" / "0.png")
    res = run_cli("search", f"--out_dir={tmp_path / 'out'}", "--probe.source=folder", f"--probe.root={root}",
                  "--probe.n=12", "--wandb.enabled=false", env=ENV1)
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: probe labels run up to 11" in res.stderr and "fixed.num_classes >= 12" in res.stderr
    assert not (tmp_path / "out").exists()


def test_pit_spec_with_heads_changing_inside_a_stage_is_an_error():
    ok = ArchSpec(family="pit", embed_dim=16, num_heads=(2, 2, 4), mlp_ratio=(2.0,) * 3, stage_depths=(2, 1))
    assert ok.stage_depths == (2, 1)
    with pytest.raises(SpecError, match=r"PiT stage 0 has heads \[2, 4\].*same num_heads"):
        ArchSpec(family="pit", embed_dim=16, num_heads=(2, 4, 4), mlp_ratio=(2.0,) * 3, stage_depths=(2, 1))
    d = {"name": "bad", "family": "pit", "choices": {"embed_dim": [16], "stage_depths": [[1, 2], [1, 2]],
                                                     "mlp_ratio": [2], "num_heads": {"values": [2, 4], "per": "layer"}},
         "fixed": {"img_size": 32, "patch_size": 8, "patch_stride": 4, "num_classes": 10}}
    with pytest.raises(SpecError, match="set choices.num_heads.per to 'stage'"):
        SearchSpace.from_dict(d)
    d["choices"]["num_heads"]["per"] = "stage"
    SearchSpace.from_dict(d)


# ----------------------------------------------------------------------------- launcher guard
def test_run_refuses_to_start_under_a_launcher(tmp_path):
    res = run_cli("run", f"--out_dir={tmp_path}", env={"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert res.returncode == 2
    assert "--search.trainer.devices=N" in res.stderr and "--cls.trainer.devices=N" in res.stderr
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- 2-process helpers
def torchrun(script: str, tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, **ENV1}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(path), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_rank_zero_decides_and_every_rank_raises_its_error(tmp_path):
    # Each rank has a folder of its own (no shared filesystem); only rank 0's holds the resume log.
    (tmp_path / "rank0").mkdir()
    (tmp_path / "rank0" / "log.txt").write_text("from rank 0")
    script = """
        import sys, torch, torch.distributed as dist
        from pipeline.distributed import any_rank, is_rank_zero, rank_zero_decides
        dist.init_process_group("gloo")
        r = dist.get_rank()
        mine = f"rank{r}/log.txt"
        got = rank_zero_decides(lambda: open(mine).read())
        flags = any_rank(r == 1), any_rank(False)
        out = open(f"out{r}.txt", "w")
        print(got, flags, is_rank_zero() == (r == 0), file=out, flush=True)
        try:
            rank_zero_decides(lambda: open("missing.txt").read())
        except FileNotFoundError as e:
            print("raised:", e, file=out, flush=True)
        dist.destroy_process_group()
    """
    start = time.time()
    res = torchrun(script, tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert time.time() - start < 120
    outs = [(tmp_path / f"out{r}.txt").read_text().splitlines() for r in (0, 1)]
    assert outs[0] == outs[1] == ["from rank 0 (True, False) True",
                                  "raised: [Errno 2] No such file or directory: 'missing.txt'"]
