"""Whether two runs of `search` or `correlate` wrote the same results, timings aside.

A refactoring must not change what a run finds. Give the output folders of the same command run
by two checkouts (e.g. main before the change and the branch):

    python benchmarks/same_outputs.py OLD/search-demo NEW/search-demo
    python benchmarks/same_outputs.py OLD/correlate NEW/correlate

Compared byte for byte: ``arch.yaml``, ``state.json``, ``regret.csv``; ``candidates.jsonl`` /
``candidates.csv`` / ``scores.csv`` without their ``seconds`` (wall time of each score), and
``summary.csv`` / ``summary.md`` without their ``mean_seconds`` column; every other file is
listed, not compared (plots, configs naming their own folders, W&B runs). Exit status 0 when
everything compared is identical.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

EXACT = ("arch.yaml", "state.json", "regret.csv")
TIMED = ("candidates.jsonl", "candidates.csv", "scores.csv", "summary.csv", "summary.md")
TIMES = ("seconds", "mean_seconds")


def _untimed(path: Path) -> str:
    """The file's content without its timing field / column."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return "\n".join(json.dumps({k: v for k, v in r.items() if k not in TIMES}, sort_keys=True) for r in rows)
    if path.suffix == ".md":   # markdown tables: drop the column headed by a timing name, table by table
        out, drop = [], None
        for line in path.read_text().splitlines():
            cells = line.split("|")
            if not line.startswith("|"):
                drop = None
            elif drop is None and any(c.strip() in TIMES for c in cells):
                drop = next(i for i, c in enumerate(cells) if c.strip() in TIMES)
            out.append("|".join(c for i, c in enumerate(cells) if i != drop) if drop is not None else line)
        return "\n".join(out)
    reader = list(csv.reader(io.StringIO(path.read_text())))
    drop = [i for i, name in enumerate(reader[0] if reader else []) if name in TIMES]
    return "\n".join(",".join(v for i, v in enumerate(row) if i not in drop) for row in reader)


def compare(old: Path, new: Path) -> bool:
    same = True
    names = sorted({p.name for p in old.iterdir()} | {p.name for p in new.iterdir()})
    for name in names:
        a, b = old / name, new / name
        if name not in EXACT + TIMED:
            print(f"  not compared: {name}")
            continue
        if not (a.is_file() and b.is_file()):
            print(f"  MISSING in {'new' if a.is_file() else 'old'}: {name}")
            same = False
            continue
        equal = a.read_bytes() == b.read_bytes() if name in EXACT else _untimed(a) == _untimed(b)
        print(f"  {'identical' if equal else 'DIFFERENT'}: {name}" + ("" if name in EXACT else " (without timings)"))
        same &= equal
    return same


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    old, new = map(Path, argv)
    print(f"{old} vs {new}")
    same = compare(old, new)
    print("same results" if same else "results differ")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
