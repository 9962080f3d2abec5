"""``python -m pipeline run``: search, then classification and segmentation retraining, in one command.

``settings`` nests each stage's parser under its name (every stage key typed and checked before
the first stage starts), ``command`` runs the stages as subprocesses and writes the report.
"""
