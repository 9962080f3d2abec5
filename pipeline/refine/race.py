"""Running the race: one training per (entrant, rung), a resumable log, and promotion from it.

**The log** (``results.jsonl``): one JSON line per finished (entrant, rung) training, appended with
one fsynced write while the folder's lock is held (:mod:`pipeline.groundtruth.claims`); a last line
cut short by a kill is dropped when read, and its training is done again. Each training saves its
Lightning checkpoint (``trainings/<entrant>/rung<r>.ckpt``: weights, optimiser, schedule, loop
counters and the random state) atomically *before* its line is written, so a logged training always
has the checkpoint the next rung continues from.

**The state** is derived from the log alone (:func:`race_state`): rung 1's members are every entrant;
a rung is decided only once all its members have a line, by :func:`pipeline.refine.plan.promote`.
Every worker reading the same log derives the same promotions and the same winner, and a rerun
after ``kill -9`` trains only what has no line yet.

**A training** (:func:`train_entrant`) is ``train --task cls``'s recipe on the training images
less the selection split, with the learning-rate schedule spanning the race's last rung (every
entrant's cosine runs over the epochs it would get if it won every rung): rung r trains from the
previous rung's checkpoint up to its epochs and scores the selection split once, at its end.
"""
from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from pipeline.refine.plan import Result, Rung, promote


# --------------------------------------------------------------------------------- the log
def item_key(candidate: int, rung: int) -> str:
    """The unit of work and of the log: one entrant trained through one rung."""
    return f"c{candidate}-r{rung}"


def _line_key(row: dict[str, Any]) -> str:
    float(row["top1"]), int(row["n_images"])
    return item_key(int(row["candidate"]), int(row["rung"]))


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """The finished trainings by item key; call with the folder's lock held (it may drop a torn tail)."""
    from pipeline.groundtruth.results import read_lines

    return read_lines(path, _line_key, "a line of a refine race",
                      lambda row: f"entrant {row['candidate']} in rung {row['rung']}")


def append_line(path: Path, row: dict[str, Any]) -> None:
    """Append one finished training durably (call with the folder's lock held)."""
    from pipeline.groundtruth.results import append_result

    append_result(path, row)


# ------------------------------------------------------------------------------- the state
@dataclass
class RungState:
    """One rung as the log has it: its members, their lines so far, and (once complete) who went on."""

    rung: Rung
    members: list[int]
    lines: dict[int, dict[str, Any]] = field(default_factory=dict)
    kept: Optional[list[int]] = None

    @property
    def complete(self) -> bool:
        return self.kept is not None

    @property
    def todo(self) -> list[int]:
        return [c for c in self.members if c not in self.lines]


@dataclass
class RaceState:
    """The race as far as the log goes: every rung reached, and the winner once the last rung is decided."""

    rungs: list[RungState]
    winner: Optional[int]

    @property
    def current(self) -> Optional[RungState]:
        """The first undecided rung (None when the race is over)."""
        return next((r for r in self.rungs if not r.complete), None)

    def lines(self) -> list[dict[str, Any]]:
        return [line for r in self.rungs for line in r.lines.values()]


def race_state(plan: Sequence[Rung], sizes: Sequence[tuple[float, float]], done: dict[str, dict[str, Any]],
               tie_se: float) -> RaceState:
    """The race derived from the log: ``sizes`` are the entrants' (params, FLOPs), the tie-break."""
    members = list(range(len(sizes)))
    rungs: list[RungState] = []
    for rung in plan:
        state = RungState(rung, members, {c: done[item_key(c, rung.number)] for c in members
                                          if item_key(c, rung.number) in done})
        rungs.append(state)
        if state.todo:
            return RaceState(rungs, None)
        results = [Result(c, float(state.lines[c]["top1"]), *sizes[c]) for c in members]
        n_images = max(int(state.lines[c]["n_images"]) for c in members)
        state.kept = promote(results, rung.keep, n_images, tie_se)
        members = state.kept
    return RaceState(rungs, rungs[-1].kept[0])


# --------------------------------------------------------------------------- one training
def race_recipe(recipe: dict[str, Any], holdout: dict[str, Any], seed: int) -> dict[str, Any]:
    """The recipe as the race trains it: the selection split held out of training and scored instead of val
    (data-module settings of the race alone: `train` keeps every training image and reports on val)."""
    cfg = copy.deepcopy(recipe)
    split_seed = seed if holdout.get("seed") is None else int(holdout["seed"])
    cfg["data"].update(holdout=float(holdout["fraction"]), holdout_seed=split_seed, validate_on="holdout")
    cfg["seed_everything"] = seed
    return cfg


def epoch_callback(tick: Optional[Callable[[], None]] = None, history: Optional[list] = None):
    """A Lightning callback for a race's training: ``tick()`` after every training epoch (the command's progress
    bar) and, with ``history`` (sweep agents), the selection metric logged as ``refine/selection_top1`` after
    every scoring of the split and appended to ``history`` as (epoch, top-1 %)."""
    from lightning.pytorch import Callback

    class EveryEpoch(Callback):
        def on_train_epoch_end(self, trainer, pl_module) -> None:
            if tick is not None:
                tick()

        def on_validation_epoch_end(self, trainer, pl_module) -> None:
            if history is None or trainer.sanity_checking or "val/top1" not in trainer.callback_metrics:
                return
            top1 = 100.0 * float(trainer.callback_metrics["val/top1"])
            pl_module.log("refine/selection_top1", top1)
            history.append((trainer.current_epoch + 1, round(top1, 4)))

    return EveryEpoch()


def train_entrant(recipe: dict[str, Any], spec, *, schedule: int, until: int, resume: Optional[Path],
                  save: Optional[Path], logger: Any = False, tick: Optional[Callable[[], None]] = None,
                  history: Optional[list] = None) -> dict[str, Any]:
    """Train ``spec`` (the race's recipe, see :func:`race_recipe`) up to epoch ``until`` of a schedule spanning
    ``schedule`` epochs, from ``resume`` (the previous rung's checkpoint) or from scratch; save the checkpoint
    to ``save`` (atomically). Returns the selection split's top-1 (%), the images it was measured on, the
    epochs reached and the wall time. With ``history`` (sweep agents) the split is scored after every epoch
    (see :func:`epoch_callback`)."""
    import tempfile

    from lightning.fabric.utilities.seed import seed_everything

    from pipeline.classification.task import ClassificationTask
    from pipeline.config import make_trainer
    from pipeline.train.rng import RngState
    from pipeline.train.runner import resolve_machine_settings

    start = time.perf_counter()
    cfg = copy.deepcopy(recipe)
    cfg["arch"] = spec.to_dict()
    resolve_machine_settings(cfg)
    cfg["trainer"].update(max_epochs=until, enable_progress_bar=False, num_sanity_val_steps=0,
                          check_val_every_n_epoch=1 if history is not None else until)
    cfg["trainer"].pop("max_steps", None)
    seed = int(cfg["seed_everything"])
    seed_everything(seed, workers=True, verbose=False)   # as `train` seeds; a continuation restores the saved state
    built = ClassificationTask().build(cfg, spec, f"refine entrant {spec.short()}")
    built.module.hparams["epochs"] = int(schedule)   # the cosine spans the whole race, not this rung
    callbacks = [RngState(), epoch_callback(tick, history)]
    with tempfile.TemporaryDirectory(prefix="refine-") as tmp:
        trainer = make_trainer(cfg, Path(tmp), logger=logger, callbacks=callbacks, enable_checkpointing=False,
                               enable_model_summary=False, default_root_dir=tmp)
        trainer.fit(built.module, datamodule=built.datamodule, ckpt_path=str(resume) if resume else None,
                    weights_only=True)   # plain types and tensors only (pipeline.train.rng)
        if trainer.interrupted:
            raise KeyboardInterrupt
        if save is not None:
            save.parent.mkdir(parents=True, exist_ok=True)
            part = save.with_name(f".{save.name}.{os.getpid()}.tmp")
            trainer.save_checkpoint(str(part), weights_only=False)   # the whole state: the next rung continues it
            os.replace(part, save)
    if "val/top1" not in trainer.callback_metrics:
        raise RuntimeError("the rung ended without scoring the selection split (is trainer.limit_val_batches 0?)")
    dm = built.datamodule
    batches = sum(trainer.num_val_batches) if isinstance(trainer.num_val_batches, list) else trainer.num_val_batches
    n_images = min(len(dm.val_set), int(batches) * dm.batch_size)
    return {"top1": round(100.0 * float(trainer.callback_metrics["val/top1"]), 4), "n_images": int(n_images),
            "epochs": int(trainer.current_epoch), "wall_s": round(time.perf_counter() - start, 2)}
