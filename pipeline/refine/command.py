"""``python -m pipeline refine``: a short training race among the search's best and the obvious choice.

Everything that can be checked is checked before the first training: the options (parse time: top_k,
eta, a budget in epochs, the search folder), the shortlist, the recipe (``train``'s own parser and its
data, on the smallest entrant), the budget in full retrains, and a race folder being continued (its
plan, shortlist and split must be the ones that wrote it). Then the plan is printed and each worker
loops: claim the next untrained (entrant, rung) of the current rung, train it, append its line,
release the claim (:mod:`pipeline.groundtruth.claims`); a rung is decided once all its lines are in.
Killing a worker at any moment loses at most the training it was doing; the same command continues.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from pipeline.errors import UserError
from pipeline.refine.settings import PLAN_KEYS, RESULTS_NAME, parse_config

POLL_S = 2.0   # how often a worker with nothing to claim looks again (the rung's last trainings are others')


# ----------------------------------------------------------------------------- preparing
class Race:
    """Everything a worker needs, prepared (and checked) once before any training."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from pipeline.classification.task import ClassificationTask
        from pipeline.data import DataError
        from pipeline.data.holdout import split_record
        from pipeline.groundtruth.training import recipe_config
        from pipeline.refine.plan import budget_epochs, rung_plan, schedule_epochs
        from pipeline.refine.race import race_recipe
        from pipeline.refine.shortlist import read_search, shortlist
        from pipeline.train.runner import resolve_machine_settings

        self.cfg = cfg
        search = read_search(cfg["search_dir"])
        self.entrants = shortlist(search, cfg["top_k"], cfg["distinct"])
        if len(self.entrants) < 2:
            raise UserError(f"--search_dir={cfg['search_dir']}: only {len(self.entrants)} distinct network(s) to race "
                            "(its candidates and the largest that fit); search more candidates first")
        recipe = recipe_config(cfg["recipe"], cfg["train_args"])
        t = recipe["trainer"]
        if t.get("devices") not in (1, "1") and not (isinstance(t.get("devices"), list) and len(t["devices"]) == 1) \
                or int(t.get("num_nodes") or 1) != 1:
            raise UserError(f"--recipe trains on trainer.devices={t.get('devices')}, num_nodes={t.get('num_nodes')}: "
                            "refine trains each entrant in one process on one device; give the race more devices "
                            "with --workers=N (one GPU each; --trainer.accumulate_grad_batches keeps the recipe's "
                            "global batch) and --trainer.devices=1")
        self.recipe_epochs = int(recipe["trainer"].get("max_epochs") or 0)
        if self.recipe_epochs < 1:
            raise UserError(f"--recipe={cfg['recipe']}: its trainer.max_epochs ({recipe['trainer'].get('max_epochs')}) "
                            "must be a number of epochs: it is the unit of the race's cost and budget")
        self.budget = budget_epochs(cfg["budget"], self.recipe_epochs)
        try:
            self.plan = rung_plan(len(self.entrants), cfg["eta"], cfg["min_epochs"], self.budget)
        except ValueError as e:
            raise UserError(f"--budget={cfg['budget']}: {e}; raise --budget or lower --top_k / --min_epochs") from None
        self.schedule = schedule_epochs(self.plan)
        self.recipe = race_recipe(recipe, cfg["holdout"], cfg["seed"])
        smallest = min(self.entrants, key=lambda e: (e.params_m, e.flops_m)).spec
        check = json.loads(json.dumps(self.recipe))
        check["arch"] = smallest.to_dict()
        resolve_machine_settings(check)
        try:   # the recipe's data and settings, and the selection split, before any training
            dm = ClassificationTask().build(check, smallest, "the race's smallest entrant").datamodule
        except DataError as e:
            raise UserError(str(e)) from None
        held = dm.holdout_indices
        self.split = split_record(held, len(dm.train_set) + len(held), self.recipe["data"]["holdout"],
                                  self.recipe["data"]["holdout_seed"])
        self.run_dir = Path(cfg["out_dir"]) / cfg["run_name"]
        self.log = self.run_dir / RESULTS_NAME
        self.sizes = [(e.params_m, e.flops_m) for e in self.entrants]

    def state(self, done: dict[str, dict[str, Any]]):
        from pipeline.refine.race import race_state

        return race_state(self.plan, self.sizes, done, self.cfg["tie_se"])

    def checkpoint(self, candidate: int, rung: int) -> Path:
        from pipeline.groundtruth.sampling import arch_id

        return self.run_dir / "trainings" / f"entrant{candidate}-{arch_id(self.entrants[candidate].spec)}" / \
            f"rung{rung}.ckpt"

    def check_folder(self, done: dict[str, dict[str, Any]]) -> None:
        """A folder that holds trainings is continued only by the race that wrote them."""
        import yaml

        saved = self.run_dir / "config.yaml"
        if not done:
            return
        old = yaml.safe_load(saved.read_text()) if saved.is_file() else {}
        changed = [k for k in PLAN_KEYS if (old or {}).get(k) != self.cfg.get(k)]
        shortlist_file = self.run_dir / "shortlist.json"
        if shortlist_file.is_file() and json.loads(shortlist_file.read_text()) != [e.to_dict() for e in self.entrants]:
            changed.append("shortlist (the search folder changed)")
        if changed:
            raise UserError(f"{self.log} holds trainings of a race with other {', '.join(changed)}; continuing would "
                            "mix them. Use another --run_name (or the old settings)")

    def record(self) -> None:
        """config.yaml, shortlist.json, selection_split.json: what the race is, written before its first training."""
        from pipeline.config import save_config
        from pipeline.utils.io import atomic_write_text

        save_config(self.cfg, self.run_dir / "config.yaml")
        atomic_write_text(self.run_dir / "shortlist.json", json.dumps([e.to_dict() for e in self.entrants], indent=1))
        atomic_write_text(self.run_dir / "selection_split.json", json.dumps(self.split))


# ------------------------------------------------------------------------------ the loop
def work(race: Race, claims, worker: str, progress=None, on_state=None) -> int:
    """Train (entrant, rung) items until the race has a winner; returns how many this worker trained."""
    from pipeline.refine.race import append_line, item_key, read_log, train_entrant

    trained, current = 0, None
    try:
        while True:
            with claims.lock():
                done = read_log(race.log)
                state = race.state(done)
                free = None
                rung = state.current
                if rung is not None:
                    free = next((c for c in rung.todo if claims.holder(item_key(c, rung.rung.number)) is None), None)
                    if free is not None:
                        current = item_key(free, rung.rung.number)
                        claims.take(current)
            if on_state is not None:
                on_state(state, done)
            if rung is None:
                return trained
            if free is None:   # the rung's other trainings are someone else's: wait for its decision
                if progress is not None:
                    progress(f"rung {rung.rung.number}: waiting for {len(rung.todo)} training(s) of other workers", 0)
                time.sleep(min(POLL_S, claims.lease_s / 4))
                continue
            spec, number = race.entrants[free].spec, rung.rung.number
            if progress is not None:
                progress(f"rung {number}/{len(race.plan)}: entrant {free} {spec.short()}", 0)
            previous = race.checkpoint(free, number - 1) if number > 1 else None
            with claims.heartbeat(current):
                try:
                    if previous is not None and not previous.is_file():
                        raise FloatingPointError(f"no checkpoint of rung {number - 1} ({previous})")
                    result = train_entrant(race.recipe, spec, schedule=race.schedule, until=rung.rung.epochs,
                                           resume=previous, save=race.checkpoint(free, number),
                                           tick=(lambda: progress(None, 1)) if progress is not None else None)
                except FloatingPointError as e:   # a diverged network is a result (it goes no further)
                    result = {"top1": 0.0, "n_images": 1, "epochs": rung.rung.epochs, "wall_s": 0.0, "error": str(e)}
            row = {"candidate": free, "rung": number, "arch": spec.short(), **result, "worker": worker,
                   "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
            with claims.lock():
                if current not in read_log(race.log):
                    append_line(race.log, row)
                claims.release(current)
            current, trained = None, trained + 1
            if progress is not None:   # its epochs now count through the log
                progress(f"rung {number}/{len(race.plan)}: entrant {free} done ({result['top1']:.2f}%)", 0)
    except BaseException:
        if current is not None:
            claims.release(current)
        raise


def gpu_per_worker(workers: int) -> bool:
    """Whether each of ``workers`` processes gets a GPU of its own (this process the first): on a machine with at
    least that many visible GPUs, unless CUDA_VISIBLE_DEVICES already says which to use."""
    import torch

    return workers > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ and torch.cuda.device_count() >= workers


def start_workers(race: Race, n: int, threads: int, name: str, gpus: bool) -> list[tuple[subprocess.Popen, Path]]:
    """``n`` more worker processes on this machine: the same race from its saved config, W&B off, GPU i for
    worker i when ``gpus``, each with its output in ``workers/<name>-w<i>.log``."""
    logs = race.run_dir / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i in range(1, n + 1):
        log = logs / f"{name}-w{i}.log"
        argv = [sys.executable, "-m", "pipeline", "refine", "--config", str(race.run_dir / "config.yaml"),
                "--workers=1", f"--worker={name}-w{i}", f"--threads={threads}", "--wandb.mode=disabled"]
        env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": str(i)} if gpus else {})}
        with open(log, "ab") as out:
            procs.append((subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=Path.cwd(), env=env), log))
    return procs


def stop_workers(children: list[tuple[subprocess.Popen, Path]]) -> None:
    """End the worker processes this command started (a claim they held is freed: their pid is gone)."""
    for proc, _ in children:
        if proc.poll() is None:
            proc.terminate()
    for proc, _ in children:
        proc.wait()


# ----------------------------------------------------------------------------- the outputs
def write_outputs(race: Race, state, final: bool) -> list[Path]:
    """rungs.csv and refine.png (after every decided rung); arch.yaml and refine.json once there is a winner."""
    from pipeline.refine.plan import plan_cost
    from pipeline.refine.report import plot_race, rung_rows, write_csv
    from pipeline.utils.io import atomic_write_text

    d = race.run_dir
    rows = rung_rows(state, race.entrants)
    files = [write_csv(d / "rungs.csv", rows)]
    epochs = sum(r.rung.new_epochs * len(r.lines) for r in state.rungs)
    title = (f"refine: {len(race.entrants)} entrants, eta {race.cfg['eta']}, {epochs} of {plan_cost(race.plan)} "
             f"epochs trained ({epochs / race.recipe_epochs:.2f} full retrains)")
    files.append(plot_race(d / "refine.png", state, race.entrants, race.plan, title))
    if final and state.winner is not None:
        w = race.entrants[state.winner]
        files.append(w.spec.save(d / "arch.yaml"))
        summary = {"winner": {"entrant": state.winner, **w.to_dict()},
                   "entrants": [e.to_dict() for e in race.entrants],
                   "plan": [{"rung": r.number, "entrants": r.candidates, "epochs": r.epochs, "keep": r.keep}
                            for r in race.plan],
                   "epochs_trained": epochs, "full_retrains": round(epochs / race.recipe_epochs, 4),
                   "recipe_epochs": race.recipe_epochs, "schedule_epochs": race.schedule,
                   "wall_s": round(sum(float(line["wall_s"]) for line in state.lines()), 1),
                   "selection_split": {k: v for k, v in race.split.items() if k != "indices"},
                   "seed": race.cfg["seed"], "tie_se": race.cfg["tie_se"]}
        files.append(atomic_write_text(d / "refine.json", json.dumps(summary, indent=1)))
    return files


def _console():
    from rich.console import Console

    return Console(stderr=True) if sys.stderr.isatty() else Console(stderr=True, width=160)


def run(cfg: dict[str, Any]) -> int:
    import torch

    from pipeline.groundtruth.claims import Claims, default_worker
    from pipeline.refine.race import read_log
    from pipeline.refine.report import plan_lines

    race = Race(cfg)
    console = _console()
    for line in plan_lines(race.plan, race.recipe_epochs, cfg["budget"], len(race.entrants)):
        console.print(line, highlight=False)
    for i, e in enumerate(race.entrants):
        console.print(f"  entrant {i}: {e.spec.short()} ({e.params_m:.3f} M params, {e.flops_m:.1f} M FLOPs; "
                      f"{e.label()}{', search rank ' + str(e.search_rank) if e.search_rank else ''})", highlight=False)
    s = race.split
    console.print(f"selection split: {s['held_out']} of the {s['of']} training images (fraction {s['fraction']}, seed "
                  f"{s['seed']}, sha256 {s['sha256'][:12]}); the race trains on the other {s['trained_on']} and never "
                  "reads the validation set", highlight=False)
    threads = cfg["threads"] or (max(1, (os.cpu_count() or 1) // cfg["workers"]) if cfg["workers"] > 1 else None)
    if threads:
        torch.set_num_threads(threads)
    if cfg["candidate"] is not None:
        return agent(race, cfg["candidate"], console)
    race.run_dir.mkdir(parents=True, exist_ok=True)
    worker = cfg["worker"] or default_worker()
    claims = Claims(race.run_dir, worker, cfg["lease_s"])
    with claims.lock():
        done = read_log(race.log)
        race.check_folder(done)
        claims.prune(done)
        if not done:
            race.record()
    return _race(race, claims, worker, threads, console)


def _race(race: Race, claims, worker: str, threads: Optional[int], console) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from pipeline.refine.plan import plan_cost
    from pipeline.refine.race import read_log
    from pipeline.refine.report import log_result, log_rung
    from pipeline.tracking import wandb_logger

    cfg = race.cfg
    logger = wandb_logger(cfg, race.run_dir, job_type="refine", name=f"{cfg['run_name']}-{worker}")
    gpus = gpu_per_worker(cfg["workers"])
    children = start_workers(race, cfg["workers"] - 1, threads or 1, worker, gpus) if cfg["workers"] > 1 else []
    if gpus:   # this worker: the first GPU (CUDA is not initialised yet)
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    logged: set[int] = set()
    started = time.time()
    total = plan_cost(race.plan)
    own = {"ticks": 0}
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total:.0f} epochs"),
               TimeElapsedColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=console, speed_estimate_period=3600) as bar:
            task = bar.add_task("refine", total=total)

            def progress(description: Optional[str], advance: int) -> None:
                if description is not None:
                    own["ticks"] = 0
                    bar.update(task, description=description)
                own["ticks"] += advance
                bar.advance(task, advance)

            def on_state(state, done) -> None:
                epochs = sum(r.rung.new_epochs * len(r.lines) for r in state.rungs)
                bar.update(task, completed=epochs + own["ticks"])
                for r in state.rungs:
                    if r.complete and r.rung.number not in logged:
                        logged.add(r.rung.number)
                        write_outputs(race, state, final=False)
                        best = race.entrants[r.kept[0]]
                        bar.console.print(f"rung {r.rung.number} decided at {r.rung.epochs} epochs: "
                                          + ", ".join(f"#{c} {float(r.lines[c]['top1']):.2f}" for c in sorted(
                                              r.lines, key=lambda c: -float(r.lines[c]["top1"])))
                                          + f"; going on: {r.kept} (first: {best.spec.short()})", highlight=False)
                        if logger:
                            log_rung(logger, r, race.entrants)

            mine = work(race, claims, worker, progress, on_state)
            bar.update(task, description="done", completed=total)
    except KeyboardInterrupt:
        stop_workers(children)
        console.print(f"interrupted; finished trainings are in {race.log}. Rerun the same command to continue.")
        return 130
    except BaseException:
        stop_workers(children)
        raise
    for proc, _ in children:   # the race is decided: they are done, or finishing their last training
        proc.wait()
    failed = [(p, log) for p, log in children if p.returncode != 0]
    if failed:
        console.print(f"{len(failed)} worker process(es) failed; see {', '.join(str(log) for _, log in failed)}")
    with claims.lock():
        state = race.state(read_log(race.log))
    files = write_outputs(race, state, final=True)
    w = race.entrants[state.winner]
    epochs = sum(r.rung.new_epochs * len(r.lines) for r in state.rungs)
    lines = [f"winner: entrant {state.winner} {w.spec.short()} ({w.params_m:.3f} M params, {w.flops_m:.1f} M FLOPs; "
             f"{w.label()})",
             f"race: {epochs} epochs trained = {epochs / race.recipe_epochs:.2f} full retrains; {mine} training(s) by "
             f"this worker in {(time.time() - started) / 60:.1f} min",
             f"outputs: {race.run_dir / 'arch.yaml'}, rungs.csv, refine.png, refine.json",
             f"next: python -m pipeline train --task cls --arch {race.run_dir / 'arch.yaml'}"]
    print("\n".join(lines))
    if logger:
        logger.log_table("refine/rungs", columns=list(_csv_header()), data=_csv_data(race.run_dir / "rungs.csv"))
        log_result(logger, race.run_dir, files)
        logger.experiment.finish()
    return 1 if failed else 0


def _csv_header() -> Sequence[str]:
    from pipeline.refine.report import CSV_COLUMNS

    return CSV_COLUMNS


def _csv_data(path: Path) -> list[list[str]]:
    import csv

    with path.open(newline="") as f:
        return [row for row in csv.reader(f)][1:]


# ------------------------------------------------------------------------- a sweep agent
def agent(race: Race, index: int, console) -> int:
    """One entrant trained through the whole schedule, the selection split scored and logged every epoch: a
    W&B sweep agent's run (configs/sweeps/refine_demo.yaml), which the sweep's hyperband may stop early."""
    from pipeline.refine.race import train_entrant
    from pipeline.tracking import wandb_logger
    from pipeline.utils.io import atomic_write_text

    if index >= len(race.entrants):
        raise UserError(f"--candidate={index}: the race has entrants 0-{len(race.entrants) - 1}")
    race.run_dir.mkdir(parents=True, exist_ok=True)
    race.record()
    e = race.entrants[index]
    logger = wandb_logger(race.cfg, race.run_dir, job_type="refine-agent")
    if logger:
        logger.experiment.config.update({"entrant": e.to_dict()}, allow_val_change=True)
    history: list = []
    console.print(f"sweep agent: entrant {index} {e.spec.short()} ({e.label()}), {race.schedule} epochs, the "
                  "selection split scored every epoch (refine/selection_top1)", highlight=False)
    result = train_entrant(race.recipe, e.spec, schedule=race.schedule, until=race.schedule, resume=None, save=None,
                           logger=logger or False, history=history)
    atomic_write_text(race.run_dir / "entrant.json", json.dumps(
        {"entrant": index, **e.to_dict(), **result, "selection_top1_by_epoch": history}, indent=1))
    print(f"entrant {index} {e.spec.short()}: selection top-1 {result['top1']:.2f}% after {result['epochs']} epochs")
    if logger:
        logger.experiment.finish()
    return 0


def main(argv: Sequence[str]) -> int:
    return run(parse_config(argv))
