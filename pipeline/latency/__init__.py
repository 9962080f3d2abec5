"""Latency and peak inference memory of networks on the device they will run on.

One concept per module:

* ``settings``  -- the search's ``latency`` options (torch-free, checked at parse time);
* ``target``    -- device, backend, batch, threads; the device's fingerprint; pinning;
* ``allocator`` -- the C allocator held steady while timing (freed memory kept in the process);
* ``backends``  -- a network as a call to time: torch eager, ``torch.export``, ONNX Runtime;
* ``measure``   -- medians after warm-up, runs of the networks interleaved, on both clocks;
* ``memory``    -- peak inference memory: live tensors counted (CPU), the allocator's peak (CUDA);
* ``predictor`` -- a network's latency as the sum of its parts, calibrated on the target;
* ``cache``     -- the calibration measurements, per target, in the user's cache folder;
* ``fresh``     -- one network measured in a new process;
* ``costs``     -- what the search asks: feasibility, a proposal's admission, a candidate's costs.

Import from the modules themselves: ``settings`` must import without torch (the search's options
are checked before torch loads), so this package imports nothing.
"""
