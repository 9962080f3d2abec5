"""Two processes agree: rank 0 decides, ranks end bit-identical, validation counts every image once,
and a fault on one rank ends every rank with one clear error (real 2-process gloo groups on the
CPU, each bounded by a timeout: a hang fails the test instead of blocking it)."""
import json
import time
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from training_jobs import (ENV1, RUN_TINY, assert_no_partial_files, cls_args, run_script, seg_data, torchrun,
                           weights)
from pipeline.space import ArchSpec


@pytest.mark.slow
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
