"""Networks materialised from architecture specs, and their exact cost."""
from pipeline.models.build import build_model
from pipeline.models.complexity import complexity, count_flops, count_mlp_units, count_params
from pipeline.models.pit import PoolingTransformer
from pipeline.models.vit import VisionTransformer

__all__ = ["build_model", "complexity", "count_flops", "count_mlp_units", "count_params", "PoolingTransformer",
           "VisionTransformer"]
