"""Fixed, seeded input batches for probing networks at initialization.

Training-free search scores (NTK condition number, gradient statistics, ...)
are computed on one small batch. It has to be identical for every candidate
and every run, or the scores are not comparable, and it should look like
natural images at 224x224, or the scores say little about ImageNet training.
Hence: seeded random-resized crops of a handful of shipped photos, labelled by
the photo they came from.
"""

import functools
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms.v2 import functional as TF

from . import paths
from .demo import gray_to_rgb, load_demo_arrays
from .errors import DataError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PHOTO_DIR = "probe_photos"  # under DATA_DIR; files NN_name.jpg, label = sorted position
CROP_SCALE = (0.25, 1.0)  # fraction of the photo's area kept by a crop
CROP_RATIO = (3 / 4, 4 / 3)  # crop aspect ratio range (sampled log-uniformly)
SOURCES = ("photos", "demo")


@functools.lru_cache(maxsize=4)
def _read_photos(folder: Path) -> tuple[tuple[str, ...], tuple[Tensor, ...]]:
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise DataError(
            f"no probe photos (*.jpg) in {folder}; they ship inside the package "
            f"under pipeline/data/shipped/{PHOTO_DIR}/ (see the README.md there)"
        )
    names, images = [], []
    for f in files:
        try:
            with Image.open(f) as img:
                arr = np.array(img.convert("RGB"))
        except Exception as e:
            raise DataError(f"cannot read probe photo {f}: {e}") from e
        names.append(f.stem.split("_", 1)[-1])
        images.append(torch.from_numpy(arr).permute(2, 0, 1))  # uint8 (3, H, W)
    return tuple(names), tuple(images)


def load_photos() -> tuple[list[str], list[Tensor]]:
    """Names and uint8 (3, H, W) tensors of the shipped probe photos (cached)."""
    names, images = _read_photos(paths.DATA_DIR / PHOTO_DIR)
    return list(names), list(images)


def photo_names() -> list[str]:
    """Class names of probe_batch(source="photos"): label i is photo_names()[i]."""
    return load_photos()[0]


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand(1, generator=g).item()


def _crop_box(h: int, w: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a random-resized crop, like torchvision's
    RandomResizedCrop but drawn from our generator instead of the global RNG."""
    for _ in range(10):
        area = h * w * _uniform(g, *CROP_SCALE)
        ratio = math.exp(_uniform(g, math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=g))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=g))
            return top, left, ch, cw
    s = min(h, w)  # fallback: the central square
    return (h - s) // 2, (w - s) // 2, s, s


def _photo_batch(labels: Tensor, image_size: int, g: torch.Generator) -> Tensor:
    _, photos = load_photos()
    out = []
    for label in labels.tolist():
        img = photos[label]
        top, left, ch, cw = _crop_box(img.shape[1], img.shape[2], g)
        img = TF.resized_crop(img, top, left, ch, cw, [image_size, image_size], antialias=True)
        if torch.rand(1, generator=g).item() < 0.5:
            img = TF.horizontal_flip(img)
        out.append(img)
    return torch.stack(out).float() / 255


def _demo_batch(labels: Tensor, image_size: int, g: torch.Generator) -> Tensor:
    arrays = load_demo_arrays()
    train_labels = torch.from_numpy(arrays["train_labels"])
    idx = torch.empty(len(labels), dtype=torch.long)
    for c in range(len(arrays["classes"])):
        slots = (labels == c).nonzero().flatten()
        pool = (train_labels == c).nonzero().flatten()
        if len(slots) > len(pool):
            raise ValueError(
                f"demo train split has only {len(pool)} images of class {c}, {len(slots)} requested"
            )
        idx[slots] = pool[torch.randperm(len(pool), generator=g)[: len(slots)]]
    return gray_to_rgb(torch.from_numpy(arrays["train_images"])[idx], image_size)


def probe_batch(
    n: int, image_size: int = 224, seed: int = 0, source: str = "photos"
) -> tuple[Tensor, Tensor]:
    """A deterministic batch: images (n, 3, S, S) float32 normalized with ImageNet
    mean/std, and labels (n,) int64.

    Labels cycle 0, 1, ..., C-1, 0, 1, ... so classes are balanced (exactly when
    C divides n). source="photos": C = number of shipped photos, image = a seeded
    random-resized crop (+ random horizontal flip) of photo `label`.
    source="demo": C = 10, image = a seeded random demo train image of class
    `label`, resized to S. The same arguments always give identical tensors; the
    global torch RNG is not touched.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown probe source {source!r}; expected one of {SOURCES}")
    if n < 1 or image_size < 1:
        raise ValueError(f"n and image_size must be positive, got n={n}, image_size={image_size}")
    g = torch.Generator().manual_seed(seed)
    if source == "photos":
        labels = torch.arange(n) % len(photo_names())
        images = _photo_batch(labels, image_size, g)
    else:
        labels = torch.arange(n) % len(load_demo_arrays()["classes"])
        images = _demo_batch(labels, image_size, g)
    return TF.normalize(images, list(IMAGENET_MEAN), list(IMAGENET_STD)), labels


def folder_probe_batch(root: str, n: int, image_size: int = 224, seed: int = 0) -> tuple[Tensor, Tensor]:
    """A deterministic probe batch from a user's ImageNet-style ``root/train/<class>/*``.

    Picks ``n`` images spread over as many classes as possible (seeded), resized (short side)
    and centre-cropped to ``image_size``, normalised like ``probe_batch``.
    """
    from pipeline.data.folders import ImageFolderDataset

    dataset = ImageFolderDataset(root, "train")
    g = torch.Generator().manual_seed(seed)
    targets = torch.tensor(dataset.targets)
    classes = torch.randperm(dataset.num_classes, generator=g)[:n]
    picks = []
    for i in range(n):
        pool = (targets == classes[i % len(classes)]).nonzero().flatten()
        picks.append(int(pool[torch.randint(len(pool), (1,), generator=g)]))
    images, labels = [], []
    for idx in picks:
        img, label = dataset[idx]
        t = TF.center_crop(TF.resize(TF.pil_to_tensor(img), image_size, antialias=True), image_size)
        images.append(t.float() / 255)
        labels.append(label)
    return TF.normalize(torch.stack(images), list(IMAGENET_MEAN), list(IMAGENET_STD)), torch.tensor(labels)
