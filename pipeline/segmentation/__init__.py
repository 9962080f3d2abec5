"""Semantic segmentation retraining: mmsegmentation models, data and metrics under Lightning.

``python -m pipeline train --task seg`` (see :mod:`pipeline.segmentation.task`). Importing
this package installs the mmcv-lite compat (:mod:`pipeline.compat`) before anything from mmseg,
and registers ``SpecViT`` (backbone) and ``DemoSegDataset`` in mmseg's registries.
"""
import warnings

import pipeline.compat  # noqa: F401  -- must precede every mmseg import

with warnings.catch_warnings():
    # mmcv-lite lacks MultiScaleDeformableAttention (a compiled op mmseg never needs here).
    warnings.filterwarnings("ignore", message=".*MultiScaleDeformableAttention.*")
    from mmseg.utils import register_all_modules

    # mmseg's modules in mmengine's registries, and "mmseg" as the default scope, so that
    # mmengine-built pieces (data preprocessor, transforms, metrics) resolve to mmseg's classes.
    register_all_modules(init_default_scope=True)

from pipeline.segmentation.backbone import SpecViT
from pipeline.segmentation.datasets import DemoSegDataset

__all__ = ["SpecViT", "DemoSegDataset"]
