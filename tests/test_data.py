"""Tests for pipeline.data: the shipped demo set, probe batches and the folder loader."""

import importlib

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.data import (
    DATA_DIR,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DataError,
    DemoClassification,
    ImageFolderDataset,
    demo,
    paths,
    probe_batch,
)
from pipeline.data.probe import photo_names


def unnormalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    return x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)


# -----------------------------------------------------------------------------
# demo set


def test_data_dir_is_repo_data_folder():
    assert DATA_DIR.is_dir()
    assert (DATA_DIR / "fashion_mnist_demo.npz").is_file()
    assert len(list((DATA_DIR / "probe_photos").glob("*.jpg"))) == 10


def test_data_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINE_DATA_DIR", str(tmp_path))
    try:
        assert importlib.reload(paths).DATA_DIR == tmp_path.resolve()
        with pytest.raises(DataError, match="fashion_mnist_demo.npz"):
            DemoClassification("train")
    finally:
        monkeypatch.delenv("PIPELINE_DATA_DIR")
        importlib.reload(paths)
    assert paths.DATA_DIR == paths.SHIPPED_DATA_DIR.resolve()


@pytest.mark.parametrize("split,size", [("train", 5000), ("val", 1000)])
def test_demo_split_sizes_and_balance(split, size):
    ds = DemoClassification(split)
    assert len(ds) == size
    assert ds.num_classes == 10
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    assert ds.labels.dtype == torch.int64
    assert torch.bincount(ds.labels, minlength=10).tolist() == [size // 10] * 10


def test_demo_item_shape_dtype_and_values():
    ds = DemoClassification("train")
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert isinstance(y, int) and 0 <= y < 10 and y == int(ds.labels[0])
    assert torch.equal(x[0], x[1]) and torch.equal(x[0], x[2])  # gray copied to RGB
    pixels = unnormalize(x, [demo.MEAN] * 3, [demo.STD] * 3)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_demo_native_size_is_exact_normalization():
    ds = DemoClassification("val", image_size=28)
    raw = ds.images[7].float() / 255
    x, _ = ds[7]
    torch.testing.assert_close(x[1], (raw - demo.MEAN) / demo.STD)


def test_demo_resize():
    x, _ = DemoClassification("val", image_size=64)[3]
    assert x.shape == (3, 64, 64)


def test_demo_pil_transform():
    ds = DemoClassification("val", image_size=99, transform=lambda img: img)
    img, y = ds[5]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (28, 28)
    assert y == int(ds.labels[5])
    arr = np.asarray(img)
    assert (arr == ds.images[5].numpy()[:, :, None]).all()


def test_demo_bad_split():
    with pytest.raises(DataError, match="test"):
        DemoClassification("test")


# -----------------------------------------------------------------------------
# probe batches


def test_probe_photos_shape_labels_determinism():
    names = photo_names()
    assert len(names) == 10 and names[0] == "astronaut"
    x, y = probe_batch(20, image_size=64, seed=3)
    assert x.shape == (20, 3, 64, 64) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.shape == (20,)
    assert torch.bincount(y, minlength=10).tolist() == [2] * 10
    x2, y2 = probe_batch(20, image_size=64, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = probe_batch(20, image_size=64, seed=4)
    assert not torch.equal(x, x3)
    pixels = unnormalize(x, IMAGENET_MEAN, IMAGENET_STD)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    assert pixels.std() > 0.1  # real image content, not a constant


def test_probe_photos_default_size_and_rng_isolation():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    x, y = probe_batch(4)
    assert x.shape == (4, 3, 224, 224)
    assert y.tolist() == [0, 1, 2, 3]
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG untouched


def test_probe_demo_source():
    x, y = probe_batch(30, image_size=28, seed=1, source="demo")
    assert x.shape == (30, 3, 28, 28) and x.dtype == torch.float32
    assert torch.bincount(y, minlength=10).tolist() == [3] * 10
    x2, y2 = probe_batch(30, image_size=28, seed=1, source="demo")
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, probe_batch(30, image_size=28, seed=2, source="demo")[0])
    # at 28x28 every probe image is an exact demo train image of the labelled class
    train = DemoClassification("train")
    pixels = unnormalize(x, IMAGENET_MEAN, IMAGENET_STD)[:, 0]
    raw = torch.round(pixels * 255).to(torch.uint8)
    for img, label in zip(raw, y, strict=True):
        match = (train.images == img).flatten(1).all(1).nonzero().flatten()
        assert len(match) >= 1 and int(train.labels[match[0]]) == int(label)


def test_probe_demo_resized():
    x, _ = probe_batch(10, image_size=48, source="demo")
    assert x.shape == (10, 3, 48, 48)


def test_probe_bad_args():
    with pytest.raises(ValueError, match="source"):
        probe_batch(4, source="imagenet")
    with pytest.raises(ValueError):
        probe_batch(0)


# -----------------------------------------------------------------------------
# user folders


def write_image(path, color, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), color).save(path, fmt)


@pytest.fixture
def folder_root(tmp_path):
    root = tmp_path / "imagenet"
    for split in ("train", "val"):
        write_image(root / split / "cat" / "a.png", (255, 0, 0))
        write_image(root / split / "cat" / "b.JPEG", (250, 0, 0), "JPEG")
        write_image(root / split / "dog" / "c.jpg", (0, 0, 255))
    return root


def test_folder_loader(folder_root):
    ds = ImageFolderDataset(folder_root, "train")
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    assert len(ds) == 3 and ds.targets == [0, 0, 1]
    img, y = ds[0]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (20, 16)
    assert np.asarray(img)[0, 0].tolist() == [255, 0, 0] and y == 0
    x, y = ImageFolderDataset(str(folder_root), "val", transform=lambda im: np.asarray(im))[2]
    assert x.shape == (16, 20, 3) and y == 1
    assert abs(int(x[..., 2].mean()) - 255) <= 3 and x[..., 0].max() <= 3  # blue JPEG


def test_folder_missing_root(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataError) as e:
        ImageFolderDataset(missing, "train")
    assert str(missing) in str(e.value) and "root/train/<class>/*.JPEG" in str(e.value)


def test_folder_missing_split(folder_root):
    (folder_root / "val").rename(folder_root / "validation")
    with pytest.raises(DataError) as e:
        ImageFolderDataset(folder_root, "val")
    msg = str(e.value)
    assert str(folder_root / "val") in msg and "validation" in msg and "root/val/<class>" in msg


def test_folder_split_without_classes(folder_root):
    write_image(folder_root / "test" / "loose.png", (0, 0, 0))
    with pytest.raises(DataError, match="no class sub-folders"):
        ImageFolderDataset(folder_root, "test")


def test_folder_empty_class(folder_root):
    empty = folder_root / "train" / "emu"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as e:
        ImageFolderDataset(folder_root, "train")
    assert str(empty) in str(e.value) and "contains no images" in str(e.value)


def test_folder_corrupt_image(folder_root):
    bad = folder_root / "train" / "dog" / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    truncated = folder_root / "train" / "dog" / "truncated.jpg"
    write_image(truncated, (0, 255, 0), "JPEG")
    truncated.write_bytes(truncated.read_bytes()[:200])
    ds = ImageFolderDataset(folder_root, "train")
    paths_ = [p for p, _ in ds.samples]
    assert ds[paths_.index(str(folder_root / "train" / "dog" / "c.jpg"))][1] == 1
    for f in (bad, truncated):
        with pytest.raises(DataError) as e:
            ds[paths_.index(str(f))]
        assert str(f) in str(e.value) and "cannot read image file" in str(e.value)


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)
