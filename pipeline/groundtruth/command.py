"""``python -m pipeline groundtruth``: measured accuracies of sampled architectures on the user's task.

Everything that can be checked is checked before the first training: the options (parse time),
the space and limits, the recipe (``train``'s own parser, and its data), and the results file
(a malformed line is reported with its line number; lines of another plan are refused). Then
each worker loops: claim the next unfinished (architecture, seed) item, train it, append its
line, release the claim (:mod:`pipeline.groundtruth.claims`). Killing a worker at any moment
loses at most the item it was training; the same command continues.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from pipeline.errors import UserError
from pipeline.groundtruth.settings import PLAN_KEYS, RESULTS_NAME, parse_config, parse_shard

POLL_S = 5.0   # how often a worker with nothing to claim looks again (others may still be training)


def plan_items(cfg: dict[str, Any], specs: list) -> list[tuple[str, Any, int]]:
    """(item key, spec, seed) in the order workers take them: the first seed for every architecture,
    then the other seeds for the sample's first ``seed_subset``; then this worker's shard of them."""
    from pipeline.groundtruth.results import item_key
    from pipeline.groundtruth.sampling import arch_id

    first, *others = cfg["seeds"]
    items = [(item_key(arch_id(s), first), s, first) for s in specs]
    items += [(item_key(arch_id(s), seed), s, seed) for seed in others for s in specs[:cfg["seed_subset"]]]
    shard = parse_shard(cfg["shard"])
    if shard is not None:
        i, n = shard
        items = [it for k, it in enumerate(items) if k % n == i]
    return items


def check_plan(cfg: dict[str, Any], run_dir: Path, done: dict[str, dict], keys: set[str]) -> None:
    """A folder that holds lines is continued only under the plan that wrote them."""
    import yaml

    saved = run_dir / "config.yaml"
    if saved.is_file():
        old = yaml.safe_load(saved.read_text()) or {}
        changed = [k for k in PLAN_KEYS if old.get(k) != cfg.get(k)]
        if changed and done:
            raise UserError(f"{run_dir / RESULTS_NAME} was written with other {', '.join(changed)} settings; "
                            "continuing would mix incomparable lines. Use another --run_name (or the old settings)")
    stray = sorted(set(done) - keys)
    if stray and cfg["shard"] is None:
        raise UserError(f"{run_dir / RESULTS_NAME} holds {len(stray)} line(s) of architectures this plan does not "
                        f"sample (e.g. {stray[0]}); use another --run_name")


def _row(cfg: dict[str, Any], spec, seed: int, result: dict[str, Any], worker: str) -> dict[str, Any]:
    from pipeline.groundtruth.sampling import arch_id
    from pipeline.models.complexity import complexity

    params, macs = complexity(spec)
    return {"id": arch_id(spec), "seed": seed, "space": cfg["space"], "arch": spec.to_dict(),
            "metrics": result["metrics"], **({"error": result["error"]} if "error" in result else {}),
            "params_m": round(params / 1e6, 6), "flops_m": round(macs / 1e6, 6),
            "epochs": result["epochs"], "wall_s": result["wall_s"], "worker": worker,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def run(cfg: dict[str, Any]) -> int:
    import torch

    from pipeline.classification.task import ClassificationTask
    from pipeline.config import save_config
    from pipeline.data import DataError
    from pipeline.groundtruth.claims import Claims, default_worker
    from pipeline.groundtruth.results import append_result, read_results
    from pipeline.groundtruth.sampling import stratified_sample
    from pipeline.groundtruth.training import recipe_config, train_architecture
    from pipeline.space import Limits, SearchSpace

    space = SearchSpace.load(cfg["space"])
    limits = Limits.of_space(cfg["limits"])
    space.check_limits(limits)
    recipe = recipe_config(cfg["recipe"], cfg["train_args"])
    specs = stratified_sample(space, limits, cfg["num_archs"], cfg["bands"], cfg["sample_seed"])
    try:   # the recipe's data and settings, checked on the smallest sampled network before any training
        smallest = min(specs, key=lambda s: s.embed_dim * len(s.num_heads))
        ClassificationTask().build({**recipe, "arch": smallest.to_dict()}, smallest, "the sample's smallest network")
    except DataError as e:
        raise UserError(str(e)) from None
    items = plan_items(cfg, specs)
    run_dir = Path(cfg["out_dir"]) / cfg["run_name"]
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RESULTS_NAME
    worker = cfg["worker"] or default_worker()
    claims = Claims(run_dir, worker, cfg["lease_s"])
    from pipeline.groundtruth.results import item_key
    from pipeline.groundtruth.sampling import arch_id

    all_keys = {item_key(arch_id(s), seed) for s in specs for seed in cfg["seeds"]}
    with claims.lock():
        done = read_results(path)
        check_plan(cfg, run_dir, done, all_keys)
        claims.prune(done)
        if not (run_dir / "config.yaml").is_file() or not done:
            save_config(cfg, run_dir / "config.yaml")
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    return _work(cfg, run_dir, path, items, recipe, claims, worker, train_architecture, append_result, read_results)


def _work(cfg, run_dir: Path, path: Path, items, recipe, claims, worker: str, train, append, read) -> int:
    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)
    logger = _wandb(cfg, run_dir, worker)
    mine: list[list[Any]] = []
    keys = [k for k, _, _ in items]
    with claims.lock():
        done = read(path)
    console.print(f"groundtruth: {len(items)} items ({cfg['num_archs']} architectures, seeds {cfg['seeds']}"
                  f"{', shard ' + cfg['shard'] if cfg['shard'] else ''}) in {path}; "
                  f"{sum(k in done for k in keys)} done; worker {worker}")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    current: Optional[str] = None
    try:
        # ETA from the whole run's pace: items take minutes, rich's default window is 30 s
        with Progress(*columns, console=console, speed_estimate_period=3600) as progress:
            task = progress.add_task("training", total=len(items), completed=sum(k in done for k in keys))
            while True:
                current, spec, seed = None, None, None
                with claims.lock():
                    done = read(path)
                    progress.update(task, completed=sum(k in done for k in keys))
                    left = [it for it in items if it[0] not in done]
                    if not left:
                        break
                    free = next((it for it in left if claims.holder(it[0]) is None), None)
                    if free is not None:
                        current, spec, seed = free
                        claims.take(current)
                if current is None:   # everything left is being trained by other workers
                    progress.update(task, description=f"waiting for {len(left)} item(s) of other workers")
                    time.sleep(min(POLL_S, claims.lease_s / 4))
                    continue
                progress.update(task, description=f"{spec.short()} seed {seed}")
                with claims.heartbeat(current):
                    try:
                        result = train(recipe, spec, seed)
                    except FloatingPointError as e:   # a network that diverges is a result, not a crash:
                        result = {"metrics": {}, "error": str(e), "epochs": 0, "wall_s": 0.0}   # never retried
                row = _row(cfg, spec, seed, result, worker)
                with claims.lock():
                    if current not in read(path):
                        append(path, row)
                    claims.release(current)
                current = None
                top1 = row["metrics"].get("top1", float("nan"))
                mine.append([row["id"], row["seed"], spec.short(), row["params_m"], row["flops_m"], top1,
                             row["wall_s"]])
                progress.console.print(f"{spec.short()} seed {seed}: " + (
                    f"top-1 {top1:.2f}% ({row['params_m']:.3f} M params, {row['wall_s']:.0f} s)" if "error" not in row
                    else f"diverged ({row['error']}); recorded without metrics"))
                if logger and "error" not in row:
                    logger.log_metrics({"groundtruth/top1": row["metrics"]["top1"],
                                        "groundtruth/wall_s": row["wall_s"]}, step=len(mine))
            progress.update(task, description="done")
    except KeyboardInterrupt:
        if current is not None:
            claims.release(current)
        console.print(f"interrupted; finished lines are in {path}. Rerun the same command to continue.")
        return 130
    except BaseException:
        if current is not None:
            claims.release(current)
        raise
    finally:
        if logger:
            _finish_wandb(logger, mine)
    console.print(f"all {len(items)} items are in {path} ({len(mine)} trained by this worker)")
    return 0


def _wandb(cfg: dict[str, Any], run_dir: Path, worker: str):
    from pipeline.tracking import wandb_logger

    return wandb_logger(cfg, run_dir, job_type="groundtruth", name=f"{cfg['run_name']}-{worker}")


def _finish_wandb(logger, mine: list[list[Any]]) -> None:
    logger.log_table("groundtruth/lines", columns=["id", "seed", "arch", "params_m", "flops_m", "top1", "wall_s"],
                     data=mine)
    logger.experiment.finish()


def main(argv: Sequence[str]) -> int:
    return run(parse_config(argv))
