"""Training-free proxies: the empirical NTK engine, ViNTK, LGA and baselines, in one registry."""
from pipeline.proxies.registry import (InvalidScore, ProxyScore, available_proxies, check_options, compute_proxy, get_proxy,
                                       register)

__all__ = ["InvalidScore", "ProxyScore", "available_proxies", "check_options", "compute_proxy", "get_proxy", "register"]
