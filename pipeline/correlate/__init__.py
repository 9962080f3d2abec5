"""``python -m pipeline correlate``: how well do training-free proxies rank real architectures?

``settings`` holds the typed options (no torch: a bad option is refused at once), ``command``
scores and reports.
"""
