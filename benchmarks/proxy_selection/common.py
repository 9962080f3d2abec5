"""What every script of the proxy-selection study shares: how a finished table leaves the script."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def publish(text: str, out: Optional[str | Path]) -> int:
    """Print the table and, when ``out`` is given, write it there whole (temp file + rename, so a
    doc is never left half-written). Returns the script's exit status."""
    print(text)
    if out:
        from pipeline.utils.io import atomic_write_text

        atomic_write_text(Path(out), text)
    return 0
