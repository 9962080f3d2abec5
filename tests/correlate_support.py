"""What the correlate tests share: a small ground-truth file and readers of the command's outputs."""
import csv
import json
import random
from pathlib import Path

import numpy as np

N_ARCHS = 12
PROXIES = ["params", "flops", "naswot"]   # two size counts and one network proxy


def write_ground_truth(path: Path) -> Path:
    """12 demo-space architectures whose made-up top1 is params plus a little noise."""
    from pipeline.models.complexity import count_params
    from pipeline.space import SearchSpace

    space = SearchSpace.load("demo")
    rng = np.random.default_rng(0)
    with path.open("w") as f:
        for i in range(N_ARCHS):
            spec = space.sample(random.Random(i))
            top1 = 50 + 20 * count_params(spec) / 1e6 + rng.normal(0, 0.3)
            f.write(json.dumps({"id": f"a{i}", "arch": spec.to_dict(), "space": "demo",
                                "metrics": {"top1": top1, "top5": top1 + 10}}) + "\n")
    return path


def correlate_args(gt, out, *extra):
    return ("correlate", f"--ground_truth={gt}", "--probe.source=demo", "--probe.n=8",
            f"--proxies={','.join(PROXIES)}", f"--output_dir={out}", "--threads=1", *extra)


def read_scores(out):
    with (out / "scores.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def read_summary(out, metric="top1"):
    with (out / "summary.csv").open(newline="") as f:
        return {r["proxy"]: r for r in csv.DictReader(f) if r["metric"] == metric}


def scored_keys(out):
    return {r["key"] for r in read_scores(out)}


def run_in_process(*args):
    """In-process ``python -m pipeline ARGS`` (same code path as the CLI, without a 5 s interpreter start)."""
    from pipeline.cli import main

    return main(list(args))
