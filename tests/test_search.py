import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from lightning.pytorch import Trainer
from PIL import Image

from conftest import REPO, run_cli
from pipeline.models import count_flops, count_params
from pipeline.proxies.registry import REGISTRY, register
from pipeline.search import ArchitectureSearch, EvolutionSearch, RandomSearch
from pipeline.search.command import _NothingToTrain
from pipeline.search.strategies import EvolutionConfig
from pipeline.space import ArchSpec, Limits, SearchSpace

SMALL = ["--strategy.evolution.population=6", "--strategy.evolution.generations=3",
         "--strategy.evolution.parents=3", "--strategy.evolution.mutations=3",
         "--strategy.evolution.crossovers=3", "--probe.n=6"]


def _drive(strategy, score):
    for batch in strategy.generations():
        for spec in batch:
            strategy.tell(spec, score(spec))
    return strategy


def test_evolution_keeps_candidates_valid_inside_limits_and_unique():
    space = SearchSpace.load("autoformer_tiny")
    limits = Limits(min_params=5.5, max_params=7.0, max_flops=1800)
    cfg = EvolutionConfig(population=20, generations=5, parents=5, mutations=10, crossovers=10)
    strat = EvolutionSearch(space, limits, seed=0, config=cfg)
    seen = []
    for batch in strat.generations():
        assert len(batch) == cfg.population
        for spec in batch:
            space.validate(spec)
            assert 5.5 <= count_params(spec) / 1e6 <= 7.0 and count_flops(spec) / 1e6 <= 1800
            strat.tell(spec, -abs(count_params(spec) / 1e6 - 6.2))
        seen += batch
    assert len(set(seen)) == len(seen) == 100


def test_evolution_improves_on_random_for_a_known_objective():
    space = SearchSpace.load("demo")
    target = lambda s: -abs(count_params(s) / 1e6 - 0.5) - 0.01 * s.depth  # noqa: E731
    cfg = EvolutionConfig(population=10, generations=6, parents=4, mutations=5, crossovers=5)
    evo = [_drive(EvolutionSearch(space, Limits(), seed, cfg), target).best()[1] for seed in range(4)]
    rnd = [_drive(RandomSearch(space, Limits(), seed, samples=10), target).best()[1] for seed in range(4)]
    assert sum(evo) / 4 > sum(rnd) / 4


def test_strategies_are_seeded():
    space = SearchSpace.load("autoformer_tiny")

    def run(seed):
        s = _drive(EvolutionSearch(space, Limits(max_params=7), seed,
                                   EvolutionConfig(population=8, generations=3, parents=3, mutations=4,
                                                   crossovers=4)), lambda a: -count_params(a))
        return list(s.scores)

    assert run(1) == run(1) and run(1) != run(2)


@pytest.fixture
def flaky_proxy():
    name = "test_flaky"
    if name not in REGISTRY:
        @register(name, higher_is_better=True)
        def flaky(spec, images, labels, *, seed, device):
            if spec.depth == 3:
                raise RuntimeError("boom at depth 3")
            if spec.depth == 4:
                return math.nan
            return count_params(spec)
    return name


def test_failed_candidates_are_recorded_and_skipped(tmp_path, flaky_proxy):
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    search = ArchitectureSearch("demo", tmp_path, (images, labels), proxy=flaky_proxy, strategy="random",
                                strategy_options={"samples": 30, "per_generation": 10})
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=0, logger=False, callbacks=[search],
                      enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(_NothingToTrain())
    rows = [json.loads(line) for line in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert len(rows) == 30
    failed = [r for r in rows if r["spec"]["stage_depths"] == [3]]
    nan = [r for r in rows if r["spec"]["stage_depths"] == [4]]
    assert failed and all(not r["valid"] and "boom at depth 3" in r["reason"] for r in failed)
    assert nan and all(not r["valid"] and "non-finite" in r["reason"] for r in nan)
    assert search.chosen.depth in (5, 6)
    valid = [r for r in rows if r["valid"]]
    assert count_params(search.chosen) == max(r["score"] for r in valid)


@pytest.mark.parametrize("proxy,attempts", [("vintk", 2), ("dss", 1)])
def test_out_of_memory_retries_with_smaller_blocks_where_the_proxy_has_them(tmp_path, monkeypatch, proxy, attempts):
    import pipeline.search.callback as callback
    from pipeline.proxies.registry import ProxyScore

    seen = []

    def fake(name, spec, images, labels, *, seed, device, options):
        seen.append(options.get("max_chunk_elems"))
        if len(seen) == 1 or name == "dss":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")
        return ProxyScore(name, 1.5, True)

    monkeypatch.setattr(callback, "compute_proxy", fake)
    search = ArchitectureSearch("demo", tmp_path, (torch.randn(2, 3, 32, 32), torch.arange(2)), proxy=proxy)
    spec = SearchSpace.load("demo").sample(random.Random(0))
    c = search._score(spec, 0, *search.probe, torch.device("cpu"))
    assert len(seen) == attempts
    if proxy == "vintk":
        assert c.valid and c.score == 1.5 and seen == [None, 32 * 2 ** 20 // 8]
    else:
        assert not c.valid and c.reason.startswith("out of memory: CUDA out of memory")


def _files(out):
    return {p.name for p in out.iterdir()}


@pytest.mark.slow
def test_cli_end_to_end_on_demo_space(tmp_path):
    res = run_cli("search", f"--out_dir={tmp_path}", "--run_name=e2e", *SMALL)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "e2e"
    assert {"arch.yaml", "candidates.jsonl", "candidates.csv", "config.yaml", "pareto.png", "convergence.png",
            "state.json", "wandb"} <= _files(out)
    spec = ArchSpec.load(out / "arch.yaml")
    SearchSpace.load("demo").validate(spec)
    assert count_params(spec) / 1e6 <= 0.8   # the demo config's limit
    rows = [json.loads(line) for line in (out / "candidates.jsonl").read_text().splitlines()]
    best = max((r for r in rows if r["valid"]), key=lambda r: r["rank_value"])
    assert ArchSpec.from_dict(best["spec"]) == spec
    assert "chosen architecture" in res.stdout
    assert len((out / "candidates.csv").read_text().splitlines()) == len(rows) + 1
    assert list((out / "wandb").glob("offline-run-*")), "W&B offline run missing"
    # a first run prints our own lines only: no third-party warning, deprecation or Lightning chatter
    printed = (res.stdout + res.stderr).splitlines()
    noise = [ln for ln in printed if re.search(r"warn|deprecat|GPU available|Trainer\.fit", ln, re.I)]
    assert not noise, noise
    assert printed[0] == "device: cpu, 1 process, precision 32-true"
    media = {p.name.split("_")[0] for p in (out / "wandb").glob("offline-run-*/files/media/images/search/*.png")}
    assert media == {"pareto", "convergence"}, media   # one W&B key per plot (they differ in size)


@pytest.mark.slow
def test_same_seed_same_choice_and_resume_after_kill(tmp_path):
    args = ["search", "--run_name=r", *SMALL, "--strategy.evolution.generations=4", "--wandb.enabled=false"]
    ref = run_cli(*args, f"--out_dir={tmp_path / 'a'}")
    assert ref.returncode == 0, ref.stderr[-2000:]
    again = run_cli(*args, f"--out_dir={tmp_path / 'b'}", "--verbose")   # shows what a run hides; same result
    assert (tmp_path / "a/r/arch.yaml").read_text() == (tmp_path / "b/r/arch.yaml").read_text()
    assert "GPU available" in again.stdout + again.stderr and "GPU available" not in ref.stdout + ref.stderr

    # kill a third run part-way, leave half a line behind, then rerun the same command
    out = tmp_path / "c" / "r"
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", *args, f"--out_dir={tmp_path / 'c'}"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "candidates.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or len(log.read_text().splitlines()) < 8):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = log.read_text().splitlines()
    assert 8 <= len(lines) < 18, "the run should have been killed part-way"
    log.write_text("\n".join(lines) + "\n" + lines[-1][: len(lines[-1]) // 2])
    resumed = run_cli(*args, f"--out_dir={tmp_path / 'c'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "arch.yaml").read_text() == (tmp_path / "a/r/arch.yaml").read_text()
    before = {json.dumps(json.loads(l)["spec"]): json.loads(l)["seconds"] for l in lines}
    after = [json.loads(l) for l in log.read_text().splitlines()]
    for row in after:   # nothing already scored was recomputed
        key = json.dumps(row["spec"])
        if key in before:
            assert row["seconds"] == before[key]
    ref_rows = (tmp_path / "a/r/candidates.jsonl").read_text().splitlines()
    assert len(after) == len(ref_rows)


@pytest.mark.slow
def test_two_process_ddp_equals_single_process(tmp_path):
    args = ["search", "--run_name=d", *SMALL, "--wandb.enabled=false", "--trainer.accelerator=cpu"]
    # the same thread count in both runs: BLAS reductions then sum in the same order, bit for bit
    one = run_cli(*args, f"--out_dir={tmp_path / 'one'}", env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_cli(*args, f"--out_dir={tmp_path / 'two'}", "--trainer.devices=2", "--trainer.strategy=ddp",
                  env={"OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    assert (tmp_path / "one/d/arch.yaml").read_text() == (tmp_path / "two/d/arch.yaml").read_text()
    rows1 = sorted((tmp_path / "one/d/candidates.jsonl").read_text().splitlines())
    rows2 = (tmp_path / "two/d/candidates.jsonl").read_text().splitlines()
    strip = lambda r: {k: v for k, v in json.loads(r).items() if k != "seconds"}  # noqa: E731
    assert sorted(map(json.dumps, map(strip, rows1))) == sorted(map(json.dumps, map(strip, rows2)))


# Bad options of every kind: tests/test_bad_input.py.


@pytest.mark.slow
def test_missing_probe_root_names_the_path(tmp_path):
    res = run_cli("search", f"--out_dir={tmp_path}", "--probe.source=folder", f"--probe.root={tmp_path / 'nope'}")
    assert res.returncode == 2 and str(tmp_path / "nope") in res.stderr


@pytest.mark.slow
def test_probe_labels_outside_the_classes_are_an_error(tmp_path):
    from pipeline.proxies.ntk_proxies import _minimal_training
    from pipeline.search.callback import check_probe_labels

    space = SearchSpace.load("demo")   # 10 classes
    check_probe_labels(torch.arange(10), space)
    with pytest.raises(ValueError, match=r"labels run up to 11.*10 classes.*--probe.source=photos"):
        check_probe_labels(torch.arange(12), space)
    net = torch.nn.Linear(3, 4)
    net.num_classes = 4
    with pytest.raises(ValueError, match="outside the network's 4 classes"):
        _minimal_training(net, torch.randn(2, 3), torch.tensor([1, 7]), steps=1, lr=0.1)

    # the CLI: a folder probe with 12 classes for the 10-class demo space, refused before any work
    root = tmp_path / "data"
    for c in range(12):
        (root / "train" / f"c{c:02d}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (20 * c, 0, 0)).save(root / "train" / f"c{c:02d}" / "0.png")
    res = run_cli("search", f"--out_dir={tmp_path / 'out'}", "--probe.source=folder", f"--probe.root={root}",
                  "--probe.n=12", "--wandb.enabled=false", env={"OMP_NUM_THREADS": "1"})
    assert res.returncode == 2, res.stderr[-2000:]
    assert "error: probe labels run up to 11" in res.stderr and "fixed.num_classes >= 12" in res.stderr
    assert not (tmp_path / "out").exists()
