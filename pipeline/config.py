"""Typed configuration: jsonargparse parsers over YAML files with ``--section.key=value`` overrides.

Every command parses its arguments with jsonargparse (``train`` through Lightning's
``LightningCLI``, a jsonargparse parser too), so every value has the type of the dataclass field
or signature parameter that declares it, unknown keys are refused, ``--help`` lists every
option with its type and default, and ``--print_config`` shows the resolved configuration.
W&B sweep agents pass parameters as ``--section.key=value``, which is jsonargparse's own syntax.

This module only adds what the commands share around jsonargparse:

* ``--config`` takes a YAML file or the name of a shipped config (``--config autoformer_tiny``),
  and a command run without ``--config`` reads its shipped default;
* a parse error becomes one line naming the key and the problem (:class:`ConfigError`,
  exit status 2), not argparse's usage dump;
* ``None`` (how a W&B agent writes a null parameter) means null.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

import yaml
from jsonargparse.typing import NonNegativeInt, PositiveInt

from pipeline.errors import ConfigError
from pipeline.resources import shipped
from pipeline.utils.io import atomic_write_text

PACKAGE_DIR = shipped()
CONFIG_DIR = shipped("configs")  # the shipped configs; `configs/...` paths fall back to them


def resolve_path(path: str | Path) -> Path:
    """A path as given (relative to the working directory), else the shipped config it names.

    The user's files win; ``configs/train/cls_demo.yaml`` (as the README and the shipped configs
    write it) then works from any folder and from an installed wheel.
    """
    path = Path(path).expanduser()
    if path.exists() or path.is_absolute() or path.parts[:1] != ("configs",):
        return path
    return PACKAGE_DIR / path if (PACKAGE_DIR / path).exists() else path


def shipped_configs(kind: str) -> list[str]:
    """Names of the shipped configs of one command (``search``, ``train``, ``run``, ``correlate``)."""
    return sorted(p.stem for p in (CONFIG_DIR / kind).glob("*.yaml"))


def find_config(value: str | Path, kind: str) -> Path:
    """A ``--config`` value: a YAML file (see :func:`resolve_path`) or a shipped config's name.

    ``--config autoformer_tiny`` on ``search`` is ``configs/search/autoformer_tiny.yaml``.
    """
    path = resolve_path(value)
    if path.is_file():
        return path
    name = str(value)
    named = CONFIG_DIR / kind / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if Path(name).name == name and named.is_file():
        return named
    raise ConfigError(f"config file {name} does not exist and is not the name of a shipped {kind} config; "
                      f"pass a YAML file or one of: {', '.join(shipped_configs(kind))}")


def space_file(name_or_path: str | Path) -> Optional[Path]:
    """The YAML file of a search space: a preset name (``autoformer_tiny``) or a path; None if neither.

    Here, free of torch, so that the search's options can refuse an unknown space before the
    space module (and torch) loads; ``SearchSpace.load`` resolves names the same way.
    """
    path = resolve_path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / "spaces" / f"{name_or_path}.yaml"
    return path if path.is_file() else None


def unknown_space(name_or_path: str | Path) -> str:
    """The one message for a space that :func:`space_file` cannot find (the options and the loader both say it)."""
    return (f"unknown search space {str(name_or_path)!r}; presets: {', '.join(shipped_configs('spaces'))} "
            "(or give a path to a space YAML file)")


# ------------------------------------------------------------------------- argv
def prepare_argv(argv: Sequence[str], kind: str, default_config: Optional[str | Path]) -> list[str]:
    """argv for jsonargparse: ``--config`` names resolved to files, the default config first when
    none is given, and W&B's ``None`` for null turned into YAML's ``null``."""
    out: list[str] = []
    given = False
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config", "-c") and i + 1 < len(args):
            out += ["--config", str(find_config(args[i + 1], kind))]
            given, i = True, i + 2
            continue
        if arg.startswith("--config="):
            out.append(f"--config={find_config(arg.split('=', 1)[1], kind)}")
            given = True
        elif arg.startswith("--") and arg.endswith("=None"):
            out.append(arg[:-4] + "null")
        else:
            out.append(arg)
        i += 1
    if not given and default_config is not None and not any(a in ("-h", "--help") for a in out):
        out = ["--config", str(default_config)] + out
    return out


def one_line(error: BaseException) -> str:
    """jsonargparse's multi-line parse error as one line: the key, what it expects, what it got."""
    lines = [ln.strip() for ln in str(error).strip().splitlines() if ln.strip()]
    if not lines:
        return str(error)
    head = lines[0]
    if head.startswith("unrecognized arguments:"):
        return (f"unknown option(s) {head.split(':', 1)[1].strip()}; see --help for the valid keys "
                "(a typo is never ignored)")
    m = re.match(r'Parser key "([^"]+)":?\s*(.*)', head)
    if not m:
        return "; ".join(lines[:3])
    key, rest = m.group(1), m.group(2)
    given = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Given value:")), None)
    if given is None:  # a Literal's error holds the value in its own line: "Expected a ... Got value: foo"
        given = next((ln.split(". Got value:", 1)[1].strip() for ln in lines if ". Got value:" in ln), None)
    expected = [_expected(ln) for ln in lines[1:] + ([rest] if rest else [])
                if ln.lstrip("- ").startswith(("Expected a", "Not of type"))]
    if not expected:
        detail = rest or "; ".join(ln for ln in lines[1:] if not ln.startswith(("Given value", "Subtypes")))
        return f"--{key}: {detail or 'invalid value'}"
    text = f"--{key}: expected {' or '.join(expected)}"
    return text + (f", got {given!r}" if given is not None else "")


def _expected(line: str) -> str:
    """One alternative of a type error: ``float``, ``null``, ``PositiveInt (invalid literal ...)``."""
    line = line.lstrip("- ").strip()
    if line.startswith("Expected a"):
        text = line[len("Expected a"):].strip().rstrip(".")
        text = text.split(". Got value:")[0]
        m = re.match(r"<class '([\w.]+)'>", text)
        if m:
            name = m.group(1).rsplit(".", 1)[-1]
            return "null" if name == "NoneType" else name
        return text.replace("typing.", "")
    name, _, why = line[len("Not of type"):].strip().partition(":")
    return f"{name.strip()} ({why.strip()})" if why.strip() else name.strip()


def command_parser(command: str, description: str):
    """The jsonargparse parser of ``python -m pipeline COMMAND``, with its ``--config``; errors are
    raised (``exit_on_error=False``) for :func:`parse` to word as one line."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog=f"python -m pipeline {command}", exit_on_error=False, description=description)
    parser.add_argument("--config", action=ActionConfigFile, help=f"a {command} config file or a shipped config's name")
    return parser


def parse(parser, argv: Sequence[str], kind: str, default_config: Optional[str | Path]):
    """Parse argv with ``parser`` (``exit_on_error=False``); a bad value is a one-line ConfigError."""
    from jsonargparse import ArgumentError

    try:
        return parser.parse_args(prepare_argv(argv, kind, default_config))
    except ArgumentError as e:
        raise ConfigError(one_line(e)) from None


def as_plain(parser, cfg) -> dict[str, Any]:
    """A parsed config as plain YAML data (what ``config.yaml`` holds), fragments inlined."""
    data = yaml.safe_load(parser.dump(cfg, skip_none=False, skip_link_targets=False))
    data.pop("config", None)
    return data


def expand_run_name(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill ``{wandb_run_id}`` in ``run_name``: each run of a W&B sweep then writes its own folder.

    The agent gives every run it starts its id in ``WANDB_RUN_ID``; outside an agent a timestamp
    stands in.
    """
    name = cfg.get("run_name")
    if isinstance(name, str) and "{wandb_run_id}" in name:
        import time

        run_id = os.environ.get("WANDB_RUN_ID") or time.strftime("%Y%m%d-%H%M%S")
        cfg = dict(cfg, run_name=name.replace("{wandb_run_id}", run_id))
    return cfg


def check_run_name(name: Any) -> str:
    """A run name is one non-empty folder name (outputs go to ``<out_dir>/<run_name>/``)."""
    name = str(name)
    if not name.strip() or "/" in name or name in (".", ".."):
        raise ConfigError(f"run_name={name!r} must be a non-empty folder name (no '/')")
    return name


def save_config(cfg: dict[str, Any], path: str | Path) -> Path:
    """Save the resolved config beside a run's outputs (atomically)."""
    return atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))


# ------------------------------------------------------------ shared sections
@dataclass
class DeviceSettings:
    """Where a command that trains nothing runs (the ``trainer`` section of search and run):
    ``lightning.Trainer``'s own arguments of that name, one device by default.

    Args:
        accelerator: cpu, gpu, cuda, mps or auto.
        devices: devices per node: a count, a list of indices, or auto (every device; DDP).
        strategy: auto, ddp, ... (Lightning strategies).
        num_nodes: machines (start the same command on each, under srun or torchrun).
    """

    accelerator: str = "auto"
    devices: Union[PositiveInt, list[NonNegativeInt], Literal["auto", "-1"]] = 1
    strategy: str = "auto"
    num_nodes: PositiveInt = 1


# Every command's Trainer runs one process on one device unless its config says otherwise
# (Lightning's own default, devices="auto", would start DDP over every GPU of the machine).
TRAINER_DEFAULTS = asdict(DeviceSettings())


def make_trainer(cfg: dict[str, Any], run_dir: Path, **kwargs: Any):
    """``lightning.Trainer`` from the ``trainer`` section, ``kwargs`` (what the command sets) winning; settings Lightning rejects (``devices=0`` on a
    CPU, an unknown strategy) are a one-line error, and a run folder made for it is removed."""
    import shutil

    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch import Trainer

    existed = Path(run_dir).exists()
    try:
        return Trainer(**{**cfg["trainer"], **kwargs})
    except (MisconfigurationException, ValueError, TypeError) as e:
        if not existed and Path(run_dir).is_dir() and not any(Path(run_dir).iterdir()):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise ConfigError(f"invalid --trainer settings: {e}") from None


def device_line(trainer) -> str:
    """Where a Trainer runs, as one of our lines (Lightning's own "GPU available" lines are hidden:
    pipeline/quiet.py)."""
    processes = trainer.num_devices * trainer.num_nodes
    line = f"device: {trainer.strategy.root_device.type}, {processes} process{'es' if processes > 1 else ''}"
    return line + f", precision {trainer.precision}"


def add_wandb_arguments(parser) -> None:
    """``--wandb.*``: the Weights & Biases section every command shares."""
    from pipeline.tracking import WandbSettings

    parser.add_argument("--wandb", type=WandbSettings, default=WandbSettings(),
                        help="Weights & Biases logging (offline without a login; never prompts)")
