"""``ArchitectureSearch``: training-free architecture search as a Lightning ``Callback``.

The search runs in the callback's ``setup("fit")`` hook, i.e. on the Trainer's device, inside
its strategy (DDP ranks split every round of candidates and gather the scores), with its
loggers. Attached to a real training run it finishes before the model is configured and hands
the chosen spec to the LightningModule (``set_architecture``), which builds the network; driven
alone (``python -m pipeline search``) it runs under a Trainer with nothing to train.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from pipeline.distributed import rank_zero_decides
from pipeline.models import count_flops, count_params
from pipeline.proxies import compute_proxy, get_proxy
from pipeline.search.report import plot_convergence, plot_pareto, summary_table, write_candidates_csv
from pipeline.search.store import Candidate, CandidateStore
from pipeline.search.strategies import make_strategy
from pipeline.space import ArchSpec, Limits, SearchSpace
from pipeline.utils.io import atomic_write_text


def check_probe_labels(labels: torch.Tensor, space: SearchSpace) -> None:
    """Probe labels must index the networks' classes (a loss on them is otherwise meaningless)."""
    classes = space.extreme_spec(False).num_classes
    top = int(labels.max()) if labels.numel() else -1
    if top >= classes or (labels.numel() and int(labels.min()) < 0):
        raise ValueError(f"probe labels run up to {top}, but the space {space.name!r} has {classes} classes; "
                         f"use a probe with at most {classes} classes (e.g. --probe.source=photos) or a space "
                         f"with fixed.num_classes >= {top + 1}")


class ArchitectureSearch(Callback):
    """Score candidates of ``space`` with ``proxy`` under ``limits`` and pick the best.

    Args:
        space: the search space (name, path or SearchSpace).
        out_dir: where arch.yaml, candidates.jsonl/csv, state.json and plots go; a rerun with
            the same directory resumes.
        proxy: registered proxy name (NASWOT by default); ``proxy_options`` override its defaults.
        strategy: "evolution" or "random"; ``strategy_options`` e.g. population, generations.
        limits: min/max params and FLOPs (millions).
        probe: how to get the probe batch: ``(images, labels)`` tensors, a callable
            ``probe(spec) -> (images, labels)`` evaluated once for the space's geometry, or None:
            the first ``probe_size`` images of the Trainer's LightningDataModule training loader
            (the search attached to a training run probes with the data it will train on).
        probe_size: images taken from the DataModule when ``probe`` is None.
        seed: seeds the strategy; ``init_seed`` seeds every network's initialisation.
    """

    def __init__(self, space: str | SearchSpace, out_dir: str | Path, probe=None, proxy: str = "naswot",
                 proxy_options: Optional[dict[str, Any]] = None, strategy: str = "evolution",
                 strategy_options: Optional[dict[str, Any]] = None, limits: Optional[Limits] = None,
                 seed: int = 0, init_seed: int = 0, probe_size: int = 8) -> None:
        self.space = space if isinstance(space, SearchSpace) else SearchSpace.load(space)
        self.out_dir = Path(out_dir)
        self.probe = probe
        self.probe_size = int(probe_size)
        self.proxy = proxy
        self.proxy_info = get_proxy(proxy)
        self.proxy_options = dict(proxy_options or {})
        self.strategy_name = strategy
        self.strategy_options = dict(strategy_options or {})
        self.limits = limits or Limits()
        self.space.check_limits(self.limits)
        self.seed = seed
        self.init_seed = init_seed
        self.chosen: Optional[ArchSpec] = None
        self.candidates: list[Candidate] = []

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or self.chosen is not None:
            return
        self.chosen = self.run(trainer)
        if hasattr(pl_module, "set_architecture"):
            pl_module.set_architecture(self.chosen)

    # ------------------------------------------------------------------------ the search
    def _probe_batch(self, trainer: Trainer) -> tuple[torch.Tensor, torch.Tensor]:
        if callable(self.probe):
            return self.probe(self.space.extreme_spec(False))
        if self.probe is not None:
            return self.probe
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            raise ValueError("ArchitectureSearch has no probe batch: pass probe=(images, labels) or fit "
                             "with a LightningDataModule (its training loader provides the probe)")
        images, labels, count = [], [], 0
        for x, y in datamodule.train_dataloader():   # set up already: Lightning calls it before callbacks
            images.append(x)
            labels.append(y)
            count += len(x)
            if count >= self.probe_size:
                break
        return torch.cat(images)[: self.probe_size], torch.cat(labels)[: self.probe_size]

    def run(self, trainer: Trainer) -> ArchSpec:
        rank, world = trainer.global_rank, trainer.world_size
        device = trainer.strategy.root_device
        # Rank 0 takes the probe and reads the resume log; every rank scores with what it was handed
        # (no shared filesystem or a shuffled loader can then make ranks disagree on the work).
        images, labels = rank_zero_decides(lambda: self._probe_batch(trainer))
        check_probe_labels(labels, self.space)
        log = self.out_dir / "candidates.jsonl"
        store = CandidateStore(log, writable=rank == 0, records=rank_zero_decides(lambda: CandidateStore.read(log)))
        strategy = make_strategy(self.strategy_name, self.space, self.limits, self.seed, **self.strategy_options)
        resumed = len(store.by_spec)
        if resumed:
            rank_zero_info(f"Resuming: {resumed} candidates already scored in {store.path}")
        history: list[dict[str, float]] = []
        start = time.perf_counter()
        progress = _progress(trainer)
        for gen, batch in enumerate(strategy.generations()):
            todo = [s for s in batch if store.get(s) is None]
            task = progress.add_task(f"generation {gen}", total=len(batch), completed=len(batch) - len(todo)) \
                if progress else None
            for first in range(0, len(todo), world):
                mine = todo[first + rank] if first + rank < len(todo) else None
                local = [self._score(mine, gen, images, labels, device)] if mine is not None else []
                for c in _gather(local, world):
                    store.add(c)
                if progress:
                    progress.update(task, advance=min(world, len(todo) - first))
            scored = [store.get(s) for s in batch]
            for c in scored:
                strategy.tell(c.spec, c.rank_value)
            self.candidates.extend(_with_generation(scored, gen))
            history.append(self._log_generation(trainer, gen, scored, strategy))
            if rank == 0:
                atomic_write_text(self.out_dir / "state.json", json.dumps(
                    {"generation": gen, "evaluated": len(self.candidates), "history": history,
                     "best": strategy.best()[0].to_dict() if strategy.best() else None}, indent=1))
        if progress:
            progress.stop()
        best = strategy.best()
        if best is None:
            raise RuntimeError(f"every candidate failed; see {store.path} for the reasons")
        if rank == 0:
            self._write_outputs(trainer, best[0], history, time.perf_counter() - start)
        return best[0]

    def _score(self, spec: ArchSpec, gen: int, images: torch.Tensor, labels: torch.Tensor,
               device: torch.device) -> Candidate:
        """One candidate; OOM retries with smaller gradient blocks, other failures are recorded."""
        options = dict(self.proxy_options)
        reason = ""
        for attempt in range(3):
            try:
                s = compute_proxy(self.proxy, spec, images, labels, seed=self.init_seed, device=device,
                                  options=options)
                return Candidate(spec, gen, s.value, s.rank_value, s.valid, s.reason, count_params(spec) / 1e6,
                                 count_flops(spec) / 1e6, s.seconds)
            except torch.OutOfMemoryError as e:
                reason = f"out of memory: {str(e).splitlines()[0]}"
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                chunk = options.get("max_chunk_elems", self.proxy_info.defaults.get("max_chunk_elems"))
                if chunk is None:  # nothing to shrink: this proxy holds no per-sample gradient blocks
                    break
                options["max_chunk_elems"] = int(chunk) // 8
            except Exception as e:  # a broken candidate must not end a long search
                reason = f"{type(e).__name__}: {e}"
                break
        return Candidate(spec, gen, math.nan, -math.inf, False, reason, count_params(spec) / 1e6,
                         count_flops(spec) / 1e6, 0.0)

    # ------------------------------------------------------------------------ reporting
    def _log_generation(self, trainer: Trainer, gen: int, scored: list[Candidate], strategy) -> dict[str, float]:
        valid = [c for c in scored if c.valid]
        best = strategy.best()
        row = {"generation": gen, "evaluated": len(self.candidates), "invalid": len(scored) - len(valid),
               "gen_best": max((c.rank_value for c in valid), default=math.nan),
               "gen_mean": sum(c.rank_value for c in valid) / len(valid) if valid else math.nan,
               "best_so_far": best[1] if best else math.nan,
               "best_params_m": count_params(best[0]) / 1e6 if best else math.nan}
        for logger in trainer.loggers:
            logger.log_metrics({f"search/{k}": v for k, v in row.items() if k != "generation"}, step=gen)
        return row

    def _write_outputs(self, trainer: Trainer, best: ArchSpec, history: list[dict], seconds: float) -> None:
        out = self.out_dir
        best.save(out / "arch.yaml")
        write_candidates_csv(self.candidates, out / "candidates.csv")
        plot_pareto(self.candidates, best, out / "pareto.png", self.proxy)
        plot_convergence(history, out / "convergence.png", self.proxy)
        table = summary_table(self.candidates, best, self.proxy, seconds)
        for logger in trainer.loggers:
            _log_to_wandb(logger, self.candidates, out, best)
        from rich.console import Console

        Console().print(table)
        rank_zero_info(f"Chosen architecture written to {out / 'arch.yaml'}")


def _with_generation(scored: list[Candidate], gen: int) -> list[Candidate]:
    """Candidates as this run saw them (a cached one keeps its scores, takes this generation)."""
    return [Candidate(**{**asdict(c), "spec": c.spec, "generation": gen}) for c in scored]


def _gather(local: list[Candidate], world: int) -> list[Candidate]:
    """All ranks' results of one round, in rank order, on every rank."""
    if world == 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return local
    parts: list[Optional[list[Candidate]]] = [None] * world
    torch.distributed.all_gather_object(parts, local)
    return [c for part in parts for c in (part or [])]


def _progress(trainer: Trainer):
    if trainer.global_rank != 0 or not trainer.progress_bar_callback:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    progress.start()
    return progress


def _log_to_wandb(logger, candidates: list[Candidate], out: Path, best: ArchSpec) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    from pipeline.tracking import handoff_artifact

    columns = ["generation", "arch", "score", "rank_value", "valid", "reason", "params_m", "flops_m", "seconds"]
    data = [[c.generation, c.spec.short(), c.score, c.rank_value, c.valid, c.reason, c.params_m, c.flops_m,
             c.seconds] for c in candidates]
    logger.log_table("search/candidates", columns=columns, data=data)
    # one key per plot: images of different sizes under one key are drawn wrongly by the W&B UI
    logger.log_image("search/pareto", [str(out / "pareto.png")], caption=["score vs params"])
    logger.log_image("search/convergence", [str(out / "convergence.png")], caption=["best score per generation"])
    logger.experiment.log_artifact(handoff_artifact("arch", logger.experiment.group, out / "arch.yaml",
                                                    metadata=best.to_dict()))
