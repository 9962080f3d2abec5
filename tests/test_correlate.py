"""`python -m pipeline correlate` and the ranking statistics of `pipeline.metrics`."""
import csv
import itertools
import json
import math
import random

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import DEV_FILES, dev_benchmark, dev_entries, run_cli
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
                             "top1", "top5"]
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
    compact = ("| proxy | top1 tau | top1 band tau | top1 regret | top5 tau | top5 band tau | top5 regret | "
               "mean regret |")
    assert compact in md
    table = md[md.index(compact):].split("\n\n")[0].splitlines()
    assert len(table) == 2 + len(proxies) + 2  # the proxies, then both "largest that fits" baselines
    reg = float(params["mean_regret"])
    assert table[2 + proxies.index("params")] == (f"| params | {float(params['kendall_tau']):.3f} | "
                                                  f"{float(params['band_tau_5']):.3f} | {reg:.3f} | "
                                                  f"{float(top5['params']['kendall_tau']):.3f} | "
                                                  f"{float(top5['params']['band_tau_5']):.3f} | "
                                                  f"{float(top5['params']['mean_regret']):.3f} | "
                                                  f"{(reg + float(top5['params']['mean_regret'])) / 2:.3f} |")
    assert table[-2].startswith("| largest_params | - | - | ") and table[-1].startswith("| largest_flops | - | - | ")
    assert md.count("## Details: `") == 2 and "### `top1`" in md and "### `top5`" in md
    assert "whole file" in md
    assert "top5 band tau" in res.stdout and "params" in res.stdout  # the printed compact table
    assert "largest_params" in res.stdout and "largest_flops" in res.stdout  # the printed regret tables
    assert "mean regret" in res.stdout
    cfg = (out / "config.yaml").read_text()
    assert str(ground_truth) in cfg and "source: demo" in cfg


def _brute_force_regret(rows, directions, metric, budget):
    """Per proxy (and both baselines): mean true metric of the top pick under the budget, and best - pick."""
    arch = {r["key"]: (float(r["params_m"]), float(r[metric])) for r in rows}
    under = {k: v for k, v in arch.items() if v[0] <= budget}
    best = max(m for _, m in under.values())
    out = {}
    flops = {r["key"]: float(r["flops_m"]) for r in rows}
    for proxy in [*directions, "largest_params", "largest_flops"]:
        if proxy == "largest_params":
            scored = {k: p for k, (p, _) in under.items()}
        elif proxy == "largest_flops":
            scored = {k: flops[k] for k in under}
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
    assert len(regret) == 2 * len(budgets) * (len(directions) + 2)
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
        assert by[("top1", "params", b)]["pick_keys"] == by[("top1", "largest_params", b)]["pick_keys"]
        assert by[("top1", "flops", b)]["pick_keys"] == by[("top1", "largest_flops", b)]["pick_keys"]
    md = (out / "summary.md").read_text()
    assert "| best in file |" in md and "| largest_params |" in md and "| largest_flops |" in md
    assert "quantiles of the scored architectures" in md  # no committed budgets for this file
    summary = _summary(out)
    for p in directions:  # summary.csv's mean regret is the mean over budgets of regret.csv's
        want = np.mean([float(r["regret"]) for r in regret if r["proxy"] == p and r["metric"] == "top1"])
        assert float(summary[p]["mean_regret"]) == pytest.approx(want, abs=1e-6)


# Checked by hand: demo-space networks (E embed dim, D depth, m MLP ratios; the demo's heads change
# neither params nor FLOPs), exact sizes from pipeline.models.complexity, made-up accuracies.
#  key  E   D  m        params   MFLOPs    top1  top5
#  a    64  3  2        108,554   8.209    60    80
#  g    64  6  2        208,970  16.222    70    85
#  i    64  5  3        216,778  16.213    66    90     more params than g, fewer FLOPs
#  d    96  3  4,3,2    292,138  20.701    72    88     d and e: the same sizes (a tie)
#  e    96  3  2,3,4    292,138  20.701    68    92
#  b    64  6  4        308,042  22.611    75    86
#  f   128  3  2        413,706  29.198    71    91
# budget 0.22 M (a, g, i):  top1 best g 70; largest params i 66 (regret 4); largest FLOPs g 70 (0)
#                           top5 best i 90; largest params i (0);  largest FLOPs g 85 (5)
# budget 0.30 M (+ d, e):   top1 best d 72; both baselines tie d/e: mean 70 (regret 2)
#                           top5 best e 92; both tie d/e: 90 (2)
# budget 0.42 M (all):      top1 best b 75; both take f 71 (4);  top5 best e 92; f 91 (1)
HAND = {"a": (64, 3, [2, 2, 2], 60, 80), "g": (64, 6, [2] * 6, 70, 85), "i": (64, 5, [3] * 5, 66, 90),
        "d": (96, 3, [4, 3, 2], 72, 88), "e": (96, 3, [2, 3, 4], 68, 92), "b": (64, 6, [4] * 6, 75, 86),
        "f": (128, 3, [2, 2, 2], 71, 91)}
HAND_REGRET = {  # (metric, budget, baseline): (pick keys, pick, best, regret)
    ("top1", 0.22, "largest_params"): ("i", 66, 70, 4), ("top1", 0.22, "largest_flops"): ("g", 70, 70, 0),
    ("top1", 0.3, "largest_params"): ("d e", 70, 72, 2), ("top1", 0.3, "largest_flops"): ("d e", 70, 72, 2),
    ("top1", 0.42, "largest_params"): ("f", 71, 75, 4), ("top1", 0.42, "largest_flops"): ("f", 71, 75, 4),
    ("top5", 0.22, "largest_params"): ("i", 90, 90, 0), ("top5", 0.22, "largest_flops"): ("g", 85, 90, 5),
    ("top5", 0.3, "largest_params"): ("d e", 90, 92, 2), ("top5", 0.3, "largest_flops"): ("d e", 90, 92, 2),
    ("top5", 0.42, "largest_params"): ("f", 91, 92, 1), ("top5", 0.42, "largest_flops"): ("f", 91, 92, 1)}


def test_regret_against_both_baselines_by_hand(tmp_path, capsys):
    space = SearchSpace.load("demo")
    gt = tmp_path / "hand.jsonl"
    with gt.open("w") as f:
        for key, (embed, depth, mlp, top1, top5) in HAND.items():
            spec = space.make_spec(embed, [depth], [2] * depth, mlp)
            f.write(json.dumps({"id": key, "arch": spec.to_dict(), "space": "demo",
                                "metrics": {"top1": top1, "top5": top5}}) + "\n")
    split = tmp_path / "hand_split.json"  # the file's committed protocol: halves and budgets
    split.write_text(json.dumps({"budgets_m": [0.42, 0.22, 0.3], "tune": ["a", "g", "i", "d"],
                                 "test": ["e", "b", "f"]}))
    out = tmp_path / "out"
    args = ["correlate", f"--ground_truth={gt}", "--probe.source=demo", "--proxies=[params,flops]",
            f"--split_file={split}", "--threads=1", "--plots=false"]
    assert _main(*args, f"--output_dir={out}") == 0
    printed = capsys.readouterr().out
    with (out / "regret.csv").open(newline="") as fh:
        regret = {(r["metric"], float(r["budget_m"]), r["proxy"]): r for r in csv.DictReader(fh)}
    assert {b for _, b, _ in regret} == {0.22, 0.3, 0.42}  # the committed budgets, sorted
    for (metric, budget, name), (keys, pick, best, reg) in HAND_REGRET.items():
        for row in [regret[(metric, budget, name)], regret[(metric, budget, name.replace("largest_", ""))]]:
            assert (row["pick_keys"], float(row["pick_metric"]), float(row["best_metric"]),
                    float(row["regret"])) == (keys, pick, best, reg), (metric, budget, name)
    summary = _summary(out)
    assert float(summary["params"]["mean_regret"]) == pytest.approx(10 / 3)   # (4 + 2 + 4) / 3
    assert float(summary["flops"]["mean_regret"]) == pytest.approx(2.0)       # (0 + 2 + 4) / 3
    assert float(_summary(out, "top5")["flops"]["mean_regret"]) == pytest.approx(8 / 3)
    md = (out / "summary.md").read_text()
    assert "committed budgets, hand_split.json" in md and "0.22, 0.3, 0.42 M" in md
    # mean over budgets and metrics, in summary.md and printed: params 13/6, FLOPs 14/6
    assert "| largest_params | - | - | 3.333 | - | - | 1.000 | 2.167 |" in md
    assert "| largest_flops | - | - | 2.000 | - | - | 2.667 | 2.333 |" in md
    assert "2.167" in printed and "2.333" in printed and "largest_flops" in printed
    # --budgets overrides the committed ones
    assert _main(*args, f"--output_dir={tmp_path / 'over'}", "--budgets=[0.22]") == 0
    with (tmp_path / "over" / "regret.csv").open(newline="") as fh:
        assert {float(r["budget_m"]) for r in csv.DictReader(fh)} == {0.22}


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
    res = run_cli("correlate", "--ground_truth=ood_vit_nas_tiny", "--limit", "20", "--proxies=params,flops",
                  f"--output_dir={out}", "--threads=1")   # the name finds the file the fixture found
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["ground_truth"] == str(benchmark_path)
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


@pytest.mark.parametrize("name", list(DEV_FILES))
def test_committed_dev_splits(name):
    from pipeline.correlate.settings import REPO_ROOT, SPLIT_DIR
    from pipeline.groundtruth import load_budgets, load_split, make_split

    gt, entries = dev_entries(name)
    keys = [e.key for e in entries]
    halves = load_split(REPO_ROOT / SPLIT_DIR / f"{gt.stem}.json")
    # the regret budgets: the 25/50/75/100 % quantiles of the whole file's params (our count), rounded up
    params = [count_params(e.spec) / 1e6 for e in entries]
    want = sorted({math.ceil(round(float(q) * 100, 6)) / 100 for q in np.quantile(params, [0.25, 0.5, 0.75, 1.0])})
    assert load_budgets(REPO_ROOT / SPLIT_DIR / f"{gt.stem}.json") == want and len(want) == 4
    assert max(want) >= max(params) > max(want) - 0.01
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


def test_vitbench101_config(tmp_path):
    dev_benchmark("vitbench101_autoformer_tiny_kd")   # the config names it; found, never downloaded here
    out = tmp_path / "vb"
    assert _main("correlate", "--config", "configs/correlate/vitbench101.yaml", "--proxies=[params,flops]",
                 "--split=test", "--limit=6", f"--output_dir={out}", "--threads=1", "--plots=false") == 0
    assert list(_scores(out)[0])[-3:] == ["cifar100_kd", "flowers102_kd", "chaoyang_kd"]
    md = (out / "summary.md").read_text()
    assert "test half" in md and "'global_pool': 'avg'" in md
    from pipeline.groundtruth import load_split

    assert _keys(out) <= set(load_split("configs/correlate/splits/vitbench101_autoformer_tiny_kd.json")["test"])


def test_autoformer_small_config(benchmark_path, tmp_path):
    """The third dev file's shipped config: its space, its halves, its committed budgets."""
    gt = benchmark_path.parent / "autoformer_small_ood_vit_nas.json"
    if not gt.is_file():
        pytest.skip(f"{gt} not found")
    out = tmp_path / "small"
    assert _main("correlate", "--config", "autoformer_small", "--proxies=[params,flops]", "--split=tune",
                 "--limit=8", f"--output_dir={out}", "--threads=1", "--plots=false") == 0
    from pipeline.groundtruth import load_split

    assert _keys(out) <= set(load_split("configs/correlate/splits/autoformer_small_ood_vit_nas.json")["tune"])
    with (out / "regret.csv").open(newline="") as fh:
        assert sorted({float(r["budget_m"]) for r in csv.DictReader(fh)}) == [17.47, 22.31, 26.79, 31.92]
    md = (out / "summary.md").read_text()
    assert "tune half" in md and "committed budgets, autoformer_small_ood_vit_nas.json" in md
    assert 14 < min(float(r["params_m"]) for r in _scores(out)) and max(float(r["params_m"]) for r in _scores(out)) < 32
