"""The field's proxies as their authors compute them (AZ-NAS, L-SWAG; issue 21) and population-ranked
scores: values against brute force, the search re-ranking every candidate it has seen (also after a
resume), correlate ranking over the reported architectures, and bad input."""
import csv
import json
import math
import random

import numpy as np
import pytest
import torch
from lightning.pytorch import Trainer
from scipy import stats

from conftest import run_cli
from pipeline.models import build_model, count_params
from pipeline.models.complexity import autoformer_flops
from pipeline.proxies import compute_proxy, get_proxy
from pipeline.proxies.az_nas import _signs, az_nas_measure, feature_entropy, log_rank_sum, pair_trainability
from pipeline.proxies.registry import REGISTRY, Population, population_values, register
from pipeline.search import ArchitectureSearch
from pipeline.search.command import _NothingToTrain
from pipeline.space import ArchSpec, SearchSpace

DEMO = ArchSpec(family="vit", embed_dim=32, num_heads=(2, 4, 2), mlp_ratio=(2.0, 3.0, 2.0), img_size=16,
                patch_size=4, num_classes=10, space="demo")


# ----------------------------------------------------------------------------- AZ-NAS pieces
def test_feature_entropy_equals_numpy():
    g = torch.Generator().manual_seed(0)
    feature = torch.randn(3, 7, 5, generator=g) * torch.tensor([3.0, 1.0, 0.5, 0.1, 2.0])
    x = feature.reshape(-1, 5).double().numpy()
    x = x - x.mean(axis=0)
    eig = np.linalg.eigvalsh(x.T @ x / len(x))
    p = eig / eig.sum()
    assert feature_entropy(feature) == pytest.approx(float(-(p * np.log(p + 1e-8)).sum()), rel=1e-6)
    # isotropic tokens: the entropy approaches its maximum, log C
    assert feature_entropy(torch.randn(64, 100, 4, generator=g)) == pytest.approx(math.log(4), abs=0.01)


def test_pair_trainability_equals_numpy():
    g = torch.Generator().manual_seed(1)
    g_in, g_out = torch.randn(4, 6, 5, generator=g), torch.randn(4, 6, 3, generator=g)
    mat = g_in.reshape(-1, 5).double().numpy().T @ g_out.reshape(-1, 3).double().numpy() / 24
    s = np.linalg.svd(mat, compute_uv=False).max()
    assert pair_trainability(g_in, g_out) == pytest.approx(-s - 1 / (s + 1e-6) + 2, rel=1e-6)


def _sub_block(model, i):
    """Feature i of the residual stream as a function of feature i - 1 (attention or MLP half of a block)."""
    blk = model.blocks[i // 2]
    grid = model.grid_size
    if i % 2:   # after the MLP, from after the attention
        return lambda a: a + blk.mlp(blk.norm2(a))
    return lambda a: a + blk.attn(blk.norm1(a), grid)


def test_az_nas_measure_equals_a_block_by_block_reference():
    model = build_model(DEMO, seed=0).eval()
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    got = az_nas_measure(model, x, torch.Generator().manual_seed(3))
    with torch.no_grad():
        stream = [f.detach() for f in model.forward_residuals(x)]
    entropies = [feature_entropy(f) for f in stream]
    signs = torch.Generator().manual_seed(3)
    pairs = []
    for i in reversed(range(1, len(stream))):   # the same order of sign draws
        g_out = _signs(stream[i].shape, signs)
        _, vjp = torch.func.vjp(_sub_block(model, i), stream[i - 1])   # Jacobian of this half-block alone
        pairs.append(pair_trainability(vjp(g_out)[0], g_out))
    assert len(stream) == 2 * DEMO.depth and all(f.shape == (6, 17, 32) for f in stream)
    assert got["expressivity"] == pytest.approx(sum(entropies), rel=1e-6)
    assert got["progressivity"] == pytest.approx(min(np.diff(entropies)), rel=1e-5, abs=1e-7)
    assert got["trainability"] == pytest.approx(np.mean(pairs), rel=1e-5)
    assert all(p.grad is None for p in model.parameters())


def test_autoformer_flops_equals_the_released_get_complexity():
    """Values printed by AZ-NAS's ``Vision_TransformerSuper.get_complexity`` (commit 3d2b539) for
    two subnets of the OoD-ViT-NAS AutoFormer-T file (docs/field_proxies.md)."""
    space = SearchSpace.load("autoformer_tiny")
    e192 = space.make_spec(192, [14], [3, 4, 3, 4, 3, 4, 3, 3, 4, 3, 4, 4, 4, 4],
                           [3.5, 4, 4, 4, 3.5, 3.5, 4, 3.5, 3.5, 3.5, 4, 4, 3.5, 4])
    e216 = space.make_spec(216, [12], [4, 4, 3, 3, 3, 3, 4, 4, 4, 4, 3, 4],
                           [3.5, 3.5, 4, 3.5, 4, 3.5, 3.5, 3.5, 3.5, 3.5, 3.5, 4])
    assert autoformer_flops(e192) == 1587681084.0    # key 220
    assert autoformer_flops(e216) == 1580059404.0    # key 621


def test_log_rank_sum_hand_example():
    population = [{"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 2.0}, {"a": 2.0, "b": 1.0}]
    # ranks of a: 1, 2.5, 2.5; of b: 3, 2, 1 (N = 3)
    expect = [math.log(1 / 3) + math.log(1), math.log(2.5 / 3) + math.log(2 / 3), math.log(2.5 / 3) + math.log(1 / 3)]
    assert log_rank_sum(population, {"components": ["a", "b"]}) == pytest.approx(expect)
    assert log_rank_sum(population, {"components": ["b"]}) == pytest.approx([0.0, math.log(2 / 3), math.log(1 / 3)])


def test_az_nas_refuses_pit_and_unknown_components():
    pit = SearchSpace.load("pit_tiny").extreme_spec(False)
    assert "pools between stages" in get_proxy("az_nas").requires(pit)
    assert get_proxy("az_nas").requires(DEMO) is None
    images, labels = torch.randn(2, 3, 16, 16), torch.arange(2)
    with pytest.raises(ValueError, match="not AZ-NAS components"):
        compute_proxy("az_nas", DEMO, images, labels, options={"components": ["expressivity", "size"]})


def test_az_nas_and_its_components_share_one_measurement():
    images, labels = torch.randn(2, 3, 16, 16), torch.arange(2)
    opts = {"batch_size": 4}
    whole = compute_proxy("az_nas", DEMO, images, labels, options=opts)
    assert whole.valid and math.isnan(whole.value)
    assert set(whole.components) == {"expressivity", "progressivity", "trainability", "complexity"}
    for c in ("expressivity", "progressivity", "trainability"):
        part = compute_proxy(f"az_nas_{c}", DEMO, images, labels, options=opts)
        assert part.value == whole.components[c] and part.seconds < whole.seconds
    assert compute_proxy("az_nas_complexity", DEMO, images, labels).value == autoformer_flops(DEMO)
    other = compute_proxy("az_nas", DEMO, images, labels, seed=1, options=opts)
    assert other.components["expressivity"] != whole.components["expressivity"]   # another draw


# ----------------------------------------------------------------------------- population-ranked scores
CALLS = []


@pytest.fixture
def pop_proxy():
    """A cheap population-ranked proxy: size and shallowness, ranked like AZ-NAS; fails at depth 3,
    returns a NaN component at depth 4."""
    name = "test_population"
    if name not in REGISTRY:
        @register(name, higher_is_better=True, population=Population(("size", "shallow"), log_rank_sum),
                  components=["size", "shallow"])
        def fn(spec, images, labels, *, seed, device, components):
            CALLS.append(spec)
            if spec.depth == 3:
                raise RuntimeError("boom at depth 3")
            return {"size": count_params(spec) / 1e6, "shallow": math.nan if spec.depth == 4 else -spec.depth}
    CALLS.clear()
    return name


def test_population_values_rank_the_valid_members_in_any_order(pop_proxy):
    rng = random.Random(0)
    population = [{"size": rng.random(), "shallow": rng.choice([-5, -6])} for _ in range(7)] + [None]
    values = population_values(pop_proxy, population)
    assert math.isnan(values[-1])
    ref = (np.log(stats.rankdata([p["size"] for p in population[:-1]]) / 7)
           + np.log(stats.rankdata([p["shallow"] for p in population[:-1]]) / 7))
    np.testing.assert_allclose(values[:-1], ref)
    order = list(range(8))
    rng.shuffle(order)
    shuffled = population_values(pop_proxy, [population[i] for i in order])
    np.testing.assert_allclose([shuffled[order.index(i)] for i in range(8)], values)
    # a new member changes the others' values
    assert population_values(pop_proxy, population[:3]) != pytest.approx(values[:3])


def test_compute_proxy_flags_a_non_finite_component(pop_proxy):
    space = SearchSpace.load("demo")
    spec4 = space.make_spec(64, [4], [2] * 4, [2.0] * 4)
    s = compute_proxy(pop_proxy, spec4, torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long))
    assert not s.valid and "non-finite component(s): shallow nan" in s.reason and s.rank_value == -math.inf


def _search(tmp_path, proxy, generations=4):
    search = ArchitectureSearch("demo", tmp_path, (torch.randn(2, 3, 32, 32), torch.arange(2)), proxy=proxy,
                                strategy="evolution", strategy_options=dict(population=6, generations=generations,
                                                                            parents=3, mutations=3, crossovers=3))
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=0, logger=False, callbacks=[search],
                      enable_checkpointing=False, enable_model_summary=False, enable_progress_bar=False)
    trainer.fit(_NothingToTrain())
    return search


def test_search_reranks_every_candidate_it_has_seen(tmp_path, pop_proxy, monkeypatch):
    from pipeline.search.strategies import Strategy

    told = []
    original = Strategy.tell
    monkeypatch.setattr(Strategy, "tell", lambda self, spec, score, latency_ms=None: told.append((spec, score))
                        or original(self, spec, score, latency_ms))
    search = _search(tmp_path, pop_proxy)
    final = {c.spec: c for c in search.candidates}
    assert len(final) == 24
    failed = [c for c in final.values() if c.spec.depth == 3]
    nan = [c for c in final.values() if c.spec.depth == 4]
    assert failed and all(not c.valid and "boom at depth 3" in c.reason for c in failed)
    assert nan and all(not c.valid and "non-finite component(s): shallow nan" in c.reason for c in nan)
    # the final values are the population's ranks over every valid candidate seen
    members = list(final.values())
    expect = population_values(pop_proxy, [c.components if c.valid else None for c in members])
    for c, v in zip(members, expect):
        assert (c.score == v) if c.valid else (c.rank_value == -math.inf)
    # generation 0's candidates were told again, with changed values, as later generations arrived
    first = [spec for spec, _ in told[:6]]
    retold = {spec: [v for s, v in told if s == spec] for spec in first}
    assert all(len(v) == 4 for v in retold.values())
    assert any(len(set(v)) > 1 for s, v in retold.items() if final[s].valid)
    assert all(v[-1] == final[s].rank_value for s, v in retold.items())
    best = max((c for c in members if c.valid), key=lambda c: c.rank_value)
    assert search.chosen == best.spec
    # the log holds what was measured: the components, not a value that changes with the population
    logged = [json.loads(line) for line in (tmp_path / "candidates.jsonl").read_text().splitlines()]
    assert all(math.isnan(r["score"]) and r["components"] for r in logged if r["valid"])
    rows = list(csv.DictReader(open(tmp_path / "candidates.csv")))
    assert {json.loads(r["arch"])["embed_dim"] for r in rows} and all(
        float(r["score"]) == final[ArchSpec.from_dict(json.loads(r["arch"]))].score for r in rows if r["valid"] == "True")


@pytest.mark.slow
def test_resumed_population_search_measures_nothing_again_and_picks_the_same(tmp_path, pop_proxy):
    ref = _search(tmp_path / "ref", pop_proxy)
    n_ref = len(CALLS)
    log = tmp_path / "ref" / "candidates.jsonl"
    lines = log.read_text().splitlines()
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "candidates.jsonl").write_text("\n".join(lines[:9]) + "\n" + lines[9][:40])  # mid-generation 1, torn line
    CALLS.clear()
    again = _search(cut, pop_proxy)
    assert again.chosen == ref.chosen
    assert len(CALLS) == n_ref - 9   # only what the cut log lacked was measured
    assert {c.spec: c.score for c in again.candidates} == pytest.approx({c.spec: c.score for c in ref.candidates},
                                                                         nan_ok=True)


@pytest.mark.slow
def test_az_nas_search_killed_then_resumed_picks_the_same(tmp_path):
    """kill -9 during an AZ-NAS search of the demo space, then the same command: same pick, and no
    candidate of the log is measured again (its seconds are kept)."""
    import os
    import sys

    from training_jobs import ENV1, kill_when

    args = ["search", "--run_name=r", "--proxy.name=az_nas", "--proxy.options={batch_size: 4}",
            "--strategy.evolution.population=6", "--strategy.evolution.generations=4",
            "--strategy.evolution.parents=3", "--strategy.evolution.mutations=3",
            "--strategy.evolution.crossovers=3", "--wandb.enabled=false"]
    ref = run_cli(*args, f"--out_dir={tmp_path / 'a'}", env=ENV1)
    assert ref.returncode == 0, ref.stderr[-2000:]
    log = tmp_path / "b" / "r" / "candidates.jsonl"
    kill_when([sys.executable, "-m", "pipeline", *args, f"--out_dir={tmp_path / 'b'}"],
              lambda: log.exists() and len(log.read_text().splitlines()) >= 9, {**os.environ, **ENV1})
    before = {json.dumps(json.loads(line)["spec"]): json.loads(line)["seconds"]
              for line in log.read_text().splitlines() if line.endswith("}")}
    assert 9 <= len(before) < 24
    again = run_cli(*args, f"--out_dir={tmp_path / 'b'}", env=ENV1)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "b/r/arch.yaml").read_text() == (tmp_path / "a/r/arch.yaml").read_text()
    after = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(after) == 24 and all(r["seconds"] == before[json.dumps(r["spec"])]
                                    for r in after if json.dumps(r["spec"]) in before)


# ----------------------------------------------------------------------------- correlate
@pytest.fixture(scope="module")
def demo_truth(tmp_path_factory):
    space = SearchSpace.load("demo")
    path = tmp_path_factory.mktemp("gt") / "demo_gt.jsonl"
    with path.open("w") as f:
        for i in range(10):
            spec = space.sample(random.Random(100 + i))
            f.write(json.dumps({"id": f"d{i}", "arch": spec.to_dict(), "space": "demo",
                                "metrics": {"top1": 50 + 40 * count_params(spec) / 1e6 + (i % 3)}}) + "\n")
    return path


def test_correlate_ranks_a_population_proxy_over_the_reported_architectures(demo_truth, tmp_path, pop_proxy):
    from pipeline.cli import main
    from pipeline.metrics import kendall_tau

    def run(out, *extra):
        assert main(["correlate", f"--ground_truth={demo_truth}", "--probe.source=demo", "--probe.n=2",
                     f"--proxies=[{pop_proxy},params]", f"--output_dir={out}", "--plots=false", *extra]) == 0
        rows = [r for r in csv.DictReader(open(out / "scores.csv")) if r["proxy"] == pop_proxy]
        summary = {r["proxy"]: r for r in csv.DictReader(open(out / "summary.csv"))}
        return rows, summary, (out / "summary.md").read_text()

    rows, summary, md = run(tmp_path / "all")
    valid = [r for r in rows if r["valid"] == "1"]
    assert all(r["value"] == "nan" and json.loads(r["components"]) for r in valid)
    values = population_values(pop_proxy, [json.loads(r["components"]) for r in valid])
    tau = kendall_tau(values, [float(r["top1"]) for r in valid])
    assert float(summary[pop_proxy]["kendall_tau"]) == pytest.approx(tau, abs=1e-6)
    assert int(summary[pop_proxy]["n_valid"]) == len(valid)
    assert f"`{pop_proxy}` among the {len(valid)} architectures" in md
    # a smaller selection is another population: ranked among itself, from the same stored components
    rows5, summary5, md5 = run(tmp_path / "all", "--limit=5")
    assert len(CALLS) == len(rows)          # nothing measured again
    n5 = int(summary5[pop_proxy]["n_valid"])
    assert f"among the {n5} architectures" in md5 and n5 < len(valid)


@pytest.mark.slow
def test_correlate_az_nas_end_to_end(demo_truth, tmp_path):
    from pipeline.cli import main

    out = tmp_path / "az"
    opts = "{az_nas: {batch_size: 4}, az_nas_expressivity: {batch_size: 4}}"
    assert main(["correlate", f"--ground_truth={demo_truth}", "--probe.source=demo", "--probe.n=2", "--limit=4",
                 "--proxies=[az_nas,az_nas_expressivity,az_nas_complexity]", f"--proxy_options={opts}",
                 f"--output_dir={out}", "--plots=false"]) == 0
    rows = {(r["key"], r["proxy"]): r for r in csv.DictReader(open(out / "scores.csv"))}
    keys = {k for k, _ in rows}
    assert len(keys) == 4
    for k in keys:
        comp = json.loads(rows[(k, "az_nas")]["components"])
        assert float(rows[(k, "az_nas_expressivity")]["value"]) == comp["expressivity"]
        assert float(rows[(k, "az_nas_complexity")]["value"]) == comp["complexity"]
    summary = {r["proxy"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert int(summary["az_nas"]["n_valid"]) == 4 and math.isfinite(float(summary["az_nas"]["kendall_tau"]))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.slow
def test_correlate_refuses_az_nas_on_a_pit_file_in_one_line(tmp_path):
    spec = SearchSpace.load("pit_tiny").extreme_spec(False)
    gt = tmp_path / "pit.jsonl"
    gt.write_text(json.dumps({"id": "p0", "arch": spec.to_dict(), "space": "pit_tiny", "metrics": {"top1": 70.0}})
                  + "\n")
    out = tmp_path / "out"
    res = run_cli("correlate", f"--ground_truth={gt}", "--proxies=[params,az_nas]", f"--output_dir={out}",
                  cwd=tmp_path)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --proxies: az_nas cannot score architecture p0 of pit.jsonl")
    assert "pools between stages" in lines[0]
    assert not out.exists()


# ----------------------------------------------------------------------------- L-SWAG
def test_lswag_profile_equals_brute_force():
    from pipeline.proxies.lswag import lswag_profile, percentile_bin

    model = build_model(DEMO, seed=0).eval()
    x = torch.randn(6, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    got = lswag_profile(model, x, y, splits=2)
    # the weighted layers in the order the forward runs them
    layers = [model.patch_embed.proj]
    for blk in model.blocks:
        layers += [blk.attn.qkv, blk.attn.proj, blk.mlp.fc1, blk.mlp.fc2]
    layers.append(model.head)
    D = len(layers)
    assert got.layers == D and got.samples == 6
    halves = [torch.autograd.grad(torch.nn.functional.cross_entropy(model(x[s]), y[s]), [m.weight for m in layers])
              for s in (slice(0, 3), slice(3, 6))]
    lam = [0.0] * 11
    for i in range(D):
        sigma = ((halves[0][i].abs() - halves[1][i].abs()).abs() / 2).double()
        lam[int((i + 1) / D * 100 // 10)] += math.log((1 / sigma[sigma > 0]).sum().item())
    np.testing.assert_allclose(got.lam, lam, rtol=1e-9)
    # activation patterns: one 6-bit vector per (token, hidden unit) of each MLP's GELU
    patterns = []
    with torch.no_grad():
        h = model.forward_residuals(x)
        for k, blk in enumerate(model.blocks):
            a = blk.mlp.act(blk.mlp.fc1(blk.norm2(h[2 * k])))
            b = percentile_bin(layers.index(blk.mlp.fc1) + 1, D)
            patterns.append((b, {tuple(col) for col in (a > 0).reshape(6, -1).T.tolist()}))
    expect = [len(set().union(*[p for b, p in patterns if b <= bin_])) for bin_ in range(0, 101, 10)]
    assert list(got.psi_upto) == expect


def test_lswag_value_and_percentiles():
    from pipeline.proxies.lswag import LSWAGProfile, lswag_value

    p = LSWAGProfile(lam=tuple(float(i) for i in range(11)), psi_upto=tuple(10 * i for i in range(11)),
                     log_sigma=(0.0,) * 11, layers=11, samples=4)
    assert lswag_value(p, [20, 40]) == (2 + 3 + 4) * 40
    assert lswag_value(p, [20, 40], "gradient") == 9 and lswag_value(p, [20, 40], "expressivity") == 40
    for bad in ([40, 20], [5, 50], [0], "0,100", [0, 110]):
        with pytest.raises(ValueError, match="percentiles must be"):
            lswag_value(p, bad)


def test_lswag_proxies_share_one_measurement_and_run_on_pit():
    images, labels = torch.randn(4, 3, 16, 16), torch.arange(4)
    whole = compute_proxy("lswag", DEMO, images, labels, options={"percentiles": [0, 50]})
    grad = compute_proxy("lswag_gradient", DEMO, images, labels, options={"percentiles": [0, 50]})
    expr = compute_proxy("lswag_expressivity", DEMO, images, labels, options={"percentiles": [0, 50]})
    assert whole.valid and whole.value == pytest.approx(grad.value * expr.value) and grad.seconds < whole.seconds
    pit = ArchSpec(family="pit", embed_dim=8, num_heads=(2, 4), mlp_ratio=(2.0, 2.0), stage_depths=(1, 1),
                   img_size=32, patch_size=8, patch_stride=4, num_classes=10)
    assert get_proxy("lswag").requires is None
    s = compute_proxy("lswag", pit, torch.randn(4, 3, 32, 32), labels)
    assert s.valid and s.value > 0
