"""Latency and peak inference memory of networks on the device they will run on.

One concept per module:

* ``settings``  -- the search's ``latency`` options (torch-free, checked at parse time);
* ``target``    -- device, backend, batch, threads; the device's fingerprint; pinning;
* ``backends``  -- a network as a call to time: torch eager, ``torch.export``, ONNX Runtime;
* ``measure``   -- medians after warm-up, networks interleaved;
* ``memory``    -- peak memory counted by torch's allocator;
* ``predictor`` -- a network's latency as the sum of its parts, calibrated on the target;
* ``cache``     -- the calibration measurements, per target, in the user's cache folder;
* ``fresh``     -- one network measured in a new process;
* ``costs``     -- what the search asks: feasibility, a proposal's admission, a candidate's costs.

The names below load on first use (``settings`` must import without torch).
"""
import importlib

_EXPORTS = {"Target": "pipeline.latency.target", "LatencyPredictor": "pipeline.latency.predictor",
            "MeasurementCache": "pipeline.latency.cache", "DeviceCosts": "pipeline.latency.costs",
            "Costs": "pipeline.latency.costs", "measure_latency": "pipeline.latency.measure",
            "peak_memory_mb": "pipeline.latency.memory", "measure_in_fresh_process": "pipeline.latency.fresh"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline.latency' has no attribute {name!r}")
