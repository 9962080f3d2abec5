"""`python -m pipeline correlate`: scores, summary, regret, resume and bad input on a small
ground-truth file (the statistics themselves: test_metrics.py; halves and shipped configs:
test_correlate_splits.py)."""
import csv
import json
import math

import numpy as np
import pytest
import yaml

from conftest import run_cli
from correlate_support import (N_ARCHS, PROXIES, correlate_args, read_scores, read_summary, run_in_process,
                               write_ground_truth)
from pipeline.space import SearchSpace


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    return write_ground_truth(tmp_path_factory.mktemp("gt") / "tiny_gt.jsonl")

@pytest.fixture(scope="module")
def full_run(ground_truth, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    res = run_cli(*correlate_args(ground_truth, out))
    assert res.returncode == 0, res.stderr
    return out, res


@pytest.mark.slow
def test_end_to_end(full_run, ground_truth):
    out, res = full_run
    proxies = PROXIES
    rows = read_scores(out)
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
    summary = read_summary(out)
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
    top5 = read_summary(out, "top5")  # top5 = top1 + 10: the same ranking, the same statistics
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


@pytest.mark.slow
def test_regret_equals_brute_force(full_run):
    out, _ = full_run
    rows = read_scores(out)
    directions = {p: r["direction"] for p, r in read_summary(out).items()}
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
    summary = read_summary(out)
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
    assert run_in_process(*args, f"--output_dir={out}") == 0
    printed = capsys.readouterr().out
    with (out / "regret.csv").open(newline="") as fh:
        regret = {(r["metric"], float(r["budget_m"]), r["proxy"]): r for r in csv.DictReader(fh)}
    assert {b for _, b, _ in regret} == {0.22, 0.3, 0.42}  # the committed budgets, sorted
    for (metric, budget, name), (keys, pick, best, reg) in HAND_REGRET.items():
        for row in [regret[(metric, budget, name)], regret[(metric, budget, name.replace("largest_", ""))]]:
            assert (row["pick_keys"], float(row["pick_metric"]), float(row["best_metric"]),
                    float(row["regret"])) == (keys, pick, best, reg), (metric, budget, name)
    summary = read_summary(out)
    assert float(summary["params"]["mean_regret"]) == pytest.approx(10 / 3)   # (4 + 2 + 4) / 3
    assert float(summary["flops"]["mean_regret"]) == pytest.approx(2.0)       # (0 + 2 + 4) / 3
    assert float(read_summary(out, "top5")["flops"]["mean_regret"]) == pytest.approx(8 / 3)
    md = (out / "summary.md").read_text()
    assert "committed budgets, hand_split.json" in md and "0.22, 0.3, 0.42 M" in md
    # mean over budgets and metrics, in summary.md and printed: params 13/6, FLOPs 14/6
    assert "| largest_params | - | - | 3.333 | - | - | 1.000 | 2.167 |" in md
    assert "| largest_flops | - | - | 2.000 | - | - | 2.667 | 2.333 |" in md
    assert "2.167" in printed and "2.333" in printed and "largest_flops" in printed
    # --budgets overrides the committed ones
    assert run_in_process(*args, f"--output_dir={tmp_path / 'over'}", "--budgets=[0.22]") == 0
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




@pytest.mark.slow
def test_resume_computes_only_missing_rows(full_run, ground_truth, tmp_path, capsys):
    full_out, _ = full_run
    out = tmp_path / "resume"
    proxies = PROXIES
    assert run_in_process(*correlate_args(ground_truth, out, "--limit", "5", "--seed", "3")) == 0
    first = read_scores(out)
    assert len(first) == 5 * len(proxies)
    assert len({r["key"] for r in first}) == 5
    assert int(read_summary(out)["params"]["n_valid"]) == 5
    # simulate an interruption: lose a whole row, and leave the last row half-written
    lines = (out / "scores.csv").read_text().splitlines(keepends=True)
    del lines[2]                                # data row 1
    lines[-1] = lines[-1][: len(lines[-1]) // 2]  # data row -1, cut mid-write (no newline)
    (out / "scores.csv").write_text("".join(lines))
    kept = {(r["key"], r["proxy"]): r["seconds"] for r in first[:1] + first[2:-1]}
    capsys.readouterr()

    assert run_in_process(*correlate_args(ground_truth, out)) == 0  # all 12 now
    res = capsys.readouterr()
    assert "dropped 1" in res.err
    final = read_scores(out)
    assert len(final) == N_ARCHS * len(proxies)  # no duplicates: nothing computed twice
    seconds = {(r["key"], r["proxy"]): r["seconds"] for r in final}
    assert all(seconds[k] == v for k, v in kept.items())  # earlier rows untouched
    assert f"computed {N_ARCHS * len(proxies) - len(kept)} new score(s)" in res.out
    ignore = {"mean_seconds"}
    got, want = read_summary(out), read_summary(full_out)  # equals the uninterrupted subprocess run
    assert {p: {k: v for k, v in r.items() if k not in ignore} for p, r in got.items()} == \
           {p: {k: v for k, v in r.items() if k not in ignore} for p, r in want.items()}

    # a rerun with nothing missing computes nothing
    assert run_in_process(*correlate_args(ground_truth, out, "--proxies=params,flops")) == 0
    assert "computed 0 new score(s)" in capsys.readouterr().out
    # settings that change scores are refused instead of mixed in
    assert run_in_process(*correlate_args(ground_truth, out, "--probe.n=4", "--proxies=params")) == 2
    err = capsys.readouterr().err
    assert "--fresh=true" in err and "probe" in err


@pytest.mark.slow
def test_fresh_and_bad_inputs_in_process(ground_truth, tmp_path, capsys):
    out = tmp_path / "fresh"
    args = ["correlate", f"--ground_truth={ground_truth}", "--probe.source=demo", "--probe.n=8",
            "--proxies=params,flops", f"--output_dir={out}", "--threads=1", "--limit=4"]
    assert run_in_process(*args) == 0
    assert len(read_scores(out)) == 8
    assert run_in_process(*args[:-1], "--limit=2", "--fresh=true") == 0
    assert len(read_scores(out)) == 4
    capsys.readouterr()

    assert run_in_process("correlate", f"--ground_truth={tmp_path / 'nope.jsonl'}") == 2
    err = capsys.readouterr().err
    assert "error:" in err and "nope.jsonl" in err and "does not exist" in err

    assert run_in_process(*args, "--proxies=params,no_such_proxy") == 2
    err = capsys.readouterr().err
    assert "no_such_proxy" in err and "available proxies" in err and "flops" in err

    assert run_in_process(*args, "--metric=top7") == 2
    err = capsys.readouterr().err
    assert "top7" in err and "top1" in err and "top5" in err

    assert run_in_process(*args, "--proxy_options={params: {bogus: 1}}") == 2
    assert "bogus" in capsys.readouterr().err
    # an option value outside its Literal choices is refused before any scoring
    assert run_in_process(*args, "--proxies=params,dss", "--proxy_options={dss: {variant: paper}}") == 2
    err = capsys.readouterr().err
    assert "proxy_options.dss.variant='paper'" in err and "'released', 'intended'" in err

    assert run_in_process(*args, "--no_such_key=1") == 2
    assert "unknown option(s) --no_such_key=1" in capsys.readouterr().err

    with pytest.raises(SystemExit) as done:
        run_in_process("correlate", "--help")
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
    assert run_in_process(*args, f"--probe.root={tmp_path / 'data'}") == 0
    assert len(read_scores(tmp_path / "out")) == 3
    capsys.readouterr()
    assert run_in_process(*args[:-1], "--probe.root=null", f"--output_dir={tmp_path / 'out2'}") == 2
    assert "--probe.root=" in capsys.readouterr().err


def test_bad_input_subprocess(tmp_path):
    res = run_cli("correlate", f"--ground_truth={tmp_path / 'missing.json'}", "--proxies=params")
    assert res.returncode == 2
    assert "missing.json" in res.stderr and "does not exist" in res.stderr


@pytest.mark.slow
def test_real_benchmark(benchmark_path, tmp_path):
    out = tmp_path / "bench"
    res = run_cli("correlate", "--ground_truth=ood_vit_nas_tiny", "--limit", "20", "--proxies=params,flops",
                  f"--output_dir={out}", "--threads=1")   # the name finds the file the fixture found
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load((out / "config.yaml").read_text())["ground_truth"] == str(benchmark_path)
    assert len(read_scores(out)) == 40
    flops = read_summary(out)["flops"]
    assert int(flops["n_valid"]) == 20
    assert math.isfinite(float(flops["kendall_tau"]))
    assert math.isfinite(float(flops["spearman_rho"]))


@pytest.mark.slow
def test_failing_proxy_is_recorded_then_retried(ground_truth, tmp_path, capsys):
    out = tmp_path / "errors"
    args = ["correlate", f"--ground_truth={ground_truth}", "--probe.source=demo", "--probe.n=4",
            "--proxies=params,ntk_cond", f"--output_dir={out}", "--threads=1", "--limit=4"]
    # an option name the proxy does not take is refused before any scoring
    assert run_in_process(*args, "--proxy_options={ntk_cond: {no_such_option: 1}}") == 2
    assert "no_such_option" in capsys.readouterr().err and not out.exists()
    # a value the proxy rejects at call time: recorded as an error row, and the run stops after 3
    assert run_in_process(*args, "--proxy_options={ntk_cond: {views: [no_such_view]}}") == 2
    err = capsys.readouterr().err
    assert "ntk_cond" in err and "no_such_view" in err and "--retry_errors=true" in err
    rows = read_scores(out)
    failed = [r for r in rows if r["proxy"] == "ntk_cond"]
    assert len(failed) == 3 and all(r["valid"] == "0" and r["reason"].startswith("error: ") for r in failed)

    assert run_in_process(*args) == 0  # without retry_errors the failed pairs are kept as they are
    assert int(read_summary(out)["ntk_cond"]["n_invalid"]) == 3
    assert run_in_process(*args, "--retry_errors=true") == 0
    summary = read_summary(out)
    assert int(summary["ntk_cond"]["n_valid"]) == 4 and int(summary["ntk_cond"]["n_invalid"]) == 0
    assert int(summary["params"]["n_valid"]) == 4
