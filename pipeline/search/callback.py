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
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from pipeline.distributed import rank_zero_decides
from pipeline.models import count_flops, count_params
from pipeline.proxies import compute_proxy, get_proxy
from pipeline.proxies.registry import population_values
from pipeline.search.objective import Objective
from pipeline.search.report import (plot_convergence, plot_pareto, summary_table, write_arch, write_candidates_csv,
                                    write_front)
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
        costs: latency and memory on the deployment target (``pipeline.latency.costs.DeviceCosts``), with
            their limits; None: not measured.
        objective: "score" (the best score within the limits) or "pareto" (score against latency).
    """

    def __init__(self, space: str | SearchSpace, out_dir: str | Path, probe=None, proxy: str = "vintk_size",
                 proxy_options: Optional[dict[str, Any]] = None, strategy: str = "evolution",
                 strategy_options: Optional[dict[str, Any]] = None, limits: Optional[Limits] = None,
                 seed: int = 0, init_seed: int = 0, probe_size: int = 8, costs=None,
                 objective: str = "score") -> None:
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
        self.costs = costs
        self.objective = Objective(objective)
        if objective != "score" and costs is None:
            raise ValueError(f"objective {objective!r} trades score against latency: pass costs=DeviceCosts(...)")
        self.chosen: Optional[ArchSpec] = None
        self.latency_record: Optional[dict] = None   # the pick's latency in the search and in a fresh process
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
        if self.costs is not None:   # rank 0 calibrates (or reads the run's predictor); all use the same
            self.costs.use(rank_zero_decides(lambda: self._prepare_costs(trainer)))
        strategy = make_strategy(self.strategy_name, self.space, self.limits, self.seed,
                                 accept=self.costs.admits if self.costs is not None else None,
                                 objective=self.objective, **self.strategy_options)
        resumed = len(store.by_spec)
        if resumed:
            rank_zero_info(f"Resuming: {resumed} candidates already scored in {store.path}")
        history: list[dict[str, float]] = []
        seen: dict[ArchSpec, Candidate] = {}   # every candidate handed to the strategy so far, in order
        start = time.perf_counter()
        progress = _progress(trainer)
        for gen, batch in enumerate(strategy.generations()):
            todo = [s for s in batch if store.get(s) is None]
            task = progress.add_task(f"generation {gen}", total=len(batch), completed=len(batch) - len(todo)) \
                if progress else None
            costs = self._costs(batch, store, gen, rank)
            for first in range(0, len(todo), world):
                mine = todo[first + rank] if first + rank < len(todo) else None
                local = [self._score(mine, gen, images, labels, device, costs.get(mine))] if mine is not None else []
                for c in _gather(local, world):
                    store.add(c)
                if progress:
                    progress.update(task, advance=min(world, len(todo) - first))
            scored = [store.get(s) for s in batch]
            seen.update((c.spec, c) for c in scored)
            if self.proxy_info.population is not None:
                # a new generation changes every earlier candidate's rank: re-rank all of them, tell all
                seen = self._ranked(seen)
                scored = [seen[c.spec] for c in scored]
                for c in seen.values():
                    strategy.tell(c.spec, c.rank_value, c.latency_ms)
            else:
                for c in scored:
                    strategy.tell(c.spec, c.rank_value, c.latency_ms)
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
        # the outputs show each candidate's final value (a population-ranked one changed as others arrived)
        self.candidates = [replace(seen[c.spec], generation=c.generation) for c in self.candidates]
        if rank == 0:
            self._write_outputs(trainer, best[0], history, time.perf_counter() - start)
        return best[0]

    def _ranked(self, population: dict[ArchSpec, Candidate]) -> dict[ArchSpec, Candidate]:
        """The population's candidates with the proxy's values as ranks among its valid members,
        from their logged components (deterministic: the same population gives the same values)."""
        members = list(population.values())
        values = population_values(self.proxy, [c.components if c.valid else None for c in members],
                                   self.proxy_options)
        sign = 1.0 if self.proxy_info.higher_is_better else -1.0
        return {c.spec: replace(c, score=v, rank_value=sign * v) if c.valid else c for c, v in zip(members, values)}

    def _prepare_costs(self, trainer: Trainer):
        """The latency predictor, calibrated with a progress bar where the search shows one."""
        if self.costs.predictor is not None or not self.costs.needs_predictor:   # prepared by the command
            return self.costs.prepare(self.out_dir)
        progress = _progress(trainer)
        task = progress.add_task("calibrating the latency predictor (network runs)", total=None) if progress else None
        try:
            return self.costs.prepare(self.out_dir, (lambda done, total: progress.update(
                task, completed=done, total=total)) if progress else None)
        finally:
            if progress:
                progress.stop()

    def _costs(self, batch: list[ArchSpec], store: CandidateStore, gen: int, rank: int) -> dict:
        """Latency and memory of the generation's candidates that lack them (new ones, and logged ones
        costed under other conditions or not at all), on rank 0 alone, before any proxy of the
        generation runs: a timing never overlaps a proxy, on this rank or another. Logged candidates
        get their costs added to the log; new ones carry them into ``_score``."""
        if self.costs is None:
            return {}
        conditions = self.costs.target.conditions

        def evaluate() -> dict:
            need = [s for s in batch if (c := store.get(s)) is None or c.latency_on != conditions
                    or c.latency_ms is None]
            return {s: self.costs.evaluate(s) for s in dict.fromkeys(need)}

        found = rank_zero_decides(evaluate)
        for spec, costs in found.items():
            logged = store.get(spec)
            if logged is not None:
                store.add(logged.with_costs(costs))
        return found

    def _score(self, spec: ArchSpec, gen: int, images: torch.Tensor, labels: torch.Tensor,
               device: torch.device, costs=None) -> Candidate:
        """One candidate (with its costs, if measured), unless it breaks a device limit."""
        if costs is not None:
            violation = self.costs.violation(costs)
            if violation:   # the proxy is not computed for a network the device cannot take
                return Candidate(spec, gen, math.nan, -math.inf, False, violation, count_params(spec) / 1e6,
                                 count_flops(spec) / 1e6, 0.0).with_costs(costs)
        c = self._proxy(spec, gen, images, labels, device)
        return c.with_costs(costs) if costs is not None else c

    def _proxy(self, spec: ArchSpec, gen: int, images: torch.Tensor, labels: torch.Tensor,
               device: torch.device) -> Candidate:
        """One candidate's score; OOM retries with smaller gradient blocks, other failures are recorded."""
        options = dict(self.proxy_options)
        reason = ""
        for attempt in range(3):
            try:
                s = compute_proxy(self.proxy, spec, images, labels, seed=self.init_seed, device=device,
                                  options=options)
                return Candidate(spec, gen, s.value, s.rank_value, s.valid, s.reason, count_params(spec) / 1e6,
                                 count_flops(spec) / 1e6, s.seconds, components=dict(s.components))
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
        if self.costs is not None:
            row["best_latency_ms"] = strategy.latencies.get(best[0], math.nan) if best else math.nan
        for logger in trainer.loggers:
            logger.log_metrics({f"search/{k}": v for k, v in row.items() if k != "generation"}, step=gen)
        return row

    def _write_outputs(self, trainer: Trainer, best: ArchSpec, history: list[dict], seconds: float) -> None:
        out = self.out_dir
        record = self._latency_record(best)
        write_arch(out / "arch.yaml", best, record)
        write_candidates_csv(self.candidates, out / "candidates.csv")
        by_latency = self.costs is not None and (self.costs.max_latency_ms is not None
                                                 or self.objective.name != "score")
        plot_pareto(self.candidates, best, out / "pareto.png", self.proxy, by_latency=by_latency,
                    max_latency_ms=self.costs.max_latency_ms if self.costs is not None else None)
        plot_convergence(history, out / "convergence.png", self.proxy)
        if self.objective.name == "pareto":
            write_front(self.candidates, out / "front", self.objective)
        table = summary_table(self.candidates, best, self.proxy, seconds)
        for logger in trainer.loggers:
            _log_to_wandb(logger, self.candidates, out, best, record)
        from rich.console import Console

        Console().print(table)
        self.latency_record = record
        if record is not None:
            limit = self.costs.max_latency_ms
            if limit is not None and (record.get("fresh_process_ms") or 0) > limit:
                rank_zero_info(f"warning: re-measured in a fresh process the pick takes {record['fresh_process_ms']:.3g} "
                               f"ms, over --limits.max_latency_ms={limit:g} (it was {record['search_ms']:.3g} ms "
                               f"{record['search_source']} in the search); see docs/latency.md on noise")
        rank_zero_info(f"Chosen architecture written to {out / 'arch.yaml'}")

    def _latency_record(self, best: ArchSpec) -> Optional[dict]:
        """The pick's costs in the search and again in a fresh process (None without a target)."""
        if self.costs is None:
            return None
        chosen = next(c for c in reversed(self.candidates) if c.spec == best)
        from pipeline.latency.costs import Costs

        return self.costs.record(best, Costs(chosen.latency_ms, chosen.latency_source, chosen.memory_mb,
                                             chosen.latency_on))


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


def _log_to_wandb(logger, candidates: list[Candidate], out: Path, best: ArchSpec,
                  latency: Optional[dict] = None) -> None:
    from lightning.pytorch.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    from pipeline.tracking import handoff_artifact

    columns = ["generation", "arch", "score", "rank_value", "valid", "reason", "params_m", "flops_m", "seconds",
               "latency_ms", "latency_source", "memory_mb"]
    data = [[c.generation, c.spec.short(), c.score, c.rank_value, c.valid, c.reason, c.params_m, c.flops_m,
             c.seconds, c.latency_ms, c.latency_source, c.memory_mb] for c in candidates]
    logger.log_table("search/candidates", columns=columns, data=data)
    # one key per plot: images of different sizes under one key are drawn wrongly by the W&B UI
    pareto_caption = "score vs latency" if any(c.latency_ms is not None for c in candidates) else "score vs params"
    logger.log_image("search/pareto", [str(out / "pareto.png")], caption=[pareto_caption])
    logger.log_image("search/convergence", [str(out / "convergence.png")], caption=["best score per generation"])
    logger.experiment.log_artifact(handoff_artifact("arch", logger.experiment.group, out / "arch.yaml",
                                                    metadata={**best.to_dict(), **({"latency": latency} if latency else {})}))
