"""The C allocator held steady while networks are timed: freed memory stays in the process.

glibc's malloc gives large blocks back to the system when they are freed (above a threshold it
moves as the process runs) and takes them again as fresh, zeroed pages on the next allocation.
Whether a network's activations fall above or below that threshold depends on what the process
allocated before, so the same AutoFormer-T network (224 px, batch 1, one thread), measured in
fresh processes, ran its forward in either about 200 ms or 350-480 ms: 0.26 million page faults
against 3.2 million (docs/latency.md). Fixing the threshold at glibc's largest value and never
trimming the heap makes every process run like the fast ones, which is what the allocators
recommended for PyTorch CPU inference (jemalloc, tcmalloc) do by keeping freed memory.

glibc keeps the setting for the rest of the process (its moving threshold cannot be switched back
on); the cost is a resident size that does not shrink after the peak. Other C libraries (musl,
macOS, Windows) are left as they are.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3           # mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 4 * 1024 * 1024 * ctypes.sizeof(ctypes.c_long)   # glibc's largest: 32 MiB on 64-bit
TRIM_THRESHOLD_NEVER = 2 ** 31 - 1                    # mallopt takes an int

_steady: bool | None = None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in this process (once; later calls return the first answer).
    True when the allocator is glibc's and took both settings."""
    global _steady
    if _steady is None:
        _steady = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
            except (OSError, AttributeError):
                return _steady   # not glibc
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _steady = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and \
                bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_NEVER))
    return _steady
