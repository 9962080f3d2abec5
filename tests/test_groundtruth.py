"""Issue 22: `python -m pipeline groundtruth` -- sampling, the shared results file, claims, resume after
kill -9, two workers with one killed, the noise ceiling in correlate, and the bad inputs."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from pipeline.config import ConfigError
from pipeline.errors import UserError
from pipeline.groundtruth import load_ground_truth, seed_agreement
from pipeline.groundtruth.claims import Claims
from pipeline.groundtruth.results import append_result, read_results
from pipeline.metrics import kendall_tau
from pipeline.models.complexity import count_params
from pipeline.space import Limits, SearchSpace

# A schedule of a few batches: what is tested is the bookkeeping, not the accuracy.
TINY = ("--train_args=[--trainer.max_epochs=1, --trainer.limit_train_batches=2, --trainer.limit_val_batches=1, "
        "--trainer.num_sanity_val_steps=0, --data.batch_size=16]")


def gt_args(tmp_path: Path, run_name: str = "gt", *extra: str) -> list[str]:
    return ["groundtruth", f"--out_dir={tmp_path}", f"--run_name={run_name}", "--wandb.mode=disabled",
            "--threads=1", TINY, *extra]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------------------- sampling
def test_sample_is_seeded_distinct_and_fills_every_params_band():
    from pipeline.groundtruth.sampling import stratified_sample

    space, limits = SearchSpace.load("demo"), Limits(max_params=0.8, max_flops=25.0)
    a = stratified_sample(space, limits, 12, 4, seed=3)
    assert a == stratified_sample(space, limits, 12, 4, seed=3)
    assert a != stratified_sample(space, limits, 12, 4, seed=4)
    assert len(set(a)) == 12 and all(space.admits(s, limits) for s in a)
    params = [count_params(s) for s in a]
    # interleaved bands: each round of 4 goes from the smallest band to the largest
    for r in range(3):
        assert params[4 * r: 4 * r + 4] == sorted(params[4 * r: 4 * r + 4])
    # every band holds 3 of the 12: the sample's quartiles are spread, not bunched in the middle
    ranked = sorted(params)
    assert ranked[0] < ranked[3] < ranked[6] < ranked[9]


@pytest.mark.slow
def test_too_few_architectures_within_the_limits_is_one_clear_error():
    from pipeline.groundtruth.sampling import stratified_sample

    space = SearchSpace.load("demo")
    smallest = count_params(space.extreme_spec(False)) / 1e6
    with pytest.raises(UserError, match="distinct architectures"):
        stratified_sample(space, Limits(max_params=smallest), 20, 2, seed=0)


# ----------------------------------------------------------------------------- the file format
def _arch(embed: int) -> dict:
    depth = 4 if embed == 32 else 3   # 32 stands for a fourth architecture: embed 64, depth 4
    embed = 64 if embed == 32 else embed
    return {"family": "vit", "embed_dim": embed, "num_heads": [2] * depth, "mlp_ratio": [2.0] * depth,
            "img_size": 32, "patch_size": 4, "num_classes": 10, "head_dim": None, "rel_pos": False}


def test_seeds_of_one_architecture_are_averaged_and_give_the_noise_ceiling(tmp_path):
    seed0 = {64: 80.0, 96: 82.0, 128: 81.0, 32: 70.0}
    seed1 = {64: 79.0, 96: 83.0, 128: 80.0, 32: 72.0}
    rows = [{"id": f"a{e}", "seed": s, "space": "demo", "arch": _arch(e), "metrics": {"top1": v[e]}}
            for s, v in ((0, seed0), (1, seed1)) for e in v if e != 32 or s == 0]
    rows.append({"id": "a32", "seed": 1, "space": "demo", "arch": _arch(32), "metrics": {"top1": seed1[32]}})
    path = tmp_path / "gt.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    entries = {e.key: e for e in load_ground_truth(path)}
    assert len(entries) == 4
    assert entries["a96"].metrics["top1"] == pytest.approx(82.5)
    assert entries["a96"].seeds == {0: {"top1": 82.0}, 1: {"top1": 83.0}}
    tau, n, seeds = seed_agreement(list(entries.values()), "top1")
    keys = sorted(seed0)
    assert (n, seeds) == (4, (0, 1))
    assert tau == pytest.approx(kendall_tau([seed0[k] for k in keys], [seed1[k] for k in keys]))


def test_one_architecture_twice_with_the_same_seed_is_refused(tmp_path):
    from pipeline.space import SpecError

    row = {"id": "x", "seed": 0, "space": "demo", "arch": _arch(64), "metrics": {"top1": 1.0}}
    (tmp_path / "gt.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(SpecError, match="seed 0 appears twice"):
        load_ground_truth(tmp_path / "gt.jsonl")


def test_results_file_drops_a_torn_last_line_and_names_a_malformed_one(tmp_path):
    path = tmp_path / "groundtruth.jsonl"
    row = {"id": "x", "seed": 0, "arch": _arch(64), "metrics": {"top1": 50.0}}
    append_result(path, row)
    with open(path, "a") as f:
        f.write('{"id": "y", "seed": 0, "arch": {"embed')   # a worker killed mid-write
    assert list(read_results(path)) == ["x-s0"]
    assert path.read_text() == json.dumps(row) + "\n"        # the torn tail is gone, the line kept
    path.write_text(json.dumps(row) + "\nnot json\n" + json.dumps({**row, "seed": 1}) + "\n")
    before = path.read_bytes()
    with pytest.raises(UserError, match=r"groundtruth.jsonl:2 is not a ground-truth line"):
        read_results(path)
    assert path.read_bytes() == before


def test_a_claim_is_free_once_its_worker_is_gone_or_its_lease_ran_out(tmp_path):
    claims = Claims(tmp_path, "me", lease_s=60)
    claims.take("a-s0")
    assert claims.holder("a-s0")["worker"] == "me"               # this live process holds it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = json.loads((tmp_path / "claims" / "a-s0.json").read_text())
    (tmp_path / "claims" / "a-s0.json").write_text(json.dumps({**record, "pid": dead.pid}))
    assert claims.holder("a-s0") is None                          # same host, process gone
    claims.take("b-s0")
    old = time.time() - 120
    os.utime(tmp_path / "claims" / "b-s0.json", (old, old))
    assert claims.holder("b-s0") is None                          # lease ran out
    claims.take("c-s0")
    with claims.heartbeat("c-s0"):
        pass
    claims.release("c-s0")
    assert not (tmp_path / "claims" / "c-s0.json").exists()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("args,message", [
    (["--space=nope"], "unknown search space 'nope'"),
    (["--num_archs=0"], "--num_archs"),
    (["--shard=3/2"], "--shard='3/2': expected i/n"),
    (["--shard=x"], "expected i/n"),
    (["--seeds=[]"], "--seeds"),
    pytest.param(["--limits.max_params=0.0001"], "infeasible limits for space 'demo'", marks=pytest.mark.slow),
    pytest.param(["--train_args=[--trainer.bogus_key=1]"], "bogus_key", marks=pytest.mark.slow),
    (["--limits.max_latency_ms=5"], "--limits.max_latency_ms: groundtruth samples within params/FLOPs limits only"),
])
def test_bad_input_is_one_line_before_any_work(tmp_path, args, message):
    r = run_cli(*gt_args(tmp_path, "bad", *args))
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "bad" / "groundtruth.jsonl").exists()


@pytest.mark.slow
def test_a_malformed_line_in_the_output_file_is_reported_with_its_number_and_kept(tmp_path):
    run_dir = tmp_path / "broken"
    run_dir.mkdir()
    good = {"id": "x", "seed": 0, "arch": _arch(64), "metrics": {"top1": 50.0}}
    content = json.dumps(good) + "\n" + '{"id": "y"}\n'
    (run_dir / "groundtruth.jsonl").write_text(content)
    r = run_cli(*gt_args(tmp_path, "broken"))
    assert r.returncode == 2 and "groundtruth.jsonl:2" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (run_dir / "groundtruth.jsonl").read_text() == content


# ----------------------------------------------------------------------------- the runs
def _start(tmp_path: Path, run_name: str, *extra: str, worker: str = "w") -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *gt_args(tmp_path, run_name, *extra),
                             f"--worker={worker}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _wait_lines(path: Path, n: int, procs, timeout: float = 240) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file() and len(lines(path)) >= n:
            return
        assert any(p.poll() is None for p in procs), [p.stdout.read() for p in procs]
        time.sleep(0.2)
    raise AssertionError(f"no {n} lines in {path} after {timeout} s")


def _assert_each_item_once(path: Path, specs: int, seeds: list[int], subset: int) -> list[dict]:
    rows = lines(path)
    items = [(r["id"], r["seed"]) for r in rows]
    assert len(items) == len(set(items)) == specs + (len(seeds) - 1) * subset, items
    assert not list((path.parent / "claims").glob("*.json"))     # every claim released
    return rows


@pytest.mark.slow
def test_killed_with_sigkill_then_rerun_trains_every_item_exactly_once(tmp_path):
    path = tmp_path / "k" / "groundtruth.jsonl"
    extra = ("--num_archs=3", "--seeds=[0,1]", "--seed_subset=3", "--bands=3")
    proc = _start(tmp_path, "k", *extra)
    _wait_lines(path, 2, [proc])
    time.sleep(1.0)                                   # into the third item's training
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = lines(path)
    r = run_cli(*gt_args(tmp_path, "k", *extra))
    assert r.returncode == 0, r.stderr
    rows = _assert_each_item_once(path, 3, [0, 1], 3)
    assert rows[:len(first)] == first                 # nothing written before the kill was lost or redone
    assert f"({6 - len(first)} trained by this worker)" in r.stderr
    again = run_cli(*gt_args(tmp_path, "k", *extra))
    assert again.returncode == 0 and "(0 trained by this worker)" in again.stderr
    assert lines(path) == rows
    # correlate reads the file: seeds averaged, the file's own noise ceiling beside the proxies
    c = run_cli("correlate", f"--ground_truth={path}", "--proxies=[params,flops]", "--plots=false",
                f"--output_dir={tmp_path / 'corr'}", "--device=cpu")
    assert c.returncode == 0, c.stderr
    printed = " ".join(c.stdout.split())   # rich wraps long lines
    assert "Noise ceiling" in printed and "between seeds 0 and 1 over 3 architectures" in printed
    assert "Noise ceiling" in (tmp_path / "corr" / "summary.md").read_text()


@pytest.mark.slow
def test_two_workers_share_one_file_and_a_killed_ones_items_are_taken_over(tmp_path):
    path = tmp_path / "shared" / "groundtruth.jsonl"
    extra = ("--num_archs=5", "--seeds=[0]", "--seed_subset=0", "--bands=1")
    a = _start(tmp_path, "shared", *extra, worker="a")
    b = _start(tmp_path, "shared", *extra, worker="b")
    _wait_lines(path, 1, [a, b])
    os.killpg(a.pid, signal.SIGKILL)                  # a dies, holding a claim most likely
    a.wait()
    out, _ = b.communicate(timeout=300)
    assert b.returncode == 0, out
    rows = _assert_each_item_once(path, 5, [0], 0)
    assert {r["worker"] for r in rows} <= {"a", "b"} and any(r["worker"] == "b" for r in rows)


# ----------------------------------------------------------------------------- pipeline run --ground_truth
def _gt_file(tmp_path: Path, accuracies: dict[int, float]) -> Path:
    path = tmp_path / "gt.jsonl"
    path.write_text("".join(json.dumps({"id": f"a{e}", "space": "demo", "arch": _arch(e), "metrics": {"top1": v}})
                            + "\n" for e, v in accuracies.items()))
    return path


def test_standing_of_the_pick_against_the_best_and_the_largest_that_fit(tmp_path):
    from pipeline.groundtruth.standing import standing
    from pipeline.space import ArchSpec

    # embed 128 (largest) does not fit a 0.2 M budget; of the rest, embed 96 is the largest
    path = _gt_file(tmp_path, {64: 81.0, 96: 80.0, 128: 90.0, 32: 83.0})
    entries = load_ground_truth(path)
    sizes = {e.key: count_params(e.spec) / 1e6 for e in entries}
    budget = sorted(sizes.values())[2]   # admits the three smallest
    fits = sorted(sizes, key=sizes.get)[:3]
    pick = ArchSpec.from_dict(_arch(32))
    s = standing(entries, pick, Limits(max_params=budget), "top1")
    largest = max(fits, key=sizes.get)
    assert s["n_fit"] == 3 and s["best"] == ("a32", 83.0)
    assert s["largest_params"] == {"a64": 81.0, "a96": 80.0, "a32": 83.0}[largest]
    assert s["pick"] == 83.0 and s["pick_rank"] == 1


def test_run_report_says_where_the_pick_stands(tmp_path):
    import yaml

    from pipeline.report import write_report
    from pipeline.space import ArchSpec

    run_dir = tmp_path / "run"
    (run_dir / "search").mkdir(parents=True)
    ArchSpec.from_dict(_arch(64)).save(run_dir / "search" / "arch.yaml")
    gt = _gt_file(tmp_path, {64: 81.0, 96: 80.0, 128: 90.0})
    limits = {"min_params": None, "max_params": None, "min_flops": None, "max_flops": None,   # as a run saves them
              "max_latency_ms": None, "max_memory_mb": None}
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"ground_truth": str(gt), "search": {"limits": limits}}))
    text = write_report(run_dir).read_text()
    assert "The pick against the largest that fits" in text
    assert "| **the search's pick** (rank 2 of 3) | 81.00 | 9.00 |" in text
    assert "| largest that fits (params) | 90.00 | 0.00 |" in text
    assert "**worse than** the largest network that fits by params (-9.00 points" in text


def test_run_refuses_a_missing_ground_truth_file_or_metric_in_one_line(tmp_path):
    from pipeline.config import ConfigError
    from pipeline.run.settings import parse_config

    with pytest.raises(ConfigError, match="does not exist"):
        parse_config([f"--ground_truth={tmp_path / 'nope.jsonl'}"])
    gt = _gt_file(tmp_path, {64: 81.0})
    with pytest.raises(ConfigError, match="--ground_truth_metric=acc is not a metric of .* it has: top1"):
        parse_config([f"--ground_truth={gt}", "--ground_truth_metric=acc"])
    assert parse_config([f"--ground_truth={gt}"])["ground_truth"] == str(gt.resolve())


def test_a_diverged_network_is_recorded_without_metrics_and_not_retried(tmp_path):
    from pipeline.groundtruth.command import _work
    from pipeline.groundtruth.sampling import stratified_sample

    specs = stratified_sample(SearchSpace.load("demo"), Limits(max_params=0.8, max_flops=25.0), 3, 1, seed=0)
    cfg = {"num_archs": 3, "seeds": [0], "seed_subset": 0, "shard": None, "space": "demo", "run_name": "d",
           "wandb": {"mode": "disabled"}}
    from pipeline.groundtruth.command import plan_items

    items = plan_items(cfg, specs)
    calls = []

    def train(recipe, spec, seed):
        calls.append(spec)
        if spec == specs[1]:
            raise FloatingPointError("the training loss became NaN")
        return {"metrics": {"top1": 50.0}, "epochs": 1, "wall_s": 0.1}

    path = tmp_path / "groundtruth.jsonl"
    claims = Claims(tmp_path, "w", lease_s=60)
    assert _work(cfg, tmp_path, path, items, {}, claims, "w", train, append_result, read_results) == 0
    rows = lines(path)
    assert len(rows) == 3 and len(calls) == 3
    bad = next(r for r in rows if r["arch"] == specs[1].to_dict())
    assert bad["metrics"] == {} and "NaN" in bad["error"]
    assert _work(cfg, tmp_path, path, items, {}, claims, "w", train, append_result, read_results) == 0
    assert len(calls) == 3                                  # nothing trained again
    entries = load_ground_truth(path)
    assert sum("top1" in e.metrics for e in entries) == 2   # correlate leaves the diverged one out


def test_one_measurement_trains_with_the_recipe_and_reports_the_last_top1():
    from pipeline.groundtruth.training import recipe_config, train_architecture

    recipe = recipe_config("cls_demo", ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
                                        "--trainer.limit_val_batches=1", "--data.batch_size=16"])
    spec = SearchSpace.load("demo").make_spec(64, [2], [2, 2], [2.0, 2.0])
    result = train_architecture(recipe, spec, seed=0)
    assert result["epochs"] == 1 and 0 <= result["metrics"]["top1"] <= 100 and result["wall_s"] > 0
    assert recipe["arch"] is None   # the recipe itself is left as it was
    with pytest.raises(ConfigError, match="unknown option"):
        recipe_config("cls_demo", ["--trainer.bogus_key=1"])


def test_the_package_re_exports_every_name_of_the_format():
    """``from pipeline.groundtruth import X`` works for every public name of ``format`` (a name left out
    of ``__all__`` broke correlate's committed budgets once)."""
    import inspect

    import pipeline.groundtruth as package
    import pipeline.groundtruth.format as fmt

    public = {n for n, v in vars(fmt).items() if not n.startswith("_") and getattr(v, "__module__", None) == fmt.__name__}
    assert public | {"SPLITS"} <= set(package.__all__) and all(getattr(package, n) is getattr(fmt, n) for n in package.__all__)
    assert inspect.isfunction(package.load_budgets)


@pytest.mark.slow
def test_the_committed_demo_ground_truth_is_read_by_correlate(tmp_path):
    """The shipped file (issue 22): at least 48 demo architectures with a top-1, a second seed on at
    least 12, and ``correlate --proxies=[params]`` on it exits 0 with its summary and noise ceiling."""
    path = REPO / "benchmarks" / "results" / "groundtruth_demo.jsonl"
    entries = load_ground_truth(path)
    assert len(entries) >= 48 and all(e.metrics.get("top1", math.nan) > 10 for e in entries)
    tau, n, seeds = seed_agreement(entries, "top1")
    assert n >= 12 and seeds == (0, 1) and -1 <= tau <= 1
    c = run_cli("correlate", f"--ground_truth={path}", "--proxies=[params]", "--plots=false",
                f"--output_dir={tmp_path / 'corr'}", "--device=cpu")
    assert c.returncode == 0, c.stderr
    summary = (tmp_path / "corr" / "summary.md").read_text()
    assert "Noise ceiling" in summary and "params" in summary
