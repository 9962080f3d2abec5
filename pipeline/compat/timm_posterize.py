"""timm's RandAugment posterize under Pillow >= 13.

DeiT's ``rand-m9-mstd0.5-inc1`` draws magnitudes around 9 clipped at 10; at 10 timm's
``PosterizeIncreasing`` asks to keep 0 bits. Pillow up to 12 returned a black image for that (as
TensorFlow's op does); Pillow 13 raises ``ValueError: bits must be between or equal to 1 and 8``,
which stops an ImageNet run inside a DataLoader worker after a few thousand images.
:func:`install` routes timm's posterize ops through :func:`posterize`, which keeps the old
result for 0 bits and calls timm's own op otherwise.
"""
from __future__ import annotations

from typing import Any

POSTERIZE_OPS = ("Posterize", "PosterizeIncreasing", "PosterizeOriginal")


def posterize(img, bits_to_keep: int, **kwargs: Any):
    """timm's posterize, with ``bits_to_keep <= 0`` giving a black image (Pillow < 13's result)."""
    from timm.data import auto_augment

    if bits_to_keep <= 0:
        return img.point(lambda _: 0)
    return auto_augment.posterize(img, bits_to_keep, **kwargs)


def install() -> bool:
    """Point timm's posterize ops at :func:`posterize` (before transforms are built); idempotent."""
    from timm.data import auto_augment

    changed = False
    for name in POSTERIZE_OPS:
        if auto_augment.NAME_TO_OP.get(name) is auto_augment.posterize:
            auto_augment.NAME_TO_OP[name] = posterize
            changed = True
    return changed
