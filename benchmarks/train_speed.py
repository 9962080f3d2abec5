"""Retraining throughput against what users would run instead, measured in one run.

Each comparison runs ours and the reference alternately (``--repeats`` pairs, fresh network every
run; the order flips every pair) and prints the median training throughput in images/s after
warm-up of each side, the spread of its repeats ((max - min) / median), and the ratio ours /
reference with its 90% confidence interval (``benchmarks/paired_ratio.py``: the mean of the
per-pair ratios and a seeded percentile bootstrap over the pairs, so load that changes between
pairs cancels within each pair):

* ``cls``: our ``ClassificationModule`` + ``ClassificationDataModule`` inside ``Trainer.fit``
  (the ``train --task cls`` Trainer: CSV logger, learning-rate monitor, checkpoint callback,
  progress bar) against a bare PyTorch loop of the same network, batch, optimiser, schedule,
  augmentation and loss -- the loop timm's ``train.py`` runs;
  - ``demo``: the demo config and default spec on the embedded Fashion-MNIST set;
  - ``autoformer-t``: an AutoFormer-T at 224x224 with the ImageNet recipe (RandAugment, Mixup,
    CutMix, label smoothing, drop-path) on synthetic ImageNet-shaped images;
* ``seg``: our ``SegmentationModule`` inside ``Trainer.fit`` against mmengine's own ``Runner``
  training the same mmseg model config (``segmentor_config``) on the same data and pipeline.

Only training steps are timed (from the end of the last warm-up step to the end of the last
step): validation and once-per-epoch checkpoints are not part of the throughput. Every line ends
in ``ratio X.XX [lo, hi]`` = ours / reference and its 90% interval (goal: lo >= 0.95). Where the
gap lies, by operator: ``benchmarks/train_profile.py`` (docs/train_speed.md).

    python benchmarks/train_speed.py              # cls demo, cls AutoFormer-T, seg demo, 7 pairs each
    python benchmarks/train_speed.py --quick      # fewer steps and 3 pairs (~3 min on a GPU)
    python benchmarks/train_speed.py --only seg   # one comparison
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.append(str(REPO))   # after PYTHONPATH: another checkout can be measured with this script

from paired_ratio import PairedRatio, paired_ratio, spread  # noqa: E402  (this script's folder)
from pipeline.classification.task import ClassificationTask  # noqa: E402
from pipeline.config import CONFIG_DIR, ConfigError  # noqa: E402
from pipeline.space import ArchSpec, SearchSpace  # noqa: E402

CLS_CASES = ("demo", "autoformer-t")


# ----------------------------------------------------------------------------- common
def train_config(task: str, argv: list[str]) -> dict[str, Any]:
    """The resolved `train --task TASK` config, with the settings the runner resolves before building."""
    from pipeline.train.cli import parse_config
    from pipeline.train.runner import resolve_machine_settings

    cfg = parse_config(task, argv)[0]
    resolve_machine_settings(cfg)
    return cfg


def run_trainer(task, cfg: dict[str, Any], run_dir: Path, timer: "StepTimer"):
    """The Trainer `python -m pipeline train` builds (pipeline.train.runner.training_trainer: its
    loggers and callbacks; W&B is off here), plus the step timer."""
    from pipeline.train.runner import training_trainer

    return training_trainer(task, cfg, run_dir, [lightning_timer_callback(timer)])[0]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


class StepTimer:
    """Wall time (and this process's CPU time) from the end of step ``warmup`` to the end of step
    ``warmup + steps``."""

    def __init__(self, warmup: int, steps: int, batch: int, device: str) -> None:
        self.warmup, self.steps, self.batch, self.device = warmup, steps, batch, device
        self.done = 0
        self.start = self.end = self.cpu_start = self.cpu_end = None

    def step_end(self) -> None:
        self.done += 1
        if self.done == self.warmup:
            sync(self.device)
            self.start, self.cpu_start = time.perf_counter(), time.process_time()
        elif self.done == self.warmup + self.steps:
            sync(self.device)
            self.end, self.cpu_end = time.perf_counter(), time.process_time()

    @property
    def images_per_s(self) -> float:
        if self.end is None:
            raise RuntimeError(f"only {self.done} of {self.warmup + self.steps} steps ran")
        return self.steps * self.batch / (self.end - self.start)

    @property
    def cpu_ms_per_step(self) -> float:
        """CPU time of this process's threads per step: unlike wall time, not lengthened by waiting
        for a core on a loaded machine (DataLoader worker processes are not counted)."""
        if self.cpu_end is None:
            raise RuntimeError(f"only {self.done} of {self.warmup + self.steps} steps ran")
        return (self.cpu_end - self.cpu_start) * 1e3 / self.steps


def lightning_timer_callback(timer: StepTimer):
    from lightning.pytorch import Callback

    class _Timer(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            timer.step_end()

    return _Timer()


def interleaved(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each measurement ``repeats`` times, alternating (ABBA...), so load changes hit both alike:
    the i-th values of the sides form a pair measured side by side."""
    out: dict[str, list[float]] = {k: [] for k in runs}
    for r in range(repeats):
        order = list(runs) if r % 2 == 0 else list(reversed(runs))
        for name in order:
            out[name].append(runs[name]())
    return out


def report(label: str, results: dict[str, list[float]], ours: str, ref: str) -> PairedRatio:
    """One line: each side's median img/s and spread, the pairs, the ratio and its 90% interval."""
    a, b = results[ours], results[ref]
    ratio = paired_ratio(a, b)
    print(f"{label}: ours {statistics.median(a):.1f} img/s (spread {spread(a):.0%}) vs {ref} "
          f"{statistics.median(b):.1f} img/s (spread {spread(b):.0%}), {ratio.pairs} pairs, {ratio}", flush=True)
    return ratio


def precision_context(device: str, precision: str):
    """The autocast a reference loop uses for Lightning's precision setting."""
    if precision.startswith("bf16"):
        return torch.autocast(device, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device, dtype=torch.float16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------- classification
class SyntheticImageNet(torch.utils.data.Dataset):
    """ImageNet-shaped samples: decoded RGB PIL images of varied sizes, 1,000 classes.

    A pool of random images is made once and indexed cyclically, so the timed work is the
    transform pipeline and training, not JPEG decoding (identical for both sides anyway).
    """

    def __init__(self, length: int, transform, pool: int = 32, num_classes: int = 1000, seed: int = 0) -> None:
        from PIL import Image

        g = torch.Generator().manual_seed(seed)
        self.images = []
        for _ in range(pool):
            h, w = (int(v) for v in torch.randint(300, 400, (2,), generator=g))
            arr = torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).numpy()
            self.images.append(Image.fromarray(arr))
        self.labels = torch.randint(0, num_classes, (length,), generator=g).tolist()
        self.classes = [f"c{i}" for i in range(num_classes)]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i % len(self.images)]), self.labels[i]


def cls_setup(case: str, device: str, quick: bool, extra: list[str]) -> dict[str, Any]:
    """Config, spec and datamodule for one classification case (shared by both sides)."""
    trainer_over = [f"--trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", "--wandb.enabled=false",
                    "--trainer.num_sanity_val_steps=0", "--trainer.limit_val_batches=0"]
    if case == "demo":
        cfg = train_config("cls", ["--config", str(CONFIG_DIR / "train" / "cls_demo.yaml"), *trainer_over, *extra])
        spec = ArchSpec.load(CONFIG_DIR / "train" / "demo_default_arch.yaml")
        warmup, steps = 5, (30 if quick else 60)
    else:
        batch = 128 if device == "cuda" else 16
        # --quick skips torch.compile (minutes per run on a GPU); the full run uses the config's auto
        no_compile = ["--model.compile=false"] if quick else []
        cfg = train_config("cls", ["--config", str(CONFIG_DIR / "train" / "cls_imagenet.yaml"), *trainer_over,
                                   "--data.root=unused", f"--data.batch_size={batch}", "--optim.base_batch=null",
                                   *no_compile, *extra])
        spec = SearchSpace.load("autoformer_tiny").sample(random.Random(0))
        warmup, steps = (3, 6 if quick else 10) if device == "cpu" else (10, 20 if quick else 40)
    dm = ClassificationTask.datamodule(cfg, spec)
    if case != "demo":
        n = (warmup + steps + 2) * dm.batch_size
        dm.train_set = SyntheticImageNet(n, dm.train_transform())
        dm.val_set = SyntheticImageNet(dm.batch_size, dm.val_transform())
    return dict(cfg=cfg, spec=spec, dm=dm, warmup=warmup, steps=steps, device=device)


def run_ours_cls(s: dict[str, Any], timer: StepTimer | None = None, profiler=None) -> float:
    """Our module and datamodule inside the `train --task cls` Trainer (``profiler``: a Lightning
    profiler for its hooks, as benchmarks/train_profile.py gives)."""
    cfg, dm = copy.deepcopy(s["cfg"]), s["dm"]
    module = ClassificationTask.module(cfg, s["spec"], dm.batch_size, dm.check())
    timer = timer or StepTimer(s["warmup"], s["steps"], dm.batch_size, s["device"])
    cfg["trainer"].update(max_epochs=1, limit_train_batches=s["warmup"] + s["steps"])
    if profiler is not None:
        cfg["trainer"]["profiler"] = profiler
    with tempfile.TemporaryDirectory() as tmp:
        trainer = run_trainer(ClassificationTask(), cfg, Path(tmp), timer)
        with warnings_quiet():
            trainer.fit(module, datamodule=dm)
    return timer.images_per_s


def no_section(name: str) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def run_reference_cls(s: dict[str, Any], timer: StepTimer | None = None,
                      section: Callable[[str], contextlib.AbstractContextManager] = no_section) -> float:
    """A bare loop as timm's train.py: same network, loader, optimiser, schedule, Mixup and loss
    (``section``: labels the loop's parts for benchmarks/train_profile.py)."""
    from timm.optim import param_groups_weight_decay

    from pipeline.classification.module import NO_WEIGHT_DECAY

    cfg, dm, device = s["cfg"], s["dm"], s["device"]
    # The module only as a factory of the identical network, optimiser, schedule and losses.
    factory = ClassificationTask.module(dict(cfg, model=dict(cfg["model"], compile=False)), s["spec"], dm.batch_size,
                                        dm.check())
    model, mixup, loss_fn = factory.net.to(device), factory.mixup_fn, factory.train_loss_fn
    compile_opts = cfg["model"].get("compile")   # resolved by train_config (auto = on CUDA)
    if compile_opts:   # as our module does
        model.compile(**(compile_opts if isinstance(compile_opts, dict) else {}))
    wd = float(cfg["optim"].get("weight_decay", 0.05))
    optimizer = factory._optimizer(param_groups_weight_decay(model, wd, no_weight_decay_list=NO_WEIGHT_DECAY),
                                   float(cfg["optim"]["lr"]))
    loader = dm.train_dataloader()
    scheduler = factory._scheduler(optimizer, int(cfg["trainer"]["max_epochs"]), len(loader))
    autocast = precision_context(device, cfg["trainer"]["precision"])
    timer = timer or StepTimer(s["warmup"], s["steps"], dm.batch_size, device)
    model.train()
    updates = 0
    for x, y in loader:
        with section("bare: to device, Mixup/CutMix"):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if mixup is not None:
                x, y = mixup(x, y)
        with section("bare: forward, loss"), autocast:
            loss = loss_fn(model(x), y)
        with section("bare: zero_grad(set_to_none=True)"):
            optimizer.zero_grad(set_to_none=True)
        with section("bare: backward"):
            loss.backward()
        with section("bare: optimizer step"):
            optimizer.step()
        with section("bare: schedule"):
            updates += 1
            scheduler.step_update(num_updates=updates)
        timer.step_end()
        if timer.done >= s["warmup"] + s["steps"]:
            break
    return timer.images_per_s


@contextlib.contextmanager
def warnings_quiet():
    import logging
    import warnings

    from pipeline import quiet

    quiet.install()
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level
    lightning_log.setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        finally:
            lightning_log.setLevel(level)


def bench_cls(case: str, device: str, repeats: int, quick: bool, extra: list[str]) -> float:
    s = cls_setup(case, device, quick, extra)
    res = interleaved({"ours": lambda: run_ours_cls(s), "bare loop": lambda: run_reference_cls(s)}, repeats)
    label = (f"cls {case} ({s['spec'].short()}, batch {s['dm'].batch_size}, {s['steps']} steps, "
             f"{s['cfg']['trainer']['precision']})")
    return report(label, res, "ours", "bare loop")


# ------------------------------------------------------------------------- segmentation
def seg_setup(device: str, quick: bool, extra: list[str]) -> dict[str, Any]:
    """The seg demo config, spec, classes and datasets (shared by both sides)."""
    import pipeline.segmentation  # noqa: F401  (mmseg registrations, SpecViT)
    from pipeline.segmentation.datasets import dataset_meta, resolve_root
    from pipeline.train.cli import parse_config

    over = [f"--trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", "--wandb.enabled=false",
            "--trainer.precision=null"]   # null = bf16/16-mixed on GPU, 32-true on CPU
    for o in extra:   # the overrides that exist in the seg config (e.g. --model.compile=true)
        try:
            parse_config("seg", over + [o])
            over.append(o)
        except ConfigError:
            print(f"seg: ignoring {o} (not a seg config key)")
    cfg = train_config("seg", over)
    spec = ArchSpec.load(CONFIG_DIR / "train" / "demo_default_arch.yaml")
    meta = dataset_meta(cfg["data"]["type"])
    warmup, steps = (5, 15 if quick else 30)
    return dict(cfg=cfg, spec=spec, meta=meta, root=resolve_root(cfg["data"]), warmup=warmup, steps=steps,
                device=device, batch=int(cfg["data"]["batch_size"]))


def run_ours_seg(s: dict[str, Any]) -> float:
    """Our SegmentationModule + SegDataModule, as the seg task builds them, inside the `train --task seg` Trainer."""
    from lightning.pytorch import seed_everything

    from pipeline.segmentation.task import SegmentationTask

    cfg = copy.deepcopy(s["cfg"])
    seed_everything(int(cfg["seed_everything"] or 0), verbose=False)
    task = SegmentationTask()
    built = task.build(cfg, s["spec"], "the demo default spec")
    timer = StepTimer(s["warmup"], s["steps"], s["batch"], s["device"])
    cfg["trainer"].update(max_steps=s["warmup"] + s["steps"], limit_val_batches=0, num_sanity_val_steps=0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = run_trainer(task, cfg, Path(tmp), timer)
        with warnings_quiet():
            trainer.fit(built.module, datamodule=built.datamodule)
    return timer.images_per_s


def run_mmengine_seg(s: dict[str, Any]) -> float:
    """mmengine's Runner with mmseg's ViT-UPerNet runtime (default_runtime + the AdamW/poly
    schedule), training the same model config on the same dataset and pipeline."""
    import logging

    from mmengine.hooks import Hook
    from mmengine.logging import MMLogger
    from mmengine.runner import Runner

    from pipeline.segmentation.datamodule import train_pipeline
    from pipeline.segmentation.model import segmentor_config

    cfg, d, o = s["cfg"], s["cfg"]["data"], s["cfg"]["optim"]
    timer = StepTimer(s["warmup"], s["steps"], s["batch"], s["device"])

    class _Timer(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
            timer.step_end()

    model = segmentor_config(s["spec"], cfg, num_classes=len(s["meta"]["classes"]))
    if model.get("neck") is None:
        model.pop("neck", None)
    dataset = dict(type=d["type"], data_root=str(s["root"]), data_prefix=dict(d["data_prefix"]["train"]),
                   pipeline=train_pipeline(d))
    total, warm = int(cfg["trainer"]["max_steps"]), int(o.get("warmup_iters", 0))
    precision = cfg["trainer"]["precision"]
    wrapper = dict(type="OptimWrapper")
    if precision.startswith(("bf16", "16")):
        wrapper = dict(type="AmpOptimWrapper", dtype="bfloat16" if precision.startswith("bf16") else "float16")
    workers = int(d.get("num_workers") or 0)
    iters = s["warmup"] + s["steps"]
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(
            model=model, work_dir=tmp, default_scope="mmseg", randomness=dict(seed=int(cfg["seed_everything"] or 0)),
            train_dataloader=dict(batch_size=s["batch"], num_workers=workers, persistent_workers=workers > 0,
                                  sampler=dict(type="InfiniteSampler", shuffle=True),
                                  collate_fn=dict(type="pseudo_collate"), dataset=dataset),
            optim_wrapper=dict(**wrapper, optimizer=dict(type="AdamW", lr=float(o["lr"]),
                                                         betas=tuple(o.get("betas", (0.9, 0.999))),
                                                         weight_decay=float(o["weight_decay"])),
                               paramwise_cfg=dict(custom_keys={k: dict(decay_mult=0.0)
                                                               for k in o.get("no_decay_keys") or []})),
            param_scheduler=[dict(type="LinearLR", start_factor=float(o.get("warmup_ratio", 1e-6)), by_epoch=False,
                                  begin=0, end=warm),
                             dict(type="PolyLR", eta_min=float(o.get("eta_min", 0.0)), power=float(o.get("power", 1.0)),
                                  begin=warm, end=total, by_epoch=False)],
            train_cfg=dict(type="IterBasedTrainLoop", max_iters=iters, val_interval=10 ** 9),
            default_hooks=dict(timer=dict(type="IterTimerHook"),
                               logger=dict(type="LoggerHook", interval=int(cfg["trainer"]["log_every_n_steps"]),
                                           log_metric_by_epoch=False),
                               param_scheduler=dict(type="ParamSchedulerHook"),
                               checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=10 ** 9,
                                               save_last=False),
                               sampler_seed=dict(type="DistSamplerSeedHook")),
            custom_hooks=[_Timer()], log_processor=dict(by_epoch=False), log_level="WARNING",
            env_cfg=dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0)))
        with warnings_quiet():
            runner.train()
        MMLogger.get_current_instance().setLevel(logging.WARNING)
    return timer.images_per_s


def bench_seg(device: str, repeats: int, quick: bool, extra: list[str]) -> float:
    s = seg_setup(device, quick, extra)
    res = interleaved({"ours": lambda: run_ours_seg(s), "mmengine Runner": lambda: run_mmengine_seg(s)}, repeats)
    label = (f"seg demo (UPerNet on {s['spec'].short()}, batch {s['batch']}, {s['steps']} steps, "
             f"{s['cfg']['trainer']['precision']})")
    return report(label, res, "ours", "mmengine Runner")


# --------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    ap.add_argument("--repeats", type=int, default=None, help="pairs of runs (default 7, --quick 3)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--only", choices=("cls", "seg", *[f"cls-{c}" for c in CLS_CASES]), default=None)
    ap.add_argument("overrides", nargs="*", help="config overrides for the cls cases, e.g. --model.compile=true")
    args, unknown = ap.parse_known_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    repeats = args.repeats or (3 if args.quick else 7)
    extra = list(args.overrides) + unknown
    import pipeline

    print(f"device: {device}, torch threads: {torch.get_num_threads()}, {repeats} pairs of runs (ours and "
          f"reference alternate; ratio = mean of per-pair ratios [90% bootstrap interval]); measuring "
          f"{Path(pipeline.__file__).parent}", flush=True)
    started = time.perf_counter()
    torch.manual_seed(0)
    cases = [(f"cls {c}", lambda c=c: bench_cls(c, device, repeats, args.quick, extra))
             for c in CLS_CASES if args.only in (None, "cls", f"cls-{c}")]
    if args.only in (None, "seg"):
        cases.append(("seg demo", lambda: bench_seg(device, repeats, args.quick, extra)))
    failed = 0
    for name, bench in cases:
        case_started = time.perf_counter()
        try:
            bench()
            print(f"  ({name}: {(time.perf_counter() - case_started) / 60:.1f} min)", flush=True)
        except Exception as e:   # one broken case must not hide the others' numbers
            failed += 1
            print(f"{name}: FAILED {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}",
                  flush=True)
    print(f"total: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
