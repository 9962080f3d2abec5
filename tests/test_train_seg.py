"""`python -m pipeline train --task seg`: mmseg segmentation of searched ViTs under Lightning."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO, offline_artifact_has, run_cli

import pipeline.segmentation  # noqa: F401  (compat + registrations)
from pipeline import cli
from pipeline.errors import UserError
from pipeline.models.build import build_model
from pipeline.segmentation.backbone import SpecViT, resize_abs_pos, resize_rel_table
from pipeline.segmentation.checkpoint import CheckpointError, init_backbone
from pipeline.segmentation.model import build_segmentor, segmentor_config
from pipeline.segmentation.module import SegIoUMetric
from pipeline.segmentation.task import SegmentationTask, majority_baseline
from pipeline.space import SearchSpace
from pipeline.space.spec import ArchSpec
from pipeline.train import runner
from pipeline.train.cli import parse_config
from pipeline.train.command import main

DEMO_SPEC = ArchSpec(family="vit", embed_dim=64, num_heads=(2, 2, 2), mlp_ratio=(2.0, 2.0, 2.0), img_size=32,
                     patch_size=4, num_classes=10, space="demo")
TINY_ARGS = ["--wandb.mode=disabled", "--trainer.accelerator=cpu", "--data.num_workers=0"]


def seg_main(args: list[str]) -> int:
    return main(["--task", "seg", *args])


def _spec_file(tmp_path: Path, spec: ArchSpec = DEMO_SPEC) -> Path:
    return spec.save(tmp_path / "arch.yaml")


# ---------------------------------------------------------------------------------- compat
@pytest.mark.slow
def test_mmseg_models_import_with_mmcv_lite():
    """A fresh interpreter: importing the compat first makes `import mmseg.models` work."""
    code = ("import pipeline.compat as c, mmseg.models, mmcv.ops; "
            "from mmseg.models.decode_heads import UPerHead, FCNHead; "
            "print(c.MMCV_OPS_COMPAT, getattr(mmcv.ops, 'PIPELINE_COMPAT', False))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    try:
        import mmcv._ext  # noqa: F401
        full_mmcv = True
    except ImportError:
        full_mmcv = False
    assert out.stdout.split() == ([str(not full_mmcv)] * 2)


def test_compat_point_sample_and_focal_loss():
    from mmcv.ops import point_sample, sigmoid_focal_loss
    from mmseg.models.losses.focal_loss import py_sigmoid_focal_loss

    feat = torch.arange(16.0).view(1, 1, 4, 4)
    centers = torch.tensor([[[0.125, 0.125], [0.875, 0.125], [0.375, 0.625]]])  # (x, y) of pixel centres
    assert point_sample(feat, centers).flatten().tolist() == [0.0, 3.0, 9.0]
    logits, target = torch.randn(6, 4), torch.tensor([0, 3, 1, 4, 2, 0])  # 4 = background
    ours = sigmoid_focal_loss(logits, target, 2.0, 0.25, None, "none")
    onehot = torch.nn.functional.one_hot(target, 5)[:, :4].float()
    ref = py_sigmoid_focal_loss(logits, onehot, gamma=2.0, alpha=0.25, reduction="none")
    assert torch.allclose(ours, ref, atol=1e-6)
    with pytest.raises(ImportError, match="mmcv-lite"):
        from mmcv.ops import PSAMask  # noqa: F401


def test_compat_steps_aside_for_real_mmcv_ops(monkeypatch):
    import pipeline.compat.mmcv_ops as compat

    real = types.ModuleType("mmcv.ops")  # stands for a full mmcv build whose ops import fine
    monkeypatch.setitem(sys.modules, "mmcv.ops", real)
    monkeypatch.setattr(compat, "_installed", None)
    assert compat.install() is False
    assert sys.modules["mmcv.ops"] is real


# -------------------------------------------------------------------------------- backbone
@pytest.mark.parametrize("space,img", [("demo", 64), pytest.param("autoformer_tiny", 64, marks=pytest.mark.slow),
                                       pytest.param("pit_tiny", 96, marks=pytest.mark.slow)])
def test_backbone_feature_shapes(space, img):
    spec = SearchSpace.load(space).sample(random.Random(0))
    b = SpecViT(spec.to_dict(), img_size=img)
    feats = b(torch.randn(2, 3, img, img))
    assert len(feats) == len(b.out_indices) == len(b.channels)
    for f, c, s in zip(feats, b.channels, b.strides):
        grid = (img - spec.patch_size) // s + 1 if spec.family == "vit" else None
        assert f.shape[:2] == (2, c)
        if grid:
            assert f.shape[-2:] == (grid, grid)
    if spec.family == "vit":
        assert b.out_indices[-1] == spec.depth - 1 and len(feats) == 4
    else:  # one map per stage, widths base_dim x heads, the grid halving
        assert len(feats) == len(spec.stage_depths)
        assert b.channels == [spec.layer_width(i) for i in b.out_indices]
        assert [f.shape[-1] for f in feats] == sorted([f.shape[-1] for f in feats], reverse=True)
    # the whole segmentor derives the heads' in_channels from the spec and gives full-size logits
    cfg = _cfg(["--data.crop_size=[%d,%d]" % (img, img), "--model.decode_head.channels=16",
                "--model.auxiliary_head.channels=8"])
    seg = build_segmentor(segmentor_config(spec, cfg, num_classes=5)).eval()
    assert list(seg.decode_head.in_channels) == (b.channels if spec.family == "pit"
                                                 else [max(b.channels)] * 4)
    with torch.no_grad():
        logits = seg.encode_decode(torch.randn(1, 3, img, img), [dict(img_shape=(img, img))])
    assert logits.shape == (1, 5, img, img)


def _cfg(overrides=()):
    return parse_config("seg", list(overrides))[0]   # the seg demo config


# ------------------------------------------------------------------------------ checkpoint
def _export(path: Path, spec: ArchSpec, seed: int = 1) -> dict:
    state = build_model(spec, seed=seed).state_dict()
    torch.save({"spec": spec.to_dict(), "state_dict": state, "num_classes": spec.num_classes,
                "metrics": {"val/top1": 0.5}}, path)
    return state


def test_backbone_init_from_classification_export(tmp_path):
    ckpt = tmp_path / "model.pt"
    state = _export(ckpt, DEMO_SPEC)
    b = SpecViT(DEMO_SPEC.to_dict(), img_size=64)  # grid 8x8 in the checkpoint -> 16x16 here
    report = init_backbone(b, ckpt)
    got = b.model.state_dict()
    for key in ("patch_embed.proj.weight", "blocks.2.attn.qkv.weight", "blocks.1.mlp.fc2.bias",
                "cls_token.cls_token"):
        assert torch.equal(got[key], state[key]), key
    pos = got["pos_embed.pos_embed"]
    assert pos.shape == (1, 1 + 16 * 16, 64)
    assert torch.equal(pos[:, :1], state["pos_embed.pos_embed"][:, :1])
    assert torch.allclose(pos, resize_abs_pos(state["pos_embed.pos_embed"], (16, 16), (8, 8)))
    assert "head.weight" in report["unused"] and report["resized"]

    # relative position tables interpolated to a larger clipping distance; PiT grids resized too
    rel = ArchSpec(family="vit", embed_dim=64, num_heads=(2, 2), mlp_ratio=(2.0, 2.0), img_size=32, patch_size=8,
                   head_dim=32, rel_pos=True, rel_pos_max=3)
    state = _export(ckpt, rel)
    b = SpecViT(rel.to_dict(), img_size=64, rel_pos_max=6)
    init_backbone(b, ckpt)
    table = b.model.state_dict()["blocks.0.attn.rel_k.table_v"]
    old = state["blocks.0.attn.rel_k.table_v"]
    assert table.shape == (14, 32) and torch.equal(table[0], old[0])
    assert torch.allclose(table[[1, -1]], old[[1, -1]]) and torch.allclose(table, resize_rel_table(old, 6))
    pit = ArchSpec(family="pit", embed_dim=16, num_heads=(2, 4), mlp_ratio=(2.0, 2.0), stage_depths=(1, 1),
                   img_size=64, patch_size=16, patch_stride=8)
    _export(ckpt, pit)
    b = SpecViT(pit.to_dict(), img_size=96)
    init_backbone(b, ckpt)
    assert b.model.state_dict()["pos_embed.pos_embed"].shape[-2:] == (11, 11)


def test_backbone_init_rejects_other_spec_and_bad_files(tmp_path):
    ckpt = tmp_path / "model.pt"
    _export(ckpt, DEMO_SPEC)
    other = ArchSpec(family="vit", embed_dim=96, num_heads=(2, 2, 2), mlp_ratio=(2.0, 2.0, 2.0), img_size=32,
                     patch_size=4)
    with pytest.raises(CheckpointError, match=r"different architecture.*embed_dim: checkpoint 64 vs trained 96"):
        init_backbone(SpecViT(other.to_dict(), img_size=64), ckpt)
    with pytest.raises(CheckpointError, match="does not exist"):
        init_backbone(SpecViT(DEMO_SPEC.to_dict()), tmp_path / "missing.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="not a classification export"):
        init_backbone(SpecViT(DEMO_SPEC.to_dict()), tmp_path / "odd.pt")


# ---------------------------------------------------------------------------------- metric
def test_iou_metric_matches_hand_computation():
    gt = torch.tensor([[0, 0, 1, 1],
                       [0, 0, 1, 1],
                       [2, 2, 255, 255],
                       [2, 2, 2, 0]])
    pred = torch.tensor([[0, 1, 1, 1],
                         [0, 0, 1, 2],
                         [2, 2, 0, 0],
                         [0, 2, 2, 0]])
    # class 0: inter 4 (gt 5, pred 5 on valid pixels) -> 4/6; class 1: inter 3 (gt 4, pred 4) -> 3/5;
    # class 2: inter 4 (gt 5, pred 5) -> 4/6; aAcc = 11 / 14 valid pixels
    ious = [4 / 6, 3 / 5, 4 / 6]
    metric = SegIoUMetric(ignore_index=255)
    metric.dataset_meta = {"classes": ("a", "b", "c")}
    metric.process({}, [{"pred_sem_seg": {"data": pred[None]}, "gt_sem_seg": {"data": gt[None]}}])
    out = metric.evaluate(size=1)
    assert out["mIoU"] == pytest.approx(round(100 * np.mean(ious), 2))
    assert out["aAcc"] == pytest.approx(round(100 * 11 / 14, 2))
    assert [out["IoU.a"], out["IoU.b"], out["IoU.c"]] == pytest.approx([round(100 * v, 2) for v in ious])

    # the majority baseline (from label histograms) equals the metric on a constant prediction
    counts = torch.bincount(gt[gt != 255].flatten(), minlength=3).numpy()
    metric.process({}, [{"pred_sem_seg": {"data": torch.full_like(gt, 2)[None]}, "gt_sem_seg": {"data": gt[None]}}])
    const = metric.evaluate(size=1)
    base = majority_baseline(np.array([1, 2, 9]), counts, ["a", "b", "c"])
    assert base == {"class": "c", "mIoU": const["mIoU"], "aAcc": const["aAcc"]}


# -------------------------------------------------------------------------------- training
def _ade_folder(root: Path, labels: int = 150, n_train: int = 3, n_val: int = 2, size=(48, 64)) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("training", n_train), ("validation", n_val)):
        (root / "images" / split).mkdir(parents=True)
        (root / "annotations" / split).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)
            mask = np.zeros(size, dtype=np.uint8)
            mask[: size[0] // 2] = rng.integers(0, labels + 1)
            mask[size[0] // 2:] = rng.integers(1, labels + 1)
            Image.fromarray(img).save(root / "images" / split / f"ADE_{split}_{i:08d}.jpg")
            Image.fromarray(mask).save(root / "annotations" / split / f"ADE_{split}_{i:08d}.png")
    return root


def _cityscapes_folder(root: Path, size=(32, 64)) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            stem = f"aachen_{i:06d}_000019"
            img_dir, gt_dir = root / "leftImg8bit" / split / "aachen", root / "gtFine" / split / "aachen"
            img_dir.mkdir(parents=True, exist_ok=True)
            gt_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, size=(*size, 3), dtype=np.uint8)).save(
                img_dir / f"{stem}_leftImg8bit.png")
            mask = rng.integers(0, 19, size=size, dtype=np.uint8)
            mask[:4] = 255
            Image.fromarray(mask).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
    return root


@pytest.mark.parametrize("dataset", [pytest.param("ade20k", marks=pytest.mark.slow), "cityscapes"])
def test_one_training_step_of_the_real_dataset_configs(tmp_path, capsys, dataset):
    """The ADE20K / Cityscapes configs (mmseg's dataset classes, pipelines and IoUMetric) on tiny
    generated folders, with sliding-window validation."""
    if dataset == "ade20k":
        root, classes = _ade_folder(tmp_path / "ADEChallengeData2016"), 150
        geometry = ["--data.crop_size=[32,32]", "--data.scale=[64,32]", "--data.test_scale=[64,32]",
                    "--eval.mode=slide", "--eval.crop=[16,16]", "--eval.stride=[12,12]"]  # tiny windows: padded
    else:
        root, classes = _cityscapes_folder(tmp_path / "cityscapes"), 19
        geometry = ["--data.crop_size=[32,64]", "--data.scale=[64,32]", "--data.test_scale=[128,64]",
                    "--eval.crop=[32,48]", "--eval.stride=[24,32]"]
    arch = _spec_file(tmp_path, ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0),
                                         img_size=32, patch_size=8))
    rc = seg_main(["--config", str(REPO / f"configs/train/seg_{dataset}.yaml"), "--arch", str(arch),
                   f"--data.data_root={root}", *geometry, "--data.batch_size=2",
                   "--model.decode_head.channels=16", "--model.auxiliary_head.channels=8",
                   "--trainer.max_steps=1", "--trainer.val_check_interval=1", "--trainer.num_sanity_val_steps=0",
                   "--eval.log_images=2", f"--out_dir={tmp_path}", *TINY_ARGS])
    assert rc == 0
    out = tmp_path / f"seg-{dataset}"
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steps"] == 1 and 0 <= summary["mIoU"] <= 100
    assert len(summary["per_class_IoU"]) == classes and summary["majority_baseline"] is not None
    assert "final val mIoU" in capsys.readouterr().out
    for name in ("best.ckpt", "last.ckpt"):
        ckpt = torch.load(out / name, map_location="cpu", weights_only=True)
        assert all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
        assert "model.backbone.model.pos_embed.pos_embed" in ckpt["state_dict"]
    assert ckpt["hyper_parameters"]["evaluation"]["mode"] == "slide"
    assert ArchSpec.load(out / "arch.yaml").embed_dim == 32
    assert (out / "config.yaml").is_file() and (out / "val_examples.png").is_file()


@pytest.mark.slow
def test_demo_learns(tmp_path):
    """A short demo run (a cheaper head: no neck, all maps at the token stride) clearly beats the
    untrained model and the majority-class baseline (same seed, the whole val set)."""
    arch = _spec_file(tmp_path)
    common = ["--arch", str(arch), f"--out_dir={tmp_path}", "--data.batch_size=4", "--model.neck=false",
              "--eval.log_images=0", "--trainer.num_sanity_val_steps=0", "--optim.warmup_iters=10", *TINY_ARGS]
    assert seg_main([*common, "--run_name=untrained", "--trainer.max_steps=0"]) == 0
    untrained = json.loads((tmp_path / "untrained" / "metrics.json").read_text())
    assert seg_main([*common, "--run_name=short", "--trainer.max_steps=300",
                     "--trainer.val_check_interval=300"]) == 0
    trained = json.loads((tmp_path / "short" / "metrics.json").read_text())
    baseline = trained["majority_baseline"]
    assert baseline["class"] == "background" and baseline["mIoU"] < 15
    assert trained["mIoU"] > untrained["mIoU"] + 5, (trained["mIoU"], untrained["mIoU"])
    assert trained["mIoU"] > baseline["mIoU"] + 4, (trained["mIoU"], baseline)
    # it separates garments from the background (the background IoU of "all background" is the
    # background share, = the baseline's aAcc) and recognises at least one garment class
    per_class = trained["per_class_IoU"]
    assert per_class["background"] > baseline["aAcc"] + 8, per_class
    assert max(v for k, v in per_class.items() if k != "background") > 10, per_class


# ------------------------------------------------------------------------------- bad input
def _demo_copy(tmp_path: Path, n: int = 4) -> Path:
    src = REPO / "pipeline" / "data" / "shipped" / "seg_demo"
    root = tmp_path / "seg"
    for kind, ext in (("images", "jpg"), ("annotations", "png")):
        for split in ("training", "validation"):
            (root / kind / split).mkdir(parents=True)
            for i in range(n):
                name = f"{i:04d}.{ext}"
                (root / kind / split / name).write_bytes((src / kind / split / name).read_bytes())
    return root


def _bad_run(tmp_path, root) -> list[str]:
    return ["--arch", str(_spec_file(tmp_path)), f"--data.data_root={root}", f"--out_dir={tmp_path}",
            *TINY_ARGS]


def test_bad_label_size_mismatch_and_missing_root(tmp_path):
    root = _demo_copy(tmp_path)
    bad = root / "annotations" / "training" / "0002.png"
    mask = np.array(Image.open(bad))
    mask[0, 0] = 7  # the demo set has 6 classes
    Image.fromarray(mask).save(bad)
    with pytest.raises(UserError, match=r"0002\.png holds label value\(s\) \[7\] outside the class list"):
        seg_main(_bad_run(tmp_path, root))
    mask[0, 0] = 255  # the ignore index is fine, a wrong size is not
    Image.fromarray(mask[:-3]).save(bad)
    with pytest.raises(UserError, match=r"size mismatch: image .*0002\.jpg is 64x64 .* mask .*0002\.png is 64x61"):
        seg_main(_bad_run(tmp_path, root))
    (root / "annotations" / "training" / "0002.png").unlink()
    with pytest.raises(UserError, match=r"0002\.jpg has no mask: .*0002\.png does not exist"):
        seg_main(_bad_run(tmp_path, root))
    with pytest.raises(UserError, match=r"dataset root .*nowhere does not exist.*expected layout"):
        seg_main(_bad_run(tmp_path, tmp_path / "nowhere"))


def test_backbone_ckpt_with_other_spec_fails_before_training(tmp_path):
    ckpt = tmp_path / "model.pt"
    _export(ckpt, DEMO_SPEC)
    other = _spec_file(tmp_path, ArchSpec(family="vit", embed_dim=64, num_heads=(4, 4, 4), mlp_ratio=(2.0,) * 3,
                                          img_size=32, patch_size=4))
    with pytest.raises(CheckpointError, match="num_heads"):
        seg_main(["--arch", str(other), "--backbone-ckpt", str(ckpt), f"--out_dir={tmp_path}", *TINY_ARGS])


@pytest.mark.parametrize("config", ["seg_ade20k", "seg_cityscapes"])
def test_real_data_config_without_arch_stops_before_any_work(tmp_path, monkeypatch, capsys, config):
    """No --arch, no --backbone_ckpt and no default_arch: exit 2 with one line naming --arch,
    before the data is looked at (its folder does not exist here) and with no output folder."""
    monkeypatch.chdir(tmp_path)   # the config's own out_dir (checkpoints/) is relative to here
    assert cli.main(["train", "--task", "seg", "--config", f"configs/train/{config}.yaml",
                     "--wandb.enabled=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no architecture given") and len(err.splitlines()) == 1, err
    assert "--arch" in err and "--backbone_ckpt" in err
    assert not any(tmp_path.iterdir())


def test_spec_resolution_order(tmp_path):
    """--arch, else the resumed run's spec, else the backbone checkpoint's, else default_arch."""
    ckpt = tmp_path / "model.pt"
    _export(ckpt, DEMO_SPEC)
    other = ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0), img_size=32, patch_size=8)
    arch = str(other.save(tmp_path / "other.yaml"))

    def resolve(*args):
        cfg = parse_config("seg", [f"--out_dir={tmp_path}", "--run_name=run", *args])[0]
        choice = runner.resolve_spec(SegmentationTask(), cfg, tmp_path / "run")
        return choice.spec, choice.source

    default, source = resolve()                                       # the demo config's default_arch
    assert default == ArchSpec.load(REPO / "configs" / "train" / "demo_default_arch.yaml")
    assert "default spec" in source
    spec, source = resolve(f"--backbone_ckpt={ckpt}")                  # the checkpoint's spec, not the default
    assert spec == DEMO_SPEC and "backbone checkpoint" in source
    assert resolve("--backbone-ckpt", str(ckpt))[0] == DEMO_SPEC       # the old spelling still works
    assert resolve("--arch", arch, f"--backbone_ckpt={ckpt}")[0] == other   # an explicit --arch wins
    assert resolve("--arch", arch)[0] == other
    DEMO_SPEC.save(tmp_path / "run" / "arch.yaml")                      # a run to resume
    assert resolve("--resume")[0] == DEMO_SPEC                          # its own spec, not default_arch
    with pytest.raises(UserError, match="--resume: .*is not the architecture of"):
        resolve("--resume", "--arch", arch)
    other.save(tmp_path / "run" / "arch.yaml")
    spec, source = resolve("--resume", f"--backbone_ckpt={ckpt}")       # the run's spec before the checkpoint's
    assert spec == other and "being resumed" in source
    # the real-data configs have no default_arch
    cfg = parse_config("seg", ["--config", str(REPO / "configs/train/seg_ade20k.yaml")])[0]
    assert cfg["default_arch"] is None and cfg["backbone_ckpt"] is None
    with pytest.raises(UserError, match="pass --arch .* or --backbone_ckpt"):
        runner.resolve_spec(SegmentationTask(), cfg, tmp_path / "x")
    cfg["backbone_ckpt"] = str(ckpt)
    from_ckpt = runner.resolve_spec(SegmentationTask(), cfg, tmp_path / "x")
    assert from_ckpt.spec == DEMO_SPEC and from_ckpt.file is None   # a checkpoint is handed over as a model, not an arch


def test_resume_with_another_arch_fails_before_work(tmp_path):
    DEMO_SPEC.save(tmp_path / "run" / "arch.yaml")
    arch = _spec_file(tmp_path, ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0),
                                         img_size=32, patch_size=8))
    with pytest.raises(UserError, match="drop --arch or pick another --run_name"):
        seg_main(["--arch", str(arch), "--resume", f"--out_dir={tmp_path}", "--run_name=run", *TINY_ARGS])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["arch.yaml"]


# --------------------------------------------------------------------------------------- CLI
def _cli(*args: str):
    return run_cli("train", "--task", "seg", *args)


@pytest.mark.slow
def test_cli_trains_and_reports_baseline(tmp_path):
    ckpt = tmp_path / "model.pt"
    _export(ckpt, DEMO_SPEC)
    root = _demo_copy(tmp_path, n=8)
    r = _cli("--backbone-ckpt", str(ckpt), f"--data.data_root={root}", f"--out_dir={tmp_path}", "--run_name=cli",
             "--trainer.max_steps=4", "--trainer.val_check_interval=2", "--data.batch_size=4",
             "--wandb.mode=offline")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "backbone initialised from" in r.stdout and "pos_embed" in r.stdout
    assert "final val mIoU" in r.stdout and "majority-class baseline ('background' everywhere)" in r.stdout
    out = tmp_path / "cli"
    assert ArchSpec.load(out / "arch.yaml") == DEMO_SPEC  # the checkpoint's spec is trained
    assert list((out / "wandb").glob("offline-run-*")), "an offline W&B run is written"
    _check_exported_segmentor(out)
    assert offline_artifact_has(out, out / "model.pt2"), "the run's `model` artifact holds model.pt2"
    r = _cli(f"--data.data_root={root}", f"--out_dir={tmp_path}", "--run_name=cli", "--resume",
             "--trainer.max_steps=6",
             "--trainer.val_check_interval=2", "--data.batch_size=4", "--wandb.mode=disabled")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "metrics.json").read_text())["steps"] == 6


def _check_exported_segmentor(out: Path) -> None:
    """model.pt2 (torch alone, [0, 1] RGB in) gives mmseg's own prediction logits on val images."""
    import yaml

    from pipeline.segmentation.datamodule import SegDataModule
    from pipeline.segmentation.module import SegmentationModule

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    module = SegmentationModule.load_from_checkpoint(out / "best.ckpt", map_location="cpu").eval()
    dm = SegDataModule(**cfg["data"], seed=0)
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))
    with torch.no_grad():
        preds = module.model.predict(**module._preprocess(batch, False))  # mmseg: BGR uint8 in
        expected = torch.stack([p.seg_logits.data for p in preds])
        images = torch.stack(batch["inputs"]).flip(1).float() / 255     # the same images as RGB in [0, 1]
        got = torch.export.load(out / "model.pt2").module()(images)
    diff = (got - expected).abs().max().item()
    print(f"seg model.pt2: max abs diff {diff:.2e} over {len(images)} images")
    assert got.shape == expected.shape == (len(images), 6, 64, 64) and diff <= 1e-4, diff
    assert torch.equal(got.argmax(1), torch.stack([p.pred_sem_seg.data[0] for p in preds]))
    assert json.loads((out / "metrics.json").read_text())["exports"] == ["model.pt2"]


@pytest.mark.slow
def test_cli_bad_input_exits_2(tmp_path):
    r = _cli("--data.data_root=" + str(tmp_path / "missing"), "--wandb.mode=disabled")
    assert r.returncode == 2
    assert "missing does not exist" in r.stderr and "Traceback" not in r.stderr
