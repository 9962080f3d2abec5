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
Under DDP each process trains on its share of every epoch (the training loader's own
``DistributedSampler``) and Lightning shards the validation loader. ``num_workers`` and
``pin_memory`` may be ``auto`` (sized from the machine, see :mod:`pipeline.data.loading`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

import pipeline.compat  # noqa: F401  (mmcv.ops stand-in before mmseg)
from mmengine.dataset import pseudo_collate

from pipeline.data.loading import resolve_pin_memory, resolve_workers, trainer_placement
from pipeline.data.resumable import ResumableLoader
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
    """Train/val loaders of an mmseg dataset with mmseg's standard pipelines.

    Args:
        type: an mmseg DATASETS class: DemoSegDataset, ADE20KDataset, CityscapesDataset, ...
        data_root: the dataset folder; null = the shipped demo scenes.
        data_prefix: per split, the image and mask folders under data_root:
            {train: {img_path: ..., seg_map_path: ...}, val: {...}}.
        img_suffix: image file suffix; null = the dataset class's default.
        seg_map_suffix: mask file suffix; null = the dataset class's default.
        reduce_zero_label: null = the dataset class's default (ADE20K: true).
        crop_size: RandomCrop (h, w); also the padded training size and the backbone's grid.
        scale: RandomResize base scale (mmseg: (2048, 512) for ADE20K); null = no resize.
        ratio_range: RandomResize ratio range.
        cat_max_ratio: RandomCrop: retry crops where one class covers more than this.
        flip_prob: RandomFlip probability.
        photometric_distortion: PhotoMetricDistortion on or off.
        test_scale: Resize of the val pipeline (keep ratio); null = original size.
        batch_size: training images per device.
        val_batch_size: validation images per device (>1 only when all have the same size).
        num_workers: loader processes per device; auto = sized from the CPU cores.
        pin_memory: pin host memory; auto = when training on CUDA.
        validate: check the files before training: full (sizes + mask labels), sizes, or off.
        seed: the training order and the augmentation draws (each a function of seed, epoch and
                image, so a resumed run sees what an uninterrupted one would).
    """

    def __init__(self, type: str = "DemoSegDataset", data_root: Optional[str] = None,
                 data_prefix: Optional[dict[str, dict[str, str]]] = None, img_suffix: Optional[str] = None,
                 seg_map_suffix: Optional[str] = None, reduce_zero_label: Optional[bool] = None,
                 crop_size: Union[int, tuple[int, int]] = (512, 512), scale: Optional[tuple[int, int]] = None,
                 ratio_range: tuple[float, float] = (0.5, 2.0), cat_max_ratio: float = 0.75,
                 flip_prob: float = 0.5, photometric_distortion: bool = True,
                 test_scale: Optional[Union[int, tuple[int, int]]] = None, batch_size: int = 8,
                 val_batch_size: int = 1, num_workers: Union[int, Literal["auto"]] = 0,
                 pin_memory: Union[bool, Literal["auto"]] = "auto",
                 validate: Literal["full", "sizes", "off"] = "full", seed: int = 0) -> None:
        super().__init__()
        if data_prefix is None:
            data_prefix = {"train": {"img_path": "images/training", "seg_map_path": "annotations/training"},
                           "val": {"img_path": "images/validation", "seg_map_path": "annotations/validation"}}
        # mmseg's dataset and pipeline builders read one mapping (as its configs write it).
        self.cfg = dict(type=type, data_root=data_root, data_prefix=data_prefix, img_suffix=img_suffix,
                        seg_map_suffix=seg_map_suffix, reduce_zero_label=reduce_zero_label, crop_size=crop_size,
                        scale=scale, ratio_range=ratio_range, cat_max_ratio=cat_max_ratio, flip_prob=flip_prob,
                        photometric_distortion=photometric_distortion, test_scale=test_scale,
                        batch_size=batch_size, val_batch_size=val_batch_size, num_workers=num_workers,
                        pin_memory=pin_memory, validate=validate)
        data_cfg = self.cfg
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
        kwargs = dict(num_workers=workers, persistent_workers=workers > 0, collate_fn=pseudo_collate,
                      pin_memory=resolve_pin_memory(self.cfg.get("pin_memory", False), on_cuda))
        if not train:
            # Its own generator: a DataLoader draws its workers' base seed when an iterator starts,
            # from torch's global generator otherwise, which would move the training's dropout masks
            # by the number of validations (and differ after a resume or with persistent workers).
            return DataLoader(dataset, batch_size=batch_size, shuffle=False,
                              generator=torch.Generator().manual_seed(self.seed), **kwargs)
        # Checkpoints fall at validations inside an epoch (iteration-based schedules): a loader
        # that resumes mid-epoch with the same order and augmentations (pipeline.data.resumable).
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer is not None else (1, 0)
        return ResumableLoader(dataset, batch_size, seed=self.seed, num_replicas=world, rank=rank, **kwargs)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, int(self.cfg["batch_size"]), True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, int(self.cfg.get("val_batch_size", 1)), False)
