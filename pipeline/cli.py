"""``python -m pipeline <command>``: the single entry point of the product.

Each command takes ``--config FILE`` plus any number of ``--section.key=value`` overrides.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Optional, Sequence

from pipeline import quiet
from pipeline.errors import ConfigError, UserError

COMMANDS: dict[str, tuple[str, str, Optional[str]]] = {
    # name: (help, "module:function" running it, "module:function" parsing its arguments first).
    # The parsers import no torch or Lightning, so a bad option is refused in a fraction of a second;
    # a command without one parses inside its runner (train: LightningCLI needs Lightning).
    "search": ("score candidate ViTs at initialisation (ViNTK, size-led: vintk_size) and write the chosen architecture",
               "pipeline.search.command:run", "pipeline.search.settings:parse_config"),
    "train": ("retrain a chosen architecture (--task cls or --task seg)", "pipeline.train.command:main", None),
    "correlate": ("rank architectures with training-free proxies against a ground-truth file",
                  "pipeline.correlate.command:run", "pipeline.correlate.settings:parse_config"),
    "groundtruth": ("train sampled architectures of a space on your data: a ground-truth file for correlate",
                    "pipeline.groundtruth.command:run", "pipeline.groundtruth.settings:parse_config"),
    "refine": ("race the search's best and the largest networks that fit by a short training on your data; "
               "write the winner", "pipeline.refine.command:run", "pipeline.refine.settings:parse_config"),
    "run": ("search, then retrain for classification and segmentation, in one command", "pipeline.run.command:run",
            "pipeline.run.settings:parse_config"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Training-free ViT architecture search (ViNTK) and Lightning retraining.",
        epilog="Every config value can be overridden as --section.key=value (how W&B sweep agents pass "
               "parameters). Run 'python -m pipeline COMMAND --help' for a command's options. --verbose (with "
               "any command) also shows the third-party warnings and log lines a run hides as harmless "
               "(pipeline/quiet.py).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _resolve(target: str) -> Callable:
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--verbose" in argv:   # any command; its stages and DDP ranks inherit it through the environment
        argv = [a for a in argv if a != "--verbose"]
        os.environ[quiet.VERBOSE_ENV] = "1"
    quiet.install()
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    _, target, parse = COMMANDS[name]
    try:
        if parse is not None:
            cfg = _resolve(parse)(rest)   # before the runner's module (and torch) is imported
            return _resolve(target)(cfg) or 0
        return _resolve(target)(rest) or 0
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        # one write: under DDP every rank prints its error to the same stream, and with
        # PYTHONUNBUFFERED print() writes the text and the newline separately (lines interleave)
        sys.stderr.write(f"error: {e}\n")
        sys.stderr.flush()
        return 2


def _user_errors() -> tuple[type[Exception], ...]:
    """The exceptions that mean bad input (one line, exit 2). SpecError counts once its module is
    loaded (importing it here would import torch before the first option is checked)."""
    spec = sys.modules.get("pipeline.space.spec")
    return (UserError, ConfigError) + ((spec.SpecError,) if spec is not None else ())
