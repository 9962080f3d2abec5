import re

import pytest

from conftest import run_cli
from pipeline import config
from pipeline.cli import COMMANDS
from pipeline.config import ConfigError, prepare_argv


def test_help_lists_every_command_with_its_help():
    """Each command on a line of its own under COMMAND, followed by the first words of its help
    (the description alone says "search" and "train" too, so the names alone prove nothing)."""
    res = run_cli("--help")
    assert res.returncode == 0
    listing = res.stdout.split("COMMAND\n", 1)[1].split("options:", 1)[0]
    listed = re.findall(r"^    (\w+)", listing, flags=re.M)
    assert listed == list(COMMANDS) == ["search", "train", "correlate", "groundtruth", "refine", "run"]
    flat = " ".join(listing.split())
    for name, (help_text, _, _) in COMMANDS.items():
        assert f"{name} {' '.join(help_text.split()[:4])}" in flat, name


def test_unknown_command_fails():
    res = run_cli("frobnicate")
    assert res.returncode != 0
    assert "unknown command" in res.stderr


def test_prepare_argv_resolves_config_names_and_wandb_nulls():
    default = config.CONFIG_DIR / "search" / "demo.yaml"
    assert prepare_argv(["--seed=1"], "search", default) == ["--config", str(default), "--seed=1"]
    assert prepare_argv(["--config", "autoformer_tiny", "--limits.max_params=None"], "search", default) == [
        "--config", str(config.CONFIG_DIR / "search" / "autoformer_tiny.yaml"), "--limits.max_params=null"]
    assert prepare_argv(["--help"], "search", default) == ["--help"]
    with pytest.raises(ConfigError, match="nope does not exist"):
        prepare_argv(["--config=nope"], "search", default)


def test_search_help_lists_typed_options():
    res = run_cli("search", "--help")
    assert res.returncode == 0
    for text in ("--probe.n", "PositiveInt", "--proxy.options", "--strategy.evolution.population", "--wandb.mode"):
        assert text in res.stdout, text
