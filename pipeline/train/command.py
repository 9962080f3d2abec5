"""``python -m pipeline train --task cls|seg``: retrain a chosen architecture with Lightning.

Classification (``--task cls``) builds a :class:`~pipeline.classification.ClassificationModule`
from a spec and a :class:`~pipeline.classification.ClassificationDataModule`, checks everything
that can be checked (spec, class counts, data layout, output folder) before any training, then
runs ``Trainer.fit`` and writes to ``<out_dir>/<run_name>/``:

* ``config.yaml`` (resolved, with the spec inline) and ``arch.yaml`` (the spec trained);
* ``best.ckpt`` (highest ``val/top1``) and ``last.ckpt``: Lightning checkpoints holding only
  plain types and tensors (``torch.load(path, weights_only=True)`` works); ``--resume``
  continues from ``last.ckpt``;
* ``model.pt``: the best weights as a plain ``state_dict`` with the spec and metrics, what the
  segmentation task loads as its backbone (:func:`pipeline.classification.load_exported`),
  also logged to W&B as the ``model`` artifact with the two files below;
* ``model.pt2`` (``torch.export``) and ``model.onnx``: the same network for use without this
  package, [0, 1] RGB images in, logits out; ``metrics.json``: the final validation metrics;
* ``csv/version_N/metrics.csv`` (one per invocation) and, unless disabled, an offline W&B run
  in ``wandb/``.

``--trainer.fast_dev_run=true`` runs one batch of each loop and writes no checkpoint.

Which architecture: ``--arch FILE``, else the config's ``arch`` (an inline spec mapping or a
path), else -- for configs with a ``default_arch`` section, like the demo -- the newest
``<out_dir>/*/arch.yaml`` written by ``python -m pipeline search`` whose spec is in that space,
else the shipped ``configs/train/demo_default_arch.yaml``.

Several GPUs / nodes use Lightning's DDP::

    python -m pipeline train --task cls --config configs/train/cls_imagenet.yaml \\
        --arch checkpoints/search-tiny/arch.yaml --data.root=/data/imagenet \\
        --trainer.devices=8 --trainer.strategy=ddp [--trainer.num_nodes=2]

(multi-node: start the same command on every node under SLURM ``srun`` or ``torchrun``, which
set the rank environment Lightning reads). ``--data.batch_size`` is per device; the learning
rate is scaled by the global batch (devices x nodes x ``trainer.accumulate_grad_batches``).
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from pipeline.cli import UserError
from pipeline.config import (CONFIG_DIR, ConfigError, find_config, load_config, pop_option, resolve_path,
                             save_config)
from pipeline.distributed import is_rank_zero
from pipeline.space.spec import ArchSpec, SpecError
from pipeline.tracking import record_handoff
from pipeline.utils.io import atomic_write_text

TRAIN_CONFIGS = CONFIG_DIR / "train"
DEFAULT_CONFIG = TRAIN_CONFIGS / "cls_demo.yaml"
SHIPPED = CONFIG_DIR.parent  # shipped configs are shown as configs/..., which resolve_path finds
SECTIONS = ("data", "model", "optim", "aug", "trainer")
CHECKPOINTS = ("best.ckpt", "last.ckpt", "model.pt")

HELP = f"""usage: python -m pipeline train --task cls|seg [--arch FILE] [--resume] [--config FILE]
                              [--section.key=value ...]

Retrain a chosen architecture with Lightning.

  --task cls      image classification (this command); --task seg: semantic segmentation
  --arch FILE     the spec to train: checkpoints/<run>/arch.yaml written by `python -m pipeline
                  search` (default: the config's `arch`, else for the demo config the newest
                  searched demo-space spec, else configs/train/demo_default_arch.yaml)
  --resume        continue <out_dir>/<run_name>/last.ckpt
  --config FILE   training config file or shipped name (default: {DEFAULT_CONFIG.relative_to(SHIPPED)}; the DeiT/AutoFormer
                  ImageNet recipe: configs/train/cls_imagenet.yaml, needs --data.root=DIR)
  --KEY=VALUE     override any config value, e.g. --trainer.max_epochs=5 --data.batch_size=256
                  --trainer.accumulate_grad_batches=4 --optim.lr=1e-3 --wandb.mode=disabled

With no options: retrain on the embedded Fashion-MNIST demo set on the CPU (a few minutes).
Several GPUs: --trainer.devices=8 --trainer.strategy=ddp; nodes: --trainer.num_nodes=N, with the
command started on every node (SLURM srun or torchrun).
Outputs in <out_dir>/<run_name>/: best.ckpt, last.ckpt (Lightning), model.pt (spec + state_dict,
the segmentation backbone), model.pt2 and model.onnx (the network without this package), metrics.json, arch.yaml, config.yaml, csv/version_N/metrics.csv,
wandb/ (offline).
"""


# --------------------------------------------------------------------------- argv
def _pop_flag(argv: list[str], flag: str) -> tuple[bool, list[str]]:
    rest = [a for a in argv if a != flag]
    for a in rest:
        if a.startswith(flag + "="):
            raise ConfigError(f"{flag} is a flag and takes no value")
    return len(rest) != len(argv), rest


def _run_segmentation(argv: list[str]) -> int:
    try:
        module = importlib.import_module("pipeline.segmentation.command")
    except ModuleNotFoundError as e:
        if e.name in ("pipeline.segmentation", "pipeline.segmentation.command"):
            raise UserError("'python -m pipeline train --task seg' is not implemented yet; "
                            "see the open issues (use --task cls)") from None
        raise
    return module.main(argv) or 0


def main(argv: list[str]) -> int:
    argv = list(argv)
    task, rest = pop_option(argv, "--task", None)
    if task == "seg":
        return _run_segmentation(rest)
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    if task is None:
        raise UserError("--task is required: --task cls (classification) or --task seg (segmentation)")
    if task != "cls":
        raise UserError(f"--task {task!r} is unknown; use cls (classification) or seg (segmentation)")
    resume, rest = _pop_flag(rest, "--resume")
    arch_path, rest = pop_option(rest, "--arch", None)
    config_path, rest = pop_option(rest, "--config", DEFAULT_CONFIG)
    cfg = load_config(find_config(config_path, "train"), rest)
    return train_classification(cfg, arch_path=arch_path, resume=resume)


# -------------------------------------------------------------------- the spec
def default_spec(cfg: dict[str, Any]) -> tuple[ArchSpec, str]:
    """The newest searched spec of the config's ``default_arch.space``, else the fallback file."""
    d = cfg.get("default_arch")
    if not d:
        raise UserError("no architecture given: pass --arch checkpoints/<run>/arch.yaml (written by "
                        "`python -m pipeline search`) or set `arch:` in the config")
    from pipeline.search.store import newest_searched_spec
    from pipeline.space import SearchSpace

    space = SearchSpace.load(d["space"])
    search_dir = Path(d.get("search_dir") or cfg["out_dir"])
    newest = newest_searched_spec(search_dir, space)
    if newest is not None:
        return space.validate(ArchSpec.load(newest)), f"{newest} (newest searched {space.name!r} spec)"
    fallback = resolve_path(d["fallback"])
    spec = space.validate(ArchSpec.load(fallback))
    return spec, f"{fallback} (default spec: no searched {space.name!r} spec under {search_dir}/)"


def _spec_file(source: str) -> Optional[Path]:
    """The file a spec was read from, where ``source`` (as :func:`resolve_spec` words it) names one."""
    path = resolve_path(source.split(" (", 1)[0])
    return path if path.is_file() else None


def _inline_spec(arch: Any) -> tuple[Optional[ArchSpec], str]:
    if arch is None:
        return None, ""
    if isinstance(arch, dict):
        from pipeline.classification.module import as_spec

        return as_spec(arch), "the config's inline `arch`"
    if isinstance(arch, str):
        return ArchSpec.load(resolve_path(arch)), arch
    raise SpecError(f"config `arch` must be a spec mapping, a spec file path or null, got {type(arch).__name__}")


def resumed_spec(run_dir: Path, explicit: Optional[ArchSpec], source: str) -> Optional[tuple[ArchSpec, str]]:
    """The spec a run being resumed was trained with (both tasks): an explicit other one is an error."""
    run_arch = run_dir / "arch.yaml"
    if not run_arch.is_file():
        return None
    trained = ArchSpec.load(run_arch)
    if explicit is not None and explicit != trained:
        raise UserError(f"--resume: {source} is not the architecture of {run_dir} ({run_arch}: "
                        f"{trained.short()}); drop --arch or pick another --run_name")
    return trained, f"{run_arch} (the run being resumed)"


def resolve_spec(cfg: dict[str, Any], arch_path: Optional[str], run_dir: Path,
                 resume: bool) -> tuple[ArchSpec, str]:
    if arch_path is not None:
        explicit, source = ArchSpec.load(resolve_path(arch_path)), arch_path
    else:
        explicit, source = _inline_spec(cfg.get("arch"))
    resumed = resumed_spec(run_dir, explicit, source) if resume else None
    if resumed is not None:
        return resumed
    if explicit is not None:
        return explicit, source
    return default_spec(cfg)


# --------------------------------------------------------------------- checks
def _check_config(cfg: dict[str, Any]) -> None:
    missing = [k for k in ("run_name", "out_dir", *SECTIONS) if k not in cfg]
    if missing:
        raise ConfigError(f"config is missing {missing}; start from configs/train/cls_demo.yaml")
    for k in SECTIONS:
        if not isinstance(cfg[k], dict):
            raise ConfigError(f"config section {k!r} must be a mapping")
    if not str(cfg["run_name"]).strip() or "/" in str(cfg["run_name"]):
        raise ConfigError(f"run_name={cfg['run_name']!r} must be a non-empty folder name")
    epochs = cfg["trainer"].get("max_epochs")
    if not cfg["trainer"].get("fast_dev_run") and (not isinstance(epochs, int) or epochs < 1):
        raise ConfigError(f"trainer.max_epochs={epochs!r} must be a positive integer")


def on_cuda(trainer_cfg: dict[str, Any]) -> bool:
    """Whether a Trainer config trains on CUDA devices."""
    import torch

    accel = str(trainer_cfg.get("accelerator", "auto"))
    return accel in ("gpu", "cuda") or (accel == "auto" and torch.cuda.is_available())


def resolve_precision(trainer_cfg: dict[str, Any]) -> str:
    """``auto``: bf16 mixed precision on GPUs that support it, else fp16 mixed; fp32 on CPU."""
    precision = trainer_cfg.get("precision", "auto")
    if precision not in ("auto", None):
        return precision
    import torch

    if not on_cuda(trainer_cfg):
        return "32-true"
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"


def resolve_compile(value: Any, trainer_cfg: dict[str, Any], key: str = "model.compile") -> bool | dict[str, Any]:
    """``model.compile``: false, true, a dict of ``torch.compile`` options, or ``auto`` (= on CUDA).

    Compiling costs a minute or two up front and pays back over long GPU runs; on a CPU the
    demo's short runs would not win it back, hence ``auto``.
    """
    if value in (None, False):
        return False
    if value == "auto":
        return on_cuda(trainer_cfg)
    if value is True or isinstance(value, dict):
        return value
    raise ConfigError(f"{key}={value!r} must be true, false, auto or a mapping of torch.compile options")


def resolve_fused(value: Any, key: str = "optim.fused") -> Optional[bool]:
    """``optim.fused``: ``auto`` (None: fused Adam/AdamW when the parameters are on CUDA) or a bool."""
    if value in ("auto", None):
        return None
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r} must be true, false or auto")
    return value


def check_writable(run_dir: Path) -> bool:
    """Create run_dir if needed and write a probe file; True if this call created the folder."""
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()
        raise UserError(f"cannot write to the output folder {run_dir}: {e.strerror or e}; "
                        "choose another --out_dir") from None
    return created


def _data_message(e: BaseException) -> str:
    """One line from a DataError, also when re-raised from a DataLoader worker."""
    text = str(e)
    if "Original Traceback" in text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = lines[-1].split("DataError: ", 1)[-1] if lines else text
    return text


# ------------------------------------------------------------------ the run
def build(cfg: dict[str, Any], arch_path: Optional[str] = None, resume: bool = False):
    """Validate everything before any training; returns what ``fit`` needs.

    Raises UserError/SpecError/ConfigError (exit status 2) with a one-line message.
    """
    from pipeline.classification import ClassificationDataModule
    from pipeline.data import DataError

    _check_config(cfg)
    run_dir = Path(cfg["out_dir"]) / str(cfg["run_name"])
    spec, source = resolve_spec(cfg, arch_path, run_dir, resume)
    model_cfg, data_cfg, aug = cfg["model"], cfg["data"], cfg["aug"]
    if spec.in_chans != 3:
        raise SpecError(f"spec {source} has in_chans={spec.in_chans}; the image data is RGB (3 channels)")
    try:
        if model_cfg.get("num_classes"):
            spec = dataclasses.replace(spec, num_classes=int(model_cfg["num_classes"]))
        image_size = int(data_cfg.get("image_size") or spec.img_size)
        dm = ClassificationDataModule(
            source=data_cfg.get("source", "demo"), root=data_cfg.get("root"), image_size=image_size,
            batch_size=int(data_cfg["batch_size"]), num_workers=data_cfg.get("num_workers") or 0,
            aug=aug, mean=data_cfg.get("mean"), std=data_cfg.get("std"),
            pin_memory=data_cfg.get("pin_memory", False))
        classes = dm.check()
    except DataError as e:
        raise UserError(_data_message(e)) from None
    except (TypeError, ValueError, AssertionError) as e:  # timm asserts on unknown augmentation names
        raise ConfigError(f"invalid data/aug settings: {type(e).__name__}: {e}") from None
    if len(classes) != spec.num_classes:
        where = f"{dm.source} data" + (f" at {dm.root}" if dm.root else "")
        raise UserError(f"class-count mismatch: the spec ({source}) has num_classes={spec.num_classes} "
                        f"but the {where} has {len(classes)} classes; train a spec with num_classes: "
                        f"{len(classes)} or pass --model.num_classes={len(classes)} to retrain it with a "
                        "new classifier")

    ckpt_path = None
    if resume:
        ckpt_path = run_dir / "last.ckpt"
        if not ckpt_path.is_file():
            raise UserError(f"--resume: nothing to resume, {ckpt_path} does not exist; drop --resume "
                            "to start this run")
        _check_resumable(ckpt_path, spec)

    try:
        module = _make_module(cfg, spec, dm.batch_size, classes)
        module.check_optimisation(int(cfg["trainer"].get("max_epochs") or 1))
    except (SpecError, ConfigError):
        raise
    except (TypeError, ValueError, KeyError, AssertionError) as e:
        raise ConfigError(f"invalid model/optim/aug settings: {type(e).__name__}: {e}") from None
    if module.mixup_fn is not None and dm.batch_size % 2:
        raise UserError(f"Mixup/CutMix needs an even batch size, got data.batch_size={dm.batch_size}")

    cfg = dict(cfg, arch=spec.to_dict())
    cfg["trainer"] = dict(cfg["trainer"], precision=resolve_precision(cfg["trainer"]))
    return cfg, spec, source, module, dm, run_dir, ckpt_path


def _make_module(cfg: dict[str, Any], spec: ArchSpec, batch_size: int, classes: list[str]):
    from pipeline.classification import ClassificationModule

    model_cfg, optim, aug = cfg["model"], cfg["optim"], cfg["aug"]
    seed = int(cfg.get("seed") or 0)
    return ClassificationModule(
        spec, drop_path=float(model_cfg.get("drop_path") or 0.0), drop=float(model_cfg.get("drop") or 0.0),
        lr=float(optim["lr"]), base_batch=optim.get("base_batch"), batch_size=batch_size,
        opt=optim.get("opt", "adamw"), weight_decay=float(optim.get("weight_decay", 0.05)),
        opt_eps=optim.get("opt_eps"), betas=optim.get("betas"), momentum=float(optim.get("momentum", 0.9)),
        sched=optim.get("sched", "cosine"), warmup_epochs=optim.get("warmup_epochs", 0),
        warmup_lr=float(optim.get("warmup_lr", 1e-6)), min_lr=float(optim.get("min_lr", 1e-5)),
        label_smoothing=float(aug.get("label_smoothing") or 0.0), mixup=float(aug.get("mixup") or 0.0),
        cutmix=float(aug.get("cutmix") or 0.0), mixup_prob=float(aug.get("mixup_prob", 1.0)),
        switch_prob=float(aug.get("switch_prob", 0.5)), mixup_mode=aug.get("mixup_mode", "batch"),
        init_seed=seed, class_names=classes, compile_net=resolve_compile(model_cfg.get("compile"), cfg["trainer"]),
        fused=resolve_fused(optim.get("fused")))


def _check_resumable(ckpt_path: Path, spec: ArchSpec) -> None:
    import torch

    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = ckpt["hyper_parameters"]["spec"]
    except Exception as e:
        raise UserError(f"--resume: {ckpt_path} cannot be read as a training checkpoint "
                        f"({type(e).__name__}: {e})") from None
    if saved != spec.to_dict():
        raise UserError(f"--resume: {ckpt_path} was trained with another architecture "
                        f"({ArchSpec.from_dict(saved).short()}, not {spec.short()})")


def _make_trainer(cfg: dict[str, Any], run_dir: Path):
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.utilities.exceptions import MisconfigurationException

    from pipeline.train.progress import progress_bar
    from pipeline.tracking import wandb_logger
    from pipeline.train.rng import RngState

    # csv/version_N/metrics.csv: one folder per invocation, so a resumed run keeps the history.
    loggers: list = [CSVLogger(save_dir=str(run_dir), name="csv")]
    wb = wandb_logger(cfg, run_dir, job_type="train-cls")
    if wb:
        loggers.append(wb)
    checkpoint = ModelCheckpoint(dirpath=str(run_dir), filename="best", monitor="val/top1", mode="max",
                                 save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False)
    # last.ckpt every epoch (what --resume continues); Lightning's save_last only rewrites it when
    # best.ckpt improves. After `checkpoint`, so it holds that callback's updated best score.
    last = ModelCheckpoint(dirpath=str(run_dir), filename="last", save_top_k=1, enable_version_counter=False)
    smoke = bool(cfg["trainer"].get("fast_dev_run"))  # a smoke run writes no checkpoint
    callbacks = [LearningRateMonitor(logging_interval="step"), RngState(), *progress_bar(cfg["trainer"])]
    callbacks += [] if smoke else [checkpoint, last]
    try:
        trainer = Trainer(**cfg["trainer"], logger=loggers, callbacks=callbacks, default_root_dir=str(run_dir),
                          enable_model_summary=False, enable_checkpointing=not smoke)
    except (MisconfigurationException, TypeError, ValueError) as e:
        raise UserError(f"invalid trainer settings: {e}") from None
    return trainer, checkpoint


def _cleanup(run_dir: Path, created: bool, started: float, written: list[Path]) -> None:
    """After a failed run: drop temp files; if no checkpoint was completed, drop what this run wrote."""
    if not run_dir.is_dir():
        return
    for tmp in list(run_dir.glob(".*.tmp")) + list(run_dir.glob("*.tmp")):
        tmp.unlink(missing_ok=True)
    completed = [run_dir / n for n in CHECKPOINTS
                 if (run_dir / n).is_file() and (run_dir / n).stat().st_mtime >= started]
    if completed:
        print(f"training stopped; complete checkpoints kept: {', '.join(map(str, completed))} "
              "(continue with --resume)", file=sys.stderr)
        return
    if created:
        try:
            import wandb

            if wandb.run is not None:
                wandb.finish(exit_code=1, quiet=True)
        except Exception:
            pass
        shutil.rmtree(run_dir, ignore_errors=True)
    else:
        for path in written:
            path.unlink(missing_ok=True)


class _DropNoise(logging.Filter):
    NOISE = ("💡 Tip:", "was configured so 100% of the batches")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in str(record.msg) for n in self.NOISE)


def _quiet_lightning() -> None:
    """Keep stdout readable: drop Lightning hints that do not apply to this command."""
    for pattern in (".*does not have many workers.*", ".*is smaller than the logging interval.*",
                    ".*Checkpoint directory .* exists and is not empty.*", ".*treespec, LeafSpec.*"):
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in log.filters):
            log.addFilter(_DropNoise())


def train_classification(cfg: dict[str, Any], arch_path: Optional[str] = None, resume: bool = False) -> int:
    from lightning.pytorch import seed_everything

    from pipeline.classification import export_model, export_portable
    from pipeline.data import DataError

    started = time.time()
    cfg, spec, source, module, dm, run_dir, ckpt_path = build(cfg, arch_path, resume)
    rank0 = is_rank_zero()   # the output folder is checked, written and cleaned up by rank 0 only
    created = check_writable(run_dir) if rank0 else False
    written: list[Path] = []
    _quiet_lightning()
    try:
        seed_everything(int(cfg.get("seed") or 0), workers=True, verbose=False)
        trainer, checkpoint = _make_trainer(cfg, run_dir)
        if trainer.global_rank == 0:
            from pipeline.models import count_flops, count_params

            print(f"architecture: {spec.short()} ({count_params(spec) / 1e6:.2f}M params, "
                  f"{count_flops(spec) / 1e6:.1f}M FLOPs) from {source}")
            if not resume and (run_dir / "last.ckpt").exists():
                print(f"note: {run_dir} already holds checkpoints; starting afresh (use --resume to continue)")
            for name, write in (("config.yaml", lambda p: save_config(cfg, p)), ("arch.yaml", spec.save)):
                if not (run_dir / name).exists():
                    written.append(run_dir / name)
                write(run_dir / name)
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt_path) if ckpt_path else None)
        if trainer.interrupted:
            raise KeyboardInterrupt
        if trainer.fast_dev_run:
            if trainer.global_rank == 0:
                print(f"fast_dev_run passed (one batch per loop); no checkpoint written to {run_dir}")
            return 0
        best = checkpoint.best_model_path
        if best:
            results = trainer.validate(module, datamodule=dm, ckpt_path=best, verbose=False)
            metrics = {k: float(v) for k, v in (results[0] if results else {}).items()}
        else:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if trainer.global_rank == 0:
            model_pt = export_model(run_dir / "model.pt", spec, module.net, metrics)
            portable = export_portable(run_dir, module.net, dm.image_size, dm.mean, dm.std)
            atomic_write_text(run_dir / "metrics.json", json.dumps(
                {**metrics, "checkpoint": best or None, "epochs": trainer.current_epoch,
                 "arch_source": source, "exports": [p.name for p in portable],
                 "wall_time_s": round(time.time() - started, 1)}, indent=2))
            spec_file = _spec_file(source)
            record_handoff(trainer.loggers, run_dir, produced=("model", model_pt),
                           consumed={"arch": spec_file} if spec_file else None)
            _report(trainer, metrics, run_dir, model_pt, best, time.time() - started, portable)
    except DataError as e:
        if rank0:
            _cleanup(run_dir, created, started, written)
        raise UserError(_data_message(e)) from None
    except FloatingPointError as e:
        if rank0:
            _cleanup(run_dir, created, started, written)
        raise UserError(str(e)) from None
    except BaseException:
        if rank0:
            _cleanup(run_dir, created, started, written)
        raise
    return 0


def _report(trainer, metrics: dict[str, float], run_dir: Path, model_pt: Path, best: str, seconds: float,
            portable: list[Path]) -> None:
    shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
    throughput = trainer.callback_metrics.get("train/throughput")
    minutes, secs = divmod(int(round(seconds)), 60)
    lines = [f"final metrics ({'best checkpoint' if best else 'last epoch'}): {shown or 'none'}"]
    if throughput is not None and math.isfinite(float(throughput)):
        lines.append(f"train throughput: {float(throughput):.0f} images/s")
    if best:
        lines.append(f"best checkpoint: {best}")
    if (run_dir / "last.ckpt").is_file():
        lines.append(f"last checkpoint: {run_dir / 'last.ckpt'}")
    lines += [f"exported model:  {model_pt}  (spec + state_dict, the segmentation backbone)"]
    lines += [f"                 {p}  ({'torch.export' if p.suffix == '.pt2' else 'ONNX'}: [0, 1] RGB in, logits out)"
              for p in portable]
    lines.append(f"wall time: {minutes}m{secs:02d}s")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
