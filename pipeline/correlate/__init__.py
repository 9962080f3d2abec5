"""``python -m pipeline correlate``: how well do training-free proxies rank real architectures?

Read in the order a run goes: ``settings`` (the typed options; no torch, so a bad option is
refused at once), ``plan`` (everything checked and selected before any work), ``scores`` (the
scoring loop and its resume log, ``scores.csv``), ``statistics`` (ranking statistics and regret),
``report`` (tables, files and plots) and ``command`` (the entry point that runs them in order).
"""
