import math
import random
import subprocess
import sys
import textwrap

import pytest
import torch

from pipeline.data import probe_batch
from pipeline.models import build_model
from pipeline.proxies import compute_proxy
from pipeline.proxies.fourier import band_view, make_view, rff_view
from pipeline.proxies.ntk import (NTKStats, disable_fused_attention, empirical_ntk, empirical_ntk_reference,
                                  selected_parameters)
from pipeline.proxies.ntk_proxies import label_gradient_alignment, vintk_score
from pipeline.proxies.registry import InvalidScore
from pipeline.proxies.spectrum import condition_number, eigenvalues, statistic
from pipeline.space import SearchSpace


def _rel_err(a, b):
    return float((a - b).norm() / b.norm())


# The fast tier checks the engine on two of the twelve cases (both parameter sets, two reductions).
FAST_ENGINE_CASES = {("demo", "sum", "weights"), ("demo", "loss", "all")}
ENGINE_CASES = [pytest.param(space, n, reduction, params, id=f"{params}-{reduction}-{space}-{n}",
                             marks=() if (space, reduction, params) in FAST_ENGINE_CASES else pytest.mark.slow)
                for space, n in (("demo", 6), ("pit_tiny", 3)) for reduction in ("sum", "projection", "loss")
                for params in ("all", "weights")]


@pytest.mark.parametrize("space,n,reduction,params", ENGINE_CASES)
def test_fast_engine_equals_reference(space, n, reduction, params):
    sp = SearchSpace.load(space)
    spec = sp.sample(random.Random(n)) if space == "demo" else sp.extreme_spec(False)
    model = disable_fused_attention(build_model(spec, seed=0))
    x = torch.randn(n, 3, spec.img_size, spec.img_size)
    y = torch.randint(0, spec.num_classes, (n,))
    stats = NTKStats()
    fast = empirical_ntk(model, x, y, reduction, params, stats=stats)
    ref = empirical_ntk_reference(model, x, y, reduction, params)
    assert fast.shape == (n, n) and fast.dtype == torch.float64
    assert _rel_err(fast, ref) < 1e-4
    expected = sum(p.numel() for p in model.parameters()) if params == "all" else \
        sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    assert stats.covered_params == expected
    assert all(p.requires_grad for p in model.parameters())  # requires_grad restored


@pytest.mark.slow
def test_fast_engine_equals_reference_autoformer_with_relative_positions():
    spec = SearchSpace.load("autoformer_tiny").extreme_spec(False)
    model = disable_fused_attention(build_model(spec, seed=0))
    x, y = probe_batch(3, 224, seed=1)
    assert _rel_err(empirical_ntk(model, x), empirical_ntk_reference(model, x)) < 1e-4


@pytest.mark.slow
def test_train_mode_and_chunking_give_same_kernel():
    spec = SearchSpace.load("demo").extreme_spec(True)
    model = disable_fused_attention(build_model(spec, seed=0))
    x = torch.randn(5, 3, 32, 32)
    whole = NTKStats()
    a = empirical_ntk(model, x, stats=whole)
    stats = NTKStats()
    b = empirical_ntk(model, x, max_chunk_elems=5 * 128 * 3, stats=stats)  # a few linear rows at a time
    assert _rel_err(b, a) < 1e-5
    assert stats.peak_chunk_bytes * 4 <= whole.peak_chunk_bytes
    c = empirical_ntk(model, x, train_mode=True)  # no dropout in scoring models: identical
    assert _rel_err(c, a) < 1e-5


MEMORY_SCRIPT = textwrap.dedent("""
    import resource, torch
    from pipeline.models import VisionTransformer
    from pipeline.proxies.ntk import NTKStats, disable_fused_attention, empirical_ntk
    torch.manual_seed(0)
    model = disable_fused_attention(VisionTransformer(img_size=8, patch_size=4, num_classes=10, embed_dim=1024,
                                                      num_heads=(8, 8), mlp_ratio=(4.0, 4.0)))
    P = sum(p.numel() for p in model.parameters())
    x = torch.randn(16, 3, 8, 8)
    empirical_ntk(model, x[:2])  # warm up allocator and kernels
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats = NTKStats()
    theta = empirical_ntk(model, x, max_chunk_elems=2 ** 22, stats=stats)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert torch.isfinite(theta).all()
    print(P * 16 * 4, after - before, stats.peak_chunk_bytes)
""")


@pytest.mark.slow
def test_memory_stays_far_below_holding_the_jacobian(tmp_path):
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT)
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    full, growth, block = map(int, res.stdout.split())
    assert full > 1.5e9                 # holding N x P would need > 1.5 GB
    assert growth < 0.25 * full         # the engine's peak growth is a small fraction of it
    assert block <= 2 ** 22 * 4 * 2


def test_invalid_kernels_are_flagged():
    with pytest.raises(InvalidScore, match="non-finite"):
        eigenvalues(torch.tensor([[1.0, float("nan")], [float("nan"), 1.0]]))
    with pytest.raises(InvalidScore, match="singular"):
        condition_number(eigenvalues(torch.ones(3, 3)))
    spec = SearchSpace.load("demo").extreme_spec(False)
    x = torch.randn(1, 3, 32, 32).repeat(4, 1, 1, 1)  # identical images: a rank-1 kernel
    y = torch.arange(4)
    score = compute_proxy("ntk_cond", spec, x, y)
    assert not score.valid and "singular" in score.reason and score.rank_value == -math.inf
    score = compute_proxy("vintk", spec, x, y, options={"views": ["identity"], "weights": None})
    assert not score.valid


def test_condition_number_and_statistics_by_hand():
    ev = eigenvalues(torch.diag(torch.tensor([1.0, 2.0, 4.0])))
    assert condition_number(ev) == pytest.approx(4.0)
    assert statistic(ev, "cond") == pytest.approx(-math.log(4.0))
    assert statistic(ev, "logdet") == pytest.approx(math.log(8.0) / 3)
    assert statistic(ev, "trace") == pytest.approx(math.log(7.0))
    p = torch.tensor([1 / 7, 2 / 7, 4 / 7])
    assert statistic(ev, "erank") == pytest.approx(float(torch.exp(-(p * p.log()).sum())))


def test_lga_equals_formula_on_constructed_kernel():
    theta = torch.tensor([[4.0, 2.0, 0.0], [2.0, 3.0, 1.0], [0.0, 1.0, 5.0]])
    labels = torch.tensor([0, 0, 1])
    L = torch.tensor([[1.0, 1, -1], [1, 1, -1], [-1, -1, 1]])
    t, l = theta - theta.mean(), L - L.mean()
    expected = (t * l).sum() / (t.norm() * l.norm())
    assert label_gradient_alignment(theta, labels) == pytest.approx(float(expected))
    # a kernel equal to the label matrix is perfectly aligned
    assert label_gradient_alignment(L, labels) == pytest.approx(1.0)
    with pytest.raises(InvalidScore):
        label_gradient_alignment(torch.ones(3, 3), labels)


@pytest.mark.slow
def test_lga_minimal_training_changes_score():
    spec = SearchSpace.load("demo").extreme_spec(False)
    x, y = probe_batch(8, 32, source="demo")
    a = compute_proxy("lga", spec, x, y)
    b = compute_proxy("lga", spec, x, y, options={"train_steps": 3})
    assert a.valid and b.valid and a.value != b.value


def _two_tone(h=32, low=1, high=13):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(h), indexing="ij")
    lo = torch.sin(2 * math.pi * low * xx / h)
    hi = torch.sin(2 * math.pi * high * yy / h)
    return lo, hi


def test_band_views_separate_frequencies():
    lo, hi = _two_tone()
    img = (3 * lo + 0.1 * hi).expand(1, 3, 32, 32)
    low = band_view(img, 0, 3)[0, 0]
    top = band_view(img, 2, 3)[0, 0]
    corr = lambda a, b: float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])
    assert corr(low, lo) > 0.999
    assert corr(top, hi) > 0.999
    assert float(top.std()) == pytest.approx(1.0, rel=1e-3)  # weak high band renormalised


def test_rff_view_is_seeded_and_keeps_shape():
    x = torch.randn(2, 3, 16, 16)
    a, b, c = rff_view(x, 4.0, seed=0), rff_view(x, 4.0, seed=0), rff_view(x, 4.0, seed=1)
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, c)
    assert make_view(x, "identity") is x
    with pytest.raises(ValueError, match="unknown view"):
        make_view(x, "bandx")


def test_vintk_with_identity_view_is_plain_ntk_condition_number():
    spec = SearchSpace.load("demo").sample(random.Random(0))
    x, y = probe_batch(8, 32, source="demo")
    plain = compute_proxy("ntk_cond", spec, x, y)
    vi = compute_proxy("vintk", spec, x, y, options={"views": ["identity"], "statistic": "cond", "weights": None,
                                                     "normalize": False, "combine": "stacked"})
    assert vi.value == pytest.approx(-math.log(plain.value))
    theta = torch.eye(4) + 0.1
    two = torch.block_diag(theta, 2 * theta)
    assert vintk_score(two, 2, "trace", "sum") == pytest.approx(math.log(3 * float(theta.trace())))
    assert vintk_score(two, 2, "cond", "mean") == pytest.approx(statistic(eigenvalues(theta), "cond"))


def test_ntk_proxies_are_deterministic_and_directional():
    spec = SearchSpace.load("demo").sample(random.Random(2))
    x, y = probe_batch(8, 32, source="demo")
    for name, higher in (("ntk_cond", False), ("ntk_trace", True), ("ntk_fro", True), ("lga", True), ("vintk", True)):
        a = compute_proxy(name, spec, x, y, seed=3)
        b = compute_proxy(name, spec, x, y, seed=3)
        assert a.valid and a.value == b.value and a.higher_is_better is higher


@pytest.mark.slow
@pytest.mark.parametrize("params", ["all", "backbone", "weights"])
def test_normalised_kernel_equals_reference(params):
    spec = SearchSpace.load("demo").sample(random.Random(4))
    model = disable_fused_attention(build_model(spec, seed=0))
    x = torch.randn(4, 3, 32, 32)
    fast = empirical_ntk(model, x, params=params, normalize=True)
    ref = empirical_ntk_reference(model, x, params=params, normalize=True)
    assert _rel_err(fast, ref) < 1e-5
    # every counted tensor contributes trace 1
    n_tensors = len(selected_parameters(model, params))
    assert float(fast.trace()) == pytest.approx(round(float(fast.trace())))
    assert round(float(fast.trace())) <= n_tensors


def test_backbone_parameter_set_excludes_the_head():
    spec = SearchSpace.load("demo").extreme_spec(False)
    model = build_model(spec)
    names = [k for k, _ in selected_parameters(model, "backbone")]
    assert names and not any(k.startswith("head.") for k in names)
    assert len(names) == len(list(model.parameters())) - 2


@pytest.mark.slow
def test_ntk_proxy_values_equal_a_brute_force_kernel():
    """ntk_cond / ntk_trace / ntk_fro / lga from the registry against a kernel built by hand:
    per-sample gradients of the summed logits w.r.t. every linear/conv kernel, in float64."""
    spec = SearchSpace.load("demo").extreme_spec(False)
    x, y = probe_batch(5, 32, source="demo")
    model = disable_fused_attention(build_model(spec, seed=7)).double().eval()
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    jac = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(model(x[i:i + 1].double()).sum(), weights)])
                       for i in range(len(x))])
    theta = jac @ jac.T
    eig = torch.linalg.eigvalsh(theta)
    same = (y[:, None] == y[None, :]).double() * 2 - 1
    t, lab = theta - theta.mean(), same - same.mean()
    expected = {"ntk_cond": float(eig[-1] / eig[0]), "ntk_trace": float(theta.trace()),
                "ntk_fro": float(theta.norm()), "lga": float((t * lab).sum() / (t.norm() * lab.norm()))}
    for name, value in expected.items():
        got = compute_proxy(name, spec, x, y, seed=7)
        assert got.valid and got.value == pytest.approx(value, rel=2e-3), name


@pytest.mark.slow
def test_vintk_flops_is_seed_averaged_logdet_of_the_reference_kernel_plus_log_flops():
    """Brute force: the per-sample-loop NTK (weights, trace-normalised per tensor) under each
    initialisation, its mean log eigenvalue averaged, plus log MACs (millions)."""
    from pipeline.models import count_flops

    spec = SearchSpace.load("demo").extreme_spec(False)
    x, y = probe_batch(6, 32, seed=0, source="demo")
    expected = []
    for seed in (3, 4, 5):
        model = disable_fused_attention(build_model(spec, seed=seed))
        theta = empirical_ntk_reference(model, x, y, "sum", "weights", normalize=True)
        expected.append(float(torch.log(torch.linalg.eigvalsh(theta.double())).mean()))
    value = sum(expected) / 3 + math.log(count_flops(spec) / 1e6)
    score = compute_proxy("vintk_flops", spec, x, y, seed=3)
    assert score.valid and score.value == pytest.approx(value, rel=1e-4, abs=1e-4)
    one_seed = compute_proxy("vintk_flops", spec, x, y, seed=3, options={"seeds": [0], "flops_weight": 0.0})
    assert one_seed.value == pytest.approx(expected[0], rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="seeds is empty"):
        compute_proxy("vintk_flops", spec, x, y, options={"seeds": []})
    with pytest.raises(ValueError, match="seeds must be a list of integer"):
        compute_proxy("vintk_flops", spec, x, y, options={"seeds": "abc"})



def test_vintk_size_is_log_flops_plus_half_the_mean_per_block_kernel_shape():
    """Brute force: per-sample gradients of every linear/conv weight by a backward per sample; each
    block's tensors scaled to trace 1, summed and divided by their number; the mean log eigenvalue
    of that, averaged over blocks and the 3 initialisations; the search default adds it, times 0.5,
    to log MACs (millions)."""
    from pipeline.models import count_flops
    from pipeline.proxies.ntk import selected_parameters

    space = SearchSpace.load("demo")
    x, y = probe_batch(6, 32, seed=0, source="demo")
    for spec in (space.extreme_spec(False), space.extreme_spec(True)):
        shapes = []
        for seed in (2, 3, 4):
            model = disable_fused_attention(build_model(spec, seed=seed)).eval()
            named = selected_parameters(model, "weights")
            per_sample = {name: [] for name, _ in named}
            for i in range(x.shape[0]):
                grads = torch.autograd.grad(model(x[i:i + 1]).sum(), [p for _, p in named])
                for (name, _), g in zip(named, grads):
                    per_sample[name].append(g.flatten().double())
            blocks: dict[str, list] = {}
            for name, rows in per_sample.items():
                if ".attn." in name or ".mlp." in name:
                    jac = torch.stack(rows)
                    gram = jac @ jac.T
                    blocks.setdefault(name.split(".attn.")[0].split(".mlp.")[0], []).append(gram / gram.trace())
            assert len(blocks) == spec.depth
            shapes.append(sum(float(torch.log(torch.linalg.eigvalsh(sum(g) / len(g))).mean())
                              for g in blocks.values()) / len(blocks))
        expected = math.log(count_flops(spec) / 1e6) + 0.5 * sum(shapes) / 3
        score = compute_proxy("vintk_size", spec, x, y, seed=2)
        assert score.valid and score.value == pytest.approx(expected, rel=1e-4, abs=1e-4)
        heavier = compute_proxy("vintk_size", spec, x, y, seed=2, options={"kernel_weight": 1.0})
        assert heavier.value - score.value == pytest.approx(0.5 * sum(shapes) / 3, rel=1e-4, abs=1e-4)
    with pytest.raises(ValueError, match="seeds is empty"):
        compute_proxy("vintk_size", spec, x, y, options={"seeds": []})
