"""Compatibility shims for optional third-party pieces.

``import pipeline.compat`` installs the pure-PyTorch ``mmcv.ops`` stand-in when only
mmcv-lite is present (see :mod:`pipeline.compat.mmcv_ops`); import it before mmseg.
"""
from pipeline.compat.mmcv_ops import install as install_mmcv_ops

MMCV_OPS_COMPAT = install_mmcv_ops()

__all__ = ["MMCV_OPS_COMPAT", "install_mmcv_ops"]
