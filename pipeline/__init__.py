"""pipeline: training-free Vision Transformer search (ViNTK) and Lightning retraining."""
__version__ = "0.1.0"
