"""mmseg datasets and pipelines in a LightningDataModule.

The pipelines are mmseg's standard ones, built from the ``data`` section of our YAML::

    train: LoadImageFromFile -> LoadAnnotations -> RandomResize(scale, ratio_range)
           -> RandomCrop(crop_size, cat_max_ratio) -> RandomFlip(flip_prob)
           -> PhotoMetricDistortion -> PackSegInputs
    val:   LoadImageFromFile -> Resize(test_scale, keep_ratio)  (skipped when null)
           -> LoadAnnotations -> PackSegInputs

ADE20K's ``reduce_zero_label`` is a dataset setting that ``LoadAnnotations`` picks up. Batches
are mmengine's ``pseudo_collate`` lists (``inputs``: uint8 CHW tensors, ``data_samples``:
``SegDataSample``), which the segmentor's ``SegDataPreProcessor`` normalises, pads and stacks.
Under DDP Lightning shards both loaders with a ``DistributedSampler``. ``num_workers`` and
``pin_memory`` may be ``auto`` (sized from the machine, see :mod:`pipeline.data.loading`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

import pipeline.compat  # noqa: F401  (mmcv.ops stand-in before mmseg)
from mmengine.dataset import pseudo_collate

from pipeline.data.loading import resolve_pin_memory, resolve_workers, trainer_placement
from pipeline.segmentation.datasets import build_dataset, resolve_root


def _pair(v: Any) -> Optional[tuple[int, int]]:
    if v is None:
        return None
    if isinstance(v, int):
        return v, v
    return int(v[0]), int(v[1])


def train_pipeline(d: dict[str, Any]) -> list[dict[str, Any]]:
    crop = _pair(d["crop_size"])
    steps: list[dict[str, Any]] = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations")]
    if d.get("scale") is not None:
        # mmseg writes scales as (long side, short side) like (2048, 512), crops as (h, w).
        steps.append(dict(type="RandomResize", scale=_pair(d["scale"]),
                          ratio_range=tuple(d.get("ratio_range") or (1.0, 1.0)), keep_ratio=True))
    steps.append(dict(type="RandomCrop", crop_size=crop, cat_max_ratio=float(d.get("cat_max_ratio", 1.0))))
    if d.get("flip_prob", 0):
        steps.append(dict(type="RandomFlip", prob=float(d["flip_prob"])))
    if d.get("photometric_distortion", True):
        steps.append(dict(type="PhotoMetricDistortion"))
    steps.append(dict(type="PackSegInputs"))
    return steps


def test_pipeline(d: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [dict(type="LoadImageFromFile")]
    if d.get("test_scale") is not None:
        steps.append(dict(type="Resize", scale=_pair(d["test_scale"]), keep_ratio=True))
    # Annotations after Resize: the metric compares with the original-size mask.
    steps += [dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
    return steps


class SegDataModule(LightningDataModule):
    """Train/val loaders of an mmseg dataset described by our ``data`` config section."""

    def __init__(self, data_cfg: dict[str, Any], seed: int = 0) -> None:
        super().__init__()
        self.cfg = data_cfg
        self.root: Path = resolve_root(data_cfg)
        self.seed = seed
        self.train_set = self.val_set = None

    def setup(self, stage: Optional[str] = None) -> None:
        if self.train_set is None and stage in (None, "fit"):
            self.train_set = build_dataset(self.cfg, self.root, "train", train_pipeline(self.cfg))
        if self.val_set is None:
            self.val_set = build_dataset(self.cfg, self.root, "val", test_pipeline(self.cfg))

    def _loader(self, dataset, batch_size: int, train: bool) -> DataLoader:
        processes, on_cuda = trainer_placement(self.trainer)
        workers = resolve_workers(self.cfg.get("num_workers", 0), processes)
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=train, drop_last=train,
                          num_workers=workers, persistent_workers=workers > 0, collate_fn=pseudo_collate,
                          generator=gen if train else None,
                          pin_memory=resolve_pin_memory(self.cfg.get("pin_memory", False), on_cuda))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, int(self.cfg["batch_size"]), True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, int(self.cfg.get("val_batch_size", 1)), False)
