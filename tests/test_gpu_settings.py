"""GPU readiness of the trainers, checked on the CPU: torch.compile opt-in, fused AdamW, loader
sizing, and no host synchronisation inside training steps."""
import contextlib
import sys

import pytest
import torch
import yaml
from lightning.pytorch import Callback, Trainer

from conftest import REPO, run_cli
from pipeline.classification import ClassificationDataModule, ClassificationModule
from pipeline.accelerator import on_cuda, resolve_compile, resolve_fused, resolve_precision, use_fused
from pipeline.errors import UserError
from pipeline.config import ConfigError
from pipeline.data import loading
from pipeline.space import ArchSpec
from pipeline.train import command
from pipeline.train.cli import parse_config
from pipeline.train.progress import ThrottledRichProgressBar

CONFIGS = REPO / "configs" / "train"


def tiny_spec(num_classes=10) -> ArchSpec:
    return ArchSpec(family="vit", embed_dim=32, num_heads=(2, 2), mlp_ratio=(2.0, 2.0), img_size=32,
                    patch_size=8, num_classes=num_classes)


# -------------------------------------------------------------------------- torch.compile
@pytest.mark.slow
def test_compile_opt_in_traces_forward_and_backward_on_cpu():
    # aot_eager: dynamo capture + AOT autograd of forward and backward, without the minutes of
    # C++ code generation inductor needs on a CPU (the graphs are what could break).
    plain = ClassificationModule(tiny_spec(), init_seed=3)
    compiled = ClassificationModule(tiny_spec(), init_seed=3, compile={"backend": "aot_eager"})
    assert plain.net._compiled_call_impl is None and compiled.net._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())   # no _orig_mod. prefixes
    torch._dynamo.reset()
    x = torch.randn(4, 3, 32, 32)
    compiled.train(), plain.train()
    out_c, out_p = compiled(x), plain(x)
    torch.testing.assert_close(out_c, out_p, rtol=1e-5, atol=1e-5)
    out_c.square().sum().backward()
    out_p.square().sum().backward()
    for (name, a), b in zip(compiled.net.named_parameters(), plain.net.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("value, accelerator, expect", [
    (False, "cpu", False), (True, "cpu", True), ("auto", "cpu", False),
    ({"mode": "max-autotune"}, "cpu", {"mode": "max-autotune"})])
def test_compile_setting(value, accelerator, expect):
    assert resolve_compile(value, {"accelerator": accelerator}) == expect
    assert resolve_compile("auto", {"accelerator": "gpu"}) is True


def test_one_cuda_rule_for_the_trainers_and_the_seg_heads(monkeypatch):
    """pipeline.accelerator.on_cuda decides precision, compile and the seg heads' SyncBN alike."""
    from pipeline.segmentation.model import device_count, norm_type

    for available in (False, True):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 4 if available else 0)
        for accel in ("auto", "cpu", "gpu", "CUDA"):
            cfg = {"accelerator": accel, "devices": "auto", "num_nodes": 1}
            cuda = on_cuda(cfg)
            assert cuda == (accel.lower() in ("gpu", "cuda") or (accel == "auto" and available))
            assert device_count(cfg) == (4 if cuda and available else 1)
            assert norm_type({"norm": "auto"}, cfg) == ("SyncBN" if cuda and available else "BN")
            assert resolve_compile("auto", cfg) is cuda


@pytest.mark.parametrize("task", ["cls", "seg"])
def test_compile_option_is_typed(task):
    """model.compile: true, false, auto or a mapping of torch.compile options; anything else is refused."""
    for value, parsed in (("true", True), ("false", False), ("auto", "auto"),
                          ("{mode: max-autotune}", {"mode": "max-autotune"})):
        assert parse_config(task, [f"--model.compile={value}"])[0]["model"]["compile"] == parsed
    with pytest.raises(ConfigError, match="^--model.compile: expected"):
        parse_config(task, ["--model.compile=sometimes"])


def _config(name: str) -> dict:
    return parse_config(name.split("_")[0], ["--config", str(CONFIGS / f"{name}.yaml")])[0]


def test_real_data_configs_select_the_gpu_settings():
    for name in ("cls_imagenet", "seg_ade20k", "seg_cityscapes"):
        cfg = _config(name)
        assert cfg["model"]["compile"] == "auto", name
        assert cfg["optim"]["fused"] == "auto", name
        assert cfg["data"]["num_workers"] == "auto" and cfg["data"]["pin_memory"] == "auto", name
        assert cfg["trainer"]["precision"] is None, name   # null = bf16/16-mixed on GPU, 32-true on CPU
        assert resolve_precision(dict(cfg["trainer"], accelerator="cpu")) == "32-true", name
    for name in ("cls_demo", "seg_demo"):   # short CPU runs: compiling would not pay back
        assert _config(name)["model"]["compile"] is False


# -------------------------------------------------------------------------------- fused AdamW
def test_fused_adamw_only_where_available():
    cpu = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    assert use_fused("adamw", cpu) is False                  # auto: the parameters are not on CUDA
    assert use_fused("adamw", cpu, fused=True) is True       # forced
    assert use_fused("sgd", cpu, fused=True) is False        # no fused SGD path asked for
    assert use_fused("adamw", cpu, fused=False) is False
    module = ClassificationModule(tiny_spec(), fused=True)
    opt = module._optimizer([{"params": list(module.net.parameters())}], 1e-3)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True
    auto = ClassificationModule(tiny_spec())._optimizer([{"params": list(module.net.parameters())}], 1e-3)
    assert not auto.defaults.get("fused")
    if torch.cuda.is_available():
        gpu = [{"params": [torch.nn.Parameter(torch.zeros(2, device="cuda"))]}]
        assert use_fused("adamw", gpu) is True


# ------------------------------------------------------------------------------- data loaders
def test_loader_settings_sized_from_the_machine(monkeypatch):
    monkeypatch.setattr(loading, "available_cpus", lambda: 96)
    assert loading.resolve_workers("auto", processes=8) == 11
    assert loading.resolve_workers("auto", processes=1) == loading.MAX_WORKERS
    monkeypatch.setattr(loading, "available_cpus", lambda: 2)
    assert loading.resolve_workers("auto", processes=1) == 1
    assert loading.resolve_workers("auto", processes=2) == 0
    assert loading.resolve_workers(3) == 3
    for bad in (-1, "many", True, 1.5):
        with pytest.raises(ValueError, match="num_workers"):
            loading.resolve_workers(bad)
    assert loading.resolve_pin_memory("auto", on_cuda=True) is True
    assert loading.resolve_pin_memory("auto", on_cuda=False) is False
    assert loading.resolve_pin_memory(True, on_cuda=False) is True

    dm = ClassificationDataModule(num_workers="auto", pin_memory="auto", batch_size=8)
    dm.setup()
    loader = dm.train_dataloader()
    assert loader.num_workers == 1 and loader.persistent_workers and loader.pin_memory is False


def test_bad_loader_setting_fails_before_work(tmp_path):
    with pytest.raises(UserError, match=r"data.num_workers=-2 must be a number of worker processes"):
        command.main(["--task", "cls", f"--out_dir={tmp_path}", "--data.num_workers=-2", "--wandb.enabled=false"])
    with pytest.raises(ConfigError, match="optim.fused: expected bool or .*auto.*, got .sometimes."):
        command.main(["--task", "cls", f"--out_dir={tmp_path}", "--optim.fused=sometimes", "--wandb.enabled=false"])
    with pytest.raises(ConfigError, match="optim.fused: expected bool or .*auto.*, got .sometimes."):
        command.main(["--task", "seg", f"--out_dir={tmp_path}", "--optim.fused=sometimes", "--wandb.enabled=false"])
    assert resolve_fused("auto") is None and resolve_fused(True) is True
    assert not (tmp_path / "cls-demo").exists() and not (tmp_path / "seg-demo").exists()


# ------------------------------------------------------------------------------ host syncs
SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy")


@contextlib.contextmanager
def count_host_syncs(counter: dict):
    """Patch the Tensor methods that copy a value to the host (the sync points on a GPU); records callers."""
    originals = {name: getattr(torch.Tensor, name) for name in SYNCS}

    def wrap(name):
        def fn(self, *a, **k):
            caller = sys._getframe(1).f_globals.get("__name__", "?")
            # torch.optim reads its step counters, host tensors by design (not a device sync)
            if counter["armed"] and not caller.startswith("torch.optim"):
                counter["calls"].append(f"{caller}: Tensor.{name}")
            return originals[name](self, *a, **k)
        return fn

    for name in SYNCS:
        setattr(torch.Tensor, name, wrap(name))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch.Tensor, name, fn)


class ArmBetweenLogSteps(Callback):
    """Counts host syncs from the start to the end of every training batch that is not a log step."""

    def __init__(self, counter: dict, every: int) -> None:
        self.counter, self.every = counter, every

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.counter["armed"] = batch_idx >= 1 and (batch_idx + 1) % self.every != 0
        self.counter["steps"] += self.counter["armed"]


@pytest.mark.slow
def test_no_host_sync_in_classification_training_steps(tmp_path):
    counter = {"armed": False, "calls": [], "steps": 0}
    every = 4
    module = ClassificationModule(tiny_spec(), lr=1e-3, label_smoothing=0.1, mixup=0.8, cutmix=1.0)
    dm = ClassificationDataModule(batch_size=8)

    class Disarm(Callback):   # registered last: its batch-end hook runs after the progress bar's
        def on_train_batch_end(self, *args):
            counter["armed"] = False

    trainer = Trainer(max_epochs=1, limit_train_batches=9, limit_val_batches=0, num_sanity_val_steps=0,
                      log_every_n_steps=every, logger=False, enable_checkpointing=False,
                      enable_model_summary=False, accelerator="cpu", default_root_dir=str(tmp_path),
                      callbacks=[ArmBetweenLogSteps(counter, every), ThrottledRichProgressBar(every), Disarm()])
    with count_host_syncs(counter):
        trainer.fit(module, datamodule=dm)
    assert counter["steps"] == 6   # batches 1, 2, 4, 5, 6, 8 (0-based) are not log steps
    assert counter["calls"] == [], f"host syncs inside training steps: {counter['calls']}"
    assert torch.isfinite(trainer.callback_metrics["train/loss_epoch"])


def test_the_progress_bar_reads_the_metrics_only_at_log_steps():
    from pipeline.train.progress import ThrottledMetrics, progress_bar

    class Bar:   # stands in for Lightning's bar: each batch end shows the metrics
        def __init__(self):
            self.reads = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.shown = self.get_metrics(trainer, pl_module)

        def get_metrics(self, trainer, pl_module):
            self.reads += 1
            return {"loss": self.reads}

    class Throttled(ThrottledMetrics, Bar):
        pass

    bar = Throttled(every=3)
    for batch_idx in range(7):
        bar.on_train_batch_end(None, None, None, None, batch_idx)
    assert bar.reads == 3 and bar.shown == {"loss": 3}   # batch 0 (nothing shown yet), 2 and 5
    assert bar.get_metrics(None, None) == {"loss": 4}     # outside a training batch: read afresh
    assert progress_bar({"enable_progress_bar": False}) == []
    assert progress_bar({"log_every_n_steps": 7})[0].every == 7


def test_the_training_bar_redraws_ten_times_a_second():
    """Lightning's Rich default (100 wake-ups a second) preempts the training threads on small CPUs."""
    from pipeline.train.progress import RICH_REFRESH_PER_SECOND, ThrottledRichProgressBar, progress_bar

    (bar,) = progress_bar({"log_every_n_steps": 10})
    assert bar.every == 10
    assert isinstance(bar, ThrottledRichProgressBar) and bar.refresh_rate == RICH_REFRESH_PER_SECOND == 10
    assert progress_bar({"enable_progress_bar": False}) == []


def test_nonfinite_loss_is_caught_at_the_next_check():
    module = ClassificationModule(tiny_spec())
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    module.training_step((x, y), 0)
    module.check_finite()   # finite so far: no error
    module.training_step((torch.full_like(x, float("nan")), y), 1)
    module.training_step((x, y), 2)   # a later finite loss does not hide the earlier one
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        module.check_finite()


@pytest.mark.slow
def test_train_cli_with_gpu_settings_on_cpu(tmp_path):
    """The real CLI with compile (traced by aot_eager), fused AdamW and auto loaders, on the CPU."""
    arch = tmp_path / "arch.yaml"
    tiny_spec().save(arch)
    res = run_cli("train", "--task", "cls", "--arch", str(arch), f"--out_dir={tmp_path}",
                  "--trainer.max_epochs=1", "--trainer.limit_train_batches=3", "--trainer.limit_val_batches=2",
                  "--data.batch_size=8", "--model.compile={backend: aot_eager}", "--optim.fused=true",
                  "--data.num_workers=auto", "--data.pin_memory=auto", "--wandb.enabled=false",
                  "--trainer.enable_progress_bar=false")
    assert res.returncode == 0, res.stderr[-2000:]
    cfg = yaml.safe_load((tmp_path / "cls-demo" / "config.yaml").read_text())
    assert cfg["model"]["compile"] == {"backend": "aot_eager"} and cfg["optim"]["fused"] is True
    ckpt = torch.load(tmp_path / "cls-demo" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any("_orig_mod" in k for k in ckpt["state_dict"])


# ------------------------------------------------------------------ augmentation under Pillow 13
def test_randaugment_posterize_at_top_magnitude_gives_a_black_image():
    """DeiT's RandAugment reaches magnitude 10, where timm's PosterizeIncreasing keeps 0 bits:
    Pillow 13 raises there; the transforms of the ImageNet config must not."""
    from PIL import Image
    from timm.data.auto_augment import AugmentOp

    from pipeline.classification.settings import MIXUP_KEYS

    aug = {k: v for k, v in _config("cls_imagenet")["aug"].items() if k not in MIXUP_KEYS}   # as the task passes it
    dm = ClassificationDataModule(source="demo", image_size=32, aug=aug)
    dm.train_transform()   # installs the fix
    img = Image.new("RGB", (16, 16), (200, 120, 30))
    op = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=10, hparams={"magnitude_std": 0})
    assert set(op(img).getdata()) == {(0, 0, 0)}
    kept = AugmentOp("PosterizeIncreasing", prob=1.0, magnitude=5, hparams={"magnitude_std": 0})(img)
    assert set(kept.getdata()) == {(192, 64, 0)}   # 4 - int(5/10*4) = 2 bits kept
