"""The small training jobs the multi-process and kill-and-resume tests start, and what they check.

``run_script`` runs ``python -m pipeline`` through JOB_SCRIPT, which adds a callback that dumps
each rank's final weights and can inject a fault (a NaN on one rank, data missing on one rank,
a kill -9 at an exact step); ``kill_when`` kills a command's whole process group at a moment.
"""
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from PIL import Image

from conftest import REPO
from pipeline.data.paths import SHIPPED_DATA_DIR
from pipeline.space import ArchSpec

ENV1 = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def torchrun(script: str, tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    path = tmp_path / "job.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, **ENV1}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(path), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


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


RUN_TINY = ["--stages=[search,cls]", "--search.strategy.name=random", "--search.strategy.random.samples=4",
            "--cls.trainer.max_epochs=2", "--cls.trainer.limit_train_batches=6", "--cls.trainer.limit_val_batches=2",
            "--cls.trainer.enable_progress_bar=false", "--wandb.enabled=false"]


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
