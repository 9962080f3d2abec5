"""``python -m pipeline run``: stages wired through files, skipped when finished, one report."""
from __future__ import annotations

import json

import pytest
import yaml

from conftest import REPO, run_cli
from pipeline.config import ConfigError
from pipeline.run.command import stage_config
from pipeline.run.settings import parse_config

# A tiny but complete run: 4 random candidates, 1 short epoch, a few segmentation steps.
TINY = ["--search.strategy.name=random", "--search.strategy.random.samples=4",
        "--cls.trainer.max_epochs=1", "--cls.trainer.limit_train_batches=3", "--cls.trainer.limit_val_batches=2",
        "--seg.trainer.max_steps=4", "--seg.trainer.val_check_interval=2", "--seg.data.batch_size=4",
        "--seg.eval.log_images=2"]


@pytest.mark.slow
def test_stage_overrides_are_checked_keys_of_the_stage_configs():
    cfg = parse_config(["--cls.optim.lr=1e-3", "--stages=[seg,search]", "--search={strategy: {name: random}}"])
    assert cfg["cls"]["optim"]["lr"] == 1e-3 and isinstance(cfg["cls"]["optim"]["lr"], float)
    assert cfg["stages"] == ["search", "seg"]                      # pipeline order
    assert cfg["search"]["strategy"]["name"] == "random"           # merged, not replaced:
    assert cfg["search"]["strategy"]["evolution"]["population"] == 30
    assert cfg["search"]["space"] == "demo"                        # the stage's own config file
    with pytest.raises(ConfigError, match="optim.nope"):
        parse_config(["--cls.optim.nope=1"])
    with pytest.raises(ConfigError, match="max_stepz"):
        parse_config(["--seg={trainer: {max_stepz: 3}}"])
    with pytest.raises(ConfigError, match="stages"):
        parse_config(["--stages=[search,deploy]"])
    with pytest.raises(ConfigError, match="PositiveInt"):             # typed as in the stage's own parser
        parse_config(["--search.strategy.random.samples=0"])


def test_stage_config_wires_outputs_and_group(tmp_path):
    cfg = parse_config(["--run_name=r"])
    (tmp_path / "search").mkdir()
    (tmp_path / "search" / "arch.yaml").write_text("{}")
    cls = stage_config(cfg, "cls", tmp_path)
    assert cls["out_dir"] == str(tmp_path) and cls["run_name"] == "cls"
    assert cls["arch"] == str(tmp_path / "search" / "arch.yaml") and cls["wandb"]["group"] == "r"
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "model.pt").write_bytes(b"")
    seg = stage_config(cfg, "seg", tmp_path)
    assert seg["backbone_ckpt"] == str(tmp_path / "cls" / "model.pt") and seg["arch"] is None


@pytest.mark.slow
def test_run_end_to_end_skips_finished_stages(tmp_path):
    args = ["run", "--run_name=e2e", f"--out_dir={tmp_path}", *TINY]
    first = run_cli(*args, "--stages=[search,cls]")   # as if interrupted after the classification stage
    assert first.returncode == 0, first.stderr[-3000:]
    run_dir = tmp_path / "e2e"
    assert (run_dir / "search/arch.yaml").is_file() and (run_dir / "cls/model.pt").is_file()
    assert not (run_dir / "seg").exists()
    report = (run_dir / "report.md").read_text()
    assert "## 1. Search" in report and "## 2. Classification" in report and "## 3." not in report

    second = run_cli(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "search: finished earlier" in second.stdout and "cls: finished earlier" in second.stdout
    seg_cfg = yaml.safe_load((run_dir / "stages/seg.yaml").read_text())
    assert seg_cfg["backbone_ckpt"] == str(run_dir / "cls/model.pt")       # the hand-off
    assert seg_cfg["wandb"]["group"] == "e2e"
    metrics = json.loads((run_dir / "seg/metrics.json").read_text())
    assert metrics["backbone_init"] and metrics["arch"] == yaml.safe_load((run_dir / "search/arch.yaml").read_text())
    for stage in ("search", "cls", "seg"):
        assert (run_dir / "stages" / f"{stage}.done.json").is_file()
        assert list((run_dir / stage / "wandb").glob("offline-run-*")), f"{stage} has no W&B run"
    report = (run_dir / "report.md").read_text()
    assert "## 3. Segmentation" in report and "mIoU" in report and "majority-class baseline" in report
    for image in ("search/pareto.png", "cls_curves.png", "seg_curves.png", "seg/val_examples.png"):
        assert f"]({image})" in report and (run_dir / image).is_file(), image

    third = run_cli(*args)   # everything finished: nothing is recomputed
    assert third.returncode == 0 and third.stdout.count("finished earlier") == 3
    changed = run_cli(*args, "--cls.optim.lr=0.1")
    assert changed.returncode == 2 and "finished with other settings (optim.lr)" in changed.stderr


@pytest.mark.slow
def test_run_help_and_bad_override():
    done = run_cli("run", "--help")
    assert done.returncode == 0 and "--search.strategy.name" in done.stdout
    bad = run_cli("run", "--cls.optim.nope=1")
    assert bad.returncode == 2 and "optim.nope" in bad.stderr


def test_search_refuses_to_mix_scores_of_another_proxy(tmp_path):
    from pipeline.errors import UserError
    from pipeline.search.command import check_resumable
    from pipeline.search.settings import parse_config as parse_search

    cfg = parse_search([f"--out_dir={tmp_path}"])
    out = tmp_path / cfg["run_name"]
    out.mkdir()
    (out / "candidates.jsonl").write_text("")
    (out / "config.yaml").write_text(yaml.safe_dump(cfg))
    check_resumable(dict(cfg, seed=3), out)   # another seed only picks other specs: fine
    with pytest.raises(UserError, match="proxy"):
        check_resumable(dict(cfg, proxy={**cfg["proxy"], "name": "ntk_cond"}), out)


@pytest.mark.slow
def test_missing_data_roots_fail_before_the_search(tmp_path):
    real = REPO / "configs/run/autoformer_tiny_imagenet_ade20k.yaml"
    done = run_cli("run", "--config", str(real), f"--out_dir={tmp_path}", f"--search.probe.root={tmp_path}")
    assert done.returncode == 2 and "--cls.data.root=None: no such dataset folder" in done.stderr
    done = run_cli("run", "--config", str(real), f"--out_dir={tmp_path}", f"--search.probe.root={tmp_path}",
                   f"--cls.data.root={tmp_path}", "--seg.data.data_root=/no/such/ade")
    assert done.returncode == 2 and "--seg.data.data_root=/no/such/ade" in done.stderr
    assert not list(tmp_path.iterdir())   # nothing was started


@pytest.mark.parametrize("extra,words", [
    ("--search.strategy.name=annealing", ["--search.strategy.name:", "evolution"]),
    ("--cls.trainer.max_epochs=many", ["--cls.trainer.max_epochs:", "'many'"]),
    ("--cls.optim.lrr=0.1", ["unknown option(s) --cls.optim.lrr=0.1"]),
    ("--stages=[search,deploy]", ["--stages:", "seg"]),
    ("--seg.wandb.mode=offline", ["--seg.wandb.mode", "set --wandb.mode instead"]),
    ("--wandb.mode=sometimes", ["--wandb.mode:", "offline"]),
    ("--run_name=a/b", ["run_name='a/b'", "folder name"]),
    ("--search.probe.source=folder", ["--search.probe.root=None: no such dataset folder"]),
])
def test_bad_options_exit_2_with_one_line_and_start_nothing(tmp_path, capsys, extra, words):
    from pipeline.cli import main

    assert main(["run", f"--out_dir={tmp_path / 'out'}", extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_refuses_to_run_under_a_launcher(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="not under torchrun"):
        parse_config([])


def test_run_refuses_to_start_under_a_launcher(tmp_path):
    res = run_cli("run", f"--out_dir={tmp_path}", env={"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"})
    assert res.returncode == 2
    assert "--search.trainer.devices=N" in res.stderr and "--cls.trainer.devices=N" in res.stderr
    assert not any(tmp_path.iterdir())
