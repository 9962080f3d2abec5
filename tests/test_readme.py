"""Every command the README shows is run here, so the README cannot rot.

Commands run in the README's order in one scratch folder (later ones read what earlier ones
wrote, as for a user), each shrunk to seconds by overrides appended after the README's own
(later overrides win): the arguments shown are parsed, checked and used for real. Commands on
data a test machine does not have (`/data/...`) must stop before any work with exit status 2
and a message naming what is missing.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, dev_benchmark, run_cli

SHRINK = {
    "search": ["--strategy.name=random", "--strategy.random.samples=2",
               "--latency.statistic=min", "--latency.min_seconds=0.2"],   # step 7 times networks on a busy box
    "train --task cls": ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"],
    "train --task seg": ["--trainer.max_steps=2", "--trainer.val_check_interval=2", "--data.batch_size=2",
                         "--eval.log_images=1"],
    "run": ["--search.strategy.name=random", "--search.strategy.random.samples=2", "--cls.trainer.max_epochs=1",
            "--cls.trainer.limit_train_batches=2", "--cls.trainer.limit_val_batches=1", "--seg.trainer.max_steps=2",
            "--seg.trainer.val_check_interval=2", "--seg.data.batch_size=2"],
    "correlate": ["--limit=2"],
    "groundtruth": ["--num_archs=2", "--seed_subset=0", "--bands=1", "--train_args=[--trainer.max_epochs=1, "
                    "--trainer.limit_train_batches=2, --trainer.limit_val_batches=1, --trainer.num_sanity_val_steps=0]"],
    "refine": ["--top_k=2", "--min_epochs=1", "--budget=null",
               "--train_args=[--trainer.limit_train_batches=2, --trainer.limit_val_batches=1]"],
}


def readme_commands() -> list[str]:
    """The `python -m pipeline ...` commands of the README's bash blocks, continuations joined."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0] if not line.lstrip().startswith("#") else ""
            for part in line.split("&&"):
                match = re.search(r"python -m pipeline (.*)", part)
                if match:
                    commands.append(match.group(1).strip())
    return commands


def _kind(argv: list[str]) -> str:
    return " ".join(argv[:3]) if argv[0] == "train" else argv[0]


def test_readme_shows_the_commands_of_a_first_hour():
    kinds = {_kind(shlex.split(c)) for c in readme_commands()}
    assert kinds == set(SHRINK), kinds
    sweeps = re.findall(r"wandb sweep (\S+)", (REPO / "README.md").read_text())
    assert sweeps and all((REPO / s).is_file() for s in sweeps)


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path):
    dev_benchmark("ood_vit_nas_tiny")   # the correlate command's default ground truth, never downloaded here
    for command in readme_commands():
        argv = shlex.split(command)
        done = run_cli(*argv, *SHRINK[_kind(argv)], cwd=tmp_path)
        missing = [a.split("=", 1)[-1] for a in argv if "/data/" in a]
        if missing:
            assert done.returncode == 2, (command, done.stderr[-2000:])
            message = done.stderr[done.stderr.rfind("error:"):]    # one message, maybe over several lines
            assert message and ("/data/" in message or "does not exist" in message), (command, done.stderr[-800:])
        else:
            assert done.returncode == 0, (command, done.stderr[-3000:])
    out = tmp_path / "checkpoints"
    for written in ("search-demo/arch.yaml", "cls-demo/model.pt", "seg-demo/metrics.json",
                    "run-demo/report.md", "search-autoformer_tiny/arch.yaml", "groundtruth-demo/groundtruth.jsonl",
                    "refine-demo/arch.yaml"):
        assert (out / written).is_file(), written
    assert list(Path(out / "correlate").rglob("summary.md"))
    # the README's lines that load the exported models run as shown, in the same folder
    snippets = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert len(snippets) == 3
    for code in snippets:
        done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (code, done.stderr[-2000:])
