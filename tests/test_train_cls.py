"""`python -m pipeline train --task cls`: configs, learning, checkpoints, bad input, CLI."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from conftest import REPO, offline_artifact_has, run_cli
from pipeline.classification import ClassificationModule, load_backbone, load_exported
from pipeline import accelerator, cli
from pipeline.classification.task import ClassificationTask
from pipeline.errors import UserError
from pipeline.config import ConfigError
from pipeline.data import DemoClassification
from pipeline.models import build_model
from pipeline.space import ArchSpec, SearchSpace, SpecError
from pipeline.train import runner
from pipeline.train.cli import parse_config
from pipeline.train.command import main

DEMO = REPO / "configs" / "train" / "cls_demo.yaml"
IMAGENET = REPO / "configs" / "train" / "cls_imagenet.yaml"
QUIET = ["--wandb.enabled=false", "--trainer.enable_progress_bar=false"]


def tiny_spec(num_classes=10, **kw) -> ArchSpec:
    return ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0), img_size=32,
                    patch_size=8, num_classes=num_classes, **kw)


def write_spec(path: Path, spec: ArchSpec) -> str:
    spec.save(path)
    return str(path)


def make_folder(root: Path, classes=("ant", "bee", "cat"), per_class=(4, 2), size=64) -> Path:
    """A tiny ImageNet-layout dataset: root/{train,val}/<class>/*.JPEG, one colour per class."""
    g = torch.Generator().manual_seed(0)
    for split, n in zip(("train", "val"), per_class):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                base = torch.zeros(size, size, 3)
                base[..., c % 3] = 200
                noise = torch.randint(0, 50, (size, size, 3), generator=g)
                Image.fromarray((base + noise).clamp(0, 255).byte().numpy()).save(
                    root / split / name / f"{i}.JPEG")
    return root


def run_files(run_dir: Path) -> set:
    return {p.name for p in run_dir.iterdir()} if run_dir.exists() else set()


# ------------------------------------------------------------------ fast_dev_run per config
def test_fast_dev_run_demo_config(tmp_path):
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec())
    assert main(["--task", "cls", "--arch", arch, f"--out_dir={tmp_path}", "--trainer.fast_dev_run=true",
                 "--data.batch_size=8", *QUIET]) == 0
    run = tmp_path / "cls-demo"
    assert {"config.yaml", "arch.yaml"} <= run_files(run)
    assert not run_files(run) & {"best.ckpt", "last.ckpt", "model.pt"}  # a smoke run writes no checkpoint
    assert ArchSpec.load(run / "arch.yaml") == tiny_spec()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["arch"] == tiny_spec().to_dict()
    assert cfg["trainer"]["precision"] == accelerator.resolve_precision({"precision": None})   # null = auto
    assert cfg["seed_everything"] == 0 and "default_arch" in cfg


def test_fast_dev_run_imagenet_config(tmp_path):
    root = make_folder(tmp_path / "imagenet")
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec(num_classes=3))
    assert main(["--task", "cls", "--config", str(IMAGENET), "--arch", arch, f"--data.root={root}",
                 f"--out_dir={tmp_path / 'out'}", "--trainer.fast_dev_run=true", "--data.batch_size=4",
                 "--data.num_workers=0", "--data.pin_memory=false", *QUIET]) == 0
    assert ArchSpec.load(tmp_path / "out" / "cls-imagenet" / "arch.yaml").num_classes == 3


def test_imagenet_recipe_is_deit():
    cfg = parse_config("cls", ["--config", str(IMAGENET)])[0]
    assert cfg["optim"]["opt"] == "adamw" and cfg["optim"]["lr"] == 5e-4 and cfg["optim"]["base_batch"] == 512
    assert cfg["optim"]["weight_decay"] == 0.05 and cfg["optim"]["sched"] == "cosine"
    assert cfg["aug"]["label_smoothing"] == 0.1 and cfg["aug"]["mixup"] == 0.8 and cfg["aug"]["cutmix"] == 1.0
    assert cfg["aug"]["re_prob"] == 0.25 and cfg["aug"]["auto_augment"].startswith("rand-")
    assert cfg["model"]["drop_path"] == 0.1 and cfg["trainer"]["max_epochs"] == 300
    assert cfg["trainer"]["precision"] is None and cfg["default_arch"] is None
    assert accelerator.resolve_precision({"accelerator": "cpu", "precision": None}) == "32-true"
    assert accelerator.resolve_precision({"accelerator": "cpu", "precision": "bf16-mixed"}) == "bf16-mixed"
    # lr scaling: 5e-4 x (128 per device x 8 devices) / 512 = 1e-3
    module = ClassificationModule(tiny_spec(), lr=5e-4, base_batch=512, batch_size=128)
    module._trainer = type("T", (), {"world_size": 8, "accumulate_grad_batches": 1, "datamodule": None})()
    assert module.scaled_lr() == pytest.approx(1e-3)


# ---------------------------------------------------------- a short real run, then reuse it
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    spec = SearchSpace.load("demo").make_spec(64, [2], [2, 2], [2.0, 2.0])
    arch = write_spec(out / "spec.yaml", spec)
    args = ["--task", "cls", "--arch", arch, f"--out_dir={out}", "--run_name=short", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=50", "--trainer.limit_val_batches=8", "--data.batch_size=64",
            "--optim.lr=2e-3", "--optim.warmup_epochs=0", "--trainer.num_sanity_val_steps=0",
            "--aug.scale=[1,1]", "--aug.ratio=[1,1]", *QUIET]
    assert main(args) == 0
    return out / "short", spec, args


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The whole run at its smallest (2 training batches, 1 validation batch, the progress bar on):
    checkpoints, final validation, exports, metrics.json; what needs no learning reads this run."""
    out = tmp_path_factory.mktemp("smoke")
    spec = SearchSpace.load("demo").make_spec(64, [2], [2, 2], [2.0, 2.0])
    arch = write_spec(out / "spec.yaml", spec)
    args = ["--task", "cls", "--arch", arch, f"--out_dir={out}", "--run_name=smoke", "--trainer.max_epochs=1",
            "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--data.batch_size=16",
            "--optim.warmup_epochs=0", "--trainer.num_sanity_val_steps=0", "--wandb.enabled=false"]
    assert main(args) == 0
    return out / "smoke", spec, args


def test_a_run_writes_every_output(smoke_run):
    run, spec, _ = smoke_run
    assert {"best.ckpt", "last.ckpt", "model.pt", "model.pt2", "model.onnx", "metrics.json", "arch.yaml",
            "config.yaml"} <= {p.name for p in run.iterdir()}
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["exports"] == ["model.pt2", "model.onnx"] and summary["epochs"] == 1
    assert 0 <= summary["val/top1"] <= 1 and summary["arch_source"].endswith("spec.yaml")
    assert ArchSpec.load(run / "arch.yaml") == spec
    # last.ckpt carries the random state, and putting it back replays the same draws
    from pipeline.train.rng import RngState

    callbacks = torch.load(run / "last.ckpt", weights_only=True)["callbacks"]
    state = next(v for k, v in callbacks.items() if k.startswith("RngState"))
    draws = []
    for _ in range(2):
        RngState().load_state_dict(state)
        draws.append(torch.rand(3))
    assert torch.equal(*draws)


@pytest.mark.slow
def test_demo_config_learns(trained):
    run, _, _ = trained
    metrics = torch.load(run / "model.pt", weights_only=True)["metrics"]
    assert metrics["val/top1"] > 0.25, metrics  # chance is 0.1


def test_checkpoint_round_trip(smoke_run):
    run, spec, _ = smoke_run
    exported_spec, state = load_exported(run / "model.pt")
    build_model(exported_spec).load_state_dict(state)
    for name in ("best.ckpt", "last.ckpt", "model.pt"):
        torch.load(run / name, map_location="cpu", weights_only=True)  # plain types and tensors only
    x = torch.stack([DemoClassification("val", image_size=32)[i][0] for i in range(16)])
    from_ckpt = ClassificationModule.load_from_checkpoint(run / "best.ckpt", map_location="cpu").eval()
    exported_spec, net = load_backbone(run / "model.pt", num_classes=10)
    assert exported_spec == spec == from_ckpt.spec
    with torch.no_grad():
        assert torch.equal(from_ckpt(x), net.eval()(x))
    # the headless backbone for segmentation
    _, backbone = load_backbone(run / "model.pt")
    assert isinstance(backbone.head, torch.nn.Identity)


def test_portable_exports_match_pytorch(smoke_run):
    """model.pt2 (torch alone) and model.onnx (onnxruntime) give the trained network's logits."""
    import onnxruntime as ort  # the test extra
    from torchvision.transforms.v2 import functional as TF

    from pipeline.data.demo import MEAN, STD, gray_to_rgb, load_demo_arrays

    run, _, _ = smoke_run
    images = gray_to_rgb(torch.from_numpy(load_demo_arrays()["val_images"][:7]), 32)  # [0, 1] RGB, as users have
    net = ClassificationModule.load_from_checkpoint(run / "best.ckpt", map_location="cpu").eval()
    with torch.no_grad():
        expected = net(TF.normalize(images, [MEAN] * 3, [STD] * 3))
        program = torch.export.load(run / "model.pt2").module()
        from_pt2 = program(images)
    session = ort.InferenceSession(str(run / "model.onnx"), providers=["CPUExecutionProvider"])
    from_onnx = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    for name, out in (("model.pt2", from_pt2), ("model.onnx", from_onnx)):
        diff = (out - expected).abs().max().item()
        print(f"{name}: max abs diff {diff:.2e} over {len(images)} images")
        assert out.shape == (7, 10) and diff <= 1e-4, (name, diff)
        assert torch.equal(out.argmax(1), expected.argmax(1))
    assert json.loads((run / "metrics.json").read_text())["exports"] == ["model.pt2", "model.onnx"]
    # torch alone: loading and running it imports neither this package nor timm or Lightning
    code = ("import sys, torch; m = torch.export.load(sys.argv[1]).module(); print(m(torch.rand(3, 3, 32, 32)).shape, "
            "sorted({k.split('.')[0] for k in sys.modules} & {'pipeline', 'timm', 'lightning', 'mmseg'}))")
    done = subprocess.run([sys.executable, "-I", "-c", code, str(run / "model.pt2")], capture_output=True, text=True,
                          cwd=run, timeout=300)
    assert done.stdout.strip() == "torch.Size([3, 10]) []", done.stdout + done.stderr[-1000:]


@pytest.mark.slow
def test_resume_continues_last_checkpoint(trained):
    run, _, args = trained
    before = torch.load(run / "last.ckpt", weights_only=True)
    assert main([a for a in args if not a.startswith("--trainer.max_epochs")]
                + ["--trainer.max_epochs=2", "--trainer.limit_train_batches=3", "--resume"]) == 0
    after = torch.load(run / "last.ckpt", weights_only=True)
    assert after["epoch"] == before["epoch"] + 1 and after["global_step"] == before["global_step"] + 3


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(UserError, match="nothing to resume"):
        main(["--task", "cls", f"--out_dir={tmp_path}", "--resume", *QUIET])


# ------------------------------------------------------------------------- bad input
def test_class_count_mismatch_is_an_error(tmp_path):
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec(num_classes=5))
    with pytest.raises(UserError, match="class-count mismatch.*num_classes=5.*10 classes"):
        main(["--task", "cls", "--arch", arch, f"--out_dir={tmp_path / 'out'}", *QUIET])
    assert not (tmp_path / "out").exists()


def test_folder_class_count_mismatch(tmp_path):
    root = make_folder(tmp_path / "data", classes=("a", "b"))
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec(num_classes=3))
    with pytest.raises(UserError, match="num_classes=3 but the folder data at .* has 2 classes"):
        main(["--task", "cls", "--config", str(IMAGENET), "--arch", arch, f"--data.root={root}",
              f"--out_dir={tmp_path / 'out'}", *QUIET])


@pytest.mark.parametrize("text, match", [
    ("family: vit\nembed_dim: [64\n", "not valid YAML"),
    ("family: vit\nembed_dim: 64\n", "missing required field"),
    ("family: vit\nembed_dim: 64\nnum_heads: [3]\nmlp_ratio: [2.0]\n", "not divisible"),
    ("- just\n- a list\n", "must hold a mapping"),
])
def test_malformed_spec_is_an_error(tmp_path, text, match):
    (tmp_path / "arch.yaml").write_text(text)
    with pytest.raises(SpecError, match=match):
        main(["--task", "cls", "--arch", str(tmp_path / "arch.yaml"), f"--out_dir={tmp_path / 'out'}", *QUIET])
    assert not (tmp_path / "out").exists()


def test_missing_spec_and_data_root(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        main(["--task", "cls", "--arch", str(tmp_path / "nope.yaml"), *QUIET])
    with pytest.raises(UserError, match="--arch"):
        main(["--task", "cls", "--config", str(IMAGENET), *QUIET])
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec(num_classes=1000))
    with pytest.raises(UserError, match="--data.root"):
        main(["--task", "cls", "--config", str(IMAGENET), "--arch", arch, *QUIET])


@pytest.mark.parametrize("override, match", [
    ("--optim.opt=nosuchopt", "invalid model/optim/aug settings"),
    ("--optim.sched=nosuchsched", "invalid model/optim/aug settings"),
    ("--aug.auto_augment=nosuchaug", "invalid data/aug settings: AssertionError: Unknown AA policy"),
    ("--optim.lr=fast", "^--optim.lr: expected PositiveFloat"),      # refused by the parser's types
    ("--data.batch_size=many", "^--data.batch_size: expected int"),
    ("--aug.re_mode=sometimes", "^--aug.re_mode: expected"),
    ("--optim.nosuchkey=1", "unknown option"),                        # a typo is never ignored
])
def test_bad_settings_fail_before_training(tmp_path, override, match):
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec())
    with pytest.raises(ConfigError, match=match) as e:
        main(["--task", "cls", "--arch", arch, f"--out_dir={tmp_path / 'out'}", override, *QUIET])
    assert "\n" not in str(e.value)   # one line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_corrupt_image_is_an_error_and_leaves_no_checkpoint(tmp_path):
    root = make_folder(tmp_path / "data")
    (root / "train" / "bee" / "broken.JPEG").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec(num_classes=3))
    out = tmp_path / "out"
    with pytest.raises(UserError, match="cannot read image file .*broken.JPEG"):
        main(["--task", "cls", "--config", str(IMAGENET), "--arch", arch, f"--data.root={root}",
              f"--out_dir={out}", "--trainer.max_epochs=1", "--data.batch_size=2", "--data.num_workers=0",
              "--data.pin_memory=false", "--aug.mixup=0", "--aug.cutmix=0", *QUIET])
    assert not list(out.rglob("*.ckpt")) and not list(out.rglob("model.pt"))
    assert not (out / "cls-imagenet").exists()


def test_unwritable_output_dir_is_an_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec())
    with pytest.raises(UserError, match="cannot write to the output folder"):
        main(["--task", "cls", "--arch", arch, f"--out_dir={blocker / 'sub'}", *QUIET])


def test_task_is_required_and_checked():
    with pytest.raises(UserError, match="--task is required"):
        main([])
    with pytest.raises(UserError, match="invalid choice.*--task cls"):
        main(["--task", "detection"])
    assert cli.main(["train", "--task", "detection"]) == 2


# ----------------------------------------------------------------- architecture choice
def default_spec(cfg):
    choice = runner.resolve_spec(ClassificationTask(), cfg, Path(cfg["out_dir"]) / cfg["run_name"])
    return choice.spec, choice.source


def test_default_arch_is_newest_searched_demo_spec(tmp_path):
    cfg = parse_config("cls", [f"--out_dir={tmp_path}"])[0]
    spec, source = default_spec(cfg)
    assert spec == ArchSpec.load(REPO / "configs" / "train" / "demo_default_arch.yaml")
    assert "default spec" in source
    SearchSpace.load("demo").validate(spec)

    space = SearchSpace.load("demo")
    older, newer = space.make_spec(64, [3], [2] * 3, [2.0] * 3), space.make_spec(128, [5], [4] * 5, [3.0] * 5)
    older.save(tmp_path / "search-a" / "arch.yaml")
    newer.save(tmp_path / "search-b" / "arch.yaml")
    for folder in ("search-a", "search-b", "other-space"):   # what a search writes beside arch.yaml
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "candidates.jsonl").write_text("")
    os.utime(tmp_path / "search-a" / "arch.yaml", (time.time() - 100, time.time() - 100))
    tiny_spec().save(tmp_path / "other-space" / "arch.yaml")           # not in the demo space
    older.save(tmp_path / "a-training-run" / "arch.yaml")               # a training run: skipped
    (tmp_path / "a-training-run" / "model.pt").write_bytes(b"")
    assert default_spec(cfg)[0] == newer
    newest = space.make_spec(96, [4], [2] * 4, [4.0] * 4)       # a `pipeline run` search, one level deeper
    newest.save(tmp_path / "run-x" / "search" / "arch.yaml")
    (tmp_path / "run-x" / "search" / "candidates.jsonl").write_text("")
    assert default_spec(cfg)[0] == newest


def test_imagenet_config_without_arch_stops_before_any_work(tmp_path, monkeypatch, capsys):
    """The real-data config has no default_arch: exit 2, one line naming --arch, no output folder."""
    monkeypatch.chdir(tmp_path)   # the config's own out_dir (checkpoints/) is relative to here
    start = time.time()
    assert cli.main(["train", "--task", "cls", "--config", "configs/train/cls_imagenet.yaml",
                     "--wandb.enabled=false"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: no architecture given") and "--arch" in err and len(err.splitlines()) == 1, err
    assert not any(tmp_path.iterdir())
    assert time.time() - start < 60   # stopped at the spec, before data, model or Trainer


@pytest.mark.slow
def test_spec_resolution_order(tmp_path):
    """--arch, else the resumed run's own spec, else default_arch; resuming refuses another --arch."""
    searched = SearchSpace.load("demo").make_spec(64, [3], [2] * 3, [2.0] * 3)
    searched.save(tmp_path / "search" / "arch.yaml")            # what default_arch would pick
    (tmp_path / "search" / "candidates.jsonl").write_text("")
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec())

    def resolve(*args):
        cfg = parse_config("cls", [f"--out_dir={tmp_path}", "--run_name=run", *args])[0]
        return runner.resolve_spec(ClassificationTask(), cfg, tmp_path / "run")

    picked = resolve()                                                     # default_arch
    assert picked.spec == searched and picked.file == tmp_path / "search" / "arch.yaml"
    explicit = resolve("--arch", arch)                                      # an explicit --arch wins
    assert explicit.spec == tiny_spec() and explicit.source == arch and explicit.file == Path(arch)
    inline = resolve(f"--arch={json.dumps(tiny_spec(num_classes=3).to_dict())}")   # an inline mapping
    assert inline.spec == tiny_spec(num_classes=3) and "inline" in inline.source and inline.file is None
    assert resolve("--resume", "--arch", arch).spec == tiny_spec()          # nothing resumable yet: --arch

    trained = tiny_spec(num_classes=4)
    trained.save(tmp_path / "run" / "arch.yaml")                           # the run's own spec
    resumed = resolve("--resume")                                           # not default_arch
    assert resumed.spec == trained and "being resumed" in resumed.source
    assert resumed.file == tmp_path / "run" / "arch.yaml"
    assert resolve("--resume", "--arch", str(tmp_path / "run" / "arch.yaml")).spec == trained
    with pytest.raises(UserError, match="--resume: .*is not the architecture of.*drop --arch"):
        resolve("--resume", "--arch", arch)
    assert resolve("--resume=false", "--arch", arch).spec == tiny_spec()       # a fresh run: --arch
    assert resolve().spec == searched                                      # not resuming: default_arch
    # the real-data config has no default_arch: --arch is required
    with pytest.raises(UserError, match="no architecture given: pass --arch"):
        runner.resolve_spec(ClassificationTask(), parse_config("cls", ["--config", str(IMAGENET)])[0], tmp_path / "x")


def test_resume_with_another_arch_is_refused_before_work(smoke_run, tmp_path):
    run, _, args = smoke_run
    other = write_spec(tmp_path / "other.yaml", tiny_spec())
    before = (run / "last.ckpt").stat().st_mtime
    with pytest.raises(UserError, match="is not the architecture of"):
        i = args.index("--arch")
        main([*args[:i], *args[i + 2:], "--arch", other, "--resume"])
    assert (run / "last.ckpt").stat().st_mtime == before


def test_lazy_build_for_the_search_callback():
    module = ClassificationModule(None, lr=1e-3)
    assert module.net is None
    module.set_architecture(tiny_spec().to_dict())
    module.configure_model()
    assert module.hparams["spec"] == tiny_spec().to_dict()
    assert module(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.slow
def test_search_callback_attached_to_a_training_run(tmp_path):
    """The search runs before fitting, probes with the DataModule's images, and the module trains
    the chosen spec."""
    from lightning.pytorch import Trainer

    from pipeline.classification import ClassificationDataModule
    from pipeline.search import ArchitectureSearch

    search = ArchitectureSearch("demo", tmp_path / "search", proxy="params", strategy="random",
                                strategy_options={"samples": 4}, probe_size=6)
    module = ClassificationModule(None, lr=1e-3, epochs=1)
    dm = ClassificationDataModule(source="demo", image_size=32, batch_size=4)
    trainer = Trainer(accelerator="cpu", max_epochs=1, limit_train_batches=2, limit_val_batches=1, logger=False,
                      callbacks=[search], enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert search.chosen is not None and ArchSpec.load(tmp_path / "search" / "arch.yaml") == search.chosen
    assert module.spec == search.chosen and trainer.global_step == 2
    assert sum(p.numel() for p in module.net.parameters()) == round(max(c.params_m for c in search.candidates) * 1e6)
    images, labels = search._probe_batch(trainer)
    assert images.shape == (6, 3, 32, 32) and labels.shape == (6,)


# ------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_trains_and_writes_its_files(tmp_path):
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec())
    result = run_cli("train", "--task", "cls", "--arch", arch, f"--out_dir={tmp_path}", "--run_name=cli",
                     "--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=2",
                     "--data.batch_size=16", "--trainer.enable_progress_bar=false",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    run = tmp_path / "cli"
    assert {"config.yaml", "arch.yaml", "best.ckpt", "last.ckpt", "model.pt", "model.pt2", "model.onnx",
            "wandb"} <= run_files(run)
    assert "final metrics" in result.stdout and str(run / "model.pt") in result.stdout
    assert str(run / "model.pt2") in result.stdout and str(run / "model.onnx") in result.stdout
    # the W&B `model` artifact carries the exports too: a teammate pulls a model that needs no repository
    assert offline_artifact_has(run, run / "model.pt", run / "model.pt2", run / "model.onnx")
    assert ArchSpec.load(run / "arch.yaml") == tiny_spec()


@pytest.mark.slow
def test_a_run_started_by_a_process_using_wandb_still_logs_its_artifact(tmp_path):
    """A stage started from a process that already runs W&B (refine's workers, a sweep agent, a notebook)
    shares that process's W&B service; the stage must write its artifact before it exits all the same
    (it did not when wandb's exit hook ended the run: CI lost the artifact this way)."""
    arch = write_spec(tmp_path / "arch.yaml", tiny_spec())
    train = [sys.executable, "-m", "pipeline", "train", "--task", "cls", "--arch", arch, f"--out_dir={tmp_path}",
             "--run_name=child", "--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
             "--trainer.limit_val_batches=2", "--data.batch_size=16", "--trainer.enable_progress_bar=false"]
    run, seen = tmp_path / "child", tmp_path / "seen"
    # the parent keeps its service alive and copies the stage's W&B log as it stands when the stage has exited
    parent = ("import os, shutil, subprocess, sys, wandb; wandb.setup(); assert os.environ.get('WANDB_SERVICE'); "
              f"code = subprocess.call({train!r}); "
              f"shutil.copytree({str(run / 'wandb')!r}, {str(seen / 'wandb')!r}); sys.exit(code)")
    env = {k: v for k, v in os.environ.items() if k != "WANDB_SERVICE"}
    result = subprocess.run([sys.executable, "-c", parent], cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**env, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert offline_artifact_has(seen, run / "model.pt", run / "model.pt2", run / "model.onnx")


@pytest.mark.slow
def test_cli_bad_input_exits_2_with_one_line(tmp_path):
    (tmp_path / "arch.yaml").write_text("family: vit\n")
    result = run_cli("train", "--task", "cls", "--arch", str(tmp_path / "arch.yaml"), f"--out_dir={tmp_path}",
                     env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and len(result.stderr.strip().splitlines()) == 1
    assert "missing required field" in result.stderr


def test_augmentation_splits_between_the_module_and_the_datamodule():
    """The batch-mixing and loss fields of ``aug`` go to the module, the rest to the DataModule."""
    from dataclasses import fields

    from pipeline.classification.settings import MIXUP_KEYS, Augmentation

    assert MIXUP_KEYS == ("mixup", "cutmix", "mixup_prob", "switch_prob", "mixup_mode", "label_smoothing")
    assert [f.name for f in fields(Augmentation)][-len(MIXUP_KEYS):] == list(MIXUP_KEYS)
    assert Augmentation().mixup_prob == 1.0 and Augmentation().switch_prob == 0.5
