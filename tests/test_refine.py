"""Issue 29: `python -m pipeline refine` -- the rung plan and the promotion rule against hand-computed
examples, the largest networks that fit against brute force, the shortlist, the selection split (disjoint
from training and from the validation set), kill -9 and rerun (same winner, nothing trained twice), two
workers sharing one race, and `run --stages=[search,refine,cls]`."""
from __future__ import annotations

import csv
import functools
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from pipeline.refine.plan import (Result, Rung, budget_epochs, full_plan, plan_cost, promote, rung_plan,
                                  schedule_epochs, standard_error)

SEARCH = REPO / "tests" / "data" / "refine_search"   # a tiny demo search: 10 candidates of the default limits
# A race of a few batches: what is tested is the bookkeeping, not the accuracy. 4 entrants, eta 2, 1 epoch:
# rung 1 trains 4 for 1 epoch, rung 2 the best 2 to epoch 2: 6 trainings.
TINY = ["--top_k=4", "--eta=2", "--min_epochs=1", "--budget=null", "--threads=1", "--wandb.mode=disabled",
        "--train_args=[--trainer.limit_train_batches=4, --trainer.limit_val_batches=4, --data.batch_size=16]"]


def refine_args(tmp_path: Path, run_name: str, *extra: str) -> list[str]:
    return ["refine", f"--search_dir={SEARCH}", f"--out_dir={tmp_path}", f"--run_name={run_name}", *TINY, *extra]


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------ the plan
def test_rung_plan_matches_the_hand_computed_race():
    # the demo: 8 entrants, eta 2, 7 epochs: 8 x 7, then 4 from 7 to 14, then 2 from 14 to 28; 56 + 28 + 28
    plan = full_plan(8, 2, 7)
    assert plan == [Rung(1, 8, 7, 0, 4), Rung(2, 4, 14, 7, 2), Rung(3, 2, 28, 14, 1)]
    assert [r.cost for r in plan] == [56, 28, 28] and plan_cost(plan) == 112 and schedule_epochs(plan) == 28
    # eta 3: 8 -> floor(8/3) = 2 -> 1, epochs 2 then 6: 8 x 2 + 2 x 4 = 24
    assert full_plan(8, 3, 2) == [Rung(1, 8, 2, 0, 2), Rung(2, 2, 6, 2, 1)] and plan_cost(full_plan(8, 3, 2)) == 24
    assert full_plan(5, 2, 1) == [Rung(1, 5, 1, 0, 2), Rung(2, 2, 2, 1, 1)]
    assert full_plan(2, 2, 3) == [Rung(1, 2, 3, 0, 1)]


def test_budget_keeps_the_rungs_it_pays_for_and_refuses_less_than_one():
    assert budget_epochs("3x", 40) == 120 and budget_epochs("2.5x", 40) == 100 and budget_epochs(90, 40) == 90
    assert budget_epochs(None, 40) is None
    assert rung_plan(8, 2, 7, 120) == full_plan(8, 2, 7)                       # 112 <= 120
    cut = rung_plan(8, 2, 7, 100)                                              # 56 + 28 = 84 <= 100 < 112
    assert cut == [Rung(1, 8, 7, 0, 4), Rung(2, 4, 14, 7, 1)]                  # the last rung kept names the winner
    assert rung_plan(8, 2, 7, 56) == [Rung(1, 8, 7, 0, 1)]
    with pytest.raises(ValueError, match="below one rung: rung 1 trains 8 candidates x 7 epochs = 56"):
        rung_plan(8, 2, 7, 55)


def test_promotion_rule_against_a_hand_computed_example():
    # n = 1000: the standard error of 86% is 100 * sqrt(0.86 * 0.14 / 1000) = 1.097 points
    assert standard_error(86.0, 1000) == pytest.approx(1.0973, abs=1e-4)
    rs = [Result(0, 86.0, 0.35, 24.0), Result(1, 85.5, 0.30, 20.0), Result(2, 84.0, 0.20, 15.0),
          Result(3, 83.0, 0.10, 8.0)]
    # a rung that keeps several keeps the most accurate: the leader is measured again, never dropped for a tie
    assert promote(rs, 2, 1000) == [0, 1] and promote(rs, 3, 1000) == [0, 1, 2]
    # the deciding rung: 1 (85.5 >= 86.0 - 1.097) ties with the best, 2 (84.0 < 84.903) does not: the smaller wins
    assert promote(rs, 1, 1000) == [1]
    assert promote(rs, 1, 1000, tie_se=0) == [0]                              # the most accurate
    # two standard errors (2.19 points): 2 (84.0 >= 83.81) ties too and is the smallest
    assert promote(rs, 1, 1000, tie_se=2) == [2]
    # a large split: 86.0 vs 85.5 is a real difference, the larger network wins on evidence
    assert promote(rs, 1, 10 ** 6) == [0]
    # equal accuracy: fewer params, then fewer FLOPs, then the lower index
    eq = [Result(0, 80.0, 0.3, 20.0), Result(1, 80.0, 0.3, 19.0), Result(2, 80.0, 0.3, 19.0), Result(3, 80.0, 0.2, 30.0)]
    assert promote(eq, 4, 10 ** 9) == [3, 1, 2, 0] and promote(eq, 1, 10 ** 9, tie_se=0) == [3]


# ---------------------------------------------------------------- the largest that fits
@functools.lru_cache(maxsize=1)
def _every_demo_network() -> list[tuple]:
    """(params, MACs, heads in all, spec) of every network of the demo space: 3 widths x 6^3..6^6 layer choices."""
    from pipeline.models.complexity import complexity
    from pipeline.space import SearchSpace

    space, out = SearchSpace.load("demo"), []
    for embed in space.embed_dim:
        for (depth,) in itertools.product(*space.stage_depths):
            for heads in itertools.product(space.num_heads.values, repeat=depth):
                for mlps in itertools.product(space.mlp_ratio.values, repeat=depth):
                    spec = space.make_spec(embed, (depth,), heads, mlps)
                    out.append((*complexity(spec), sum(heads), spec))
    return out


@pytest.mark.slow
def test_largest_within_agrees_with_brute_force_on_the_demo_space():
    from pipeline.models.complexity import complexity
    from pipeline.space import Limits, SearchSpace

    space = SearchSpace.load("demo")
    for window in ({"max_params": 0.8, "max_flops": 25.0}, {"max_params": 0.3}, {"max_flops": 12.0, "min_params": 0.1}):
        limits = Limits(**window)
        fit = [n for n in _every_demo_network() if limits.admits(n[0] / 1e6, n[1] / 1e6)]
        for by in ("params", "flops"):
            def key(n, by=by):
                return ((n[0], n[1]) if by == "params" else (n[1], n[0])) + (n[2],)

            best = max(key(n) for n in fit)
            ties = [n[3] for n in fit if key(n) == best]
            got = space.largest_within(limits, by=by)
            params, macs = complexity(got)
            assert key((params, macs, sum(got.num_heads))) == best, (window, by)
            assert got in ties                                     # one of the exhaustive search's best ...
            assert got == max(ties, key=lambda s: (s.mlp_ratio, s.num_heads))   # ... the larger choices first


@pytest.mark.slow
def test_largest_within_works_for_every_preset():
    from pipeline.models.complexity import complexity
    from pipeline.space import Limits, SearchSpace, available_spaces

    for name in available_spaces():
        space = SearchSpace.load(name)
        lo, hi = space.bounds()["params"]
        limits = Limits(max_params=(lo + hi) / 2)
        got = space.largest_within(limits, by="params")
        assert space.contains(got) and complexity(got)[0] / 1e6 <= (lo + hi) / 2
        assert space.largest_within(Limits(), by="flops") == space.extreme_spec(largest=True)


# ---------------------------------------------------------------------------- shortlist
def test_shortlist_is_the_searchs_best_plus_the_largest_that_fit_once():
    from pipeline.refine.shortlist import read_search, shortlist, size_key
    from pipeline.space import Limits

    search = read_search(SEARCH)
    largest = search.space.largest_within(Limits(max_params=0.8, max_flops=25.0), by="params")
    ranked = [c.spec for c in search.ranked]
    assert [c.rank_value for c in search.ranked] == sorted((c.rank_value for c in search.ranked), reverse=True)
    size = {c.spec: size_key(c.params_m, c.flops_m) for c in search.ranked}
    # every distinct architecture: the search's best in its order, then the largest (by both: one entrant)
    for k in (2, 4, 8):
        entrants = shortlist(search, k, distinct="spec")
        specs = [e.spec for e in entrants]
        assert len(specs) == len(set(specs)) == k and largest in specs
        others = [s for s in specs if s != largest]
        assert others == [s for s in ranked if s != largest][:len(others)]
        (big,) = [e for e in entrants if e.spec == largest]
        assert big.roles == ("largest (params)", "largest (FLOPs)")
    # one per size (the default): the fixture's two best are one size (6 layers of E64, heads and order apart)
    assert size[ranked[0]] == size[ranked[1]]
    entrants = shortlist(search, 4)
    sizes = [size_key(e.params_m, e.flops_m) for e in entrants]
    assert len(set(sizes)) == 4 and entrants[-1].spec == largest and ranked[1] not in [e.spec for e in entrants]
    best_of_size = {}
    for spec in ranked:
        best_of_size.setdefault(size[spec], spec)
    expected = [s for s in best_of_size.values() if size[s] != sizes[-1]][:3]
    assert [e.spec for e in entrants[:3]] == expected and [e.search_rank for e in entrants[:3]] == \
        [ranked.index(s) + 1 for s in expected]


def test_a_search_folder_without_candidates_is_refused(tmp_path):
    from pipeline.config import ConfigError
    from pipeline.refine.shortlist import check_search_dir

    with pytest.raises(ConfigError, match="no such folder"):
        check_search_dir(tmp_path / "nope")
    with pytest.raises(ConfigError, match="is not a search's output folder"):
        check_search_dir(tmp_path)
    (tmp_path / "config.yaml").write_text("space: demo\n")
    (tmp_path / "candidates.jsonl").write_text('{"valid": false}\n{"spec": {"fam')   # invalid + a torn line
    with pytest.raises(ConfigError, match="holds no valid candidate"):
        check_search_dir(tmp_path)


# ------------------------------------------------------------------- the selection split
def test_holdout_is_stratified_seeded_and_disjoint_from_training():
    from pipeline.classification import ClassificationDataModule
    from pipeline.data.holdout import indices_digest, stratified_holdout

    labels = [i % 3 for i in range(30)] + [3]                  # three classes of 10, one of 1 (never held out)
    held = stratified_holdout(labels, 0.2, seed=5)
    assert [sum(labels[i] == c for i in held) for c in range(4)] == [2, 2, 2, 0]
    assert held == stratified_holdout(labels, 0.2, seed=5) != stratified_holdout(labels, 0.2, seed=6)
    dm = ClassificationDataModule(holdout=0.2, holdout_seed=0, validate_on="holdout")
    dm.check()
    train_idx, sel_idx = list(dm.train_set.indices), list(dm.val_set.indices)
    assert not set(train_idx) & set(sel_idx) and len(train_idx) + len(sel_idx) == 5000 == len(dm.train_set.dataset)
    assert dm.val_set.dataset.split == "train" and sel_idx == dm.holdout_indices and len(sel_idx) == 1000
    assert indices_digest(sel_idx) == indices_digest(reversed(sel_idx))


def test_the_race_trains_on_the_rest_ranks_on_the_split_and_never_reads_the_validation_set(tmp_path, monkeypatch):
    """One rung-1 training in this process, with every image the data sets hand out recorded."""
    from pipeline.classification import ClassificationDataModule
    from pipeline.data import demo
    from pipeline.groundtruth.training import recipe_config
    from pipeline.refine.race import race_recipe, train_entrant
    from pipeline.refine.shortlist import read_search

    fetched: list[tuple[int, int]] = []
    made: list[str] = []
    original_init, original_get = demo.DemoClassification.__init__, demo.DemoClassification.__getitem__

    def init(self, split, *a, **k):
        made.append(split)
        original_init(self, split, *a, **k)

    def get(self, i):
        fetched.append((id(self), int(i)))
        return original_get(self, i)

    modules = []
    original_check = ClassificationDataModule.check

    def check(self):
        modules.append(self)
        return original_check(self)

    monkeypatch.setattr(demo.DemoClassification, "__init__", init)
    monkeypatch.setattr(demo.DemoClassification, "__getitem__", get)
    monkeypatch.setattr(ClassificationDataModule, "check", check)
    recipe = race_recipe(recipe_config("configs/train/cls_demo.yaml", [
        "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=4", "--data.batch_size=16"]),
        {"fraction": 0.2, "seed": None}, seed=0)
    spec = read_search(SEARCH).ranked[-1].spec
    result = train_entrant(recipe, spec, schedule=2, until=1, resume=None, save=tmp_path / "r1.ckpt")
    assert "val" not in made and set(made) == {"train"}          # the validation split is never even opened
    dm = modules[-1]
    trained = {i for d, i in fetched if d == id(dm.train_set.dataset)}
    ranked_on = {i for d, i in fetched if d == id(dm.val_set.dataset)}
    held = set(dm.holdout_indices)
    assert trained and ranked_on and not trained & held and ranked_on <= held
    assert result["n_images"] == 64 == len(ranked_on) and result["epochs"] == 1 and (tmp_path / "r1.ckpt").is_file()


# ------------------------------------------------------------------------------ the runs
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny race, one worker: what every other way of running it must reproduce."""
    out = tmp_path_factory.mktemp("refine")
    r = run_cli(*refine_args(out, "ref", "--wandb.mode=offline"), env={"OMP_NUM_THREADS": "1"})   # W&B logged too
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "ref", r


def _by_item(run_dir: Path) -> dict[tuple[int, int], float]:
    rows = lines(run_dir / "results.jsonl")
    items = [(r["candidate"], r["rung"]) for r in rows]
    assert len(items) == len(set(items)), "an (entrant, rung) was trained twice"
    return {(r["candidate"], r["rung"]): r["top1"] for r in rows}


def _winner(run_dir: Path) -> dict:
    return json.loads((run_dir / "refine.json").read_text())["winner"]


@pytest.mark.slow
def test_the_demo_race_writes_its_outputs_and_a_rerun_trains_nothing(reference, tmp_path):
    run_dir, r = reference
    assert "rung" in r.stderr and "cost: 6 epochs of one network = 0.15 full retrains" in r.stderr   # the plan first
    items = _by_item(run_dir)
    assert sorted(k for k in items if k[1] == 1) == [(c, 1) for c in range(4)]
    assert len([k for k in items if k[1] == 2]) == 2 and len(items) == 6
    with (run_dir / "rungs.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 and {row["kept"] for row in rows} == {"yes", "no"}
    assert sum(row["kept"] == "yes" for row in rows if row["rung"] == "1") == 2
    summary = json.loads((run_dir / "refine.json").read_text())
    from pipeline.space import ArchSpec

    assert ArchSpec.load(run_dir / "arch.yaml").to_dict() == summary["winner"]["arch"]
    assert summary["epochs_trained"] == 6 and summary["full_retrains"] == pytest.approx(6 / 40)
    split = json.loads((run_dir / "selection_split.json").read_text())
    assert split["held_out"] == 1000 and split["trained_on"] == 4000 and split["seed"] == 0
    assert (run_dir / "refine.png").stat().st_size > 10_000
    from conftest import offline_artifact_has

    assert offline_artifact_has(run_dir, run_dir / "arch.yaml", run_dir / "rungs.csv")   # the winner, the race
    logs = b"".join(p.read_bytes() for p in run_dir.glob("wandb/offline-run-*/run-*.wandb"))
    assert b"refine/rung1" in logs and b"refine/rung2" in logs and b"refine/selection_top1/entrant0" in logs
    again = run_cli(*refine_args(run_dir.parent, "ref"), env={"OMP_NUM_THREADS": "1"})
    assert again.returncode == 0 and "0 training(s) by this worker" in again.stdout, again.stderr[-2000:]
    assert _by_item(run_dir) == items


def _start(tmp_path: Path, run_name: str, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline", *refine_args(tmp_path, run_name, *extra)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _wait_lines(path: Path, n: int, proc, timeout: float = 300) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file() and len(lines(path)) >= n:
            return
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    raise AssertionError(f"no {n} lines in {path} after {timeout} s")


@pytest.mark.slow
def test_killed_mid_rung_then_rerun_gives_the_same_winner_and_trains_nothing_twice(reference, tmp_path):
    ref_dir, _ = reference
    path = tmp_path / "k" / "results.jsonl"
    proc = _start(tmp_path, "k")
    _wait_lines(path, 2, proc)                         # two of rung 1's four trainings done ...
    time.sleep(0.5)                                    # ... into the third
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = lines(path)
    assert 2 <= len(first) < 6 and not (tmp_path / "k" / "arch.yaml").exists()
    r = run_cli(*refine_args(tmp_path, "k"), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    assert lines(path)[:len(first)] == first           # nothing written before the kill was lost or redone
    assert f"{6 - len(first)} training(s) by this worker" in r.stdout
    assert _by_item(tmp_path / "k") == _by_item(ref_dir)   # every training as in the uninterrupted race
    assert _winner(tmp_path / "k") == _winner(ref_dir)
    assert not list((tmp_path / "k" / "claims").glob("*.json"))


@pytest.mark.slow
def test_two_workers_share_one_race(tmp_path):
    """--workers=2 on a race long enough for the second process to join (it starts after the first has prepared):
    each training once, both workers trained, and the promotions and the winner are the rule's on their lines."""
    from pipeline.refine.race import race_state

    longer = "--train_args=[--trainer.limit_train_batches=40, --trainer.limit_val_batches=4, --data.batch_size=16]"
    r = run_cli(*refine_args(tmp_path, "two", "--workers=2", "--worker=main", longer), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "two"
    rows = lines(run_dir / "results.jsonl")
    assert {row["worker"] for row in rows} == {"main", "main-w1"}     # both took trainings
    items = _by_item(run_dir)                                         # none twice
    entrants = json.loads((run_dir / "shortlist.json").read_text())
    plan = [Rung(1, 4, 1, 0, 2), Rung(2, 2, 2, 1, 1)]
    state = race_state(plan, [(e["params_m"], e["flops_m"]) for e in entrants], {f"c{c}-r{n}": row for row in rows
                       for c, n in [(row["candidate"], row["rung"])]}, tie_se=1.0)
    assert sorted(k for k in items if k[1] == 2) == sorted((c, 2) for c in state.rungs[0].kept)
    assert _winner(run_dir)["entrant"] == state.winner and not list((run_dir / "claims").glob("*.json"))


@pytest.mark.slow
def test_run_with_the_refine_stage_trains_the_races_winner(tmp_path):
    args = ["run", "--run_name=rr", f"--out_dir={tmp_path}", "--stages=[search,refine,cls]",
            "--search.strategy.name=random", "--search.strategy.random.samples=4",
            "--refine.top_k=2", "--refine.min_epochs=1", "--refine.budget=null", "--refine.threads=1",
            "--cls.trainer.max_epochs=1", "--cls.trainer.limit_train_batches=2", "--cls.trainer.limit_val_batches=2",
            "--cls.data.batch_size=16", "--wandb.mode=disabled"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    run_dir = tmp_path / "rr"
    import yaml

    from pipeline.space import ArchSpec

    recipe = yaml.safe_load((run_dir / "stages" / "refine-recipe.yaml").read_text())
    assert recipe["trainer"]["limit_train_batches"] == 2                       # the cls stage's recipe
    refine_cfg = yaml.safe_load((run_dir / "stages" / "refine.yaml").read_text())
    assert refine_cfg["search_dir"] == str(run_dir / "search")
    cls_cfg = yaml.safe_load((run_dir / "stages" / "cls.yaml").read_text())
    assert cls_cfg["arch"] == str(run_dir / "refine" / "arch.yaml")
    assert ArchSpec.load(run_dir / "cls" / "arch.yaml") == ArchSpec.load(run_dir / "refine" / "arch.yaml")
    assert "## Refine: the training race" in (run_dir / "report.md").read_text()


def test_run_keeps_its_default_stages_and_checks_the_refine_options():
    from pipeline.config import ConfigError
    from pipeline.run.settings import parse_config

    assert parse_config([])["stages"] == ["search", "cls", "seg"]
    cfg = parse_config(["--stages=[cls,refine,search]"])
    assert cfg["stages"] == ["search", "refine", "cls"] and cfg["refine"]["top_k"] == 8
    with pytest.raises(ConfigError, match="--top_k=1: a race needs at least 2 entrants"):
        parse_config(["--stages=[search,refine,cls]", "--refine.top_k=1"])


def test_stage_config_wires_the_refine_stage(tmp_path):
    from pipeline.run.command import stage_config
    from pipeline.run.settings import parse_config

    cfg = parse_config(["--run_name=r", "--stages=[search,refine,cls]"])
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "arch.yaml").write_text("{}")
    refine = stage_config(cfg, "refine", tmp_path)
    assert refine["search_dir"] == str(tmp_path / "search") and refine["run_name"] == "refine"
    assert refine["recipe"] == str(tmp_path / "stages" / "refine-recipe.yaml") and refine["wandb"]["group"] == "r"
    assert stage_config(cfg, "cls", tmp_path)["arch"] == str(tmp_path / "search" / "arch.yaml")
    (tmp_path / "refine").mkdir()
    (tmp_path / "refine" / "arch.yaml").write_text("{}")
    assert stage_config(cfg, "cls", tmp_path)["arch"] == str(tmp_path / "refine" / "arch.yaml")


def test_the_sweep_races_the_demo_shortlist_with_the_local_races_brackets():
    """configs/sweeps/refine_demo.yaml: one run per entrant of the demo config's shortlist, W&B's first hyperband
    bracket at rung 1 (W&B counts logged values from 0: bracket b is the value of epoch b + 1), the same eta."""
    import yaml

    sweep = yaml.safe_load((REPO / "configs" / "sweeps" / "refine_demo.yaml").read_text())
    demo = yaml.safe_load((REPO / "configs" / "refine" / "demo.yaml").read_text())
    assert sweep["parameters"]["candidate"]["values"] == list(range(demo["top_k"]))
    assert sweep["early_terminate"] == {"type": "hyperband", "min_iter": demo["min_epochs"] - 1, "eta": demo["eta"]}
    assert sweep["metric"] == {"name": "refine/selection_top1", "goal": "maximize"}


def test_train_takes_a_finished_race_s_winner_as_the_newest_pick(tmp_path):
    """`train --task cls` without --arch reads the newest pick under out_dir: a search's or a finished race's
    arch.yaml (refine.json beside it), never a training run's."""
    from pipeline.search.store import newest_searched_spec
    from pipeline.space import ArchSpec, Limits, SearchSpace

    space = SearchSpace.load("demo")
    searched, raced = space.extreme_spec(False), space.largest_within(Limits(max_params=0.8), by="params")
    for name, spec, marker in (("search", searched, "candidates.jsonl"), ("refine", raced, "refine.json"),
                               ("cls", searched, "metrics.json")):
        (tmp_path / name).mkdir()
        spec.save(tmp_path / name / "arch.yaml")
        (tmp_path / name / marker).write_text("{}")
        time.sleep(0.02)
    os.utime(tmp_path / "cls" / "arch.yaml")                  # the newest file, but a training run's
    assert newest_searched_spec(tmp_path, space) == tmp_path / "refine" / "arch.yaml"
    assert ArchSpec.load(newest_searched_spec(tmp_path, space)) == raced
    (tmp_path / "refine" / "refine.json").unlink()             # an unfinished race has no pick yet
    assert newest_searched_spec(tmp_path, space) == tmp_path / "search" / "arch.yaml"


def test_help_lists_refine_and_its_typed_options():
    top = run_cli("--help")
    assert top.returncode == 0 and "refine" in top.stdout
    r = run_cli("refine", "--help")
    assert r.returncode == 0, r.stderr
    for text in ("--top_k", "--eta", "--min_epochs", "PositiveInt", "--budget", "RetrainMultiple", "--holdout.fraction",
                 "OpenUnitInterval", "--tie_se", "--workers", "--candidate", "--distinct", "--wandb.mode"):
        assert text in r.stdout, text


def test_holdout_of_an_image_folder_is_stratified_and_serves_the_validation_loop(tmp_path):
    from PIL import Image

    from pipeline.classification import ClassificationDataModule

    for split, n in (("train", 10), ("val", 2)):
        for c in ("a", "b"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (i * 20, 0, 0)).save(tmp_path / split / c / f"{i}.png")
    dm = ClassificationDataModule(source="folder", root=str(tmp_path), image_size=8, holdout=0.3, holdout_seed=1,
                                  validate_on="holdout", batch_size=2)
    assert dm.classes == ["a", "b"]
    held = dm.holdout_indices
    labels = dm.train_set.dataset.targets
    assert [sum(labels[i] == c for i in held) for c in (0, 1)] == [3, 3]
    assert not set(held) & set(dm.train_set.indices) and len(dm.train_set) == 14 and len(dm.val_set) == 6
    assert all("/train/" in dm.val_set.dataset.samples[i][0] for i in dm.val_set.indices)
    image, label = dm.val_set[0]
    assert tuple(image.shape) == (3, 8, 8) and label == labels[held[0]]
