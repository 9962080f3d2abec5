"""``ClassificationModule``: a searched ViT retrained for image classification with Lightning.

The network comes from an :class:`~pipeline.space.ArchSpec` (``build_model``). The recipe is
DeiT/AutoFormer's, built from timm rather than rewritten:

* optimiser: timm ``create_optimizer_v2`` (AdamW by default) with no weight decay on biases,
  norms, the class token and position embeddings; the learning rate is scaled linearly with
  the global batch (``lr * batch_size * world_size * accumulate / base_batch``) when
  ``base_batch`` is set;
* schedule: timm ``create_scheduler_v2`` (cosine with linear warmup), stepped every optimiser
  update;
* loss: timm ``SoftTargetCrossEntropy`` with ``Mixup``/CutMix, ``LabelSmoothingCrossEntropy``
  without, plain cross-entropy when neither is on;
* metrics: torchmetrics top-1 / top-5 accuracy (top-k capped at the class count) and the mean
  validation loss, each image counted once also on several DDP ranks (no padded duplicates).

Logged: ``train/loss``, ``train/throughput`` (images/s over all devices), ``val/loss``,
``val/top1``, ``val/top5``; the learning rate comes from Lightning's ``LearningRateMonitor``.
With a ``WandbLogger`` a few validation images are logged with their predicted and true
classes at the end of every validation epoch (``val/samples``).

GPU settings: ``compile`` compiles the network in place (``nn.Module.compile``, so
checkpoints and exports keep plain parameter names); ``fused`` selects the fused AdamW/Adam
kernel when every parameter is on CUDA. The training step never waits for the device: the
training loss is a torchmetrics mean (reduced across devices once per epoch, not per step) and
a non-finite loss is flagged on the device and checked every ``log_every_n_steps`` steps.

The spec may be given later: ``set_architecture(spec)`` (called by the search callback
``pipeline.search.ArchitectureSearch`` in its ``setup`` hook) and ``configure_model`` build the
network lazily. ``save_hyperparameters`` stores the spec as a plain dict, so checkpoints hold
only plain Python types and tensors and load with ``torch.load(path, weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Literal, Optional, Sequence, Union

import torch
from lightning.pytorch import LightningModule
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from pipeline.accelerator import use_fused
from pipeline.finite_loss import FiniteLossCheck
from pipeline.models import build_model
from pipeline.space.sources import as_spec
from pipeline.space.spec import ArchSpec, SpecError

# Parameters that never get weight decay (DeiT's no_weight_decay + relative position tables);
# 1-D parameters (biases, norms) are excluded by timm already.
NO_WEIGHT_DECAY = ("*cls_token*", "*pos_embed*", "*table_v", "*table_h")
SAMPLE_IMAGES = 16


class ClassificationModule(FiniteLossCheck, LightningModule):
    """Image classification with a ViT built from a spec.

    Args:
        spec: the architecture (ArchSpec or its dict); None to receive it later through
            ``set_architecture`` (the network is then built in ``configure_model``).
        drop_path, drop: stochastic depth and dropout rates of the network.
        lr: peak learning rate, for a global batch of ``base_batch`` (None: no scaling).
        base_batch, batch_size: linear scaling of ``lr`` by the global batch
            (batch_size per device x devices x nodes x gradient accumulation).
        opt, weight_decay, opt_eps, betas, momentum: timm optimiser settings.
        sched, warmup_epochs, warmup_lr, min_lr, epochs: timm scheduler settings (epochs
            defaults to the Trainer's max_epochs).
        label_smoothing: label smoothing (inside Mixup when batch mixing is on).
        mixup, cutmix, mixup_prob, switch_prob, mixup_mode: timm Mixup/CutMix; both alphas 0
            switch it off.
        init_seed: seeds the network's initialisation.
        class_names: names shown in sample predictions.
        num_classes: retrain the spec with a new classifier of this many classes (None: the spec's).
        compile: ``torch.compile`` the network (True, or a dict of ``torch.compile``
            options such as ``{mode: max-autotune}``); worth it for long GPU runs.
        fused: fused AdamW/Adam kernels: None = when every parameter is on CUDA, True/False to force.
    """

    def __init__(self, spec: ArchSpec | dict[str, Any] | None = None, *, drop_path: float = 0.0,
                 drop: float = 0.0, lr: float = 1e-3, base_batch: Optional[int] = None,
                 batch_size: Optional[int] = None, opt: str = "adamw", weight_decay: float = 0.05,
                 opt_eps: Optional[float] = None, betas: Optional[Sequence[float]] = None,
                 momentum: float = 0.9, sched: str = "cosine", warmup_epochs: float = 0,
                 warmup_lr: float = 1e-6, min_lr: float = 1e-5, epochs: Optional[int] = None,
                 label_smoothing: float = 0.0, mixup: float = 0.0, cutmix: float = 0.0,
                 mixup_prob: float = 1.0, switch_prob: float = 0.5, mixup_mode: str = "batch",
                 init_seed: Optional[int] = 0, class_names: Optional[Sequence[str]] = None,
                 num_classes: Optional[int] = None, compile: Union[bool, Literal["auto"], dict[str, Any]] = False,
                 fused: Optional[bool] = None) -> None:
        super().__init__()
        if spec is not None and num_classes is not None:
            spec = dataclasses.replace(as_spec(spec), num_classes=int(num_classes))
        spec_dict = as_spec(spec).to_dict() if spec is not None else None
        if betas is not None:
            betas = [float(b) for b in betas]
        if class_names is not None:
            class_names = [str(c) for c in class_names]
        self.save_hyperparameters(ignore=["spec", "betas", "class_names"])
        self.hparams["spec"] = spec_dict
        self.hparams["betas"] = betas
        self.hparams["class_names"] = class_names
        self.net: Optional[nn.Module] = None
        self.mixup_fn = None
        self._epoch_start: Optional[float] = None
        self._last_batch_end = 0.0
        self._epoch_images = 0
        self._samples: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None
        if spec_dict is not None:
            self._build()

    # ----------------------------------------------------------------- architecture
    @property
    def spec(self) -> Optional[ArchSpec]:
        return as_spec(self.hparams["spec"]) if self.hparams["spec"] is not None else None

    def set_architecture(self, spec: ArchSpec | dict[str, Any]) -> None:
        """Take the spec to train (e.g. from the search callback) before the network is built."""
        if self.net is not None:
            raise RuntimeError("set_architecture: the network is already built")
        spec = as_spec(spec)
        if self.hparams.get("num_classes") is not None:
            spec = dataclasses.replace(spec, num_classes=int(self.hparams["num_classes"]))
        self.hparams["spec"] = spec.to_dict()

    def configure_model(self) -> None:
        if self.net is None:
            if self.hparams["spec"] is None:
                raise SpecError("ClassificationModule has no spec: pass one or call set_architecture first")
            self._build()

    def _build(self) -> None:
        spec, hp = self.spec, self.hparams
        if spec.num_classes < 1:
            raise SpecError(f"spec num_classes={spec.num_classes}: a classifier needs at least one class")
        self.net = build_model(spec, seed=hp["init_seed"], drop_path_rate=float(hp["drop_path"]),
                               drop_rate=float(hp["drop"]))
        if hp.get("compile"):
            options = hp["compile"] if isinstance(hp["compile"], dict) else {}
            self.net.compile(**options)   # in place: state_dict names stay those of the plain network
        n = spec.num_classes
        self.train_loss_fn, self.val_loss_fn = self._losses()
        # nan_strategy="disable": the default NaN check would wait for the device every step.
        self.train_loss = MeanMetric(nan_strategy="disable")
        self.val_top1 = MulticlassAccuracy(num_classes=n, top_k=1, average="micro")
        self.val_top5 = MulticlassAccuracy(num_classes=n, top_k=min(5, n), average="micro")
        self.val_loss = MeanMetric()   # weighted by images: exact over uneven DDP shards

    def _losses(self) -> tuple[nn.Module, nn.Module]:
        from timm.data import Mixup
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        hp = self.hparams
        smoothing = float(hp["label_smoothing"])
        if hp["mixup"] > 0 or hp["cutmix"] > 0:
            self.mixup_fn = Mixup(mixup_alpha=float(hp["mixup"]), cutmix_alpha=float(hp["cutmix"]),
                                  prob=float(hp["mixup_prob"]), switch_prob=float(hp["switch_prob"]),
                                  mode=hp["mixup_mode"], label_smoothing=smoothing,
                                  num_classes=self.spec.num_classes)
            train = SoftTargetCrossEntropy()
        elif smoothing > 0:
            train = LabelSmoothingCrossEntropy(smoothing=smoothing)
        else:
            train = nn.CrossEntropyLoss()
        return train, nn.CrossEntropyLoss()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    # ---------------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        self._epoch_start, self._epoch_images = time.perf_counter(), 0

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.mixup_fn is not None:
            if x.shape[0] % 2:  # timm's Mixup needs an even batch
                x, y = x[:-1], y[:-1]
            x, y = self.mixup_fn(x, y)
        loss = self.train_loss_fn(self(x), y)
        self.note_loss(loss)
        self._epoch_images += x.shape[0]
        self._last_batch_end = time.perf_counter()
        # A torchmetrics mean: per-step values stay on this device, the epoch mean is reduced
        # across devices once (sync_dist=True on a tensor would all-reduce every step).
        self.train_loss(loss.detach(), x.shape[0])
        self.log("train/loss", self.train_loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.check_finite()
        if self._epoch_start is None or not self._epoch_images:
            return
        # Validation runs before this hook: time up to the last training batch only.
        seconds = self._last_batch_end - self._epoch_start
        # images/s of this device, summed over devices
        self.log("train/throughput", self._epoch_images / max(seconds, 1e-9), on_epoch=True, sync_dist=True,
                 reduce_fx="sum")

    # -------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        if not self.trainer.sanity_checking:
            self.check_finite()   # no checkpoint of weights a NaN step has spoilt

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        loss = self.val_loss_fn(logits, y)
        self.val_top1(logits, y)
        self.val_top5(logits, y)
        self.val_loss.update(loss, weight=x.shape[0])
        self.log("val/loss", self.val_loss, prog_bar=False, on_epoch=True, batch_size=x.shape[0])
        self.log("val/top1", self.val_top1, prog_bar=True, on_epoch=True, batch_size=x.shape[0])
        self.log("val/top5", self.val_top5, on_epoch=True, batch_size=x.shape[0])
        if batch_idx == 0 and self._wandb() is not None:
            k = min(SAMPLE_IMAGES, x.shape[0])
            self._samples = (x[:k].detach().float().cpu(), logits[:k].argmax(-1).cpu(), y[:k].cpu())
        return loss

    def on_validation_epoch_end(self) -> None:
        samples, self._samples = self._samples, None
        logger = self._wandb()
        if samples is None or logger is None or self.trainer.sanity_checking or self.global_rank != 0:
            return
        images, pred, true = samples
        names = self.hparams["class_names"] or [str(i) for i in range(self.spec.num_classes)]
        dm = getattr(self.trainer, "datamodule", None)
        mean, std = getattr(dm, "mean", (0.5,) * 3), getattr(dm, "std", (0.5,) * 3)
        images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
        images = images.clamp(0, 1)
        captions = [f"pred: {names[p]} / true: {names[t]}" for p, t in zip(pred.tolist(), true.tolist())]
        logger.log_image(key="val/samples", images=list(images), caption=captions, step=self.global_step)

    def _wandb(self):
        from lightning.pytorch.loggers import WandbLogger

        try:
            loggers = self.trainer.loggers
        except RuntimeError:   # not attached to a Trainer
            return None
        return next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)

    # ------------------------------------------------------------------- optimisation
    def scaled_lr(self) -> float:
        """The peak learning rate after linear scaling by the global batch size."""
        hp = self.hparams
        lr = float(hp["lr"])
        if hp["base_batch"]:
            dm = getattr(self.trainer, "datamodule", None)
            batch = hp["batch_size"] or getattr(dm, "batch_size", None)
            if batch is None:
                raise ValueError("optim.base_batch is set but the batch size is unknown")
            global_batch = int(batch) * self.trainer.world_size * self.trainer.accumulate_grad_batches
            lr = lr * global_batch / float(hp["base_batch"])
        return lr

    def _optimizer(self, groups, lr: float):
        from timm.optim import create_optimizer_v2

        hp = self.hparams
        kwargs: dict[str, Any] = {}
        if hp["opt_eps"] is not None:
            kwargs["eps"] = float(hp["opt_eps"])
        if hp["betas"] is not None:
            kwargs["betas"] = tuple(hp["betas"])
        if hp["opt"].lower() in ("sgd", "momentum", "nesterov"):
            kwargs["momentum"] = float(hp["momentum"])
        if use_fused(hp["opt"], groups, hp.get("fused")):
            kwargs["fused"] = True
        return create_optimizer_v2(groups, opt=hp["opt"], lr=lr, weight_decay=float(hp["weight_decay"]), **kwargs)

    def _scheduler(self, optimizer, epochs: int, per_epoch: int):
        from timm.scheduler import create_scheduler_v2

        hp = self.hparams
        scheduler, _ = create_scheduler_v2(
            optimizer, sched=hp["sched"], num_epochs=epochs, warmup_epochs=hp["warmup_epochs"],
            warmup_lr=float(hp["warmup_lr"]), min_lr=float(hp["min_lr"]), step_on_epochs=False,
            updates_per_epoch=per_epoch)
        return scheduler

    def check_optimisation(self, epochs: int = 10) -> None:
        """Build the optimiser and schedule on a dummy parameter: bad settings fail before training."""
        optimizer = self._optimizer([{"params": [nn.Parameter(torch.zeros(1))]}], float(self.hparams["lr"]))
        if self._scheduler(optimizer, int(self.hparams["epochs"] or epochs), 2) is None:
            raise ValueError(f"optim.sched={self.hparams['sched']!r} gives no schedule")

    def configure_optimizers(self):
        from timm.optim import param_groups_weight_decay

        hp = self.hparams
        groups = param_groups_weight_decay(self.net, float(hp["weight_decay"]), no_weight_decay_list=NO_WEIGHT_DECAY)
        optimizer = self._optimizer(groups, self.scaled_lr())
        epochs = int(hp["epochs"] or self.trainer.max_epochs or 1)
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total) or epochs < 1:
            raise ValueError("a finite trainer.max_epochs (>= 1) is needed for the learning-rate schedule")
        per_epoch = max(1, math.ceil(total / max(1, self.trainer.max_epochs or epochs)))
        scheduler = self._scheduler(optimizer, epochs, per_epoch)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def lr_scheduler_step(self, scheduler, metric) -> None:
        # timm schedulers are stepped with the number of optimiser updates done so far.
        scheduler.step_update(num_updates=self.global_step)
