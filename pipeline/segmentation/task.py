"""Segmentation for the training runner: module, data and exports of ``train --task seg``.

mmsegmentation does the segmentation work (datasets and pipelines, ``EncoderDecoder`` with
``UPerHead`` + ``FCNHead``, losses, sliding-window inference, ``IoUMetric``); Lightning drives it.
Outputs beside the runner's: ``model.pt2`` (``torch.export`` of whole-image inference at the
crop size, the W&B ``model`` artifact), ``val_examples.png``, and in ``metrics.json`` the
per-class IoU and the majority-class baseline.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pipeline.accelerator import resolve_fused
from pipeline.config import ConfigError
from pipeline.errors import UserError
from pipeline.space.sources import SpecChoice
from pipeline.space.spec import ArchSpec
from pipeline.task import Built


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


class SegmentationTask:
    name = "seg"
    monitor = "val/mIoU"

    def default_spec(self, cfg: dict[str, Any]) -> SpecChoice:
        """The backbone checkpoint's spec (its weights are read once, by :meth:`build`), else the
        config's ``default_arch``."""
        ckpt = cfg.get("backbone_ckpt")
        if ckpt:
            from pipeline.segmentation.checkpoint import checkpoint_spec

            return SpecChoice(checkpoint_spec(ckpt), f"the backbone checkpoint {ckpt}")
        from pipeline.search.store import searched_spec

        return searched_spec(cfg, alternative="--backbone_ckpt MODEL.pt")

    def build(self, cfg: dict[str, Any], spec: ArchSpec, source: str) -> Built:
        import pipeline.segmentation  # noqa: F401  (compat + registrations before anything from mmseg)
        from pipeline.segmentation.checkpoint import init_backbone
        from pipeline.segmentation.datamodule import SegDataModule
        from pipeline.segmentation.datasets import check_split, dataset_meta, resolve_root
        from pipeline.segmentation.model import norm_type

        d, model = cfg["data"], cfg["model"]
        meta = dataset_meta(d["type"])
        root = resolve_root(d)
        reports = {s: check_split(d, root, s, mode=d.get("validate", "full")) for s in ("train", "val")}
        classes = [str(c) for c in meta["classes"]]
        if int(d["batch_size"]) < 2 and norm_type(model, cfg["trainer"]) == "BN":
            raise ConfigError("data.batch_size=1 with BN in the heads: UPerHead's 1x1 pyramid pooling needs "
                              "at least 2 images per batch; use --data.batch_size>=2 (or SyncBN across GPUs)")
        try:
            module = self.module(cfg, spec, classes, meta["palette"], val_size=reports["val"].num_images)
        except ValueError as e:
            raise UserError(f"cannot build the segmentor: {e}") from e
        ckpt = cfg.get("backbone_ckpt")
        init_report = init_backbone(module.backbone, ckpt) if ckpt else None
        datamodule = SegDataModule(**d, seed=int(cfg["seed_everything"] or 0))
        n_params = sum(p.numel() for p in module.model.parameters()) / 1e6
        notes = [f"architecture: {spec.short()} (from {source}); segmentor {n_params:.2f}M params, "
                 f"backbone grid {module.backbone.grid[0]}x{module.backbone.grid[1]}, "
                 f"norm {module.model.decode_head.norm_cfg['type']}",
                 f"data: {d['type']} at {root}: {reports['train'].num_images} train / "
                 f"{reports['val'].num_images} val images, {len(classes)} classes"]
        if init_report:
            notes.append(f"backbone initialised from {ckpt}: {init_report['loaded']} tensors"
                         + "".join(f"; {n}" for n in init_report["resized"]))
        baseline = majority_baseline(reports["train"].label_pixels, reports["val"].label_pixels, classes)
        return Built(spec, module, datamodule, notes=notes,
                     extra={"baseline": baseline, "init_report": init_report})

    @staticmethod
    def module(cfg: dict[str, Any], spec: ArchSpec, classes: list[str], palette: list[list[int]], val_size: int = 0):
        """The SegmentationModule of a resolved config: ``model``, ``optim``, ``eval``, the crop size,
        and the Trainer settings the heads' norm and the schedule depend on."""
        from pipeline.segmentation.module import SegmentationModule

        optim = dict(cfg["optim"], fused=resolve_fused(cfg["optim"]["fused"]))
        trainer = {k: cfg["trainer"].get(k) for k in ("accelerator", "devices", "num_nodes", "max_steps")}
        return SegmentationModule(spec.to_dict(), classes, palette, val_size=val_size,
                                  crop_size=cfg["data"]["crop_size"], **cfg["model"], optim=optim,
                                  evaluation=cfg["eval"], trainer=trainer)

    def validate(self, trainer, built: Built, best: str) -> dict[str, float]:
        trainer.validate(built.module, datamodule=built.datamodule, ckpt_path=best or None, verbose=False)
        return dict(built.module.last_metrics)

    def finish(self, trainer, built: Built, run_dir: Path, metrics: dict[str, float]):
        from pipeline.segmentation.backbone import as_hw
        from pipeline.segmentation.export import export_segmentor

        size = as_hw(built.datamodule.cfg["crop_size"])
        exported = export_segmentor(run_dir, built.module.model, size)
        per_class = {k[4:]: v for k, v in metrics.items() if k.startswith("IoU.")}
        baseline = built.extra["baseline"]
        summary = {"mIoU": metrics.get("mIoU"), "aAcc": metrics.get("aAcc"), "mAcc": metrics.get("mAcc"),
                   "per_class_IoU": per_class, "majority_baseline": baseline, "arch": built.spec.to_dict(),
                   "backbone_init": built.extra["init_report"], "exports": [exported.name] if exported else [],
                   "steps": trainer.global_step}
        width = max((len(c) for c in per_class), default=5)
        lines = ["per-class IoU (val):"] + [f"  {name:<{width}}  {v:6.2f}" for name, v in per_class.items()]
        line = f"final val mIoU: {metrics.get('mIoU'):.2f}  aAcc: {metrics.get('aAcc'):.2f}"
        if baseline:
            line += (f"   | majority-class baseline ('{baseline['class']}' everywhere) mIoU: "
                     f"{baseline['mIoU']:.2f}  aAcc: {baseline['aAcc']:.2f}")
        lines.append(line)
        if exported:
            lines.append(f"exported segmentor: {exported}  (torch.export, {size[0]}x{size[1]} [0, 1] RGB in, "
                         "class logits out)")
        return summary, (("model", exported) if exported else None), lines

    def consumed(self, cfg: dict[str, Any], choice: SpecChoice) -> Optional[dict[str, Path]]:
        ckpt = cfg.get("backbone_ckpt")
        return {"model": Path(ckpt)} if ckpt else None
