"""The classification recipe's ``optim`` and ``aug`` sections, typed (DeiT/AutoFormer defaults).

They are sections of their own, beside Lightning's ``model`` / ``data`` / ``trainer``, because a
recipe is read and swept as a unit (timm's ``train.py`` groups its flags the same way); the
training command hands them to :class:`ClassificationModule` and the DataModule.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal, Optional, Union

from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt


@dataclass
class Optimization:
    """Optimiser and learning-rate schedule (timm ``create_optimizer_v2`` / ``create_scheduler_v2``).

    Args:
        opt: timm optimiser name: adamw, sgd, lamb, ...
        lr: peak learning rate (for a global batch of base_batch, if set).
        base_batch: scale lr linearly by global batch / base_batch; null = no scaling.
        weight_decay: decoupled weight decay (none on biases, norms, class token, position embeddings).
        opt_eps: optimiser epsilon; null = timm's default.
        betas: Adam betas; null = timm's default.
        momentum: SGD momentum.
        sched: timm scheduler: cosine, step, plateau, ...
        warmup_epochs: linear warm-up from warmup_lr.
        warmup_lr: learning rate at the start of warm-up.
        min_lr: floor of the schedule.
        fused: fused Adam/AdamW kernel: auto = when the parameters are on CUDA.
    """

    opt: str = "adamw"
    lr: PositiveFloat = 5.0e-4
    base_batch: Optional[PositiveInt] = None
    weight_decay: NonNegativeFloat = 0.05
    opt_eps: Optional[PositiveFloat] = 1.0e-8
    betas: Optional[tuple[float, float]] = (0.9, 0.999)
    momentum: NonNegativeFloat = 0.9
    sched: str = "cosine"
    warmup_epochs: NonNegativeFloat = 5
    warmup_lr: NonNegativeFloat = 1.0e-6
    min_lr: NonNegativeFloat = 1.0e-5
    fused: Union[bool, Literal["auto"]] = "auto"


MODULE = {"module": True}   # field metadata: a setting of the LightningModule, not of the DataModule


@dataclass
class Augmentation:
    """Training augmentation: timm ``create_transform`` (images) and ``Mixup`` (batches).

    Args:
        scale: RandomResizedCrop area range.
        ratio: RandomResizedCrop aspect-ratio range.
        hflip: horizontal flip probability.
        vflip: vertical flip probability.
        color_jitter: colour jitter strength (0 = off).
        auto_augment: timm auto-augment policy, e.g. rand-m9-mstd0.5-inc1; null = off.
        interpolation: resize interpolation: bilinear, bicubic, random.
        re_prob: random-erasing probability.
        re_mode: random-erasing fill: const, rand, pixel.
        re_count: random-erasing regions per image.
        crop_pct: validation resize/centre-crop ratio.
        mixup: Mixup alpha (0 = off).
        cutmix: CutMix alpha (0 = off).
        mixup_prob: probability of mixing a batch.
        switch_prob: probability of CutMix instead of Mixup when both are on.
        mixup_mode: batch, pair or elem.
        label_smoothing: label smoothing (inside Mixup when batch mixing is on).
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (0.75, 1.3333333333333333)
    hflip: ClosedUnitInterval = 0.5
    vflip: ClosedUnitInterval = 0.0
    color_jitter: NonNegativeFloat = 0.4
    auto_augment: Optional[str] = None
    interpolation: str = "bilinear"
    re_prob: ClosedUnitInterval = 0.0
    re_mode: Literal["const", "rand", "pixel"] = "pixel"
    re_count: PositiveInt = 1
    crop_pct: PositiveFloat = 0.875
    mixup: NonNegativeFloat = field(default=0.0, metadata=MODULE)
    cutmix: NonNegativeFloat = field(default=0.0, metadata=MODULE)
    mixup_prob: ClosedUnitInterval = field(default=1.0, metadata=MODULE)
    switch_prob: ClosedUnitInterval = field(default=0.5, metadata=MODULE)
    mixup_mode: Literal["batch", "pair", "elem"] = field(default="batch", metadata=MODULE)
    label_smoothing: ClosedUnitInterval = field(default=0.0, metadata=MODULE)


# Augmentation fields the module uses (batch mixing, the loss); the rest go to the DataModule.
MIXUP_KEYS = tuple(f.name for f in fields(Augmentation) if f.metadata.get("module"))
__all__ = ["Augmentation", "Optimization", "MIXUP_KEYS", "NonNegativeInt", "field"]
