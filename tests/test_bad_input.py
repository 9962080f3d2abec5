"""Bad input on the command line: exit status 2, one line ``error: ...`` naming the problem, quickly,
and nothing written.

One table for every command: a row is (argv, message fragment, time bound). Rows for ``correlate``,
``run`` and ``train --task cls|seg`` are appended to ``ROWS`` as those commands move to
jsonargparse (issue 11).
"""
from __future__ import annotations

import time

import pytest
import yaml

from conftest import REPO, run_cli

# Four made-up demo-space architectures: a ground truth that needs neither ../shared nor a download.
TINY_GT = REPO / "tests" / "data" / "tiny_ground_truth.jsonl"
# A tiny demo search's output folder (10 candidates): what `refine` races.
REFINE_SEARCH = REPO / "tests" / "data" / "refine_search"

# Refused by the torch-free parser: Python start-up + jsonargparse, ~0.3 s alone on this 2-core box.
PARSE_S = 5.0
# Refused after torch loads: the proxy registry (names, the options each takes), a proxy failing on
# the space's smallest network, and limits outside what the space spans are only known once the
# proxies and the space are built. 15-20 s on this shared 2-core box (~12 s when idle).
PROXY_S = 90.0
# Refused by a parser that needs Lightning: train's LightningCLI (its sections are the module's,
# the DataModule's and the Trainer's signatures) and run, which nests it. Importing lightning,
# timm and mmseg takes ~10 s here before the first option can be read.
LIGHTNING_S = 90.0


def row(id: str, argv: list[str], fragment: str, seconds: float = PARSE_S, marks=()):
    """A row; one refused only after torch or Lightning load is in the slow tier (the fast tier keeps
    the parse-time rows of every command)."""
    marks = [*([marks] if isinstance(marks, pytest.MarkDecorator) else marks)]
    return pytest.param(argv, fragment, seconds, id=id, marks=marks + [pytest.mark.slow] * (seconds > PARSE_S))


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


ROWS = [
    # search -- wrong type
    row("search-type-int", ["search", "--probe.n=abc"], "--probe.n: expected PositiveInt"),
    row("search-type-nan", ["search", "--limits.max_params=nan"], "--limits.max_params: expected NonNegativeFloat"),
    row("search-type-negative", ["search", "--limits.min_flops=-1"], "--limits.min_flops: expected NonNegativeFloat"),
    row("search-run-name-slash", ["search", "--run_name=a/b"], "run_name='a/b' must be a non-empty folder name"),
    row("search-type-literal", ["search", "--strategy.name=foo"],
        "--strategy.name: expected Literal['evolution', 'random'], got 'foo'"),
    row("search-devices-0", ["search", "--trainer.devices=0"], "--trainer.devices: expected PositiveInt"),
    row("search-not-a-mapping", ["search", "--proxy.options=3"], "--proxy.options"),
    # search -- unknown key
    row("search-unknown-section", ["search", "--optim.momentum=1"], "unknown option(s) --optim.momentum=1"),
    row("search-unknown-key", ["search", "--proxy.nme=x"], "unknown option(s) --proxy.nme=x"),
    row("search-missing-config", ["search", "--config", "nope"],
        "config file nope does not exist and is not the name of a shipped search config"),
    row("search-train-config", ["search", "--config=cls_demo"], "cls_demo does not exist"),
    # search -- bad combination
    row("search-empty-window", ["search", "--limits.min_params=5", "--limits.max_params=1"],
        "--limits.min_params=5.0 is larger than --limits.max_params=1.0"),
    row("search-unknown-space", ["search", "--space=nope"], "--space: unknown search space 'nope'"),
    row("search-folder-probe-without-root", ["search", "--probe.source=folder"], "needs --probe.root"),
    row("search-unknown-proxy", ["search", "--proxy.name=nope"], "--proxy.name: unknown proxy 'nope'", PROXY_S),
    row("search-unknown-proxy-option", ["search", "--proxy.options={foo: 1}"],
        "proxy 'vintk_size' does not take the option(s) ['foo']; it takes", PROXY_S),
    row("search-option-to-optionless-proxy", ["search", "--proxy.name=naswot", "--proxy.options={foo: 1}"],
        "proxy 'naswot' does not take the option(s) ['foo']; it takes no options", PROXY_S),
    row("search-proxy-option-fails", ["search", "--proxy.name=vintk", "--proxy.options={weights: [1, 2, 3]}"],
        "weights has 3 values for 2 views", PROXY_S),
    row("search-limits-outside-space", ["search", "--limits.max_params=0.01"], "infeasible limits for space 'demo'",
        PROXY_S),
    row("search-proxy-cannot-score-space", ["search", "--config=pit_tiny", "--proxy.name=az_nas"],
        "--proxy.name=az_nas cannot score the networks of space 'pit_tiny'", PROXY_S),
    # search -- the latency section and the device's limits (issue 23)
    row("search-latency-device", ["search", "--latency.device=tpu"],
        "--latency.device: expected Literal['auto', 'cpu', 'cuda'], got 'tpu'"),
    row("search-latency-backend", ["search", "--latency.backend=tensorrt"],
        "--latency.backend: expected Literal['eager', 'export', 'onnx'], got 'tensorrt'"),
    row("search-latency-limit-zero", ["search", "--limits.max_latency_ms=0"],
        "--limits.max_latency_ms: expected PositiveFloat"),
    row("search-latency-limit-negative", ["search", "--limits.max_latency_ms=-3"],
        "--limits.max_latency_ms: expected PositiveFloat"),
    row("search-memory-limit-zero", ["search", "--limits.max_memory_mb=0"], "--limits.max_memory_mb: expected PositiveFloat"),
    row("search-memory-limit-negative", ["search", "--limits.max_memory_mb=-1"],
        "--limits.max_memory_mb: expected PositiveFloat"),
    row("search-latency-batch-zero", ["search", "--latency.batch=0"], "--latency.batch: expected PositiveInt"),
    row("search-latency-off-with-limit", ["search", "--latency.enabled=false", "--limits.max_latency_ms=5"],
        "--limits.max_latency_ms needs latency measurements, but --latency.enabled=false"),
    row("search-latency-cpu-clock-threads", ["search", "--latency.enabled=true", "--latency.clock=cpu",
                                             "--latency.threads=2"], "--latency.clock=cpu adds up the CPU time"),
    row("search-latency-cuda-without-gpu", ["search", "--latency.device=cuda", "--limits.max_latency_ms=5"],
        "--latency.device=cuda, but torch sees no GPU", PROXY_S,
        marks=pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")),
    row("search-latency-unmeetable", ["search", "--limits.max_latency_ms=0.000001"],
        "no network of space 'demo' meets the limits", 60.0),
    row("search-memory-unmeetable", ["search", "--limits.max_memory_mb=0.01"],
        "no network of space 'demo' meets the limits", 60.0),
    # correlate
    row("correlate-type", ["correlate", "--limit=0"], "--limit: expected PositiveInt"),
    row("correlate-unknown-key", ["correlate", "--nope=1"], "unknown option(s) --nope=1"),
    row("correlate-missing-metric", ["correlate", f"--ground_truth={TINY_GT}", "--metric=nope"],
        "--metric: metric(s) ['nope'] not in"),
    row("correlate-missing-file", ["correlate", "--ground_truth=no_such_file.json"],
        "or name a known benchmark: ood_vit_nas_tiny"),
    row("correlate-unknown-proxy", ["correlate", f"--ground_truth={TINY_GT}", "--proxies=[params,nope]"],
        "--proxies: unknown proxy name(s) ['nope']", PROXY_S),
    # refine (issue 29): a race that cannot be run is refused before any training
    row("refine-top-k", ["refine", "--top_k=1"], "--top_k=1: a race needs at least 2 entrants"),
    row("refine-eta", ["refine", "--eta=1"], "--eta=1: each rung must keep at most half of its entrants"),
    row("refine-budget-below-a-rung", ["refine", "--budget=50"],
        "--budget=50 epochs is below one rung: rung 1 trains 8 entrants x 7 epochs = 56 epochs"),
    row("refine-budget-type", ["refine", "--budget=lots"], "--budget: expected PositiveInt"),
    row("refine-holdout", ["refine", "--holdout.fraction=1"], "--holdout.fraction: expected OpenUnitInterval"),
    row("refine-no-search-folder", ["refine", "--search_dir=nowhere"], "--search_dir=nowhere: no such folder"),
    row("refine-not-a-search-folder", ["refine", "--search_dir=."], "--search_dir=. is not a search's output folder"),
    row("refine-budget-in-retrains-below-a-rung", ["refine", f"--search_dir={REFINE_SEARCH}", "--budget=0.5x"],
        "--budget=0.5x: a budget of 20 epochs is below one rung", LIGHTNING_S),
    row("refine-recipe-key", ["refine", f"--search_dir={REFINE_SEARCH}", "--train_args=[--trainer.bogus=1]"],
        "unknown option(s) --trainer.bogus=1", LIGHTNING_S),
    row("refine-recipe-ddp", ["refine", f"--search_dir={REFINE_SEARCH}", "--train_args=[--trainer.devices=2]"],
        "refine trains each entrant in one process on one device; give the race more devices with --workers=N",
        LIGHTNING_S),
    # run
    row("run-stage-name", ["run", "--stages=[foo]"], "--stages: expected Literal['search', 'refine', 'cls', 'seg']",
        LIGHTNING_S),
    row("run-unknown-stage-key", ["run", "--cls.optim.nope=1"], "unknown option(s) --cls.optim.nope=1", LIGHTNING_S),
    # train --task cls|seg
    row("train-task", ["train", "--task", "det"], "--task: invalid choice: 'det'"),
    row("train-no-task", ["train", "--optim.lr=1"], "--task is required"),
    row("train-cls-type", ["train", "--task", "cls", "--optim.lr=abc"], "--optim.lr: expected PositiveFloat",
        LIGHTNING_S),
    row("train-cls-unknown-key", ["train", "--task", "cls", "--model.lr=1"], "unknown option(s) --model.lr=1",
        LIGHTNING_S),
    row("train-cls-trainer-type", ["train", "--task", "cls", "--trainer.max_epochs=x"],
        "--trainer.max_epochs: expected int", LIGHTNING_S),
    row("train-cls-real-data-without-arch", ["train", "--task", "cls", "--config", "cls_imagenet"],
        "no architecture given: pass --arch", LIGHTNING_S),
    row("train-cls-folder-without-root", ["train", "--task", "cls", "--data.source=folder"],
        "data.source=folder needs the dataset root", LIGHTNING_S),
    row("train-cls-folder-missing", ["train", "--task", "cls", "--data.source=folder", "--data.root=/no/such/data"],
        "data root /no/such/data does not exist or is not a folder; expected the ImageNet folder layout",
        LIGHTNING_S),
    row("train-seg-root-missing", ["train", "--task", "seg", "--data.data_root=/no/such/scenes"],
        "dataset root /no/such/scenes does not exist or is not a folder (data.data_root); expected layout: "
        "/no/such/scenes/images/training/**/*", LIGHTNING_S),
    row("train-seg-literal", ["train", "--task", "seg", "--eval.mode=foo"], "--eval.mode: expected Literal",
        LIGHTNING_S),
    row("train-seg-real-data-without-arch", ["train", "--task", "seg", "--config", "seg_ade20k"],
        "no architecture given: pass --arch", LIGHTNING_S),
]


@pytest.mark.parametrize("argv,fragment,seconds", ROWS)
def test_bad_input_is_refused_in_one_line(argv, fragment, seconds, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    started = time.perf_counter()
    flag = "--output_dir" if argv[0] == "correlate" else "--out_dir"
    res = run_cli(*argv, f"{flag}={out}", cwd=tmp_path)
    elapsed = time.perf_counter() - started
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr[-2000:]
    assert fragment in lines[0], lines[0]
    assert elapsed < seconds, f"refused after {elapsed:.1f} s"
    assert not list(out.iterdir()), "a refused command left outputs behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "nothing written beside it either"


@pytest.mark.slow
def test_numeric_run_name_is_a_folder_name(tmp_path):
    """``--run_name=123`` is the string '123' (a folder), not refused as a number."""
    res = run_cli("search", "--run_name=123", "--strategy.evolution.generations=1",
                  "--strategy.evolution.population=2", "--wandb.mode=disabled", f"--out_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "123" / "arch.yaml").is_file()
    assert yaml.safe_load((tmp_path / "123" / "config.yaml").read_text())["run_name"] == "123"
