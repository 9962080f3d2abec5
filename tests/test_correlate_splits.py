"""`correlate` on halves of a ground-truth file, metric and spec overrides, and the shipped configs
of the dev benchmarks (found in the cache or ../shared, never downloaded)."""
import csv
import json
import math

import numpy as np
import pytest

from conftest import DEV_FILES, dev_benchmark, dev_entries, run_cli
from correlate_support import N_ARCHS, read_scores, run_in_process, scored_keys, write_ground_truth
from pipeline.models.complexity import count_params


@pytest.fixture(scope="module")
def ground_truth(tmp_path_factory):
    return write_ground_truth(tmp_path_factory.mktemp("gt") / "tiny_gt.jsonl")

def test_split_halves_are_disjoint_and_cover_the_file(ground_truth, tmp_path, capsys):
    from pipeline.groundtruth import load_split, write_split

    split_file = write_split(ground_truth, tmp_path / "halves.json", seed=1)
    halves = load_split(split_file)
    args = ["correlate", f"--ground_truth={ground_truth}", "--probe.source=demo", "--probe.n=8",
            "--proxies=params,flops", "--threads=1", f"--split_file={split_file}", "--plots=false"]
    got = {}
    for half in ("tune", "test"):
        out = tmp_path / half
        assert run_in_process(*args, f"--output_dir={out}", f"--split={half}") == 0
        got[half] = scored_keys(out)
        assert got[half] == set(halves[half])
        md = (out / "summary.md").read_text()
        assert f"{half} half" in md and ("in-sample" in md) == (half == "tune")
    assert not got["tune"] & got["test"]
    assert got["tune"] | got["test"] == {f"a{i}" for i in range(N_ARCHS)}
    assert abs(len(got["tune"]) - len(got["test"])) <= 1
    # the split comes before limit: a limited tune run stays inside the tune half
    assert run_in_process(*args, f"--output_dir={tmp_path / 'lim'}", "--split=tune", "--limit=3") == 0
    assert len(scored_keys(tmp_path / "lim")) == 3 and scored_keys(tmp_path / "lim") <= got["tune"]
    capsys.readouterr()
    # a split made for another file is refused
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"tune": ["a0", "zz"], "test": ["a1"]}))
    assert run_in_process(*args, f"--output_dir={tmp_path / 'bad'}", "--split=test", f"--split_file={other}") == 2
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
        assert run_in_process(*_bad_input_args(ground_truth, out, extra)) == 2
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
    assert run_in_process(*_bad_input_args(ground_truth, out, extra)) == 2
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
    assert run_in_process(*args, "--metric=top1") == 0
    assert list(read_scores(out)[0])[-1] == "top1"
    capsys.readouterr()
    assert run_in_process(*args, "--metric=all") == 2
    err = capsys.readouterr().err
    assert "top5" in err and "--metric=[top1]" in err and "--fresh=true" in err
    assert run_in_process(*args, "--metric=top1", "--arch_overrides={num_classes: 7}") == 2
    err = capsys.readouterr().err
    assert "arch_overrides" in err and "--fresh=true" in err
    # a config saved before metric lists and arch_overrides existed still resumes
    cfg = (out / "config.yaml").read_text()
    assert "- top1" in cfg and "arch_overrides: {}" in cfg
    (out / "config.yaml").write_text(cfg.replace("arch_overrides: {}\n", "").replace("metric:\n- top1", "metric: top1"))
    assert run_in_process(*args, "--metric=top1", "--proxies=params,flops") == 0
    assert "computed 3 new score(s)" in capsys.readouterr().out

    # overrides reach the specs that are scored
    over = tmp_path / "over"
    assert run_in_process(*args[:5], f"--output_dir={over}", *args[6:], "--arch_overrides={num_classes: 7}") == 0
    specs = {d["id"]: d["arch"] for d in map(json.loads, ground_truth.read_text().splitlines())}
    for r in read_scores(over):
        spec = ArchSpec.from_dict({**specs[r["key"]], "num_classes": 7})
        assert float(r["params_m"]) == pytest.approx(count_params(spec) / 1e6)
        assert float(r["params_m"]) < count_params(ArchSpec.from_dict(specs[r["key"]])) / 1e6
    assert "num_classes" in (over / "summary.md").read_text()
    capsys.readouterr()
    assert run_in_process(*args, f"--output_dir={tmp_path / 'x'}", "--arch_overrides={global_pool: max}") == 2
    assert "global_pool" in capsys.readouterr().err


def test_vitbench101_config(tmp_path):
    dev_benchmark("vitbench101_autoformer_tiny_kd")   # the config names it; found, never downloaded here
    out = tmp_path / "vb"
    assert run_in_process("correlate", "--config", "configs/correlate/vitbench101.yaml", "--proxies=[params,flops]",
                 "--split=test", "--limit=6", f"--output_dir={out}", "--threads=1", "--plots=false") == 0
    assert list(read_scores(out)[0])[-3:] == ["cifar100_kd", "flowers102_kd", "chaoyang_kd"]
    md = (out / "summary.md").read_text()
    assert "test half" in md and "'global_pool': 'avg'" in md
    from pipeline.groundtruth import load_split

    assert scored_keys(out) <= set(load_split("configs/correlate/splits/vitbench101_autoformer_tiny_kd.json")["test"])


def test_autoformer_small_config(tmp_path):
    """The third dev file's shipped config: its space, its halves, its committed budgets."""
    dev_benchmark("ood_vit_nas_small")   # the config names it; found, never downloaded here (CI=true: must be)
    out = tmp_path / "small"
    assert run_in_process("correlate", "--config", "autoformer_small", "--proxies=[params,flops]", "--split=tune",
                 "--limit=8", f"--output_dir={out}", "--threads=1", "--plots=false") == 0
    from pipeline.groundtruth import load_split

    assert scored_keys(out) <= set(load_split("configs/correlate/splits/autoformer_small_ood_vit_nas.json")["tune"])
    with (out / "regret.csv").open(newline="") as fh:
        assert sorted({float(r["budget_m"]) for r in csv.DictReader(fh)}) == [17.47, 22.31, 26.79, 31.92]
    md = (out / "summary.md").read_text()
    assert "tune half" in md and "committed budgets, autoformer_small_ood_vit_nas.json" in md
    assert 14 < min(float(r["params_m"]) for r in read_scores(out)) and max(float(r["params_m"]) for r in read_scores(out)) < 32
