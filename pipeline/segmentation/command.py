"""``python -m pipeline train --task seg``: retrain a searched ViT for semantic segmentation.

mmsegmentation does the segmentation work (datasets and pipelines, ``EncoderDecoder`` with
``UPerHead`` + ``FCNHead``, losses, sliding-window inference, ``IoUMetric``); Lightning drives it
(loop, devices/DDP, precision, checkpoints, W&B logging).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pipeline.cli import UserError
from pipeline.config import (CONFIG_DIR, ConfigError, find_config, load_config, pop_option, resolve_path,
                             save_config)
from pipeline.space.spec import ArchSpec, SpecError

DEFAULT_CONFIG = CONFIG_DIR / "train" / "seg_demo.yaml"
DEFAULT_ARCHS = (CONFIG_DIR / "train" / "demo_default_arch.yaml",)  # the demo-space default, shared with cls

HELP = f"""usage: python -m pipeline train --task seg [--config FILE] [--arch ARCH.yaml]
                                         [--backbone-ckpt MODEL.pt] [--resume] [--section.key=value ...]

Retrain a searched ViT/PiT for semantic segmentation: mmsegmentation's ViT-UPerNet (our
backbone + MultiLevelNeck + UPerHead + auxiliary FCNHead) on an mmseg dataset, driven by
Lightning. Without arguments: the embedded demo scenes (pipeline/data/shipped/seg_demo), a few CPU minutes.

  --config FILE          training config file or shipped name (default: {DEFAULT_CONFIG.relative_to(CONFIG_DIR.parent)};
                         also configs/train/seg_ade20k.yaml, configs/train/seg_cityscapes.yaml)
  --arch FILE            the architecture (arch.yaml written by `python -m pipeline search`);
                         default: the config's `arch`, else the --backbone-ckpt's spec, else the
                         newest <out_dir>/*/arch.yaml of a demo-space search, else
                         configs/train/demo_default_arch.yaml (shared with --task cls)
  --backbone-ckpt FILE   initialise the backbone from a classification export (model.pt of
                         `python -m pipeline train --task cls`); position embeddings are resized
                         to the segmentation resolution; its spec must match the trained one
  --resume               continue from <out_dir>/<run_name>/last.ckpt
  --KEY=VALUE            override any config value, e.g. --data.data_root=/data/ade/ADEChallengeData2016
                         --trainer.devices=8 --trainer.strategy=ddp --eval.mode=slide --wandb.mode=disabled

Outputs in <out_dir>/<run_name>/: config.yaml (resolved), arch.yaml, best.ckpt (best val mIoU),
last.ckpt, model.pt2 (torch.export of the inference at the crop size: loads with torch alone),
metrics.json, val_examples.png, csv/version_N/metrics.csv; W&B run (online when logged in, else
offline) under wandb/, with model.pt2 as its `model` artifact.
Multi-GPU: --trainer.devices=N --trainer.strategy=ddp (heads switch to SyncBN on CUDA).
"""


# --------------------------------------------------------------------------- architecture
def _explicit_spec(cfg: dict[str, Any], arch_opt: Optional[str]) -> tuple[Optional[ArchSpec], str]:
    if arch_opt:
        return ArchSpec.load(resolve_path(arch_opt)), f"--arch {arch_opt}"
    arch = cfg.get("arch")
    if isinstance(arch, dict):
        return ArchSpec.from_dict(arch), "the config's arch"
    if isinstance(arch, str) and arch:
        return ArchSpec.load(resolve_path(arch)), arch
    if arch not in (None, ""):
        raise ConfigError(f"arch must be a spec mapping, a path to an arch.yaml or null, got {arch!r}")
    return None, ""


def resolve_spec(cfg: dict[str, Any], arch_opt: Optional[str], ckpt: Optional[str],
                 resume_dir: Optional[Path] = None) -> tuple[ArchSpec, str]:
    """(spec, where it came from), in the order documented in HELP; a resumed run keeps its own."""
    from pipeline.train.command import resumed_spec

    explicit, source = _explicit_spec(cfg, arch_opt)
    resumed = resumed_spec(resume_dir, explicit, source) if resume_dir is not None else None
    if resumed is not None:
        return resumed
    if explicit is not None:
        return explicit, source
    if ckpt:
        from pipeline.segmentation.checkpoint import load_export

        return load_export(ckpt)[0], f"the backbone checkpoint {ckpt}"
    from pipeline.search.store import newest_searched_spec
    from pipeline.space import SearchSpace

    newest = newest_searched_spec(cfg["out_dir"], SearchSpace.load("demo"))
    if newest is not None:
        return ArchSpec.load(newest), f"{newest} (newest demo-space search)"
    for path in DEFAULT_ARCHS:
        if path.is_file():
            return ArchSpec.load(path), str(path.relative_to(CONFIG_DIR.parent))
    raise UserError("no architecture given: pass --arch checkpoints/<search run>/arch.yaml")


def resolve_precision(trainer_cfg: dict[str, Any]) -> str:
    """``auto``: bf16 mixed precision on GPUs that support it, else fp16 mixed; fp32 on CPU."""
    precision = trainer_cfg.get("precision", "auto")
    if precision not in ("auto", None):
        return precision
    import torch

    accel = str(trainer_cfg.get("accelerator", "auto"))
    if not (torch.cuda.is_available() and accel in ("auto", "gpu", "cuda")):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"


def _resolve_gpu_settings(cfg: dict[str, Any]) -> None:
    """``model.compile`` (auto = on CUDA), ``optim.fused``, ``data.num_workers``/``pin_memory``: checked
    (and compile resolved) before any work, so the saved config says what ran."""
    from pipeline.data.loading import resolve_pin_memory, resolve_workers
    from pipeline.train.command import resolve_compile, resolve_fused

    cfg["model"]["compile"] = resolve_compile(cfg["model"].get("compile"), cfg["trainer"])
    resolve_fused(cfg["optim"].get("fused"))
    try:
        resolve_workers(cfg["data"].get("num_workers", 0))
        resolve_pin_memory(cfg["data"].get("pin_memory", False), False)
    except ValueError as e:
        raise ConfigError(str(e)) from None


# ------------------------------------------------------------------------------- baseline
def majority_baseline(train_pixels, val_pixels, classes) -> Optional[dict[str, Any]]:
    """mIoU/aAcc (mmseg's formulas) of predicting the training set's most frequent class everywhere."""
    if train_pixels is None or val_pixels is None or val_pixels.sum() == 0:
        return None
    import numpy as np
    import torch
    from mmseg.evaluation import IoUMetric

    c = int(np.argmax(train_pixels))
    label = torch.as_tensor(val_pixels, dtype=torch.float64)
    total = label.sum()
    inter = torch.zeros_like(label)
    inter[c] = label[c]
    pred = torch.zeros_like(label)
    pred[c] = total
    union = pred + label - inter
    ret = IoUMetric.total_area_to_metrics(inter, union, pred, label, ["mIoU"])
    return {"class": str(classes[c]).strip(),
            "mIoU": round(float(np.nanmean(np.asarray(ret["IoU"], dtype=np.float64))) * 100, 2),
            "aAcc": round(float(ret["aAcc"]) * 100, 2)}


# ----------------------------------------------------------------------------------- main
def _take_flag(argv: list[str], flag: str) -> tuple[bool, list[str]]:
    return flag in argv, [a for a in argv if a != flag]


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    t0 = time.time()
    resume, argv = _take_flag(list(argv), "--resume")
    config_path, argv = pop_option(argv, "--config", DEFAULT_CONFIG)
    arch_opt, argv = pop_option(argv, "--arch")
    ckpt_opt, argv = pop_option(argv, "--backbone-ckpt")
    cfg = load_config(find_config(config_path, "train"), argv)
    _check_keys(cfg, config_path)
    return _run(cfg, arch_opt, ckpt_opt, resume, t0)


REQUIRED = {"": ["run_name", "out_dir", "seed", "data", "model", "optim", "trainer", "eval"],
            "data": ["type", "data_prefix", "crop_size", "batch_size"],
            "model": ["decode_head"], "optim": ["lr", "weight_decay"], "trainer": ["max_steps"],
            "eval": ["mode"]}


def _check_keys(cfg: dict[str, Any], path) -> None:
    for section, keys in REQUIRED.items():
        node = cfg if not section else cfg.get(section)
        if not isinstance(node, dict):
            raise ConfigError(f"config {path}: section {section!r} is missing or not a mapping")
        missing = [k for k in keys if k not in node]
        if missing:
            where = f"section {section!r}" if section else "the top level"
            raise ConfigError(f"config {path}: {where} lacks {missing}; compare with "
                              f"{DEFAULT_CONFIG.relative_to(CONFIG_DIR.parent)}")


def _run(cfg: dict[str, Any], arch_opt, ckpt_opt, resume: bool, t0: float) -> int:
    import warnings

    warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
    import pipeline.segmentation  # noqa: F401  (compat + registrations before anything from mmseg)
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from pipeline.data.errors import DataError
    from pipeline.segmentation.checkpoint import init_backbone
    from pipeline.segmentation.datamodule import SegDataModule
    from pipeline.segmentation.datasets import check_split, dataset_meta, resolve_root
    from pipeline.segmentation.module import SegmentationModule
    from pipeline.tracking import record_handoff, wandb_logger
    from pipeline.train.rng import RngState
    from pipeline.train.progress import progress_bar
    from pipeline.utils.io import atomic_write_text

    name = str(cfg["run_name"]).strip()
    if not name or "/" in name:
        raise ConfigError(f"run_name={cfg['run_name']!r} must be a non-empty folder name")
    out = Path(cfg["out_dir"]) / name
    last = out / "last.ckpt"
    if resume and not last.is_file():
        raise UserError(f"--resume: {last} does not exist (nothing to continue); run without --resume")
    ckpt = ckpt_opt or cfg.get("backbone_ckpt") or None
    if ckpt:
        ckpt = str(resolve_path(ckpt))
    cfg["backbone_ckpt"] = ckpt
    spec, source = resolve_spec(cfg, arch_opt, ckpt, resume_dir=out if resume else None)
    cfg["arch"] = spec.to_dict()  # the resolved config alone reproduces the run
    cfg["trainer"]["precision"] = resolve_precision(cfg["trainer"])
    _resolve_gpu_settings(cfg)

    # Data: check every file before any training (clear message, exit 2).
    d = cfg["data"]
    try:
        meta = dataset_meta(d["type"])
        root = resolve_root(d)
        reports = {s: check_split(d, root, s, mode=d.get("validate", "full")) for s in ("train", "val")}
    except DataError as e:
        raise UserError(str(e)) from None
    classes = [str(c) for c in meta["classes"]]
    baseline = majority_baseline(reports["train"].label_pixels, reports["val"].label_pixels, classes)

    from pipeline.segmentation.model import norm_type

    if int(d["batch_size"]) < 2 and norm_type(cfg["model"], cfg["trainer"]) == "BN":
        raise ConfigError("data.batch_size=1 with BN in the heads: UPerHead's 1x1 pyramid pooling needs "
                          "at least 2 images per batch; use --data.batch_size>=2 (or SyncBN across GPUs)")
    seed_everything(int(cfg["seed"]), workers=True, verbose=False)
    try:
        module = SegmentationModule(cfg, spec.to_dict(), classes, meta["palette"],
                                    val_size=reports["val"].num_images)
    except ValueError as e:
        raise UserError(f"cannot build the segmentor: {e}") from e
    init_report = init_backbone(module.backbone, ckpt) if ckpt else None
    datamodule = SegDataModule(d, seed=int(cfg["seed"]))

    # csv/version_N/metrics.csv: one folder per invocation (the report draws its curves from it)
    loggers = [CSVLogger(save_dir=str(out), name="csv")]
    logger = wandb_logger(cfg, out, job_type="train-seg")
    if logger:
        loggers.append(logger)
    # best.ckpt, then last.ckpt at every validation (what --resume continues; Lightning's save_last
    # only rewrites it when best.ckpt improves), each with the random state (pipeline/train/rng.py)
    callbacks = [ModelCheckpoint(dirpath=out, filename="best", monitor="val/mIoU", mode="max",
                                 auto_insert_metric_name=False, enable_version_counter=False),
                 ModelCheckpoint(dirpath=out, filename="last", save_top_k=1, enable_version_counter=False)]
    callbacks += [LearningRateMonitor(logging_interval="step"), RngState()]
    callbacks += progress_bar(cfg["trainer"])
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    try:
        trainer = Trainer(**cfg["trainer"], logger=loggers, callbacks=callbacks, default_root_dir=str(out),
                          enable_model_summary=False)
    except TypeError as e:  # an unknown trainer.* key
        raise ConfigError(f"bad trainer section: {e}") from e
    rank0 = trainer.is_global_zero
    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
        spec.save(out / "arch.yaml")
        n_params = sum(p.numel() for p in module.model.parameters()) / 1e6
        print(f"architecture: {spec.short()} (from {source}); segmentor {n_params:.2f}M params, "
              f"backbone grid {module.backbone.grid[0]}x{module.backbone.grid[1]}, "
              f"norm {module.model.decode_head.norm_cfg['type']}")
        print(f"data: {d['type']} at {root}: {reports['train'].num_images} train / "
              f"{reports['val'].num_images} val images, {len(classes)} classes")
        if init_report:
            print(f"backbone initialised from {ckpt}: {init_report['loaded']} tensors"
                  + "".join(f"; {n}" for n in init_report["resized"]))
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if resume else None)
    except FloatingPointError as e:   # raised on every rank alike (pipeline.distributed)
        raise UserError(str(e)) from None

    best = callbacks[0].best_model_path
    trainer.validate(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
    metrics = dict(module.last_metrics)
    if rank0:
        from pipeline.segmentation.backbone import as_hw
        from pipeline.segmentation.export import export_segmentor

        size = as_hw(d["crop_size"])
        exported = export_segmentor(out, module.model, size)
        per_class = {k[4:]: v for k, v in metrics.items() if k.startswith("IoU.")}
        summary = {"mIoU": metrics.get("mIoU"), "aAcc": metrics.get("aAcc"), "mAcc": metrics.get("mAcc"),
                   "per_class_IoU": per_class, "majority_baseline": baseline, "checkpoint": best or None,
                   "arch": spec.to_dict(), "arch_source": source, "backbone_init": init_report,
                   "exports": [exported.name] if exported else [],
                   "steps": trainer.global_step, "wall_time_s": round(time.time() - t0, 1)}
        atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2))
        record_handoff(trainer.loggers, out, produced=("model", exported) if exported else None,
                       consumed={"model": Path(ckpt)} if ckpt else None)
        width = max(len(c) for c in per_class) if per_class else 5
        print("per-class IoU (val):")
        for name, v in per_class.items():
            print(f"  {name:<{width}}  {v:6.2f}")
        line = f"final val mIoU: {metrics.get('mIoU'):.2f}  aAcc: {metrics.get('aAcc'):.2f}"
        if baseline:
            line += (f"   | majority-class baseline ('{baseline['class']}' everywhere) mIoU: "
                     f"{baseline['mIoU']:.2f}  aAcc: {baseline['aAcc']:.2f}")
        print(line)
        if exported:
            print(f"exported segmentor: {exported}  (torch.export, {size[0]}x{size[1]} [0, 1] RGB in, "
                  "class logits out)")
        print(f"best checkpoint: {best or '(none)'}; outputs in {out}  ({time.time() - t0:.0f} s)")
    return 0


def _cli() -> int:
    """``python -m pipeline.segmentation.command ...`` with the CLI's error handling."""
    try:
        return main(sys.argv[1:])
    except (UserError, ConfigError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_cli())
