"""W&B sweep files: valid sweep configs whose agent command lines our CLI accepts as they are.

A sweep needs a W&B server, so instead of an agent these tests expand parameter sets into command
lines with wandb's own agent helpers (``create_sweep_command_args``: the ``--key=value`` strings
an agent passes) and run them on the demo with W&B offline.
"""
from __future__ import annotations

import itertools
import math
import sys

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

from conftest import REPO, run_cli
from pipeline.config import load_config

SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
METHODS = {"grid", "random", "bayes"}
DISTRIBUTIONS = {"constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
                 "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
                 "inv_log_uniform_values", "normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta"}
MACROS = {"${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}", "${args_no_boolean_flags}",
          "${args_json}", "${args_json_file}"}


def check_sweep(sweep: dict) -> None:
    """The parts of W&B's sweep schema our files use (the `sweeps` package pins numpy<2)."""
    assert sweep.get("method") in METHODS, f"method must be one of {METHODS}"
    if sweep["method"] == "bayes" or "early_terminate" in sweep:
        metric = sweep.get("metric") or {}
        assert isinstance(metric.get("name"), str) and metric.get("goal") in ("minimize", "maximize"), \
            "bayes and early termination need metric: {name, goal: minimize|maximize}"
    if "early_terminate" in sweep:
        et = sweep["early_terminate"]
        assert et.get("type") == "hyperband" and ("min_iter" in et or "max_iter" in et), \
            "early_terminate: {type: hyperband, min_iter or max_iter}"
        assert all(isinstance(et[k], int) and et[k] > 0 for k in ("min_iter", "max_iter", "eta", "s") if k in et)
    params = sweep.get("parameters")
    assert isinstance(params, dict) and params, "parameters must be a non-empty mapping"
    for name, p in params.items():
        kinds = {"value", "values", "distribution", "min"} & set(p)
        assert kinds, f"parameter {name}: needs value, values, or a distribution"
        if "values" in p:
            assert isinstance(p["values"], list) and p["values"], f"parameter {name}: values must be a list"
        if "distribution" in p:
            assert p["distribution"] in DISTRIBUTIONS, f"parameter {name}: unknown distribution"
        if "min" in p or "max" in p:
            assert p["min"] < p["max"], f"parameter {name}: min must be below max"
        if sweep["method"] == "grid":
            assert "values" in p or "value" in p, f"grid parameter {name} needs values"
    command = sweep.get("command")
    assert isinstance(command, list) and "${args}" in command, "command must be a list that passes ${args}"
    assert all(c in MACROS for c in command if str(c).startswith("${")), "unknown macro in command"


def samples(sweep: dict, n: int = 6) -> list[dict]:
    """Parameter sets an agent could send: grid corners, and for ranges their ends and middle."""
    options = {}
    for name, p in sweep["parameters"].items():
        if "values" in p:
            options[name] = p["values"]
        elif "value" in p:
            options[name] = [p["value"]]
        elif p.get("distribution", "").startswith("log_uniform_values"):
            options[name] = [p["min"], math.sqrt(p["min"] * p["max"]), p["max"]]
        else:
            options[name] = [p["min"], (p["min"] + p["max"]) / 2, p["max"]]
    combos = list(itertools.product(*options.values()))
    picked = combos[:: max(1, len(combos) // n)][:n] + [combos[-1]]
    return [dict(zip(options, combo)) for combo in picked]


def agent_command(sweep: dict, params: dict) -> list[str]:
    """The command line a W&B agent starts for these parameters (its own expansion helpers)."""
    flags = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    out: list[str] = []
    for chunk in create_sweep_command(list(sweep["command"])):
        if chunk == "${env}":
            continue  # /usr/bin/env
        if chunk == "${interpreter}":
            out.append(sys.executable)
        elif chunk.startswith("${"):
            out += flags[chunk[2:-1]]
        else:
            out.append(chunk)
    return out


def _config_of(argv: list[str]) -> dict:
    """What the command would load: the CLI's --config (or default) plus the overrides."""
    rest = argv[argv.index("pipeline") + 1:]
    command = rest[0]
    rest = [a for a in rest[1:] if a not in ("--task", "cls", "seg")]
    default = {"search": "configs/search/demo.yaml", "train": "configs/train/cls_demo.yaml"}[command]
    config = next((a.split("=", 1)[1] for a in rest if a.startswith("--config=")), default)
    return load_config(REPO / config, [a for a in rest if not a.startswith("--config=")])


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_valid_and_every_sample_loads(path):
    sweep = yaml.safe_load(path.read_text())
    check_sweep(sweep)
    for params in samples(sweep):
        argv = agent_command(sweep, params)
        assert argv[:3] == [sys.executable, "-m", "pipeline"]
        cfg = _config_of(argv)
        for key, value in params.items():  # the agent's strings arrive typed, as the sweep meant
            node = cfg
            for part in key.split("."):
                node = node[part]
            if isinstance(value, str) and value.startswith("{"):
                assert node == yaml.safe_load(value)
            else:
                assert node == value and type(node) is type(value), (key, node, value)


def test_cls_sweep_covers_the_recipe():
    sweep = yaml.safe_load((REPO / "configs/sweeps/cls_demo.yaml").read_text())
    assert {"optim.lr", "optim.weight_decay", "model.drop_path", "data.batch_size"} <= set(sweep["parameters"])
    assert sweep["method"] == "bayes" and sweep["early_terminate"]["type"] == "hyperband"
    search = yaml.safe_load((REPO / "configs/sweeps/search_demo.yaml").read_text())
    assert {"proxy.options", "strategy.evolution.population"} <= set(search["parameters"])


def test_run_name_takes_the_agents_run_id(monkeypatch):
    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    cfg = load_config(REPO / "configs/search/demo.yaml", ["--run_name=sweep-{wandb_run_id}"])
    assert cfg["run_name"] == "sweep-abc123"


FAST = {"cls_demo": ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2"],
        "search_demo": ["--strategy.evolution.generations=1"]}


@pytest.mark.slow
@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_agent_command_runs_on_the_demo(path, tmp_path):
    sweep = yaml.safe_load(path.read_text())
    params = samples(sweep)[-1]
    argv = agent_command(sweep, params)
    # The agent's run id names the output folder; W&B offline: the environment wins over the
    # command's --wandb.mode=online, so this needs no server and no login.
    done = run_cli(*argv[3:], f"--out_dir={tmp_path}", *FAST[path.stem],
                   env={"WANDB_MODE": "offline", "WANDB_RUN_ID": "agentrun1"})
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = next(tmp_path.glob("*-agentrun1"))
    assert (run_dir / "config.yaml").is_file() and list((run_dir / "wandb").glob("offline-run-*"))
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    first = next(iter(params))
    node = saved
    for part in first.split("."):
        node = node[part]
    expected = params[first]
    assert node == (yaml.safe_load(expected) if isinstance(expected, str) else expected)
