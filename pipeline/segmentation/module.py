"""``SegmentationModule``: Lightning drives an mmseg ``EncoderDecoder``.

* training step: ``SegDataPreProcessor`` (normalise, pad to the crop, stack) -> mmseg losses
  (decode + auxiliary cross-entropy) -> ``parse_losses``;
* validation step: mmseg prediction (``test_cfg`` whole-image or sliding-window inference,
  logits resized back to the original image) fed to mmseg's ``IoUMetric``; at the end of
  the run over the val set the metric gathers every rank's results (DDP) and gives mIoU,
  aAcc, mAcc and per-class IoU;
* optimiser: mmseg's ViT-UPerNet recipe -- AdamW, no weight decay on position embeddings,
  class token and norms, linear warm-up then polynomial decay, stepped every iteration; the
  fused AdamW kernel when the parameters are on CUDA (``optim.fused: auto``);
* ``model.compile`` compiles the backbone and neck in place (``nn.Module.compile``: checkpoint
  names unchanged); ``auto`` (resolved by the command) means on CUDA.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Literal, Optional, Union

import numpy as np
import torch
from lightning.pytorch import LightningModule

import pipeline.compat  # noqa: F401  (mmcv.ops stand-in before mmseg)
from mmseg.evaluation import IoUMetric
from mmseg.registry import METRICS

from pipeline.accelerator import use_fused
from pipeline.finite_loss import FiniteLossCheck
from pipeline.segmentation.model import build_segmentor, segmentor_config
from pipeline.space.spec import ArchSpec


@METRICS.register_module()
class SegIoUMetric(IoUMetric):
    """mmseg's ``IoUMetric`` returning per-class IoU too (``IoU.<class>``), without printing tables."""

    default_prefix = ""  # metric names as mmseg returns them (mIoU, aAcc, ...)

    def compute_metrics(self, results: list) -> dict[str, float]:
        results = tuple(zip(*results))
        totals = [sum(r) for r in results]
        ret = self.total_area_to_metrics(*totals, self.metrics, self.nan_to_num, self.beta)
        out: dict[str, float] = OrderedDict()
        for key, value in ret.items():
            name = key if key == "aAcc" else "m" + key
            out[name] = round(float(np.nanmean(np.asarray(value, dtype=np.float64))) * 100, 2)
        for name, iou in zip(self.dataset_meta["classes"], np.asarray(ret["IoU"], dtype=np.float64)):
            out[f"IoU.{name.strip()}"] = round(float(iou) * 100, 2)
        return out


DEFAULT_DECODE_HEAD = dict(type="UPerHead", channels=512, pool_scales=[1, 2, 3, 6], dropout_ratio=0.1,
                           loss_weight=1.0)


def lr_factor(step: int, total: int, warmup: int, warmup_ratio: float, power: float, min_ratio: float) -> float:
    """mmseg's LinearLR warm-up (from ``warmup_ratio``) followed by PolyLR to ``min_ratio``."""
    if step < warmup:
        return warmup_ratio + (1.0 - warmup_ratio) * step / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return (1.0 - min_ratio) * (1.0 - t) ** power + min_ratio


class SegmentationModule(FiniteLossCheck, LightningModule):
    """Semantic segmentation of a searched ViT with mmseg's ViT-UPerNet.

    Args:
        spec: the architecture (``ArchSpec.to_dict()``).
        classes, palette: the dataset's class names and colours.
        val_size: number of validation images (lets the metric drop DDP padding).
        crop_size: the training crop (h, w): the padded input size and the backbone's grid.
        img_size: position-embedding resolution; null = crop_size.
        out_indices: blocks feeding the heads; null = 1/4, 2/4, 3/4, 4/4 of the depth (PiT: stage ends).
        drop_path_rate: stochastic depth of the backbone.
        rel_pos_max: enlarge relative-position clipping for large grids; null = the spec's.
        neck: MultiLevelNeck between backbone and heads: auto = for ViT, not for PiT.
        neck_scales: the neck's rescaling per level; null = patch / [4, 8, 16, 32].
        neck_channels: the neck's width; null = the backbone width.
        decode_head: mmseg decode head settings: type (UPerHead), channels, pool_scales, dropout_ratio,
            loss_weight.
        auxiliary_head: mmseg auxiliary head settings (FCNHead), or null for none.
        norm: the heads' norm: auto = SyncBN on multi-GPU CUDA runs, else BN.
        align_corners: mmseg's align_corners of the heads' resizing.
        data_preprocessor: normalisation mean and std (0-255 scale).
        compile: torch.compile backbone + neck: true | false | a mapping of torch.compile options.
        optim: the ``optim`` section (:class:`~pipeline.segmentation.settings.SegOptimization` fields).
        evaluation: the ``eval`` section (:class:`~pipeline.segmentation.settings.SegEvaluation` fields).
        trainer: the Trainer settings the heads' norm and the schedule depend on (devices,
            accelerator, num_nodes, max_steps).
    """

    def __init__(self, spec: dict[str, Any], classes: list[str], palette: list[list[int]], val_size: int = 0, *,
                 crop_size: Union[int, tuple[int, int]] = (512, 512),
                 img_size: Optional[Union[int, tuple[int, int]]] = None, out_indices: Optional[list[int]] = None,
                 drop_path_rate: float = 0.0, rel_pos_max: Optional[int] = None,
                 neck: Union[bool, Literal["auto"]] = "auto", neck_scales: Optional[list[float]] = None,
                 neck_channels: Optional[int] = None, decode_head: Optional[dict[str, Any]] = None,
                 auxiliary_head: Optional[dict[str, Any]] = None, norm: Literal["auto", "BN", "SyncBN"] = "auto",
                 align_corners: bool = False, data_preprocessor: Optional[dict[str, Any]] = None,
                 compile: Union[bool, Literal["auto"], dict[str, Any]] = False, optim: Optional[dict[str, Any]] = None,
                 evaluation: Optional[dict[str, Any]] = None, trainer: Optional[dict[str, Any]] = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        model = dict(img_size=img_size, out_indices=out_indices, drop_path_rate=drop_path_rate,
                     rel_pos_max=rel_pos_max, neck=neck, neck_scales=neck_scales, neck_channels=neck_channels,
                     decode_head=decode_head or dict(DEFAULT_DECODE_HEAD), auxiliary_head=auxiliary_head,
                     norm=norm, align_corners=align_corners, data_preprocessor=data_preprocessor or {},
                     compile=compile)
        # mmseg builds from config dicts: the typed arguments become the one the builders read.
        cfg = dict(model=model, data=dict(crop_size=crop_size), optim=dict(optim or {}),
                   eval=dict(evaluation or {"mode": "whole"}), trainer=dict(trainer or {}))
        self.cfg = cfg
        self.spec = ArchSpec.from_dict(spec)
        self.classes = list(classes)
        self.palette = [list(map(int, p)) for p in palette]
        self.val_size = int(val_size)
        self.model = build_segmentor(segmentor_config(self.spec, cfg, num_classes=len(self.classes)))
        compile_opts = cfg["model"].get("compile")
        if compile_opts:
            for part in (self.model.backbone, getattr(self.model, "neck", None)):
                if part is not None:
                    part.compile(**(compile_opts if isinstance(compile_opts, dict) else {}))
        self.metric = SegIoUMetric(ignore_index=255, iou_metrics=["mIoU"])
        self.metric.dataset_meta = {"classes": tuple(self.classes), "palette": self.palette}
        self.last_metrics: dict[str, float] = {}
        self._examples: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ helpers
    @property
    def backbone(self):
        return self.model.backbone

    def _preprocess(self, batch: dict, training: bool) -> dict:
        dp = self.model.data_preprocessor
        if dp.device != self.device:   # Lightning moves modules with _apply, which mmengine's own device does not follow
            dp.to(self.device)
        return dp(batch, training)

    def _logging_interval(self) -> int:
        """The Trainer's ``log_every_n_steps``; 1 outside a Trainer (a step called directly)."""
        try:
            return max(1, int(self.trainer.log_every_n_steps or 1))
        except RuntimeError:   # not attached to a Trainer
            return 1

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits (B, classes, H/4, W/4)-ish for already normalised inputs (mmseg 'tensor' mode)."""
        return self.model(inputs, mode="tensor")

    # ----------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        data = self._preprocess(batch, True)
        losses = self.model(**data, mode="loss")
        loss, log_vars = self.model.parse_losses(losses)
        self.note_loss(loss)
        n = len(data["data_samples"])
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        # mmseg's loss parts only on the steps the loggers write: each self.log costs ~1 ms of
        # Python on a CPU and the other steps' values would be dropped anyway.
        if (self.global_step + 1) % self._logging_interval() == 0:
            self.log_dict({f"train/{k}": v for k, v in log_vars.items() if k != "loss"}, batch_size=n)
        return loss

    # --------------------------------------------------------------- validation
    def setup(self, stage: Optional[str] = None) -> None:
        cuda_dist = (torch.distributed.is_available() and torch.distributed.is_initialized()
                     and torch.distributed.get_backend() == "nccl")
        self.metric.collect_device = "gpu" if cuda_dist else "cpu"

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        data = self._preprocess(batch, False)
        preds = self.model(**data, mode="predict")
        self.metric.process(batch, [p.to_dict() for p in preds])
        want = int(self.cfg["eval"].get("log_images", 0))
        if self.global_rank == 0 and len(self._examples) < want and not self.trainer.sanity_checking:
            for p in preds[:want - len(self._examples)]:
                self._examples.append({"img_path": p.img_path,
                                       "pred": p.pred_sem_seg.data[0].cpu().numpy().astype(np.uint8),
                                       "gt": p.gt_sem_seg.data[0].cpu().numpy().astype(np.uint8)})

    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.check_finite()   # no checkpoint of weights a NaN step has spoilt
        self.metric.results.clear()
        self._examples = []

    def on_validation_epoch_end(self) -> None:
        size = self.val_size or len(self.metric.results)
        if self.trainer.sanity_checking:
            size = len(self.metric.results)  # a partial pass: do not drop 'padding'
        metrics = self.metric.evaluate(size=size)
        self.last_metrics = metrics
        main = {f"val/{k}": v for k, v in metrics.items() if not k.startswith("IoU.") and k != "mIoU"}
        per_class = {f"val/{k}": v for k, v in metrics.items() if k.startswith("IoU.") and not math.isnan(v)}
        # Every rank holds the same (broadcast) values; sync_dist only averages equal numbers.
        sync = self.trainer.world_size > 1
        self.log_dict(main, sync_dist=sync)
        self.log("val/mIoU", metrics["mIoU"], prog_bar=True, sync_dist=sync)
        self.log_dict(per_class, sync_dist=sync)
        if self._examples and not self.trainer.sanity_checking:
            self._log_examples()

    def _log_examples(self) -> None:
        from pipeline.segmentation.visualize import log_examples

        from pathlib import Path

        log_examples(self.loggers, self._examples, self.classes, self.palette, step=self.global_step,
                     out_dir=Path(self.trainer.default_root_dir))

    # ---------------------------------------------------------------- optimiser
    def configure_optimizers(self):
        o = self.cfg["optim"]
        no_decay_keys = list(o.get("no_decay_keys") or [])
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if any(k in name for k in no_decay_keys) else decay).append(p)
        groups = [{"params": decay, "weight_decay": float(o["weight_decay"])},
                  {"params": no_decay, "weight_decay": 0.0}]
        groups = [g for g in groups if g["params"]]
        kind = o.get("type", "AdamW")
        lr = float(o["lr"])
        if kind == "AdamW":
            fused = use_fused("adamw", groups, o.get("fused") if isinstance(o.get("fused"), bool) else None)
            opt = torch.optim.AdamW(groups, lr=lr, betas=tuple(o.get("betas", (0.9, 0.999))),
                                    **({"fused": True} if fused else {}))
        elif kind == "SGD":
            opt = torch.optim.SGD(groups, lr=lr, momentum=float(o.get("momentum", 0.9)))
        else:
            raise ValueError(f"optim.type={kind!r} is unknown; use AdamW or SGD")
        total = int(self.cfg["trainer"].get("max_steps") or -1)
        if total < 1:
            total = int(self.trainer.estimated_stepping_batches)
        warmup = int(o.get("warmup_iters", 0))
        ratio = float(o.get("warmup_ratio", 1e-6))
        power = float(o.get("power", 1.0))
        min_ratio = float(o.get("eta_min", 0.0)) / lr if lr > 0 else 0.0

        def factor(step: int) -> float:
            return lr_factor(step, total, warmup, ratio, power, min_ratio)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
