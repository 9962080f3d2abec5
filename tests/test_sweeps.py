"""W&B sweep files: valid sweep configs, and every grid point's agent command line runs.

A sweep needs a W&B server, so instead of an agent these tests hand each parameter set to the
agent's own run-launching code (``wandb.wandb_agent.Agent._command_run``: the ``${env}``,
``${interpreter}``, ``${program}``, ``${args}`` expansion an agent does before it starts a run),
catch the command line it would start, and run that, shortened to one tiny generation or epoch.
"""
from __future__ import annotations

import itertools
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))
METHODS = {"grid", "random", "bayes"}
DISTRIBUTIONS = {"constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform",
                 "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
                 "inv_log_uniform_values", "normal", "q_normal", "log_normal", "q_log_normal", "beta", "q_beta"}
MACROS = {"${env}", "${interpreter}", "${program}", "${args}", "${args_no_hyphens}", "${args_no_boolean_flags}",
          "${args_json}", "${args_json_file}"}

# Appended after the agent's arguments (later arguments win): one tiny generation or epoch, no
# W&B (the sweeps' own --wandb.mode=online must be overridden), outputs in a temporary folder.
SHORTEN = {
    "search": ["--strategy.evolution.generations=1", "--strategy.evolution.population=2", "--wandb.mode=disabled",
               # a latency sweep times its networks: briefly, and by the fastest call (a test machine is busy)
               "--latency.min_seconds=0.2", "--latency.statistic=min"],
    "train": ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
              "--wandb.mode=disabled"],
    "groundtruth": ["--num_archs=2", "--seed_subset=0", "--bands=1", "--wandb.mode=disabled",
                    "--train_args=[--trainer.max_epochs=1, --trainer.limit_train_batches=2, "
                    "--trainer.limit_val_batches=1, --trainer.num_sanity_val_steps=0]"],
    # the committed tiny search (the sweep races checkpoints/search-demo), 1 epoch in rung 1: 4 epochs in all
    "refine": [f"--search_dir={REPO / 'tests' / 'data' / 'refine_search'}", "--min_epochs=1", "--budget=null",
               "--wandb.mode=disabled", "--train_args=[--trainer.limit_train_batches=2, --trainer.limit_val_batches=1, "
               "--data.batch_size=16]"],
}
# Parameters that only index the same work (each value is parsed below, one of them runs for real).
INDEX_PARAMETERS = {"candidate"}
# Commands whose sweep runs share one folder (their workers split its items): they take the run id
# in nothing, every other sweep gives each run a folder of its own.
SHARED_FOLDER = {"groundtruth"}
# Commands still being moved to jsonargparse (issue 11): their run is expected to fail until then.


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


def points(sweep: dict, n: int = 6) -> list[dict]:
    """Parameter sets an agent sends: a grid's every point; else n + 1 spread over the product of
    the values and of each range's ends and middle."""
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
    if sweep["method"] != "grid":
        combos = combos[:: max(1, len(combos) // n)][:n] + [combos[-1]]
    return [dict(zip(options, combo)) for combo in combos]


def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def agent_command(sweep: dict, params: dict, run_id: str, monkeypatch, wandb_dir: Path) -> tuple[list[str], dict]:
    """The argv and environment a W&B agent starts a run of ``sweep`` with, for ``params``.

    Runs the agent's own ``_command_run`` with its process launcher replaced by a recorder: every
    macro is expanded by wandb, as a real agent would (``/usr/bin/env python -m pipeline ...``).
    """
    from wandb import wandb_agent

    started: list = []

    class Recorder:
        def __init__(self, command=None, env=None, **_):
            started.append((command, env))

    monkeypatch.setattr(wandb_agent, "AgentProcess", Recorder)
    # what the agent writes into the environment, undone after the test; `python` is this interpreter
    monkeypatch.setenv("WANDB_DIR", str(wandb_dir))
    monkeypatch.setenv("WANDB_RUN_ID", "unset")
    monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", "unset")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    agent = wandb_agent.Agent(api=None, queue=None)
    agent._sweep_command = sweep["command"]
    agent._command_run({"run_id": run_id, "program": sweep["program"],
                        "args": {k: {"value": v} for k, v in params.items()}})
    ((argv, env),) = started
    return argv, env


def _pipeline_args(argv: list[str]) -> tuple[str, list[str]]:
    """(command, its arguments) from an agent's ``/usr/bin/env python -m pipeline COMMAND ...``."""
    assert argv[:4] == ["/usr/bin/env", "python", "-m", "pipeline"], argv
    return argv[4], argv[5:]


def _get(cfg: dict, key: str):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _expected(value):
    """What a sweep value means once parsed: a string holding a YAML mapping is that mapping."""
    return yaml.safe_load(value) if isinstance(value, str) and value.startswith("{") else value


def _parser(command: str, args: list[str]):
    """The parser of a command: its torch-free one (``pipeline.cli.COMMANDS``), or for ``train``
    the task's LightningCLI (``--task`` taken from the arguments). Returns (parse, remaining args)."""
    from pipeline.cli import COMMANDS, _resolve

    if command == "train":
        from pipeline.train.cli import parse_config
        from pipeline.train.command import _task_option

        task, rest = _task_option(args)
        return (lambda a: parse_config(task, a)[0]), rest
    if command == "refine":   # the sweep's search folder may not exist here: the committed tiny search instead
        parse = _resolve(COMMANDS[command][2])
        return (lambda a: parse([*a, f"--search_dir={REPO / 'tests' / 'data' / 'refine_search'}"])), args
    return _resolve(COMMANDS[command][2]), args


def _cases():
    for path in SWEEPS:
        for i, params in enumerate(points(_load(path))):
            yield pytest.param(path, params, id=f"{path.stem}-{i}")


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_file_is_valid(path):
    check_sweep(_load(path))


@pytest.mark.parametrize("path,params", list(_cases()))
def test_every_point_parses_to_the_sweeps_values(path, params, monkeypatch, tmp_path):
    """Each point's agent command parses, and every parameter arrives typed as the sweep meant it."""
    argv, env = agent_command(_load(path), params, "pt1", monkeypatch, tmp_path)
    assert env["WANDB_RUN_ID"] == "pt1"
    command, args = _pipeline_args(argv)
    parse, args = _parser(command, args)
    cfg = parse(args)
    for key, value in params.items():
        got = _get(cfg, key)
        assert got == _expected(value) and type(got) is type(_expected(value)), (key, got, value)
    if command in SHARED_FOLDER:
        assert "{wandb_run_id}" not in " ".join(argv) and cfg["run_name"] == "groundtruth-sweep"
    else:
        assert cfg["run_name"].endswith("-pt1"), "one folder per run: {wandb_run_id} is the agent's run id"


def _runs():
    """The points that run for real.

    A grid: one run per value of its longest parameter (search_demo: proxy.options, 4), each with
    another value of the others, so every value of every parameter reaches a real run. The other
    grid points are covered by the parse test above, at ~0.1 s instead of ~15 s each. cls_demo
    (bayes): the first point (the low ends of its ranges).
    """
    for path in SWEEPS:
        sweep = _load(path)
        pts = points(sweep)
        if sweep["method"] == "grid" and set(sweep["parameters"]) <= INDEX_PARAMETERS:
            picked = pts[:1]
        elif sweep["method"] == "grid":
            driver = max(sweep["parameters"], key=lambda k: len(sweep["parameters"][k]["values"]))
            others = [k for k in sweep["parameters"] if k != driver]
            picked = []
            for i, value in enumerate(sweep["parameters"][driver]["values"]):
                want = {k: sweep["parameters"][k]["values"][(i >> n) % len(sweep["parameters"][k]["values"])]
                        for n, k in enumerate(others)}
                picked.append(next(p for p in pts if p[driver] == value
                                   and all(p[k] == want[k] for k in others)))
        else:
            picked = pts[:1]
        for i, params in enumerate(picked):
            yield pytest.param(path, params, id=f"{path.stem}-{i}")


def test_runs_cover_every_value_of_every_parameter():
    for path in SWEEPS:
        sweep = _load(path)
        if sweep["method"] != "grid":
            continue
        ran = [params for p, params in (c.values for c in _runs()) if p == path]
        for key, spec in sweep["parameters"].items():
            if key == "worker" or key in INDEX_PARAMETERS:   # a name or an index: each value parsed above, one runs
                continue
            assert {str(r[key]) for r in ran} == {str(v) for v in spec["values"]}, key


@pytest.mark.slow
@pytest.mark.parametrize("path,params", list(_runs()))
def test_agent_command_runs(path, params, monkeypatch, tmp_path):
    """The agent's command line, shortened, runs to the end and writes its outputs."""
    out = tmp_path / "out"
    argv, env = agent_command(_load(path), params, "agentrun1", monkeypatch, tmp_path)
    command, _ = _pipeline_args(argv)
    env = {k: v for k, v in env.items() if k != "WANDB_MODE"}  # an explicit WANDB_MODE would beat the flag
    done = subprocess.run([*argv, *SHORTEN[command], f"--out_dir={out}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = out.glob("groundtruth-sweep" if command in SHARED_FOLDER else "*-agentrun1")
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    if command == "groundtruth":
        rows = [yaml.safe_load(line) for line in (run_dir / "groundtruth.jsonl").read_text().splitlines()]
        assert len(rows) == 2 and {r["worker"] for r in rows} == {params["worker"]}
    if command == "search":
        assert (run_dir / "arch.yaml").is_file()
        assert saved["strategy"]["evolution"]["population"] == 2, "later arguments win over the agent's"
    if command == "refine":   # one entrant through the whole schedule, the selection metric every epoch
        entrant = yaml.safe_load((run_dir / "entrant.json").read_text())
        assert entrant["entrant"] == params["candidate"] and len(entrant["selection_top1_by_epoch"]) == 4
    for key, value in params.items():
        if key != "strategy.evolution.population":
            assert _get(saved, key) == _expected(value), key
    assert saved["wandb"]["mode"] == "disabled" and not (run_dir / "wandb").exists()


def test_cls_sweep_covers_the_recipe():
    sweep = _load(REPO / "configs/sweeps/cls_demo.yaml")
    assert {"optim.lr", "optim.weight_decay", "model.drop_path", "data.batch_size"} <= set(sweep["parameters"])
    assert sweep["method"] == "bayes" and sweep["early_terminate"]["type"] == "hyperband"
    search = _load(REPO / "configs/sweeps/search_demo.yaml")
    assert {"proxy.options", "strategy.evolution.population"} <= set(search["parameters"])
    assert len(points(search)) == 16


def test_run_name_takes_the_agents_run_id(monkeypatch):
    from pipeline.search.settings import parse_config

    monkeypatch.setenv("WANDB_RUN_ID", "abc123")
    assert parse_config(["--run_name=sweep-{wandb_run_id}"])["run_name"] == "sweep-abc123"
