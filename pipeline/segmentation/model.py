"""The mmseg segmentor for a spec: mmseg's ViT-UPerNet recipe around our backbone.

``EncoderDecoder`` (``SegDataPreProcessor``) with

* backbone ``SpecViT`` -- the searched ViT/PiT, returning maps after ``out_indices`` blocks;
* neck ``MultiLevelNeck`` for isotropic ViTs: every map comes out at the token stride, the neck
  rescales them into a pyramid at strides 4, 8, 16, 32 (scales ``[4, 2, 1, 0.5]`` at patch 16,
  exactly mmseg's recipe; ``patch/[4, 8, 16, 32]`` in general). PiT's stages already form a
  pyramid of different widths, so PiT feeds the heads directly (no neck);
* decode head ``UPerHead`` (PPM + FPN) and auxiliary ``FCNHead`` (loss weight 0.4), both
  with mmseg's ``CrossEntropyLoss``; their ``in_channels`` come from the spec.

Norm layers of the heads: ``BN``, or ``SyncBN`` when a multi-GPU CUDA run asks for it
(``model.norm: auto`` picks SyncBN exactly when ``trainer.devices > 1`` or ``num_nodes > 1``
on CUDA). The backbone keeps its own LayerNorms.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import math
import warnings
from typing import Any, Optional, Sequence

import torch

import pipeline.compat  # noqa: F401  (mmcv.ops stand-in before mmseg)
from mmseg.registry import MODELS

from pipeline.segmentation import backbone as bb
from pipeline.space.spec import ArchSpec
from pipeline.accelerator import on_cuda

NORMS = ("auto", "BN", "SyncBN")


def device_count(trainer_cfg: dict[str, Any]) -> int:
    """Processes a Trainer config asks for (devices x nodes), resolving 'auto'/-1 on CUDA."""
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, (list, tuple)):
        n = len(devices)
    elif isinstance(devices, str) and "," in devices:
        n = len([d for d in devices.split(",") if d.strip()])
    elif devices in ("auto", -1, "-1", None):
        n = torch.cuda.device_count() if on_cuda(trainer_cfg) else 1
    else:
        n = int(devices)
    return max(1, n) * int(trainer_cfg.get("num_nodes", 1) or 1)


def norm_type(model_cfg: dict[str, Any], trainer_cfg: dict[str, Any]) -> str:
    """BN or SyncBN for the heads (see module docstring)."""
    norm = model_cfg.get("norm", "auto")
    if norm not in NORMS:
        raise ValueError(f"model.norm={norm!r} is unknown; use one of {NORMS}")
    if norm == "auto":
        return "SyncBN" if on_cuda(trainer_cfg) and device_count(trainer_cfg) > 1 else "BN"
    return norm


def resolve_out_indices(spec: ArchSpec, value: Optional[Sequence[int]]) -> list[int]:
    idx = bb.default_out_indices(spec) if value in (None, "auto") else [int(i) for i in value]
    bad = [i for i in idx if not -spec.depth <= i < spec.depth]
    if bad:
        raise ValueError(f"model.out_indices {bad} are outside the {spec.depth} blocks of {spec.short()}")
    return [i % spec.depth for i in idx]


def _ce(weight: float) -> dict[str, Any]:
    # (mmseg 1.2's class_weight path indexes the weights with the ignore label 255 and loops
    # over pixels in Python, so per-class weights are not offered.)
    return dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=weight)


def segmentor_config(spec: ArchSpec, cfg: dict[str, Any], num_classes: int) -> dict[str, Any]:
    """The mmseg ``EncoderDecoder`` config dict for a spec and our YAML config."""
    m, d = cfg["model"], cfg["data"]
    crop = d["crop_size"]
    crop = (crop, crop) if isinstance(crop, int) else tuple(int(c) for c in crop)
    img_size = m.get("img_size") or crop
    out_idx = resolve_out_indices(spec, m.get("out_indices"))
    widths = bb.out_channels(spec, out_idx)
    norm_cfg = dict(type=norm_type(m, cfg["trainer"]), requires_grad=True)
    align = bool(m.get("align_corners", False))

    backbone = dict(type="SpecViT", spec=spec.to_dict(), out_indices=out_idx, img_size=list(img_size),
                    rel_pos_max=m.get("rel_pos_max"), drop_path_rate=float(m.get("drop_path_rate", 0.0)))
    neck = None
    in_channels = widths
    use_neck = m.get("neck", "auto")
    if use_neck == "auto":
        use_neck = spec.family == "vit"
    if use_neck:
        scales = m.get("neck_scales")
        if scales in (None, "auto"):
            scales = [spec.stride / (4 * 2 ** k) for k in range(len(out_idx))]
        if len(scales) != len(out_idx):
            raise ValueError(f"model.neck_scales has {len(scales)} entries for {len(out_idx)} out_indices")
        neck_ch = int(m.get("neck_channels") or max(widths))
        strides = bb.out_strides(spec, out_idx)
        backbone["min_input_size"] = max(math.ceil(st / sc) for st, sc in zip(strides, scales) if sc < 1) \
            if any(sc < 1 for sc in scales) else 0
        neck = dict(type="MultiLevelNeck", in_channels=widths, out_channels=neck_ch,
                    scales=[float(s) for s in scales])
        in_channels = [neck_ch] * len(scales)

    dh = dict(m["decode_head"])
    decode_head = dict(
        type=dh.get("type", "UPerHead"), in_channels=in_channels, in_index=list(range(len(in_channels))),
        pool_scales=tuple(dh.get("pool_scales", (1, 2, 3, 6))), channels=int(dh["channels"]),
        dropout_ratio=float(dh.get("dropout_ratio", 0.1)), num_classes=num_classes, norm_cfg=norm_cfg,
        align_corners=align,
        loss_decode=_ce(float(dh.get("loss_weight", 1.0))))
    aux = None
    if m.get("auxiliary_head"):
        ah = dict(m["auxiliary_head"])
        idx = ah.get("in_index")
        if idx is None:  # mmseg: last level for ViT+MLN, else the stride-16 level (second last)
            idx = len(in_channels) - 1 if neck is not None else max(0, len(in_channels) - 2)
        idx = int(idx) % len(in_channels)
        aux = dict(type=ah.get("type", "FCNHead"), in_channels=in_channels[idx], in_index=idx,
                   channels=int(ah["channels"]), num_convs=int(ah.get("num_convs", 1)), concat_input=False,
                   dropout_ratio=float(ah.get("dropout_ratio", 0.1)), num_classes=num_classes,
                   norm_cfg=norm_cfg, align_corners=align,
                   loss_decode=_ce(float(ah.get("loss_weight", 0.4))))

    e = cfg["eval"]
    if e["mode"] == "slide":
        win = e.get("crop") or crop
        win = (win, win) if isinstance(win, int) else tuple(int(c) for c in win)
        stride = e.get("stride") or [max(1, (2 * w) // 3) for w in win]
        stride = (stride, stride) if isinstance(stride, int) else tuple(int(s) for s in stride)
        test_cfg = dict(mode="slide", crop_size=win, stride=stride)
    elif e["mode"] == "whole":
        test_cfg = dict(mode="whole")
    else:
        raise ValueError(f"eval.mode={e['mode']!r} is unknown; use whole or slide")

    pre = m.get("data_preprocessor") or {}
    data_preprocessor = dict(type="SegDataPreProcessor", mean=list(pre.get("mean", [123.675, 116.28, 103.53])),
                             std=list(pre.get("std", [58.395, 57.12, 57.375])), bgr_to_rgb=True, pad_val=0,
                             seg_pad_val=255, size=crop)
    return dict(type="EncoderDecoder", data_preprocessor=data_preprocessor, backbone=backbone, neck=neck,
                decode_head=decode_head, auxiliary_head=aux, train_cfg=dict(), test_cfg=test_cfg)


def build_segmentor(model_cfg: dict[str, Any]) -> torch.nn.Module:
    """Build and initialise (mmseg's head inits) an ``EncoderDecoder`` from its config dict."""
    from mmengine.config import ConfigDict

    cfg = copy.deepcopy(model_cfg)
    if cfg.get("neck") is None:
        cfg.pop("neck", None)
    cfg = ConfigDict(cfg)  # mmseg reads test_cfg.mode etc. as attributes
    with quiet_mmengine():
        model = MODELS.build(cfg)
        model.init_weights()  # mmseg's head inits; SpecViT keeps build_model's (is_init)
    return model


@contextlib.contextmanager
def quiet_mmengine():
    """Silence mmengine's per-parameter init report and mmseg's deprecation notes while building."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module=r"mmseg\..*")
            warnings.filterwarnings("ignore", message=".*build_loss.*")
            yield
    finally:
        logger.setLevel(level)
