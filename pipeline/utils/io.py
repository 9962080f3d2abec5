"""Atomic file writes: write a temp file beside the target, then rename over it.

A crash or Ctrl-C mid-write therefore never leaves a half-written output behind. The file
gets the mode a plain ``open(path, "w")`` would give it (``0666`` less the user's umask), not the
private ``0600`` of a temp file, so a team sharing a results folder can read it.
"""
from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable


def _umask() -> int:
    mask = os.umask(0o022)   # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically move ``tmp_path`` to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def remove_stale_temps(folder: str | Path, names: Iterable[str]) -> None:
    """Delete the temp files ``atomic_write`` left for ``names`` in ``folder`` when its writer was killed.

    Only for files one process owns (e.g. a run's ``report.md``): a kill -9 mid-write cannot clean up,
    so the owner does it when it starts again.
    """
    folder = Path(folder)
    for name in names:
        for tmp in folder.glob(f".{glob.escape(name)}.*.tmp"):
            tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))
