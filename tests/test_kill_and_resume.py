"""kill -9 at any moment, then the same command again: the run ends bit-identical to an
uninterrupted one (classification, segmentation, the whole `pipeline run`), and no partial file
is ever left behind."""
import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from training_jobs import (ENV1, RUN_TINY, assert_no_partial_files, cls_args, kill_when, run_script, seg_data,
                           weights)
from pipeline.space import ArchSpec


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
