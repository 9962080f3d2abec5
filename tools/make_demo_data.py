"""One-off script that builds the small data files shipped in pipeline/data/shipped/.

Nothing in the `pipeline` package runs this script or needs its extra
dependencies: the outputs (fashion_mnist_demo.npz, probe_photos/*.jpg) are
committed, so the package never downloads anything at run time. Run it only to
regenerate or audit those files (see the README.md there):

    python tools/make_demo_data.py               # both outputs
    python tools/make_demo_data.py --only demo   # fashion_mnist_demo.npz
    python tools/make_demo_data.py --only photos # probe_photos/*.jpg

Inputs:
- demo: the Fashion-MNIST idx files from the Debian package
  `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist), or any folder
  holding the four original *-ubyte.gz files (--fashion-dir).
- photos: the sample images bundled inside the scikit-image and scikit-learn
  wheels (`pip install scikit-image scikit-learn`); no network access.
"""

import argparse
import gzip
from pathlib import Path

import numpy as np
from PIL import Image

OUT_DIR = Path(__file__).resolve().parents[1] / "pipeline" / "data" / "shipped"
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
TRAIN_PER_CLASS = 500  # 5,000 train images, taken from the Fashion-MNIST train set
VAL_PER_CLASS = 100  # 1,000 val images, taken from the Fashion-MNIST test set
SEED = 0

PHOTO_SHORT_SIDE = 256
PHOTO_QUALITY = 90
# (file stem, package, loader name). The list order is the label order used by
# pipeline.data.probe; licenses are listed in the README.md beside this script.
PHOTOS = [
    ("astronaut", "skimage", "astronaut"),
    ("camera", "skimage", "camera"),
    ("cat", "skimage", "chelsea"),
    ("coffee", "skimage", "coffee"),
    ("rocket", "skimage", "rocket"),
    ("hubble", "skimage", "hubble_deep_field"),
    ("grass", "skimage", "grass"),
    ("brick", "skimage", "brick"),
    ("china", "sklearn", "china.jpg"),
    ("flower", "sklearn", "flower.jpg"),
]


# -----------------------------------------------------------------------------
# Fashion-MNIST demo subset


def read_idx(path: Path) -> np.ndarray:
    """Read a gzipped idx file (the MNIST format): magic, dims, raw uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def balanced_subset(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `per_class` random examples of every class, in shuffled order."""
    idx = [
        rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(len(FASHION_CLASSES))
    ]
    return rng.permutation(np.concatenate(idx))


def make_demo(fashion_dir: Path) -> None:
    rng = np.random.default_rng(SEED)
    arrays = {}
    for split, prefix, per_class in [("train", "train", TRAIN_PER_CLASS), ("val", "t10k", VAL_PER_CLASS)]:
        images = read_idx(fashion_dir / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(fashion_dir / f"{prefix}-labels-idx1-ubyte.gz")
        idx = balanced_subset(labels, per_class, rng)
        arrays[f"{split}_images"] = images[idx]  # (N, 28, 28) uint8
        arrays[f"{split}_labels"] = labels[idx].astype(np.int64)
        arrays[f"{split}_source_index"] = idx.astype(np.int64)  # row in the original file
    arrays["classes"] = np.array(FASHION_CLASSES)  # unicode array, loads without pickle
    out = OUT_DIR / "fashion_mnist_demo.npz"
    np.savez_compressed(out, **arrays)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")


# -----------------------------------------------------------------------------
# natural-photo probe set


def load_photo(package: str, name: str) -> np.ndarray:
    """The uint8 (H, W) or (H, W, 3) array of one bundled sample image."""
    if package == "skimage":
        import skimage.data

        return getattr(skimage.data, name)()
    from sklearn.datasets import load_sample_image

    return load_sample_image(name)


def make_photos() -> None:
    out_dir = OUT_DIR / "probe_photos"
    out_dir.mkdir(exist_ok=True)
    for old in out_dir.glob("*.jpg"):
        old.unlink()
    for i, (stem, package, name) in enumerate(PHOTOS):
        img = Image.fromarray(load_photo(package, name))  # grayscale sources stay mode "L"
        scale = PHOTO_SHORT_SIDE / min(img.size)
        size = (round(img.width * scale), round(img.height * scale))
        img = img.resize(size, Image.Resampling.LANCZOS)
        out = out_dir / f"{i:02d}_{stem}.jpg"
        img.save(out, quality=PHOTO_QUALITY)
        print(f"wrote {out} {img.size} {img.mode} ({out.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["demo", "photos"], default=None)
    parser.add_argument("--fashion-dir", type=Path, default=FASHION_DIR)
    args = parser.parse_args()
    if args.only in (None, "demo"):
        make_demo(args.fashion_dir)
    if args.only in (None, "photos"):
        make_photos()
