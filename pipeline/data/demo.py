"""Fashion-MNIST demo classification set, shipped as pipeline/data/shipped/fashion_mnist_demo.npz.

5,000 train / 1,000 val images (class-balanced, 10 classes): small enough to
train a tiny ViT on a laptop CPU, so the whole search -> retrain pipeline can be
run end to end without downloading anything.
"""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from . import paths
from .errors import DataError

DEMO_FILE = "fashion_mnist_demo.npz"
SPLITS = ("train", "val")
# Pixel mean/std of the full Fashion-MNIST train set (60k images), in [0, 1] units.
# The gray channel is copied to RGB, so the same value is used for all three channels.
MEAN = 0.2860
STD = 0.3530


@functools.lru_cache(maxsize=4)
def _read_npz(path: Path) -> dict[str, np.ndarray]:
    # np.load on an npz is lazy and re-decompresses on every access: read it once.
    try:
        with np.load(path) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:
        raise DataError(f"cannot read demo data file {path}: {e}") from e


def load_demo_arrays() -> dict[str, np.ndarray]:
    """All arrays of the demo file (cached): {split}_images, {split}_labels, classes."""
    path = paths.DATA_DIR / DEMO_FILE
    if not path.is_file():
        raise DataError(
            f"demo data file {path} not found. It ships inside the package (pipeline/data/shipped/); "
            f"set PIPELINE_DATA_DIR to the folder holding it, or rebuild it with "
            f"tools/make_demo_data.py of the repository (see pipeline/data/shipped/README.md)."
        )
    return _read_npz(path)


def gray_to_rgb(images: Tensor, image_size: int) -> Tensor:
    """uint8 (N, H, W) gray images -> float (N, 3, S, S) in [0, 1] (bilinear resize)."""
    x = images.unsqueeze(1).float() / 255
    if tuple(x.shape[-2:]) != (image_size, image_size):
        x = F.interpolate(
            x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )
    return x.expand(-1, 3, -1, -1)


class DemoClassification(Dataset):
    """The demo set as (image, label) pairs.

    Without a transform an item is a normalized float tensor (3, image_size,
    image_size). With a transform, the transform gets a 28x28 RGB PIL image
    (e.g. a timm training transform) and image_size is ignored.
    """

    def __init__(
        self, split: str, image_size: int = 32, transform: Callable[[Image.Image], Any] | None = None
    ) -> None:
        if split not in SPLITS:
            raise DataError(f"unknown demo split {split!r}; expected one of {SPLITS}")
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}")
        arrays = load_demo_arrays()
        self.split = split
        self.image_size = image_size
        self.transform = transform
        self.images = torch.from_numpy(arrays[f"{split}_images"])  # (N, 28, 28) uint8, shared
        self.labels = torch.from_numpy(arrays[f"{split}_labels"])  # (N,) int64
        self.classes: list[str] = [str(c) for c in arrays["classes"]]
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        label = int(self.labels[i])
        if self.transform is not None:
            img = Image.fromarray(self.images[i].numpy()).convert("RGB")
            return self.transform(img), label
        x = gray_to_rgb(self.images[i : i + 1], self.image_size)[0]
        return TF.normalize(x, [MEAN] * 3, [STD] * 3), label
