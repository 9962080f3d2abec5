"""Image classification retraining of a searched ViT (``python -m pipeline train --task cls``).

* :class:`ClassificationModule` -- the LightningModule (network from a spec, DeiT recipe via timm);
* :class:`ClassificationDataModule` -- the demo set or ImageNet-style folders, timm transforms;
* :func:`load_exported` / :func:`load_backbone` -- read the exported ``model.pt``;
* :func:`export_portable` -- ``model.pt2`` / ``model.onnx``, which load without this package.
"""
from pipeline.classification.datamodule import ClassificationDataModule
from pipeline.classification.export import export_model, export_portable, load_backbone, load_exported
from pipeline.classification.module import ClassificationModule

__all__ = ["ClassificationDataModule", "ClassificationModule", "export_model", "export_portable", "load_backbone",
           "load_exported"]
