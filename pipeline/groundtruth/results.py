"""The ground-truth file being built: one JSON line per (architecture, seed), shared by workers.

Every append is one ``write`` of a whole line on an ``O_APPEND`` descriptor, fsynced, made while
the folder's lock is held (:mod:`pipeline.groundtruth.claims`), so concurrent workers never
interleave lines. A worker killed in the middle of a write can leave a last line without its
newline: :func:`read_results` drops it (under the same lock) and its item is trained again. Any
other unreadable line is an error that names its line number: the file is never rewritten
around it, so nothing already written is lost.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from pipeline.errors import UserError


def item_key(arch_id: str, seed: int) -> str:
    """The unit of work and of the file: one architecture trained with one seed."""
    return f"{arch_id}-s{seed}"


def read_lines(path: Path, key_of: Callable[[dict[str, Any]], str], kind: str,
               repeats: Callable[[dict[str, Any]], str]) -> dict[str, dict[str, Any]]:
    """The finished lines of a shared JSON-lines log by item key (also the refine race's log); call with
    the folder's lock held (it may drop a torn tail). ``key_of`` checks a line and names its item;
    ``kind`` and ``repeats`` word the errors."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):   # a write cut short by a kill: not a finished line
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
            os.fsync(f.fileno())
    done: dict[str, dict[str, Any]] = {}
    for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key = key_of(row)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}:{n} is not {kind} ({type(e).__name__}: {e}); fix or remove "
                            "that line, or choose another --run_name") from None
        if key in done:
            raise UserError(f"{path}:{n} repeats {repeats(row)}; remove one of the two lines")
        done[key] = row
    return done


def _result_key(row: dict[str, Any]) -> str:
    if "error" not in row:   # a diverged training is recorded without metrics
        float(row["metrics"]["top1"])
    row["arch"]["embed_dim"]
    return item_key(str(row["id"]), int(row["seed"]))


def read_results(path: Path) -> dict[str, dict[str, Any]]:
    """The finished lines by item key; call with the folder's lock held (it may drop a torn tail)."""
    return read_lines(path, _result_key, "a ground-truth line",
                      lambda row: f"architecture {row['id']} seed {row['seed']}")


def append_result(path: Path, row: dict[str, Any]) -> None:
    """Append one finished line durably (call with the folder's lock held)."""
    line = (json.dumps(row, sort_keys=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
