"""Datasets and probe batches: the shipped demo set, natural-photo probe
batches for training-free scoring, and user data in the ImageNet layout."""

from .demo import DemoClassification
from .errors import DataError
from .folders import ImageFolderDataset
from .paths import DATA_DIR
from .probe import IMAGENET_MEAN, IMAGENET_STD, probe_batch

__all__ = [
    "DATA_DIR",
    "DataError",
    "DemoClassification",
    "ImageFolderDataset",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "probe_batch",
]
