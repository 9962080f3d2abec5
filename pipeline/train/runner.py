"""One training runner for both tasks: what every retraining run does, in one order.

1. the architecture, resolved in one documented order (:func:`resolve_spec`);
2. the task builds its LightningModule and DataModule and checks the data (the runner is handed
   the task, a :class:`pipeline.task.TrainingTask`, and imports none);
3. ``--resume`` checks; the output folder is checked (rank 0);
4. loggers (CSV + W&B), checkpoints (``best.ckpt`` on the task's metric, ``last.ckpt`` every
   validation, both with the random state), the Trainer;
5. ``config.yaml`` (resolved, the spec inline) and ``arch.yaml``; ``Trainer.fit``;
6. final validation of ``best.ckpt``, the task's exports, ``metrics.json``, W&B hand-offs;
7. on failure: temporary files go, and a run that completed no checkpoint leaves nothing behind.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from pipeline.accelerator import resolve_compile, resolve_precision
from pipeline.config import device_line, make_trainer, save_config
from pipeline.distributed import is_rank_zero
from pipeline.errors import UserError
from pipeline.space.sources import SpecChoice, read_spec
from pipeline.space.spec import ArchSpec
from pipeline.task import TrainingTask
from pipeline.utils.io import atomic_write_text

CHECKPOINTS = ("best.ckpt", "last.ckpt", "model.pt")


# ----------------------------------------------------------------------- architecture
def resolve_spec(task: TrainingTask, cfg: dict[str, Any], run_dir: Path) -> SpecChoice:
    """The run's architecture: ``arch`` (``--arch``), else the run being resumed's own spec, else
    the task's default (:meth:`TrainingTask.default_spec`: e.g. the backbone checkpoint's, the newest
    searched spec).

    Resuming with an explicit ``arch`` other than the run's is an error, not a silent switch.
    """
    explicit = read_spec(cfg["arch"]) if cfg.get("arch") else None
    run_arch = run_dir / "arch.yaml"
    if cfg.get("resume") and run_arch.is_file():
        trained = ArchSpec.load(run_arch)
        if explicit is not None and explicit.spec != trained:
            raise UserError(f"--resume: {explicit.source} is not the architecture of {run_dir} ({run_arch}: "
                            f"{trained.short()}); drop --arch or pick another --run_name")
        return SpecChoice(trained, f"{run_arch} (the run being resumed)", run_arch)
    return explicit if explicit is not None else task.default_spec(cfg)


# ---------------------------------------------------------------------- run folder
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


def cleanup(run_dir: Path, created: bool, started: float, written: list[Path]) -> None:
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


def data_message(e: BaseException) -> str:
    """One line from a DataError, also when re-raised from a DataLoader worker."""
    text = str(e)
    if "Original Traceback" in text:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        text = lines[-1].split("DataError: ", 1)[-1] if lines else text
    return text


def check_resumable(ckpt_path: Path, spec: ArchSpec) -> None:
    """``--resume`` continues ``last.ckpt``: it must exist and hold this architecture."""
    import torch

    if not ckpt_path.is_file():
        raise UserError(f"--resume: nothing to resume, {ckpt_path} does not exist; drop --resume to start "
                        "this run")
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        saved = ckpt["hyper_parameters"]["spec"]
    except Exception as e:
        raise UserError(f"--resume: {ckpt_path} cannot be read as a training checkpoint "
                        f"({type(e).__name__}: {e})") from None
    if saved != spec.to_dict():
        raise UserError(f"--resume: {ckpt_path} was trained with another architecture "
                        f"({ArchSpec.from_dict(saved).short()}, not {spec.short()})")


# ---------------------------------------------------------------------------- the run
def training_callbacks(cfg: dict[str, Any], run_dir: Path, monitor: str, checkpoints: bool = True):
    """The callbacks of every training run, and its ``best.ckpt`` checkpointer (None without checkpoints).

    Learning-rate monitor, the random state in checkpoints, the progress bar; ``best.ckpt`` on
    ``monitor`` (max) and ``last.ckpt`` at every validation (what ``--resume`` continues;
    Lightning's ``save_last`` only rewrites it when ``best.ckpt`` improves), after ``best.ckpt``
    so that it holds its updated score.
    """
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from pipeline.train.progress import progress_bar
    from pipeline.train.rng import RngState

    callbacks = [LearningRateMonitor(logging_interval="step"), RngState(), *progress_bar(cfg["trainer"])]
    if not checkpoints:
        return callbacks, None
    best = ModelCheckpoint(dirpath=str(run_dir), filename="best", monitor=monitor, mode="max", save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    last = ModelCheckpoint(dirpath=str(run_dir), filename="last", save_top_k=1, enable_version_counter=False)
    return [*callbacks, best, last], best


def resolve_machine_settings(cfg: dict[str, Any]) -> None:
    """The settings whose ``null`` / ``auto`` depends on this machine (precision, compile), in place,
    before the task builds anything."""
    cfg["trainer"]["precision"] = resolve_precision(cfg["trainer"])
    cfg["model"]["compile"] = resolve_compile(cfg["model"].get("compile"), cfg["trainer"])


def training_trainer(task: TrainingTask, cfg: dict[str, Any], run_dir: Path, callbacks: list):
    """(the Trainer of a training run, its ``best.ckpt`` checkpointer or None): CSV logger
    (``csv/version_N``: one folder per invocation, so a resumed run keeps its history) and W&B,
    ``callbacks`` then :func:`training_callbacks`; a ``fast_dev_run`` writes no checkpoint."""
    from lightning.pytorch.loggers import CSVLogger

    from pipeline.tracking import wandb_logger

    loggers: list = [CSVLogger(save_dir=str(run_dir), name="csv")]
    wb = wandb_logger(cfg, run_dir, job_type=f"train-{task.name}")
    if wb:
        loggers.append(wb)
    smoke = bool(cfg["trainer"].get("fast_dev_run"))   # one batch per loop, no checkpoint
    ours, best_ckpt = training_callbacks(cfg, run_dir, task.monitor, checkpoints=not smoke)
    trainer = make_trainer(cfg, run_dir, logger=loggers, callbacks=[*callbacks, *ours],
                           default_root_dir=str(run_dir), enable_model_summary=False, enable_checkpointing=not smoke)
    return trainer, best_ckpt


def train(task: TrainingTask, cfg: dict[str, Any], callbacks: list) -> int:
    """Run one retraining of ``task`` with ``cfg``."""
    from pipeline.data import DataError
    from pipeline.tracking import finish_wandb, record_handoff

    started = time.time()
    run_dir = Path(cfg["out_dir"]) / cfg["run_name"]
    choice = resolve_spec(task, cfg, run_dir)
    resolve_machine_settings(cfg)
    try:
        built = task.build(cfg, choice.spec, choice.source)
    except DataError as e:
        raise UserError(data_message(e)) from None
    spec = built.spec   # e.g. with model.num_classes applied
    ckpt_path = run_dir / "last.ckpt" if cfg["resume"] else None
    if ckpt_path is not None:
        check_resumable(ckpt_path, spec)
    cfg["arch"] = spec.to_dict()   # the saved config alone reproduces the run

    rank0 = is_rank_zero()   # the output folder is checked, written and cleaned up by rank 0 only
    created = check_writable(run_dir) if rank0 else False
    written: list[Path] = []
    try:
        trainer, best_ckpt = training_trainer(task, cfg, run_dir, callbacks)
        if trainer.global_rank == 0:
            for line in [*built.notes, device_line(trainer)]:
                print(line)
            if not cfg["resume"] and (run_dir / "last.ckpt").exists():
                print(f"note: {run_dir} already holds checkpoints; starting afresh (use --resume to continue)")
            for name, write in (("config.yaml", lambda p: save_config(cfg, p)), ("arch.yaml", spec.save)):
                if not (run_dir / name).exists():
                    written.append(run_dir / name)
                write(run_dir / name)
        trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
        if trainer.interrupted:
            raise KeyboardInterrupt
        if trainer.fast_dev_run:
            if trainer.global_rank == 0:
                print(f"fast_dev_run passed (one batch per loop); no checkpoint written to {run_dir}")
            return 0
        best = best_ckpt.best_model_path   # (a fast_dev_run, without checkpoints, returned above)
        metrics = task.validate(trainer, built, best)
        if trainer.global_rank == 0:
            summary, produced, lines = task.finish(trainer, built, run_dir, metrics)
            summary.update(checkpoint=best or None, arch_source=choice.source, wall_time_s=round(time.time() - started, 1))
            atomic_write_text(run_dir / "metrics.json", json.dumps(summary, indent=2))
            consumed = task.consumed(cfg, choice)
            record_handoff(trainer.loggers, run_dir, produced=produced, consumed=consumed)
            finish_wandb(trainer.loggers)
            if best:
                lines.append(f"best checkpoint: {best}")
            if (run_dir / "last.ckpt").is_file():
                lines.append(f"last checkpoint: {run_dir / 'last.ckpt'}")
            minutes, secs = divmod(int(round(time.time() - started)), 60)
            lines.append(f"wall time: {minutes}m{secs:02d}s; outputs in {run_dir}")
            print("\n".join(lines))
    except DataError as e:
        if rank0:
            cleanup(run_dir, created, started, written)
        raise UserError(data_message(e)) from None
    except FloatingPointError as e:   # raised on every rank alike (pipeline.distributed)
        if rank0:
            cleanup(run_dir, created, started, written)
        raise UserError(str(e)) from None
    except BaseException:
        if rank0:
            cleanup(run_dir, created, started, written)
        raise
    return 0

