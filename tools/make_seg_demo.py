"""Build the embedded segmentation demo set, pipeline/data/shipped/seg_demo/ (see the README.md there).

Scenes of 64x64 pixels: a random crop (64-128 px of the 256 px photo, resized, brightness
jittered) of one of the natural photos in probe_photos/ as background, with 1-3
Fashion-MNIST garments (fashion_mnist_demo.npz) pasted on it, each scaled to 30-52 px,
tinted with a random colour (saturation 0.4-1, value 0.65-1), at most a quarter of it cut by
the border, placed where it overlaps earlier garments least (of 12 random positions; a later
garment may still occlude part of an earlier one). A garment covers exactly the pixels where
its (resized) gray image exceeds a threshold, so the mask is exact: every pixel carries the
class of the object that painted it, or 0 (background). Images are JPEG (quality 95, no chroma
subsampling), masks 8-bit palette PNG.

Classes (DemoSegDataset.METAINFO): 0 background, 1 top (T-shirt/top, Pullover, Coat, Shirt),
2 trouser, 3 dress, 4 footwear (Sandal, Sneaker, Ankle boot), 5 bag. Garments of the training
scenes come from the demo set's train images, those of the validation scenes from its val
images (themselves from the Fashion-MNIST test set); background crops are drawn independently.

    python tools/make_seg_demo.py            # rewrites pipeline/data/shipped/seg_demo/ (seeded, deterministic)
    python tools/make_seg_demo.py --train 400 --val 80 --size 64 --out /tmp/seg_demo
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))   # this checkout's package, also when it is not installed
HERE = REPO / "pipeline" / "data" / "shipped"

# Fashion-MNIST class index -> demo class index (0 is background).
GROUPS = {0: 1, 2: 1, 4: 1, 6: 1, 1: 2, 3: 3, 5: 4, 7: 4, 9: 4, 8: 5}
THRESHOLD = 40  # gray level (of 255) above which a resized garment pixel belongs to the garment
JPEG_QUALITY = 95


def load_photos() -> list[np.ndarray]:
    photos = []
    for path in sorted((HERE / "probe_photos").glob("*.jpg")):
        with Image.open(path) as im:
            photos.append(np.asarray(im.convert("RGB")))
    if not photos:
        raise SystemExit(f"no photos in {HERE / 'probe_photos'}")
    return photos


def background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.integers(size, min(h, w, 2 * size) + 1))
    y, x = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.BILINEAR)
    out = np.asarray(crop).astype(np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    # mild colour/brightness jitter so the ten photos give many backgrounds
    out = out * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20, size=3)
    return out


def tint(rng: np.random.Generator) -> np.ndarray:
    """A random saturated-ish colour (RGB in [0, 1])."""
    import colorsys

    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 1.0), rng.uniform(0.65, 1.0)))


def scene(rng: np.random.Generator, photos, images: np.ndarray, by_group: dict[int, np.ndarray],
          size: int) -> tuple[np.ndarray, np.ndarray]:
    img = background(rng, photos, size)
    mask = np.zeros((size, size), dtype=np.uint8)
    n = int(rng.choice([1, 2, 3], p=[0.35, 0.45, 0.2]))
    for _ in range(n):
        group = int(rng.integers(1, 6))
        idx = int(rng.choice(by_group[group]))
        side = int(rng.integers(30, 53))
        gray = np.asarray(Image.fromarray(images[idx]).resize((side, side), Image.BILINEAR))
        if rng.random() < 0.5:
            gray = gray[:, ::-1]
        obj = gray > THRESHOLD
        # top-left corner: at most a quarter of the garment outside the image; of 12 random
        # positions take the one overlapping the garments already placed the least
        lo, hi = -side // 4, size - 3 * side // 4
        best = None
        for _ in range(12):
            y, x = int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1))
            ys, xs = slice(max(y, 0), min(y + side, size)), slice(max(x, 0), min(x + side, size))
            sub = obj[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x]
            overlap = int((mask[ys, xs][sub] > 0).sum())
            if best is None or overlap < best[0]:
                best = (overlap, y, x, ys, xs, sub)
        _, y, x, ys, xs, sub = best
        g = gray[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x].astype(np.float32) / 255
        colour = (0.35 + 0.65 * g)[..., None] * tint(rng) * 255
        region = img[ys, xs]
        region[sub] = colour[sub]
        mask[ys, xs][sub] = group
    img = img + rng.normal(0, 3, size=img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8), mask


def build(out: Path, n_train: int, n_val: int, size: int, seed: int) -> None:
    from pipeline.data.demo import load_demo_arrays
    from pipeline.segmentation.datasets import DemoSegDataset

    arrays = load_demo_arrays()
    photos = load_photos()
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:len(DemoSegDataset.METAINFO["palette"])] = DemoSegDataset.METAINFO["palette"]
    palette[255] = (255, 255, 255)
    if out.exists():
        shutil.rmtree(out)
    rng = np.random.default_rng(seed)
    for split, folder, n in (("train", "training", n_train), ("val", "validation", n_val)):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        by_group = {g: np.flatnonzero(np.isin(labels, [c for c, gg in GROUPS.items() if gg == g]))
                    for g in range(1, 6)}
        (out / "images" / folder).mkdir(parents=True)
        (out / "annotations" / folder).mkdir(parents=True)
        counts = np.zeros(6, dtype=np.int64)
        for i in range(n):
            img, mask = scene(rng, photos, images, by_group, size)
            Image.fromarray(img).save(out / "images" / folder / f"{i:04d}.jpg", quality=JPEG_QUALITY,
                                                                               subsampling=0)
            m = Image.frombytes("P", (size, size), mask.tobytes())
            m.putpalette(palette.ravel().tolist())
            m.save(out / "annotations" / folder / f"{i:04d}.png", optimize=True)
            counts += np.bincount(mask.ravel(), minlength=6)
        share = ", ".join(f"{c} {p:.1%}" for c, p in zip(DemoSegDataset.METAINFO["classes"], counts / counts.sum()))
        print(f"{split}: {n} scenes of {size}x{size} in {out / 'images' / folder}; pixels: {share}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "seg_demo")
    ap.add_argument("--train", type=int, default=400)
    ap.add_argument("--val", type=int, default=80)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    build(a.out, a.train, a.val, a.size, a.seed)


if __name__ == "__main__":
    main()
