"""The bad-input table of tests/test_bad_input.py, measured: what each bad command line prints, its
exit status, and how long it took to refuse (one run each, W&B off, in an empty scratch folder).

    python benchmarks/bad_input_table.py                  # markdown on stdout
    python benchmarks/bad_input_table.py -o table.md -k search
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from test_bad_input import ROWS  # noqa: E402

# Valid look-alikes measured beside the table: they must run (exit 0).
GOOD = [("search-numeric-run-name", ["search", "--run_name=123", "--strategy.evolution.generations=1",
                                     "--strategy.evolution.population=2"])]


def measure(argv: list[str]) -> tuple[int, str, float]:
    """(exit status, stderr, seconds) of ``python -m pipeline ARGV --out_dir=<empty folder>`` (correlate:
    ``--output_dir``)."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        flag = "--output_dir" if argv[0] == "correlate" else "--out_dir"
        res = subprocess.run([sys.executable, "-m", "pipeline", *argv, f"{flag}={tmp}/out"], cwd=tmp, env=env,
                             capture_output=True, text=True, timeout=600)
        return res.returncode, res.stderr.strip(), time.perf_counter() - started


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " <br> ")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", help="write the markdown here (default: stdout)")
    ap.add_argument("-k", default="", help="only rows whose id contains this")
    args = ap.parse_args()
    lines = ["| input | message (stderr) | exit | seconds |", "|---|---|---|---|"]
    for id, argv in [(p.id, p.values[0]) for p in ROWS] + GOOD:
        if args.k not in id:
            continue
        status, err, seconds = measure(list(argv))
        shown = " ".join(f"'{a}'" if " " in a else a for a in argv)
        message = err if status else "(runs; outputs in <out_dir>/123/)"
        lines.append(f"| `{cell(shown)}` | {cell(message)} | {status} | {seconds:.2f} |")
        print(f"{id}: {status} in {seconds:.2f} s", file=sys.stderr)
    text = "\n".join(lines) + "\n"
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")


if __name__ == "__main__":
    main()
