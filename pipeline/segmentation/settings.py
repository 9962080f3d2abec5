"""The segmentation recipe's ``optim`` and ``eval`` sections, typed (mmseg's ViT-UPerNet defaults).

Sections of their own beside Lightning's ``model`` / ``data`` / ``trainer``, as in mmseg configs
(``optim_wrapper``, ``param_scheduler``, ``test_cfg``); the training command hands them to
:class:`SegmentationModule`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union

from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, PositiveFloat


@dataclass
class SegOptimization:
    """AdamW (or SGD), linear warm-up, then polynomial decay, stepped every iteration.

    Args:
        type: AdamW or SGD.
        lr: peak learning rate.
        betas: AdamW betas.
        momentum: SGD momentum.
        weight_decay: weight decay (none on the parameters matching no_decay_keys).
        no_decay_keys: parameter-name fragments without weight decay (mmseg custom_keys, decay_mult 0).
        warmup_iters: LinearLR warm-up iterations, from lr x warmup_ratio.
        warmup_ratio: learning-rate factor at the start of warm-up.
        power: PolyLR power.
        eta_min: PolyLR floor.
        fused: fused AdamW kernel: auto = when the parameters are on CUDA.
    """

    type: Literal["AdamW", "SGD"] = "AdamW"
    lr: PositiveFloat = 6.0e-5
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 0.01
    no_decay_keys: list[str] = field(default_factory=lambda: ["pos_embed", "cls_token", "norm"])
    warmup_iters: NonNegativeInt = 1500
    warmup_ratio: NonNegativeFloat = 1.0e-6
    power: NonNegativeFloat = 1.0
    eta_min: NonNegativeFloat = 0.0
    fused: Union[bool, Literal["auto"]] = "auto"


@dataclass
class SegEvaluation:
    """Validation inference (mmseg ``test_cfg``) and the images shown with their predicted masks.

    Args:
        mode: whole (one pass per image) or slide (overlapping windows).
        crop: slide window (h, w); null = data.crop_size.
        stride: slide stride (h, w); null = 2/3 of the window.
        log_images: validation images with predicted masks sent to W&B / val_examples.png.
    """

    mode: Literal["whole", "slide"] = "whole"
    crop: Optional[Union[int, tuple[int, int]]] = None
    stride: Optional[Union[int, tuple[int, int]]] = None
    log_images: NonNegativeInt = 4
