"""``ClassificationDataModule``: the embedded demo set or ImageNet-style folders, with timm transforms.

Sources:

* ``demo``: the shipped Fashion-MNIST subset (5,000 train / 1,000 val, 10 classes), see
  :class:`pipeline.data.DemoClassification`; needs no download.
* ``folder``: ``root/train/<class>/*`` and ``root/val/<class>/*`` (the ImageNet layout), see
  :class:`pipeline.data.ImageFolderDataset`; layout problems and unreadable images raise
  :class:`pipeline.data.DataError` naming the path.

A share of the training images can be held out (``holdout``: class-stratified, seeded by
``holdout_seed``, see :mod:`pipeline.data.holdout`): training then sees the rest, and with
``validate_on: holdout`` the validation loop scores the held-out images (with the validation
transform) instead of the validation split, which is then never read. ``refine`` ranks its
candidates that way (these settings are the race's: ``train``'s options do not offer them); the
default (``holdout: 0``) changes nothing.

Train and validation transforms come from timm's ``create_transform`` with the config's ``aug``
settings (RandomResizedCrop scale/ratio, flips, colour jitter, RandAugment, random erasing; the
validation crop ratio ``crop_pct``). Batch mixing (Mixup/CutMix) is done in the LightningModule.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from pipeline.data import IMAGENET_MEAN, IMAGENET_STD, DataError, DemoClassification, ImageFolderDataset
from pipeline.data import demo as demo_data
from pipeline.data.loading import resolve_pin_memory, resolve_workers, trainer_placement

SOURCES = ("demo", "folder")
# create_transform keywords taken from the config's `aug` section for the training transform.
TRAIN_AUG_KEYS = ("scale", "ratio", "hflip", "vflip", "color_jitter", "auto_augment", "interpolation",
                  "re_prob", "re_mode", "re_count")


def _tuple(v: Any) -> Any:
    return tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else v


class ClassificationDataModule(LightningDataModule):
    """Train/val loaders for classification.

    Args:
        source: "demo" or "folder".
        root: the dataset root for source="folder" (holding train/ and val/).
        image_size: network input side (the training command passes the spec's when null).
        batch_size: images per device and step.
        num_workers: DataLoader worker processes per device (0 loads in the main process);
            ``auto`` sizes them from the CPU cores (:mod:`pipeline.data.loading`).
        aug: timm ``create_transform`` settings for training (see TRAIN_AUG_KEYS) plus
            ``crop_pct`` for validation; unknown keys are ignored here (the module reads the
            mixup ones).
        mean, std: normalisation; None uses the source's (Fashion-MNIST or ImageNet statistics).
        pin_memory: pin host memory; ``auto`` = when training on CUDA.
        holdout: share of every class's training images held out of training (0 = none).
        holdout_seed: which images are held out.
        validate_on: what the validation loop scores: the val split, or the held-out training images.
    """

    def __init__(self, source: Literal["demo", "folder"] = "demo", root: Optional[str] = None,
                 image_size: Optional[int] = None, batch_size: int = 128, num_workers: Union[int, Literal["auto"]] = 0,
                 aug: Optional[dict[str, Any]] = None, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, pin_memory: Union[bool, Literal["auto"]] = False,
                 holdout: float = 0.0, holdout_seed: int = 0,
                 validate_on: Literal["val", "holdout"] = "val") -> None:
        super().__init__()
        if source not in SOURCES:
            raise DataError(f"data.source={source!r} is unknown; use one of {SOURCES}")
        if source == "folder" and not root:
            raise DataError("data.source=folder needs the dataset root, e.g. --data.root=/data/imagenet "
                            "(holding train/<class>/* and val/<class>/*)")
        if int(batch_size) < 1:
            raise DataError(f"data.batch_size must be positive, got {batch_size}")
        self.source = source
        self.root = Path(root).expanduser() if root else None
        self.image_size = int(image_size or 32)
        self.batch_size = int(batch_size)
        try:  # checked now, resolved when the loaders are made (the Trainer knows the devices then)
            resolve_workers(num_workers)
            resolve_pin_memory(pin_memory, False)
        except ValueError as e:
            raise DataError(str(e)) from None
        self.num_workers = num_workers
        self.aug = dict(aug or {})
        default_mean = (demo_data.MEAN,) * 3 if source == "demo" else tuple(IMAGENET_MEAN)
        default_std = (demo_data.STD,) * 3 if source == "demo" else tuple(IMAGENET_STD)
        self.mean = tuple(float(m) for m in mean) if mean else default_mean
        self.std = tuple(float(s) for s in std) if std else default_std
        self.pin_memory = pin_memory
        if not 0.0 <= float(holdout) < 1.0:
            raise DataError(f"data.holdout={holdout} must be a share of the training images in [0, 1)")
        if validate_on not in ("val", "holdout"):
            raise DataError(f"data.validate_on={validate_on!r}; use val or holdout")
        if validate_on == "holdout" and not holdout:
            raise DataError("data.validate_on=holdout needs held-out images: set data.holdout, e.g. 0.2")
        self.holdout, self.holdout_seed, self.validate_on = float(holdout), int(holdout_seed), validate_on
        self.holdout_indices: list[int] = []   # into the train split, when holdout > 0
        self.train_set: Optional[Dataset] = None
        self.val_set: Optional[Dataset] = None
        self._classes: Optional[list[str]] = None

    # ------------------------------------------------------------------ transforms
    def train_transform(self):
        from timm.data import create_transform

        from pipeline.compat.timm_posterize import install

        install()   # RandAugment's 0-bit posterize under Pillow 13 (see the module)
        kwargs = {k: _tuple(self.aug[k]) for k in TRAIN_AUG_KEYS if k in self.aug}
        if kwargs.get("auto_augment") in ("", "none", False):
            kwargs["auto_augment"] = None
        return create_transform(self.image_size, is_training=True, mean=self.mean, std=self.std, **kwargs)

    def val_transform(self):
        from timm.data import create_transform

        return create_transform(self.image_size, is_training=False, mean=self.mean, std=self.std,
                                interpolation=self.aug.get("interpolation", "bilinear"),
                                crop_pct=float(self.aug.get("crop_pct") or 1.0))

    # -------------------------------------------------------------------- datasets
    def _make(self, split: str, transform) -> Dataset:
        if self.source == "demo":
            return DemoClassification(split, image_size=self.image_size, transform=transform)
        return ImageFolderDataset(self.root, split, transform=transform)

    def check(self) -> list[str]:
        """Index both splits (reads no image) and return the class names; DataError if unusable.

        Called before training so that a wrong layout or mismatched class folders fail fast.
        """
        if self.train_set is None:
            self.train_set = self._make("train", self.train_transform())
            self._classes = list(self.train_set.classes)
            if self.holdout:
                self._hold_out()
        if self.validate_on == "holdout":   # the val split is not even indexed
            return list(self._classes)
        if self.val_set is None:
            self.val_set = self._make("val", self.val_transform())
        train_classes, val_classes = list(self._classes), list(self.val_set.classes)
        if train_classes != val_classes:
            only_train = sorted(set(train_classes) - set(val_classes))
            only_val = sorted(set(val_classes) - set(train_classes))
            raise DataError(f"train and val class folders differ under {self.root}: only in train "
                            f"{only_train[:5]}, only in val {only_val[:5]}; both need the same classes")
        return train_classes

    def _hold_out(self) -> None:
        """Split the training images: the held-out share (val transform) and the rest (train transform)."""
        from torch.utils.data import Subset

        from pipeline.data.holdout import stratified_holdout

        full = self.train_set
        labels = full.targets if hasattr(full, "targets") else full.labels.tolist()
        self.holdout_indices = stratified_holdout(labels, self.holdout, self.holdout_seed)
        held = set(self.holdout_indices)
        self.train_set = Subset(full, [i for i in range(len(full)) if i not in held])
        if self.validate_on == "holdout":
            self.val_set = Subset(self._make("train", self.val_transform()), self.holdout_indices)

    @property
    def classes(self) -> list[str]:
        return self.check()

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def setup(self, stage: Optional[str] = None) -> None:
        self.check()

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = None
        if not train and torch.distributed.is_available() and torch.distributed.is_initialized():
            # Each image on exactly one rank: Lightning's default sampler pads the last shard with
            # duplicates, which would make val metrics differ from a single-process run.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(dataset, shuffle=False)
        processes, on_cuda = trainer_placement(self.trainer)
        workers = resolve_workers(self.num_workers, processes)
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=train and sampler is None, drop_last=train,
                          sampler=sampler, num_workers=workers,
                          pin_memory=resolve_pin_memory(self.pin_memory, on_cuda), persistent_workers=workers > 0)

    def train_dataloader(self) -> DataLoader:
        if len(self.train_set) < self.batch_size:
            raise DataError(f"the train split has {len(self.train_set)} images, fewer than one batch "
                            f"(data.batch_size={self.batch_size}); lower --data.batch_size")
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)
