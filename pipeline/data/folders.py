"""User data in the ImageNet folder layout, with errors that say what is wrong.

torchvision's ImageFolder does the indexing; this wrapper checks the layout
first and wraps the image loader, so a wrong path, an empty class folder or a
corrupt file fails with a message naming the path instead of a bare traceback
from deep inside a DataLoader worker.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image
from torchvision import datasets
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from .errors import DataError

LAYOUT = ("expected the ImageNet folder layout root/train/<class>/*.JPEG and root/val/<class>/*.JPEG "
          "(one sub-folder per class, the same classes in every split)")


def load_rgb(path: str) -> Image.Image:
    """Open an image as RGB, like torchvision's default loader, but a failure names the file."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as e:
        raise DataError(f"cannot read image file {path}: {type(e).__name__}: {e}") from e


def _has_image(folder: Path) -> bool:
    # Same walk as ImageFolder (follows links, any depth); stops at the first image.
    return any(
        has_file_allowed_extension(f, IMG_EXTENSIONS)
        for _, _, files in os.walk(folder, followlinks=True)
        for f in files
    )


def check_split_dir(root: Path, split: str) -> Path:
    """The split folder root/split, after checking the layout; raises DataError otherwise."""
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist or is not a folder; {LAYOUT}")
    split_dir = root / split
    if not split_dir.is_dir():
        found = sorted(d.name for d in root.iterdir() if d.is_dir())
        raise DataError(f"split folder {split_dir} not found (sub-folders of {root}: {found}); {LAYOUT}")
    class_dirs = sorted(d for d in split_dir.iterdir() if d.is_dir())
    if not class_dirs:
        raise DataError(f"split folder {split_dir} has no class sub-folders; {LAYOUT}")
    for d in class_dirs:
        if not _has_image(d):
            raise DataError(
                f"class folder {d} contains no images (accepted extensions: {', '.join(IMG_EXTENSIONS)})"
            )
    return split_dir


class ImageFolderDataset(datasets.ImageFolder):
    """root/split/<class>/*.JPEG as (transform(RGB PIL image), class index) pairs.

    Class indices follow sorted folder names (ImageFolder's rule), so train and
    val agree as long as they hold the same class folders.
    """

    def __init__(
        self, root: str | os.PathLike, split: str, transform: Callable[[Image.Image], Any] | None = None
    ) -> None:
        split_dir = check_split_dir(Path(root).expanduser(), split)
        super().__init__(str(split_dir), transform=transform, loader=load_rgb)
        self.split = split

    @property
    def num_classes(self) -> int:
        return len(self.classes)
