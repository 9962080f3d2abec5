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


def _summary(out):
    with (out / "summary.csv").open(newline="") as f:
        return {r["proxy"]: r for r in csv.DictReader(f)}


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
    assert list(rows[0]) == ["key", "proxy", "value", "valid", "reason", "seconds", "params_m", "flops_m", "top1"]
    assert {(r["key"], r["proxy"]) for r in rows} == {(f"a{i}", p) for i in range(N_ARCHS) for p in proxies}
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
    assert (out / "summary.md").read_text().count("\n| ") == len(proxies) + 1
    assert "tau" in res.stdout and "params" in res.stdout  # the printed table
    cfg = (out / "config.yaml").read_text()
    assert str(ground_truth) in cfg and "source: demo" in cfg


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
    assert "unknown config key" in capsys.readouterr().err

    assert _main("correlate", "--help") == 0
    usage = capsys.readouterr().out
    for key in ("ground_truth", "metric", "proxies", "proxy_options", "probe", "limit", "bands", "output_dir",
                "fresh"):
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
    # an option the proxy rejects at call time: recorded as an error row, and the run stops after 3
    assert _main(*args, "--proxy_options={ntk_cond: {no_such_option: 1}}") == 2
    err = capsys.readouterr().err
    assert "ntk_cond" in err and "no_such_option" in err and "--retry_errors=true" in err
    rows = _scores(out)
    failed = [r for r in rows if r["proxy"] == "ntk_cond"]
    assert len(failed) == 3 and all(r["valid"] == "0" and r["reason"].startswith("error: ") for r in failed)

    assert _main(*args) == 0  # without retry_errors the failed pairs are kept as they are
    assert int(_summary(out)["ntk_cond"]["n_invalid"]) == 3
    assert _main(*args, "--retry_errors=true") == 0
    summary = _summary(out)
    assert int(summary["ntk_cond"]["n_valid"]) == 4 and int(summary["ntk_cond"]["n_invalid"]) == 0
    assert int(summary["params"]["n_valid"]) == 4
