"""``python -m pipeline refine``: a short, budgeted training race among the search's best candidates and
the largest networks that fit, ranked on training images held out of training.

``settings`` (typed options), ``plan`` (the rung plan, its cost and the promotion rule: pure functions),
``shortlist`` (the entrants), ``race`` (one training per entrant and rung, the resumable log, the race's
state derived from it), ``report`` (the printed plan, rungs.csv, refine.png, W&B) and ``command`` (the
workers' loop). How it works and what it costs: docs/refine.md.
"""
