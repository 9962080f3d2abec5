"""Validation images with their masks: W&B mask overlays and a PNG sheet rendered with PIL."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image


def colorize(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) colours; ignore (255) and unknown labels are white."""
    lut = np.full((256, 3), 255, dtype=np.uint8)
    lut[:len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut[mask]


def overlay(image: np.ndarray, mask: np.ndarray, palette, alpha: float = 0.6) -> np.ndarray:
    """Blend class colours over the image; black palette entries (a background class) stay clear."""
    colours = colorize(mask, palette)
    a = np.where(colours.any(axis=-1, keepdims=True), alpha, 0.0)
    return (image.astype(np.float32) * (1 - a) + colours.astype(np.float32) * a).round().astype(np.uint8)


def load_rgb(path: str, shape: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (shape[1], shape[0]):
            im = im.resize((shape[1], shape[0]), Image.BILINEAR)
        return np.asarray(im)


def sheet(examples: list[dict[str, Any]], palette, max_side: int = 256) -> Image.Image:
    """Rows of [image | ground truth overlay | prediction overlay], each scaled to ``max_side``."""
    rows = []
    for ex in examples:
        img = load_rgb(ex["img_path"], ex["pred"].shape)
        tiles = [img, overlay(img, ex["gt"], palette), overlay(img, ex["pred"], palette)]
        h, w = img.shape[:2]
        scale = max_side / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rows.append(np.concatenate([np.asarray(Image.fromarray(t).resize(size, Image.NEAREST)) for t in tiles], 1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return Image.fromarray(np.concatenate(rows, 0))


def log_examples(loggers, examples: list[dict[str, Any]], classes: Sequence[str], palette, step: int,
                 out_dir: Optional[Path] = None) -> None:
    """Log to W&B (interactive masks + the rendered sheet) and/or save ``val_examples.png``."""
    if not examples:
        return
    rendered = sheet(examples, palette)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        rendered.save(out_dir / "val_examples.png")
    log_image = next((lg.log_image for lg in loggers if hasattr(lg, "log_image")), None)  # the W&B one
    if log_image is None:
        return
    labels = {i: str(c).strip() for i, c in enumerate(classes)}
    images = [load_rgb(ex["img_path"], ex["pred"].shape) for ex in examples]
    masks = [{"predictions": {"mask_data": ex["pred"], "class_labels": labels},
              "ground_truth": {"mask_data": ex["gt"], "class_labels": labels}} for ex in examples]
    captions = [Path(ex["img_path"]).name for ex in examples]
    log_image(key="val/masks", images=images, step=step, caption=captions, masks=masks)
    log_image(key="val/overlays", images=[rendered], step=step,
              caption=["image | ground truth | prediction"])
