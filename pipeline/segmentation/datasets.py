"""Segmentation datasets: the embedded demo set, and checks of any mmseg folder dataset.

mmseg reads the data (``ADE20KDataset``, ``CityscapesDataset``, our :class:`DemoSegDataset`,
or any class in its ``DATASETS`` registry); this module checks the files *before* training,
so a wrong root, an image without a mask, an image/mask size mismatch or a label outside the
class list stops the run at once with a message naming the file, instead of failing (or
silently training on garbage) hours later inside a DataLoader worker.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
from PIL import Image

import pipeline.compat  # noqa: F401  (mmcv.ops stand-in before mmseg)
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS

from pipeline.data import paths
from pipeline.data.errors import DataError

DEMO_DIR_NAME = "seg_demo"


@DATASETS.register_module()
class DemoSegDataset(BaseSegDataset):
    """The embedded demo scenes (``pipeline/data/shipped/seg_demo``): Fashion-MNIST garments pasted on crops of
    natural photos, with exact per-pixel masks. ADE20K's folder layout and suffixes::

        data_root/images/{training,validation}/NNNN.jpg
        data_root/annotations/{training,validation}/NNNN.png   # class index per pixel (0 = background)
    """

    METAINFO = dict(
        classes=("background", "top", "trouser", "dress", "footwear", "bag"),
        palette=[[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]],
    )

    def __init__(self, img_suffix: str = ".jpg", seg_map_suffix: str = ".png",
                 reduce_zero_label: bool = False, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)


def demo_root() -> Path:
    """The shipped demo set (under ``PIPELINE_DATA_DIR`` when set)."""
    return paths.DATA_DIR / DEMO_DIR_NAME


def dataset_class(name: str) -> type:
    cls = DATASETS.get(name)
    if cls is None:
        known = sorted(k for k in DATASETS.module_dict if k.endswith("Dataset"))
        raise DataError(f"data.type={name!r} is not an mmseg dataset class; known: {', '.join(known)}")
    return cls


def dataset_meta(name: str) -> dict[str, Any]:
    """Classes and palette of a registered dataset class (METAINFO)."""
    meta = dict(dataset_class(name).METAINFO)
    if "classes" not in meta:
        raise DataError(f"dataset class {name} declares no METAINFO classes")
    classes = tuple(meta["classes"])
    palette = meta.get("palette")
    if not palette or len(palette) < len(classes):
        rng = np.random.default_rng(0)
        palette = rng.integers(0, 255, size=(len(classes), 3)).tolist()
    return {"classes": classes, "palette": [list(map(int, p)) for p in palette[:len(classes)]]}


# ----------------------------------------------------------------------------- validation
@dataclass
class SplitReport:
    """What the check of one split found."""

    split: str
    root: Path
    num_images: int = 0
    #: pixel count of each *training* label (after reduce_zero_label), ignore pixels excluded
    label_pixels: Optional[np.ndarray] = None
    notes: list[str] = field(default_factory=list)


def layout_text(cfg: dict[str, Any], data_root: Path) -> str:
    """The expected folders, on one line (error messages are one line)."""
    parts = []
    for split in ("train", "val"):
        pre = cfg["data_prefix"][split]
        parts.append(f"{data_root / pre['img_path']}/**/*{cfg.get('img_suffix') or '<img_suffix>'} with masks "
                     f"{data_root / pre['seg_map_path']}/**/*{cfg.get('seg_map_suffix') or '<seg_map_suffix>'}")
    return "expected layout: " + " and ".join(parts) + " (same relative names, one class index per pixel)"


def _check_pair(img_path: str, seg_path: str, allowed: np.ndarray,
                labels: bool) -> tuple[Optional[str], Optional[np.ndarray]]:
    """(error message or None, 256-bin or wider label histogram or None) for one image/mask pair."""
    if not os.path.isfile(seg_path):
        return f"image {img_path} has no mask: {seg_path} does not exist", None
    try:
        with Image.open(img_path) as im:
            img_size = im.size
    except Exception as e:  # any decoder error is a bad file
        return f"cannot read image file {img_path}: {type(e).__name__}: {e}", None
    try:
        with Image.open(seg_path) as m:
            mask_size, mode = m.size, m.mode
            if mode not in ("L", "P", "I", "I;16", "1"):
                return (f"mask {seg_path} has mode {mode}; masks must be single-channel images holding one "
                        f"class index per pixel (8-bit 'L' or palette 'P' PNG)"), None
            if mask_size != img_size:
                return (f"size mismatch: image {img_path} is {img_size[0]}x{img_size[1]} (WxH) but its mask "
                        f"{seg_path} is {mask_size[0]}x{mask_size[1]}"), None
            if not labels:
                return None, None
            if mode in ("L", "P"):
                hist = np.asarray(m.histogram()[:256], dtype=np.int64)
            else:
                arr = np.asarray(m).astype(np.int64).ravel()
                hist = np.bincount(arr.clip(min=0), minlength=256)
    except Exception as e:  # any decoder error is a bad file
        return f"cannot read mask file {seg_path}: {type(e).__name__}: {e}", None
    present = np.flatnonzero(hist)
    bad = present[~np.isin(present, allowed)]
    if bad.size:
        return (f"mask {seg_path} holds label value(s) {bad.tolist()} outside the class list "
                f"(allowed: {_ranges(allowed)})"), None
    return None, hist


def _ranges(values: np.ndarray) -> str:
    values = sorted(int(v) for v in values)
    parts, start = [], values[0]
    for a, b in zip(values, values[1:] + [None]):
        if b != a + 1:
            parts.append(f"{start}" if start == a else f"{start}-{a}")
            start = b
    return ", ".join(parts)


def allowed_labels(num_classes: int, reduce_zero_label: bool, ignore_index: int = 255) -> np.ndarray:
    """Raw mask values that are valid: the class indices (shifted by one when 0 is reduced away,
    as in ADE20K where 0 = 'other') and the ignore index."""
    top = num_classes + (1 if reduce_zero_label else 0)
    return np.array(sorted(set(range(top)) | {ignore_index}))


def to_train_labels(hist: np.ndarray, num_classes: int, reduce_zero_label: bool,
                    ignore_index: int = 255) -> np.ndarray:
    """Raw-value histogram -> pixel count per training class (what mmseg's loader produces)."""
    hist = np.pad(hist, (0, max(0, 257 - hist.size)))
    if reduce_zero_label:
        return hist[1:num_classes + 1].astype(np.int64)
    return hist[:num_classes].astype(np.int64)


def check_split(data_cfg: dict[str, Any], data_root: Path, split: str, mode: str = "full",
                workers: int = 4) -> SplitReport:
    """Check the image/mask pairs mmseg will read for one split; raise DataError on a problem.

    ``mode``: ``full`` reads every mask's label set (PIL histogram) and size; ``sizes`` reads
    only the file headers (sizes, modes); ``off`` only checks that the folders exist and hold images.
    """
    if mode not in ("full", "sizes", "off"):
        raise DataError(f"data.validate={mode!r} is unknown; use full, sizes or off")
    cls_name = data_cfg["type"]
    meta = dataset_meta(cls_name)
    layout = layout_text(data_cfg, data_root)
    if not data_root.is_dir():
        raise DataError(f"dataset root {data_root} does not exist or is not a folder (data.data_root); "
                        f"{layout}")
    prefix = data_cfg["data_prefix"][split]
    for key in ("img_path", "seg_map_path"):
        d = data_root / prefix[key]
        if not d.is_dir():
            found = sorted(p.name for p in d.parent.iterdir() if p.is_dir()) if d.parent.is_dir() else []
            raise DataError(f"{split} folder {d} not found (data.data_prefix.{split}.{key}; folders in "
                            f"{d.parent}: {found}); {layout}")
    ds = build_dataset(data_cfg, data_root, split, pipeline=[])
    report = SplitReport(split=split, root=data_root, num_images=len(ds))
    if len(ds) == 0:
        suffix = getattr(ds, "img_suffix", "")
        raise DataError(f"no images ending in {suffix!r} under {data_root / prefix['img_path']}; {layout}")
    if mode == "off":
        return report
    reduce = bool(getattr(ds, "reduce_zero_label", False))
    ignore = int(getattr(ds, "ignore_index", 255))
    allowed = allowed_labels(len(meta["classes"]), reduce, ignore)
    pairs = [(ds.get_data_info(i)["img_path"], ds.get_data_info(i)["seg_map_path"]) for i in range(len(ds))]
    labels = mode == "full"
    total = np.zeros(256, dtype=np.int64)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # PIL decodes without the GIL
        for error, hist in pool.map(lambda p: _check_pair(p[0], p[1], allowed, labels), pairs, chunksize=16):
            if error:
                raise DataError(error)
            if hist is not None:
                total[:hist.size] += hist[:256]
    if labels:
        report.label_pixels = to_train_labels(total, len(meta["classes"]), reduce, ignore)
    return report


def resolve_root(data_cfg: dict[str, Any]) -> Path:
    root = data_cfg.get("data_root")
    if root in (None, "") and data_cfg["type"] == "DemoSegDataset":
        return demo_root()
    if root in (None, ""):
        raise DataError(f"data.data_root is not set; pass --data.data_root=/path/to/{data_cfg['type']} root")
    return Path(str(root)).expanduser()


def build_dataset(data_cfg: dict[str, Any], data_root: Path, split: str, pipeline: list) -> BaseSegDataset:
    """The mmseg dataset of one split (``split``: train | val) from our ``data`` config section."""
    kwargs: dict[str, Any] = dict(type=data_cfg["type"], data_root=str(data_root),
                                  data_prefix=dict(data_cfg["data_prefix"][split]), pipeline=pipeline,
                                  test_mode=split != "train")
    if data_cfg.get("reduce_zero_label") is not None:
        kwargs["reduce_zero_label"] = bool(data_cfg["reduce_zero_label"])
    for key in ("img_suffix", "seg_map_suffix"):
        if data_cfg.get(key):
            kwargs[key] = data_cfg[key]
    try:
        return DATASETS.build(kwargs)
    except (FileNotFoundError, NotADirectoryError) as e:
        raise DataError(f"cannot index {data_cfg['type']} {split} split under {data_root}: {e}") from e
