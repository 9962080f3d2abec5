"""The predictor's measurements on disk, one file per target, in the user's cache folder.

A file holds the measured latency of every calibration network measured on one target (device
fingerprint, backend and its version, batch, threads, torch version; ``Target.cache_key``): the
block networks, timed together in the calibrating process, and the whole networks, each timed in
a fresh process (kept apart: the same network measures differently in the two). A second search
of the same space on the same machine measures nothing, and a change of any of those starts a
new file. The folder is ``$XDG_CACHE_HOME/pipeline/latency`` (by default
``~/.cache/pipeline/latency``); deleting a file re-calibrates.

Writes merge with what is on disk under a lock and replace the file atomically, so two searches
calibrating at once lose nothing and leave no half-written file.
"""
from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Optional

from pipeline.latency.measure import Timing
from pipeline.latency.target import Target
from pipeline.space.spec import ArchSpec
from pipeline.utils.io import atomic_write_text

# 2: both clocks per network; 3: warm bursts of calls; 4: steady allocator, whole runs interleaved (in passes);
# 5: warm-up capped by time, whole networks measured in fresh processes
FORMAT = 5
KINDS = ("networks", "fresh")   # timed in the calibrating process; timed each in a fresh process


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pipeline" / "latency"


def network_key(spec: ArchSpec) -> str:
    """A network's identity in the cache: its spec without the (informational) space name."""
    d = spec.to_dict()
    d.pop("space", None)
    return json.dumps(d, sort_keys=True)


class MeasurementCache:
    """Measured latencies (``Timing``: both clocks) of networks on one target; ``fresh=True``: the
    networks measured each in a fresh process."""

    def __init__(self, target: Target, folder: Optional[Path] = None) -> None:
        self.target = target
        self.key = target.cache_key()
        self.path = Path(folder or cache_dir()) / f"{target.cache_name()}.json"
        self.entries: dict[str, dict[str, dict]] = self._read()

    @property
    def networks(self) -> dict[str, dict]:
        return self.entries["networks"]

    def _read(self) -> dict[str, dict[str, dict]]:
        empty = {kind: {} for kind in KINDS}
        if not self.path.is_file():
            return empty
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            return empty   # unreadable: measured again, then replaced
        if data.get("format") != FORMAT or data.get("target") != self.key:
            return empty
        return {kind: dict(data.get(kind) or {}) for kind in KINDS}

    def get(self, spec: ArchSpec, fresh: bool = False) -> Optional[Timing]:
        entry = self.entries["fresh" if fresh else "networks"].get(network_key(spec))
        return None if entry is None else Timing.from_dict(entry)

    def put(self, timings: Mapping[ArchSpec, Timing], fresh: bool = False) -> None:
        """Add measurements (and keep those another process added since this one read the file)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            disk = self._read()
            self.entries = {kind: {**disk[kind], **self.entries[kind]} for kind in KINDS}
            for spec, t in timings.items():
                self.entries["fresh" if fresh else "networks"][network_key(spec)] = t.to_dict()
            atomic_write_text(self.path, json.dumps({"format": FORMAT, "target": self.key, **self.entries}, indent=0))

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
