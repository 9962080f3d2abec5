"""Training-free proxies: the empirical NTK engine, ViNTK, LGA and baselines, in one registry.

Importing the package registers every family (the registry itself imports none of them).
"""
from pipeline.proxies import az_nas, baselines, lswag, ntk_proxies  # noqa: F401  (their decorators fill the registry)
from pipeline.proxies.registry import (InvalidScore, ProxyScore, available_proxies, check_options, compute_proxy, get_proxy,
                                       register)

__all__ = ["InvalidScore", "ProxyScore", "available_proxies", "check_options", "compute_proxy", "get_proxy", "register"]
