"""``python -m pipeline <command>``: the single entry point of the product.

Each command takes ``--config FILE`` plus any number of ``--section.key=value`` overrides.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Optional, Sequence

COMMANDS: dict[str, tuple[str, Optional[str]]] = {
    # name: (help, "module:function" implementing it, or None while not built yet)
    "search": ("score candidate ViTs at initialisation (ViNTK) and write the chosen architecture",
               "pipeline.search.command:main"),
    "train": ("retrain a chosen architecture (--task cls or --task seg)", "pipeline.train.command:main"),
    "correlate": ("rank architectures with training-free proxies against a ground-truth file", "pipeline.correlate:main"),
    "run": ("search, then retrain for classification and segmentation, in one command", "pipeline.run:main"),
}


class UserError(Exception):
    """Bad input from the user: printed as one clear message, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline",
        description="Training-free ViT architecture search (ViNTK) and Lightning retraining.",
        epilog="Every config value can be overridden as --section.key=value (how W&B sweep agents pass "
               "parameters). Run 'python -m pipeline COMMAND --help' for a command's options.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_text, _) in COMMANDS.items():
        sub.add_parser(name, help=help_text, description=help_text, add_help=False)
    return parser


def _resolve(target: str) -> Callable[[list[str]], int]:
    import importlib

    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        parser.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    target = COMMANDS[name][1]
    if target is None:
        print(f"error: 'python -m pipeline {name}' is not implemented yet; see the open issues.",
              file=sys.stderr)
        return 2
    from pipeline.config import ConfigError
    from pipeline.space.spec import SpecError

    try:
        return _resolve(target)(rest) or 0
    except (UserError, ConfigError, SpecError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
