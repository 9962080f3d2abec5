"""YAML configuration with ``--section.key=value`` command-line overrides.

W&B sweep agents pass parameters exactly that way, so every value of every config is
overridable from the command line. Unknown keys are errors (a typo must never be ignored).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable

import yaml

from pipeline.resources import shipped
from pipeline.utils.io import atomic_write_text

PACKAGE_DIR = shipped()
CONFIG_DIR = shipped("configs")  # the shipped configs; `configs/...` paths fall back to them


class ConfigError(ValueError):
    """A config file or override that cannot be used as given."""


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


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = resolve_path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; the shipped ones are in {CONFIG_DIR}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def parse_overrides(args: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``["--train.lr=0.1", "--search.strategy", "random"]`` -> [(["train","lr"], 0.1), ...].

    Values are read as YAML scalars/lists, so ``true``, ``1e-3``, ``[1, 2]`` and ``null`` work.
    """
    args = list(args)
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --section.key=value")
        key, sep, raw = arg[2:].partition("=")
        if not sep:
            if i + 1 >= len(args) or args[i + 1].startswith("--"):
                raise ConfigError(f"override --{key} has no value; write --{key}=VALUE")
            raw = args[i + 1]
            i += 1
        out.append((key.split("."), _parse_value(raw)))
        i += 1
    return out


def _parse_value(raw: str) -> Any:
    """YAML scalar/list, except that ``1e-3`` (a string to YAML 1.1) is a float, as users mean,
    and ``None`` (how a W&B agent writes a null parameter) is null."""
    if raw == "None":
        return None
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(cfg: dict[str, Any], overrides: Iterable[tuple[list[str], Any]]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with overrides applied; only existing keys may be set."""
    cfg = copy.deepcopy(cfg)
    for path, value in overrides:
        node = cfg
        for depth, key in enumerate(path):
            if not isinstance(node, dict) or key not in node:
                where = ".".join(path[:depth]) or "the top level"
                valid = sorted(node) if isinstance(node, dict) else []
                raise ConfigError(f"unknown config key --{'.'.join(path)}: {key!r} is not in {where}; "
                                  f"valid keys there: {valid}")
            if depth == len(path) - 1:
                node[key] = value
            else:
                node = node[key]
    return cfg


def pop_option(argv: list[str], flag: str, default: Any = None) -> tuple[Any, list[str]]:
    """Take ``--flag VALUE`` / ``--flag=VALUE`` (a command option, not a config key) out of argv."""
    rest, value, i = [], default, 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            if i + 1 >= len(argv):
                raise ConfigError(f"{flag} needs a value")
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


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


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load a YAML config and apply ``--section.key=value`` overrides."""
    return expand_run_name(apply_overrides(load_yaml(path), parse_overrides(overrides)))


def save_config(cfg: dict[str, Any], path: str | Path) -> Path:
    """Save the resolved config beside a run's outputs (atomically)."""
    return atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
