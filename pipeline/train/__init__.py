"""``python -m pipeline train``: retrain a chosen architecture (``--task cls`` or ``--task seg``)."""
