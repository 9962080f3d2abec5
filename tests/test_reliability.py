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
from pipeline.errors import UserError
from pipeline.data.paths import SHIPPED_DATA_DIR
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


def test_a_run_removes_the_temp_files_a_kill_left_of_its_own_files_only(tmp_path):
    from pipeline.utils.io import remove_stale_temps

    left = [".report.md.4d6l27cv.tmp", ".report.md.x.tmp", ".metrics.json.ab12.tmp", "report.md", ".report.md"]
    for name in left:
        (tmp_path / name).write_text("x")
    remove_stale_temps(tmp_path, ["report.md", "missing.yaml"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.json.ab12.tmp", ".report.md", "report.md"]


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


# ----------------------------------------------------------------------------- classification, 2 processes
JOB_SCRIPT = """
import os, signal, sys, time
from pathlib import Path

import lightning.pytorch as pl
import torch

from pipeline.classification import ClassificationModule
from pipeline.cli import main


class DumpWeights(pl.Callback):   # each rank's weights after training, to compare ranks and runs
    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.state_dict(), Path(os.environ["DUMP_DIR"]) / f"rank{trainer.global_rank}.pt")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if os.environ.get("STEP_SLEEP"):   # slower steps, so that a kill lands mid-epoch (results unchanged)
            time.sleep(float(os.environ["STEP_SLEEP"]))
        if trainer.global_step == int(os.environ.get("KILL_AT_STEP", -1)):   # kill -9 at an exact step
            os.kill(os.getpid(), signal.SIGKILL)


class Trainer(pl.Trainer):        # what the commands build, plus the dump
    def __init__(self, *args, callbacks=None, **kwargs):
        super().__init__(*args, callbacks=[*(callbacks or []), DumpWeights()], **kwargs)


pl.Trainer = Trainer
if os.environ.get("NAN_ON_RANK"):   # a rank-local fault: this rank's loss turns NaN at step 1
    step = ClassificationModule.training_step

    def faulty(self, batch, batch_idx):
        if self.global_rank == int(os.environ["NAN_ON_RANK"]) and self.global_step == 1:
            batch = (batch[0] * float("nan"), batch[1])
        return step(self, batch, batch_idx)

    ClassificationModule.training_step = faulty
argv = sys.argv[1:]
if os.environ.get("LOCAL_RANK", "0") == os.environ.get("MISSING_ON_RANK"):   # this rank's disk lacks the data
    argv = [a + "-missing" if a.startswith("--data.root=") else a for a in argv]
sys.exit(main(argv))
"""


def tiny_folder(root: Path, train=(8, 8, 8), val=(3, 2, 2), size=32) -> Path:
    """root/{train,val}/<class>/*.png; 7 validation images: 2 ranks cannot split them evenly."""
    g = torch.Generator().manual_seed(0)
    for split, counts in (("train", train), ("val", val)):
        for c, n in enumerate(counts):
            (root / split / f"c{c}").mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = torch.randint(0, 200, (size, size, 3), generator=g)
                img[..., c] += 30   # a faint colour cue: not every image is classified right
                Image.fromarray(img.byte().numpy()).save(root / split / f"c{c}" / f"{i}.png")
    return root


def cls_args(tmp_path: Path, devices: int, run_name: str) -> list[str]:
    spec = ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0), img_size=32, patch_size=8,
                    num_classes=3)
    spec.save(tmp_path / "spec.yaml")
    root = tmp_path / "data" if (tmp_path / "data").is_dir() else tiny_folder(tmp_path / "data")
    strategy = ["--trainer.strategy=ddp"] if devices > 1 else []
    return ["train", "--task", "cls", "--arch", str(tmp_path / "spec.yaml"), f"--out_dir={tmp_path / 'out'}",
            f"--run_name={run_name}", "--data.source=folder", f"--data.root={root}", "--data.batch_size=4",
            "--trainer.max_epochs=1", "--trainer.accelerator=cpu", f"--trainer.devices={devices}", *strategy,
            "--trainer.num_sanity_val_steps=0", "--trainer.log_every_n_steps=1", "--optim.warmup_epochs=0",
            "--wandb.enabled=false", "--trainer.enable_progress_bar=false"]


def run_script(tmp_path: Path, args: list[str], timeout: float = 240, **env) -> subprocess.CompletedProcess:
    script = tmp_path / "train_job.py"
    script.write_text(JOB_SCRIPT)
    (tmp_path / "dump").mkdir(exist_ok=True)
    full = {**os.environ, **ENV1, "WANDB_MODE": "offline", "DUMP_DIR": str(tmp_path / "dump"), **env}
    return subprocess.run([sys.executable, str(script), *args], cwd=REPO, env=full, capture_output=True, text=True,
                          timeout=timeout)


def reference_metrics(model_pt: Path, root: Path) -> dict[str, float]:
    """Top-1 and mean loss of exported weights over the validation split, in this one process."""
    from pipeline.classification import ClassificationDataModule, load_exported
    from pipeline.models import build_model

    spec, state = load_exported(model_pt)
    net = build_model(spec)
    net.load_state_dict(state)
    net.eval()
    dm = ClassificationDataModule(source="folder", root=str(root), image_size=32, batch_size=64)
    dm.setup()
    x = torch.stack([dm.val_set[i][0] for i in range(len(dm.val_set))])
    y = torch.tensor([dm.val_set[i][1] for i in range(len(dm.val_set))])
    with torch.no_grad():
        logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits, y)
    return {"n": len(y), "val/top1": float((logits.argmax(-1) == y).float().mean()), "val/loss": float(loss)}


@pytest.mark.slow
def test_cls_on_two_processes_ranks_agree_and_validation_is_exact(tmp_path):
    res = run_script(tmp_path, cls_args(tmp_path, 2, "two"))
    assert res.returncode == 0, res.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / "dump" / f"rank{r}.pt") for r in (0, 1))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)   # bit-identical ranks
    assert "DistributedSampler" not in res.stderr                                   # no padding warning
    metrics = json.loads((tmp_path / "out" / "two" / "metrics.json").read_text())
    ref = reference_metrics(tmp_path / "out" / "two" / "model.pt", tmp_path / "data")
    assert ref["n"] == 7
    # each of the 7 images counted once: a padded duplicate would make it a mean over 8
    assert metrics["val/top1"] == pytest.approx(ref["val/top1"], abs=1e-7)
    assert metrics["val/loss"] == pytest.approx(ref["val/loss"], rel=1e-6, abs=1e-7)
    print(f"\n[2 vs 1] cls: val/top1 {metrics['val/top1']} vs {ref['val/top1']}, val/loss {metrics['val/loss']} "
          f"vs {ref['val/loss']} (2 processes vs 1)")
    assert not list((tmp_path / "out" / "two").glob("*.tmp"))


@pytest.mark.slow
def test_cls_nonfinite_loss_on_one_rank_stops_every_rank_with_one_error(tmp_path):
    start = time.time()
    res = run_script(tmp_path, cls_args(tmp_path, 2, "nan"), timeout=240, NAN_ON_RANK="1")
    seconds = time.time() - start
    assert res.returncode == 2, res.stderr[-3000:]
    lines = [line for line in res.stderr.splitlines() if "NaN or infinite between optimiser steps" in line]
    assert len(lines) == 2 and lines[0] == lines[1], res.stderr[-3000:]   # rank 0 and rank 1 alike
    assert lines[0].startswith("error: the training loss became NaN") and "lower --optim.lr" in lines[0]
    assert seconds < 200
    print(f"\n[fault] NaN loss on rank 1 of 2: both ranks exited with the error after {seconds:.1f} s")


@pytest.mark.slow
def test_cls_data_missing_on_one_rank_ends_every_rank_with_its_error(tmp_path):
    """A fault before the process group exists: rank 1 (started by Lightning's launcher) finds no data.

    It prints its one-line error and exits 2; rank 0, waiting for rank 1 to connect, is ended by
    the launcher's watch over its child processes (every 5 s): no hang. Rank 0 has written only the
    complete arch.yaml and config.yaml, and the command runs again in the same folder.
    """
    start = time.time()
    res = run_script(tmp_path, cls_args(tmp_path, 2, "missing"), timeout=240, MISSING_ON_RANK="1")
    seconds = time.time() - start
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert res.returncode != 0 and len(errors) == 1, res.stderr[-3000:]
    assert errors[0].startswith(f"error: data root {tmp_path / 'data'}-missing does not exist"), errors[0]
    assert sorted(p.name for p in (tmp_path / "out" / "missing").iterdir()) == ["arch.yaml", "config.yaml"]
    assert seconds < 200
    print(f"\n[fault] data missing on rank 1 of 2: exit {res.returncode} after {seconds:.1f} s; {errors[0]}")
    # the data back in place: the same command (here on one process) runs in the same folder
    again = run_script(tmp_path, cls_args(tmp_path, 1, "missing"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert (tmp_path / "out" / "missing" / "model.pt").is_file()


# ----------------------------------------------------------------------------- kill -9 and resume
def kill_when(cmd: list[str], ready, env: dict, timeout: float = 180) -> None:
    """Start ``cmd`` in its own process group; SIGKILL the whole group once ``ready()`` is true."""
    import signal

    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before the kill point"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def weights(path: Path) -> dict:
    """The network's tensors of an exported model.pt or a Lightning checkpoint."""
    from pipeline.classification import load_exported

    if path.suffix == ".pt":
        return load_exported(path)[1]
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_no_partial_files(run_dir: Path) -> None:
    for path in run_dir.rglob("*"):
        assert not path.name.endswith(".tmp") and not path.name.startswith(".write-probe"), path
        if path.suffix in (".ckpt", ".pt"):
            torch.load(path, map_location="cpu", weights_only=True)   # complete, and plain types only


@pytest.mark.slow
@pytest.mark.parametrize("point", ["mid-epoch", "checkpoint-writing"])
def test_cls_killed_then_resumed_ends_bit_identical(tmp_path, point):
    epochs = "--trainer.max_epochs=2"
    slow = {"STEP_SLEEP": "0.25"}
    t0 = time.time()
    ref = run_script(tmp_path, [*cls_args(tmp_path, 1, "ref"), epochs], **slow, DUMP_DIR=str(tmp_path))
    t_ref = time.time() - t0
    assert ref.returncode == 0, ref.stderr[-3000:]

    run_dir = tmp_path / "out" / "killed"
    args = [*cls_args(tmp_path, 1, "killed"), epochs]
    env = {**os.environ, **ENV1, "WANDB_MODE": "offline", "DUMP_DIR": str(tmp_path / "dump"), **slow}
    if point == "mid-epoch":   # last.ckpt of epoch 1 is written; kill a few steps into epoch 2
        first = []
        ready = lambda: (run_dir / "last.ckpt").is_file() and (first.append(time.time()) or  # noqa: E731
                                                               time.time() - first[0] > 0.8)
    else:                      # the moment the first checkpoint file appears
        ready = lambda: any(run_dir.glob("*.ckpt")) or any(run_dir.glob(".*ckpt*"))  # noqa: E731
    kill_when([sys.executable, str(tmp_path / "train_job.py"), *args], ready, env)
    assert not (run_dir / "model.pt").exists()
    assert_no_partial_files(run_dir)
    t0 = time.time()
    again = run_script(tmp_path, [*args, *(["--resume"] if (run_dir / "last.ckpt").is_file() else [])], **slow,
                       DUMP_DIR=str(run_dir))
    assert again.returncode == 0, again.stderr[-3000:]
    print(f"\n[fault] cls kill -9 at {point}: rerun {time.time() - t0:.1f} s "
          f"({'resumed' if '--resume' in str(again.args) else 'restarted'}), uninterrupted run {t_ref:.1f} s")
    final = {"ref": torch.load(tmp_path / "rank0.pt"), "killed": torch.load(run_dir / "rank0.pt")}
    last = {d: weights(tmp_path / "out" / d / "last.ckpt") for d in ("ref", "killed")}
    assert all(torch.equal(final["ref"][k], last["ref"][k]) for k in last["ref"])   # last.ckpt = final weights
    for name, (a, b) in {"final": (final["ref"], final["killed"]), "last.ckpt": (last["ref"], last["killed"]),
                         "model.pt": (weights(tmp_path / "out" / "ref" / "model.pt"),
                                      weights(run_dir / "model.pt"))}.items():
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    (run_dir / "rank0.pt").unlink()
    m_ref, m = (json.loads((d / "metrics.json").read_text()) for d in (tmp_path / "out" / "ref", run_dir))
    assert {k: v for k, v in m.items() if k.startswith("val/")} == {k: v for k, v in m_ref.items() if k.startswith("val/")}
    assert_no_partial_files(run_dir)


RUN_TINY = ["--stages=[search,cls]", "--search.strategy.name=random", "--search.strategy.random.samples=4",
            "--cls.trainer.max_epochs=2", "--cls.trainer.limit_train_batches=6", "--cls.trainer.limit_val_batches=2",
            "--cls.trainer.enable_progress_bar=false", "--wandb.enabled=false"]


@pytest.mark.slow
def test_run_killed_between_stages_and_mid_training_ends_like_an_uninterrupted_run(tmp_path):
    t0 = time.time()
    ref = run_cli("run", "--run_name=ref", f"--out_dir={tmp_path}", *RUN_TINY, env=ENV1)
    assert ref.returncode == 0, ref.stderr[-3000:]
    t_ref = time.time() - t0

    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "pipeline", "run", "--run_name=killed", f"--out_dir={tmp_path}", *RUN_TINY]
    env = {**os.environ, **ENV1, "WANDB_MODE": "offline"}
    kill_when(cmd, lambda: (run_dir / "stages" / "search.done.json").is_file(), env)   # between the stages
    assert not (run_dir / "cls" / "last.ckpt").exists()
    kill_when(cmd, lambda: (run_dir / "cls" / "last.ckpt").is_file(), env)             # cls: epoch 1 of 2 saved
    assert not (run_dir / "stages" / "cls.done.json").exists()
    t0 = time.time()
    again = run_cli("run", "--run_name=killed", f"--out_dir={tmp_path}", *RUN_TINY, env=ENV1)
    assert again.returncode == 0, again.stderr[-3000:]
    print(f"\n[fault] run kill -9 between stages, then in cls: rerun {time.time() - t0:.1f} s, "
          f"uninterrupted run {t_ref:.1f} s")
    assert "search: finished earlier" in again.stdout and "--resume" in again.stdout

    assert (run_dir / "search" / "arch.yaml").read_text() == (tmp_path / "ref" / "search" / "arch.yaml").read_text()
    for name in ("model.pt", "last.ckpt"):
        a, b = weights(tmp_path / "ref" / "cls" / name), weights(run_dir / "cls" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    m_ref, m = (json.loads((d / "cls" / "metrics.json").read_text()) for d in (tmp_path / "ref", run_dir))
    assert {k: v for k, v in m.items() if k.startswith("val/")} == {k: v for k, v in m_ref.items() if k.startswith("val/")}
    assert_no_partial_files(run_dir)


# ----------------------------------------------------------------------------- segmentation, 2 processes
def seg_data(tmp_path: Path, train: int = 8, val: int = 7) -> Path:
    """A copy of the shipped demo scenes with an odd number of validation images."""
    src, root = SHIPPED_DATA_DIR / "seg_demo", tmp_path / "seg"
    for kind, ext in (("images", "jpg"), ("annotations", "png")):
        for split, n in (("training", train), ("validation", val)):
            (root / kind / split).mkdir(parents=True)
            for i in range(n):
                name = f"{i:04d}.{ext}"
                (root / kind / split / name).write_bytes((src / kind / split / name).read_bytes())
    return root


@pytest.mark.slow
def test_seg_on_two_processes_ranks_agree_and_validation_matches_one_process(tmp_path):
    spec = ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0), img_size=32, patch_size=4,
                    num_classes=10, space="demo")
    spec.save(tmp_path / "arch.yaml")
    args = ["train", "--task", "seg", "--arch", str(tmp_path / "arch.yaml"), f"--data.data_root={seg_data(tmp_path)}",
            f"--out_dir={tmp_path}", "--run_name=seg", "--trainer.max_steps=2", "--trainer.val_check_interval=2",
            "--data.batch_size=2", "--data.num_workers=0", "--trainer.accelerator=cpu", "--wandb.mode=disabled",
            "--eval.log_images=0"]
    two = run_script(tmp_path, [*args, "--trainer.devices=2", "--trainer.strategy=ddp"], timeout=400)
    assert two.returncode == 0, two.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / "dump" / f"rank{r}.pt") for r in (0, 1))
    # every parameter bit-identical; BatchNorm running statistics are per rank (DDP broadcasts rank 0's
    # at each forward), and only rank 0's are saved
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0 if "running_" not in k)
    metrics2 = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    # the same weights (best.ckpt) validated again by one process: --resume at max_steps trains nothing
    one = run_script(tmp_path, [*args, "--resume", "--trainer.devices=1"], timeout=400)
    assert one.returncode == 0, one.stderr[-3000:]
    metrics1 = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    assert metrics1["steps"] == metrics2["steps"] == 2
    for key in ("mIoU", "aAcc", "mAcc", "per_class_IoU"):
        assert metrics1[key] == metrics2[key], key
    print(f"\n[2 vs 1] seg: mIoU {metrics2['mIoU']} (2 processes) vs {metrics1['mIoU']} (1 process), "
          f"aAcc {metrics2['aAcc']} vs {metrics1['aAcc']}")


@pytest.mark.slow
def test_seg_killed_then_resumed_ends_bit_identical(tmp_path):
    """Iteration-based: 8 steps of 2 images over 8 scenes (4 per epoch), last.ckpt at every 2nd step.

    Killed at step 3 (mid-epoch 0, resumes from step 2), step 4 (just after the epoch's end was
    saved) and step 7 (mid-epoch 1, with a worker process): every resumed run ends with the weights,
    checkpoint and metrics of the uninterrupted single-process run.
    """
    spec = ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0), img_size=32, patch_size=4,
                    num_classes=10, space="demo")
    spec.save(tmp_path / "arch.yaml")
    root = seg_data(tmp_path)

    def args(name: str, workers: int) -> list[str]:
        return ["train", "--task", "seg", "--arch", str(tmp_path / "arch.yaml"), f"--data.data_root={root}",
                f"--out_dir={tmp_path}", f"--run_name={name}", "--trainer.max_steps=8",
                "--trainer.val_check_interval=2", "--data.batch_size=2", f"--data.num_workers={workers}",
                "--trainer.accelerator=cpu", "--wandb.mode=disabled", "--eval.log_images=0"]

    def outcome(run_dir: Path) -> tuple[dict, dict, dict]:
        metrics = json.loads((run_dir / "metrics.json").read_text())
        return (torch.load(run_dir / "rank0.pt"), weights(run_dir / "last.ckpt"),
                {k: metrics[k] for k in ("steps", "mIoU", "aAcc", "mAcc", "per_class_IoU")})

    t0 = time.time()
    ref = run_script(tmp_path, args("ref", 0), DUMP_DIR=str(tmp_path / "ref"))
    t_ref = time.time() - t0
    assert ref.returncode == 0, ref.stderr[-3000:]
    expected = outcome(tmp_path / "ref")
    for kill_at, saved_at, workers in ((3, 2, 0), (4, 4, 0), (7, 6, 1)):
        name = f"killed{kill_at}"
        run_dir = tmp_path / name
        killed = run_script(tmp_path, args(name, workers), KILL_AT_STEP=str(kill_at))
        assert killed.returncode == -9, killed.stderr[-3000:]
        assert torch.load(run_dir / "last.ckpt", weights_only=True)["global_step"] == saved_at
        assert not (run_dir / "metrics.json").exists()
        assert_no_partial_files(run_dir)
        t0 = time.time()
        again = run_script(tmp_path, [*args(name, workers), "--resume"], DUMP_DIR=str(run_dir))
        assert again.returncode == 0, again.stderr[-3000:]
        got = outcome(run_dir)
        for what, a, b in (("final weights", expected[0], got[0]), ("last.ckpt", expected[1], got[1])):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), (kill_at, what)
        assert got[2] == expected[2], kill_at
        assert_no_partial_files(run_dir)
        print(f"\n[fault] seg kill -9 at step {kill_at} (last.ckpt of step {saved_at}, {workers} workers): "
              f"resumed in {time.time() - t0:.1f} s, bit-identical (uninterrupted run {t_ref:.1f} s)")


@pytest.mark.slow
def test_run_gives_its_stages_two_processes(tmp_path):
    one = run_cli("run", "--run_name=one", f"--out_dir={tmp_path}", *RUN_TINY, "--stages=[search]", env=ENV1)
    assert one.returncode == 0, one.stderr[-3000:]
    ddp = ["--search.trainer.devices=2", "--search.trainer.strategy=ddp", "--search.trainer.accelerator=cpu",
           "--cls.trainer.devices=2", "--cls.trainer.strategy=ddp", "--cls.trainer.accelerator=cpu"]
    two = run_cli("run", "--run_name=two", f"--out_dir={tmp_path}", *RUN_TINY, *ddp, env=ENV1)
    assert two.returncode == 0, two.stderr[-3000:]
    run_dir = tmp_path / "two"
    assert (run_dir / "search" / "arch.yaml").read_text() == (tmp_path / "one" / "search" / "arch.yaml").read_text()
    assert json.loads((run_dir / "stages" / "cls.done.json").read_text())["config"]["trainer"]["devices"] == 2
    assert weights(run_dir / "cls" / "model.pt") and (run_dir / "report.md").is_file()
    assert two.stdout.count("[run] finished") == 1   # one coordinator, not one per rank
    assert_no_partial_files(run_dir)
