"""`python -m pipeline correlate` and the ranking statistics of `pipeline.metrics`."""
import csv
import itertools
import json
import math
import random

import numpy as np
import pytest
from scipy import stats

from conftest import run_cli
from pipeline import metrics
from pipeline.models.complexity import count_params
from pipeline.space import SearchSpace

N_ARCHS = 12


# ----------------------------------------------------------------------------- metrics


def test_tau_and_rho_equal_scipy():
    rng = np.random.default_rng(0)
    for n in (5, 17, 60):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        x[:3] = x[3]  # some ties
        assert metrics.kendall_tau(x, y) == pytest.approx(stats.kendalltau(x, y).statistic, abs=1e-12)
        assert metrics.spearman_rho(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
    assert math.isnan(metrics.kendall_tau([1.0], [2.0]))
    assert math.isnan(metrics.kendall_tau([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
    assert math.isnan(metrics.spearman_rho([1.0, 2.0], [3.0, 3.0]))


@pytest.mark.parametrize("n,bands", [(23, 5), (10, 5), (7, 3), (4, 6), (30, 1)])
def test_banded_tau_equals_brute_force(n, bands):
    rng = np.random.default_rng(n)
    params = rng.integers(0, 8, size=n).astype(float)  # ties across band edges
    x = params + rng.normal(size=n)
    y = params + rng.normal(size=n)
    got, per_band = metrics.banded_kendall_tau(x, y, params, bands)
    # brute force: sort by params (stable), cut into equal-count bands, tau per band, weighted mean
    order = sorted(range(n), key=lambda i: (params[i], i))
    sizes = [n // bands + (b < n % bands) for b in range(bands)]
    num = den = 0.0
    start, expect_bands = 0, []
    for size in sizes:
        idx = order[start:start + size]
        start += size
        if not idx:
            continue
        tau = stats.kendalltau(x[idx], y[idx]).statistic if len(idx) >= 2 else math.nan
        expect_bands.append((len(idx), tau))
        if math.isfinite(tau):
            num += len(idx) * tau
            den += len(idx)
    assert [s for s, _ in per_band] == [s for s, _ in expect_bands]
    np.testing.assert_allclose([t for _, t in per_band], [t for _, t in expect_bands], equal_nan=True)
    if den:
        assert got == pytest.approx(num / den, abs=1e-12)
    else:
        assert math.isnan(got)


def test_top_precision_hand_example():
    # 20 architectures: top 10% = 2. True top-2 by metric: items 0 and 1.
    metric = np.arange(20, 0, -1, dtype=float)
    proxy = np.zeros(20)
    proxy[0], proxy[5] = 10, 9          # proxy's top-2: items 0 and 5 -> one hit of two
    proxy[6:] = np.linspace(-1, -2, 14)
    assert metrics.top_fraction_precision(proxy, metric, 0.1) == pytest.approx(0.5)
    assert metrics.top_fraction_precision(metric, metric, 0.1) == 1.0
    assert metrics.top_fraction_precision(-metric, metric, 0.1) == 0.0
    # k = ceil(0.1 * 12) = 2; a perfect ranking of 12 still scores 1
    assert metrics.top_fraction_precision(np.arange(12.0), np.arange(12.0), 0.1) == 1.0


def test_top_precision_ties_are_expected_value_over_tie_breaks():
    metric = np.array([9.0, 8, 7, 6, 5, 4, 3, 2, 1, 0])       # true top-1 (k=1 at 10%) is item 0
    proxy = np.array([5.0, 5, 5, 1, 0, 0, 0, 0, 0, 0])        # three-way tie at the top
    assert metrics.top_fraction_precision(proxy, metric, 0.1) == pytest.approx(1 / 3)
    # brute force over every tie-break order (permutations within each group of equal values)
    proxy = np.array([5.0, 4, 4, 4, 1, 1, 0, 0, 0, 0])
    metric = np.array([0.0, 9, 1, 8, 7, 2, 3, 4, 5, 6])
    for k, frac in ((3, 0.3), (5, 0.5), (2, 0.2)):
        true_top = set(np.argsort(-metric, kind="stable")[:k].tolist())
        groups = [np.flatnonzero(proxy == v).tolist() for v in np.unique(proxy)]
        hits = []
        for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
            pos = {i: n for perm in perms for n, i in enumerate(perm)}
            rank = sorted(range(10), key=lambda i: (-proxy[i], pos[i]))
            hits.append(len(true_top & set(rank[:k])) / k)
        assert metrics.top_fraction_precision(proxy, metric, frac) == pytest.approx(np.mean(hits), abs=1e-12)


def test_direction_handling():
    rng = np.random.default_rng(3)
    values, metric, params = rng.normal(size=40), rng.normal(size=40), rng.normal(size=40)
    up = metrics.summarize(values, metric, params, higher_is_better=True, bands=4)
    down = metrics.summarize(-values, metric, params, higher_is_better=False, bands=4)
    assert up == down
    flipped = metrics.summarize(values, metric, params, higher_is_better=False, bands=4)
    assert flipped["kendall_tau"] == pytest.approx(-up["kendall_tau"])
    assert flipped["spearman_rho"] == pytest.approx(-up["spearman_rho"])
    np.testing.assert_array_equal(metrics.orient([1, -2], False), [-1, 2])


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    """12 demo-space architectures whose made-up top1 is params plus a little noise."""
    space = SearchSpace.load("demo")
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gt") / "tiny_gt.jsonl"
    with path.open("w") as f:
        for i in range(N_ARCHS):
            spec = space.sample(random.Random(i))
            top1 = 50 + 20 * count_params(spec) / 1e6 + rng.normal(0, 0.3)
            f.write(json.dumps({"id": f"a{i}", "arch": spec.to_dict(), "space": "demo",
                                "metrics": {"top1": top1, "top5": top1 + 10}}) + "\n")
    return path


def _network_proxy():
    from pipeline.proxies import available_proxies

    have = available_proxies()
    return next((p for p in ("naswot", "ntk_cond") if p in have), None)


def _proxies():
    net = _network_proxy()
    return ["params", "flops"] + ([net] if net else [])


def _args(gt, out, *extra):
    return ("correlate", f"--ground_truth={gt}", "--probe.source=demo", "--probe.n=8",
            f"--proxies={','.join(_proxies())}", f"--output_dir={out}", "--threads=1", *extra)


def _scores(out):
    with (out / "scores.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _summary(out, metric="top1"):
    with (out / "summary.csv").open(newline="") as f:
        return {r["proxy"]: r for r in csv.DictReader(f) if r["metric"] == metric}


@pytest.fixture(scope="module")
def full_run(ground_truth, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    res = run_cli(*_args(ground_truth, out))
    assert res.returncode == 0, res.stderr
    return out, res


def test_end_to_end(full_run, ground_truth):
    out, res = full_run
    proxies = _proxies()
    rows = _scores(out)
    assert len(rows) == N_ARCHS * len(proxies)
    # metric: all (the default) stores every metric column of the file once per (key, proxy)
    assert list(rows[0]) == ["key", "proxy", "value", "valid", "reason", "seconds", "params_m", "flops_m",
                             "components", "top1", "top5"]
    assert {(r["key"], r["proxy"]) for r in rows} == {(f"a{i}", p) for i in range(N_ARCHS) for p in proxies}
    truth = {d["id"]: d["metrics"] for d in map(json.loads, ground_truth.read_text().splitlines())}
    for r in rows:
        assert float(r["top1"]) == truth[r["key"]]["top1"] and float(r["top5"]) == truth[r["key"]]["top5"]
    for r in rows:
        if r["proxy"] == "params":
            assert float(r["value"]) == pytest.approx(float(r["params_m"]))
    summary = _summary(out)
    assert set(summary) == set(proxies)
    params = summary["params"]
    assert params["direction"] == "higher"
    assert int(params["n_valid"]) == N_ARCHS and int(params["n_invalid"]) == 0
    assert float(params["kendall_tau"]) > 0.5
    assert float(params["spearman_rho"]) > 0.5
    assert math.isfinite(float(params["band_tau_5"]))
    assert 0 <= float(params["top10_precision"]) <= 1
    for p in proxies:
        assert (out / f"scatter_{p}.png").stat().st_size > 1000
    with (out / "summary.csv").open(newline="") as f:
        every = list(csv.DictReader(f))
    assert [(r["metric"], r["proxy"]) for r in every] == [(m, p) for m in ("top1", "top5") for p in proxies]
    top5 = _summary(out, "top5")  # top5 = top1 + 10: the same ranking, the same statistics
    for p in proxies:
        for k in ("kendall_tau", "spearman_rho", "band_tau_5", "top10_precision"):
            assert top5[p][k] == summary[p][k]
    md = (out / "summary.md").read_text()
    compact = "| proxy | top1 tau | top1 band tau | top5 tau | top5 band tau |"
    assert compact in md
    table = md[md.index(compact):].split("\n\n")[0].splitlines()
    assert len(table) == 2 + len(proxies)
    assert table[2 + proxies.index("params")] == (f"| params | {float(params['kendall_tau']):.3f} | "
                                                  f"{float(params['band_tau_5']):.3f} | "
                                                  f"{float(top5['params']['kendall_tau']):.3f} | "
                                                  f"{float(top5['params']['band_tau_5']):.3f} |")
    assert md.count("## Details: `") == 2 and "### `top1`" in md and "### `top5`" in md
    assert "whole file" in md
    assert "top5 band tau" in res.stdout and "params" in res.stdout  # the printed compact table
    assert "largest" in res.stdout  # the printed regret tables
    cfg = (out / "config.yaml").read_text()
    assert str(ground_truth) in cfg and "source: demo" in cfg


def _brute_force_regret(rows, directions, metric, budget):
    """Per proxy (and "largest"): mean true metric of the top pick under the budget, and best - pick."""
    arch = {r["key"]: (float(r["params_m"]), float(r[metric])) for r in rows}
    under = {k: v for k, v in arch.items() if v[0] <= budget}
    best = max(m for _, m in under.values())
    out = {}
    for proxy in [*directions, "largest"]:
        if proxy == "largest":
            scored = {k: p for k, (p, _) in under.items()}
        else:
            sign = 1 if directions[proxy] == "higher" else -1
            scored = {r["key"]: sign * float(r["value"]) for r in rows
                      if r["proxy"] == proxy and r["key"] in under and r["valid"] == "1"}
        top = max(scored.values())
        picks = [k for k, v in scored.items() if v == top]
        pick = sum(under[k][1] for k in picks) / len(picks)
        out[proxy] = (len(under), best, pick, best - pick, sorted(picks))
    return out


def test_regret_equals_brute_force(full_run):
    out, _ = full_run
    rows = _scores(out)
    directions = {p: r["direction"] for p, r in _summary(out).items()}
    with (out / "regret.csv").open(newline="") as f:
        regret = list(csv.DictReader(f))
    # default budgets: the 25/50/75/100 % quantiles of the params, rounded up to 0.01 M
    params = [float(r["params_m"]) for r in rows if r["proxy"] == "params"]
    want_budgets = sorted({math.ceil(round(float(q) * 100, 6)) / 100
                           for q in np.quantile(params, [0.25, 0.5, 0.75, 1.0])})
    budgets = sorted({float(r["budget_m"]) for r in regret})
    assert budgets == pytest.approx(want_budgets) and len(budgets) >= 3
    assert len(regret) == 2 * len(budgets) * (len(directions) + 1)
    for r in regret:
        n, best, pick, reg, picks = _brute_force_regret(rows, directions, r["metric"], float(r["budget_m"]))[r["proxy"]]
        assert int(r["n_under"]) == n
        assert float(r["best_metric"]) == pytest.approx(best, abs=1e-6)
        assert float(r["pick_metric"]) == pytest.approx(pick, abs=1e-6)
        assert float(r["regret"]) == pytest.approx(reg, abs=1e-6)
        assert sorted(r["pick_keys"].split()) == picks
    last = max(budgets)
    assert {int(r["n_under"]) for r in regret if float(r["budget_m"]) == last} == {N_ARCHS}
    # top1 grows with params here: taking the largest has a small regret, and params picks the same
    by = {(r["metric"], r["proxy"], float(r["budget_m"])): r for r in regret}
    for b in budgets:
        assert by[("top1", "params", b)]["pick_keys"] == by[("top1", "largest", b)]["pick_keys"]
    md = (out / "summary.md").read_text()
    assert "| best in file |" in md and "| largest |" in md


def test_top_pick_ties_and_budget():
    from pipeline.correlate.statistics import top_pick

    score = np.array([3.0, 5.0, 5.0, np.nan, 9.0])
    truth = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
    allowed = np.array([True, True, True, True, False])  # item 4 is over the budget
    assert top_pick(score, truth, allowed) == (3.0, [1, 2])  # tied picks count as their mean
    assert top_pick(score, truth, np.array([True, False, False, True, False])) == (1.0, [0])
    value, idx = top_pick(score, truth, np.array([False, False, False, True, False]))  # only a nan score
    assert math.isnan(value) and idx == []


def _main(*args):
    """In-process ``python -m pipeline ARGS`` (same code path as the CLI, without a 5 s interpreter start)."""
    from pipeline.cli import main

    return main(list(args))


def test_resume_computes_only_missing_rows(full_run, ground_truth, tmp_path, capsys):
    full_out, _ = full_run
    out = tmp_path / "resume"
    proxies = _proxies()
    assert _main(*_args(ground_truth, out, "--limit", "5", "--seed", "3")) == 0
    first = _scores(out)
    assert len(first) == 5 * len(proxies)
    assert len({r["key"] for r in first}) == 5
    assert int(_summary(out)["params"]["n_valid"]) == 5
    # simulate an interruption: lose a whole row, and leave the last row half-written
    lines = (out / "scores.csv").read_text().splitlines(keepends=True)
    del lines[2]                                # data row 1
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # data row -1, cut mid-write (no newline)
    (out / "scores.csv").write_text("".join(lines))
    kept = {(r["key"], r["proxy"]): r["seconds"] for r in first[:1] + first[2:-1]}
    capsys.readouterr()

    assert _main(*_args(ground_truth, out)) == 0  # all 12 now
    res = capsys.readouterr()
    assert "dropped 1" in res.err
    final = _scores(out)
    assert len(final) == N_ARCHS * len(proxies)  # no duplicates: nothing computed twice
    seconds = {(r["key"], r["proxy"]): r["seconds"] for r in final}
    assert all(seconds[k] == v for k, v in kept.items())  # earlier rows untouched
    assert f"computed {N_ARCHS * len(proxies) - len(kept)} new score(s)" in res.out
    ignore = {"mean_seconds"}
    got, want = _summary(out), _summary(full_out)  # equals the uninterrupted subprocess run
    assert {p: {k: v for k, v in r.items() if k not in ignore} for p, r in got.items()} == \
           {p: {k: v for k, v in r.items() if k not in ignore} for p, r in want.items()}

    # a rerun with nothing missing computes nothing
    assert _main(*_args(ground_truth, out, "--proxies=params,flops")) == 0
    assert "computed 0 new score(s)" in capsys.readouterr().out
    # settings that change scores are refused instead of mixed in
    assert _main(*_args(ground_truth, out, "--probe.n=4", "--proxies=params")) == 2
    err = capsys.readouterr().err
    assert "--fresh=true" in err and "probe" in err


def test_fresh_and_bad_inputs_in_process(ground_truth, tmp_path, capsys):
    out = tmp_path / "fresh"
    args = ["correlate", f"--ground_truth={ground_truth}", "--probe.source=demo", "--probe.n=8",
            "--proxies=params,flops", f"--output_dir={out}", "--threads=1", "--limit=4"]
    assert _main(*args) == 0
    assert len(_scores(out)) == 8
    assert _main(*args[:-1], "--limit=2", "--fresh=true") == 0
    assert len(_scores(out)) == 4
    capsys.readouterr()

    assert _main("correlate", f"--ground_truth={tmp_path / 'nope.jsonl'}") == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nope.jsonl" in err and "does not exist" in err

    assert _main(*args, "--proxies=params,no_such_proxy") == 2
    err = capsys.readouterr().err
    assert "no_such_proxy" in err and "available proxies" in err and "flops" in err

    assert _main(*args, "--metric=top7") == 2
    err = capsys.readouterr().err
    assert "top7" in err and "top1" in err and "top5" in err

    assert _main(*args, "--proxy_options={params: {bogus: 1}}") == 2
    assert "bogus" in capsys.readouterr().err
    # an option value outside its Literal choices is refused before any scoring
    assert _main(*args, "--proxies=params,dss", "--proxy_options={dss: {variant: paper}}") == 2
    err = capsys.readouterr().err
    assert "proxy_options.dss.variant='paper'" in err and "'released', 'intended'" in err

    assert _main(*args, "--no_such_key=1") == 2
    assert "unknown option(s) --no_such_key=1" in capsys.readouterr().err

    with pytest.raises(SystemExit) as done:
        _main("correlate", "--help")
    assert done.value.code == 0
    usage = capsys.readouterr().out
    for key in ("--ground_truth", "--metric", "--proxies", "--proxy_options", "--probe.n", "--limit", "--bands",
                "--output_dir", "--fresh", "PositiveInt", "default: 5"):
        assert key in usage


def test_probe_from_a_dataset_folder(ground_truth, tmp_path, capsys):
    from PIL import Image

    for c in ("ant", "bee"):
        (tmp_path / "data" / "train" / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (40, 40), (100 * i, 50, 200)).save(tmp_path / "data" / "train" / c / f"{i}.JPEG")
    args = ["correlate", f"--ground_truth={ground_truth}", "--probe.source=folder", "--probe.n=3",
            "--proxies=ntk_trace", f"--output_dir={tmp_path / 'out'}", "--threads=1", "--limit=3"]
    assert _main(*args, f"--probe.root={tmp_path / 'data'}") == 0
    assert len(_scores(tmp_path / "out")) == 3
    capsys.readouterr()
    assert _main(*args[:-1], "--probe.root=null", f"--output_dir={tmp_path / 'out2'}") == 2
    assert "--probe.root=" in capsys.readouterr().err


def test_bad_input_subprocess(tmp_path):
    res = run_cli("correlate", f"--ground_truth={tmp_path / 'missing.json'}", "--proxies=params")
    assert res.returncode == 2
    assert "missing.json" in res.stderr and "does not exist" in res.stderr


def test_real_benchmark(benchmark_path, tmp_path):
    out = tmp_path / "bench"
    res = run_cli("correlate", f"--ground_truth={benchmark_path}", "--limit", "20", "--proxies=params,flops",
                  f"--output_dir={out}", "--threads=1")
    assert res.returncode == 0, res.stderr
    assert len(_scores(out)) == 40
    flops = _summary(out)["flops"]
    assert int(flops["n_valid"]) == 20
    assert math.isfinite(float(flops["kendall_tau"]))
    assert math.isfinite(float(flops["spearman_rho"]))


def test_failing_proxy_is_recorded_then_retried(ground_truth, tmp_path, capsys):
    from pipeline.proxies import available_proxies

    if "ntk_cond" not in available_proxies():
        pytest.skip("ntk_cond proxy not available")
    out = tmp_path / "errors"
    args = ["correlate", f"--ground_truth={ground_truth}", "--probe.source=demo", "--probe.n=4",
            "--proxies=params,ntk_cond", f"--output_dir={out}", "--threads=1", "--limit=4"]
    # an option name the proxy does not take is refused before any scoring
    assert _main(*args, "--proxy_options={ntk_cond: {no_such_option: 1}}") == 2
    assert "no_such_option" in capsys.readouterr().err and not out.exists()
    # a value the proxy rejects at call time: recorded as an error row, and the run stops after 3
    assert _main(*args, "--proxy_options={ntk_cond: {views: [no_such_view]}}") == 2
    err = capsys.readouterr().err
    assert "ntk_cond" in err and "no_such_view" in err and "--retry_errors=true" in err
    rows = _scores(out)
    failed = [r for r in rows if r["proxy"] == "ntk_cond"]
    assert len(failed) == 3 and all(r["valid"] == "0" and r["reason"].startswith("error: ") for r in failed)

    assert _main(*args) == 0  # without retry_errors the failed pairs are kept as they are
    assert int(_summary(out)["ntk_cond"]["n_invalid"]) == 3
    assert _main(*args, "--retry_errors=true") == 0
    summary = _summary(out)
    assert int(summary["ntk_cond"]["n_valid"]) == 4 and int(summary["ntk_cond"]["n_invalid"]) == 0
    assert int(summary["params"]["n_valid"]) == 4


# ----------------------------------------------------------------------------- halves, metrics, overrides


def _keys(out):
    return {r["key"] for r in _scores(out)}


def test_split_halves_are_disjoint_and_cover_the_file(ground_truth, tmp_path, capsys):
    from pipeline.groundtruth import load_split, write_split

    split_file = write_split(ground_truth, tmp_path / "halves.json", seed=1)
    halves = load_split(split_file)
    args = ["correlate", f"--ground_truth={ground_truth}", "--probe.source=demo", "--probe.n=8",
            "--proxies=params,flops", "--threads=1", f"--split_file={split_file}", "--plots=false"]
    got = {}
    for half in ("tune", "test"):
        out = tmp_path / half
        assert _main(*args, f"--output_dir={out}", f"--split={half}") == 0
        got[half] = _keys(out)
        assert got[half] == set(halves[half])
        md = (out / "summary.md").read_text()
        assert f"{half} half" in md and ("in-sample" in md) == (half == "tune")
    assert not got["tune"] & got["test"]
    assert got["tune"] | got["test"] == {f"a{i}" for i in range(N_ARCHS)}
    assert abs(len(got["tune"]) - len(got["test"])) <= 1
    # the split comes before limit: a limited tune run stays inside the tune half
    assert _main(*args, f"--output_dir={tmp_path / 'lim'}", "--split=tune", "--limit=3") == 0
    assert len(_keys(tmp_path / "lim")) == 3 and _keys(tmp_path / "lim") <= got["tune"]
    capsys.readouterr()
    # a split made for another file is refused
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"tune": ["a0", "zz"], "test": ["a1"]}))
    assert _main(*args, f"--output_dir={tmp_path / 'bad'}", "--split=test", f"--split_file={other}") == 2
    err = capsys.readouterr().err
    assert "does not match" in err and "write_split" in err and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("name", ["autoformer_tiny_ood_vit_nas.json", "vitbench101_autoformer_tiny_kd.jsonl"])
def test_committed_dev_splits(name, benchmark_path):
    from pipeline.correlate.settings import REPO_ROOT, SPLIT_DIR
    from pipeline.groundtruth import load_ground_truth, load_split, make_split

    gt = benchmark_path.parent / name
    if not gt.is_file():
        pytest.skip(f"{gt} not found")
    keys = [e.key for e in load_ground_truth(gt)]
    halves = load_split(REPO_ROOT / SPLIT_DIR / f"{gt.stem}.json")
    assert not set(halves["tune"]) & set(halves["test"])
    assert set(halves["tune"]) | set(halves["test"]) == set(keys) and len(keys) == len(set(keys))
    assert abs(len(halves["tune"]) - len(halves["test"])) <= 1
    assert {h: sorted(v) for h, v in halves.items()} == \
           {h: sorted(v) for h, v in make_split(keys, seed=0).items() if h in halves}


BAD_INPUTS = [("--metric=[top1, top9]", ["top9", "metrics present", "top1", "top5"]),
              ("--arch_overrides={global_pool: avg, bogus_field: 1}", ["bogus_field", "valid fields", "global_pool"]),
              ("--split=test", ["split=test", "make_split", "write_split", "--split_file", "tiny_gt.json"])]


def _bad_input_args(gt, out, extra):
    return ("correlate", f"--ground_truth={gt}", "--probe.source=demo", "--proxies=params", "--threads=1",
            f"--output_dir={out}", extra)


def test_bad_metric_override_and_missing_split(ground_truth, tmp_path, capsys):
    for i, (extra, words) in enumerate(BAD_INPUTS):
        out = tmp_path / f"out{i}"
        assert _main(*_bad_input_args(ground_truth, out, extra)) == 2
        message = capsys.readouterr().err
        assert all(w in message for w in words), (extra, message)
        assert not out.exists()  # refused before any work


@pytest.mark.parametrize("extra,words", [
    ("--limit=0", ["--limit:", "PositiveInt", "'0'"]),
    ("--probe.n=many", ["--probe.n:", "PositiveInt"]),
    ("--top_fraction=1.5", ["--top_fraction:"]),
    ("--split=half", ["--split:", "tune"]),
    ("--budgets=[5, -1]", ["--budgets:"]),
    ("--limt=3", ["unknown option(s) --limt=3"]),
    ("--probe.source=folder", ["--probe.source=folder needs --probe.root"]),
    ("--proxies=params,no_such_proxy", ["--proxies:", "no_such_proxy", "available proxies"]),
    ("--proxy_options={params: {bogus: 1}}", ["--proxy_options.params", "bogus"]),
    ("--device=tpu:9", ["device 'tpu:9'"]),
])
def test_bad_options_exit_2_with_one_line_and_write_nothing(ground_truth, tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    assert _main(*_bad_input_args(ground_truth, out, extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and all(w in err for w in words), err
    assert not out.exists()


def test_default_config_is_the_built_in_defaults():
    """configs/correlate/default.yaml documents the defaults; it must not drift from the code's."""
    import yaml

    from pipeline.config import as_plain
    from pipeline.correlate.settings import DEFAULT_CONFIG, make_parser

    parser = make_parser()
    assert yaml.safe_load(DEFAULT_CONFIG.read_text()) == as_plain(parser, parser.get_defaults())


def test_missing_split_subprocess(ground_truth, tmp_path):
    """One of BAD_INPUTS through a real interpreter (each start costs ~5-15 s; the others run in-process
    above through the same pipeline.cli.main)."""
    extra, words = BAD_INPUTS[2]
    out = tmp_path / "out"
    res = run_cli(*_bad_input_args(ground_truth, out, extra))
    assert res.returncode == 2, res.stderr[-2000:]
    message = res.stderr[res.stderr.rfind("error:"):]
    assert all(w in message for w in words), message
    assert "Traceback" not in res.stderr and not out.exists()  # refused before any work


def test_resume_refuses_other_metrics_and_overrides(ground_truth, tmp_path, capsys):
    from pipeline.models.complexity import count_params
    from pipeline.space import ArchSpec

    out = tmp_path / "m"
    args = ["correlate", f"--ground_truth={ground_truth}", "--probe.source=demo", "--probe.n=8",
            "--proxies=params", f"--output_dir={out}", "--threads=1", "--limit=3", "--plots=false"]
    assert _main(*args, "--metric=top1") == 0
    assert list(_scores(out)[0])[-1] == "top1"
    capsys.readouterr()
    assert _main(*args, "--metric=all") == 2
    err = capsys.readouterr().err
    assert "top5" in err and "--metric=[top1]" in err and "--fresh=true" in err
    assert _main(*args, "--metric=top1", "--arch_overrides={num_classes: 7}") == 2
    err = capsys.readouterr().err
    assert "arch_overrides" in err and "--fresh=true" in err
    # a config saved before metric lists and arch_overrides existed still resumes
    cfg = (out / "config.yaml").read_text()
    assert "- top1" in cfg and "arch_overrides: {}" in cfg
    (out / "config.yaml").write_text(cfg.replace("arch_overrides: {}\n", "").replace("metric:\n- top1", "metric: top1"))
    assert _main(*args, "--metric=top1", "--proxies=params,flops") == 0
    assert "computed 3 new score(s)" in capsys.readouterr().out

    # overrides reach the specs that are scored
    over = tmp_path / "over"
    assert _main(*args[:5], f"--output_dir={over}", *args[6:], "--arch_overrides={num_classes: 7}") == 0
    specs = {d["id"]: d["arch"] for d in map(json.loads, ground_truth.read_text().splitlines())}
    for r in _scores(over):
        spec = ArchSpec.from_dict({**specs[r["key"]], "num_classes": 7})
        assert float(r["params_m"]) == pytest.approx(count_params(spec) / 1e6)
        assert float(r["params_m"]) < count_params(ArchSpec.from_dict(specs[r["key"]])) / 1e6
    assert "num_classes" in (over / "summary.md").read_text()
    capsys.readouterr()
    assert _main(*args, f"--output_dir={tmp_path / 'x'}", "--arch_overrides={global_pool: max}") == 2
    assert "global_pool" in capsys.readouterr().err


def test_vitbench101_config(benchmark_path, tmp_path):
    gt = benchmark_path.parent / "vitbench101_autoformer_tiny_kd.jsonl"
    if not gt.is_file():
        pytest.skip(f"{gt} not found")
    out = tmp_path / "vb"
    assert _main("correlate", "--config", "configs/correlate/vitbench101.yaml", "--proxies=[params,flops]",
                 "--split=test", "--limit=6", f"--output_dir={out}", "--threads=1", "--plots=false") == 0
    assert list(_scores(out)[0])[-3:] == ["cifar100_kd", "flowers102_kd", "chaoyang_kd"]
    md = (out / "summary.md").read_text()
    assert "test half" in md and "'global_pool': 'avg'" in md
    from pipeline.groundtruth import load_split

    assert _keys(out) <= set(load_split("configs/correlate/splits/vitbench101_autoformer_tiny_kd.json")["test"])
