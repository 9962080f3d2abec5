"""The refine command's options: typed, parsed by jsonargparse, free of torch imports.

A race that cannot be run is refused in a fraction of a second, before anything is trained: fewer
than two entrants (``top_k``), no halving (``eta`` below 2), a budget below one rung, a search
folder without candidates. What needs the recipe (a budget in full retrains, the recipe's own keys
and data) is checked by the command, still before the first training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Union

from jsonargparse.typing import NonNegativeFloat, NonNegativeInt, OpenUnitInterval, PositiveFloat, PositiveInt, \
    restricted_string_type

from pipeline.config import (CONFIG_DIR, ConfigError, add_wandb_arguments, as_plain, check_run_name, expand_run_name,
                             parse, shipped_configs)

DEFAULT_CONFIG = CONFIG_DIR / "refine" / "demo.yaml"
RESULTS_NAME = "results.jsonl"
# Settings whose change would mix incomparable trainings into one race (checked before continuing one).
PLAN_KEYS = ("top_k", "distinct", "eta", "min_epochs", "budget", "holdout", "tie_se", "seed", "recipe", "train_args")

RetrainMultiple = restricted_string_type("RetrainMultiple", r"^\s*\d+(\.\d+)?\s*x\s*$")


@dataclass
class HoldoutSettings:
    """The selection split: training images the race ranks on and never trains on.

    Args:
        fraction: share of every class's training images held out (class-stratified).
        seed: which images; null = the race's seed.
    """

    fraction: OpenUnitInterval = 0.2
    seed: Optional[int] = None


def make_parser():
    """The command's typed options; ``--help`` prints them with types and defaults."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(
        prog="python -m pipeline refine", exit_on_error=False,
        description="Race the search's best candidates and the largest networks that fit by a short, budgeted "
                    "training on your data (successive halving with the classification recipe of `train --task "
                    "cls`), ranked on training images held out of training (the validation set is never looked "
                    "at), and write the winner to <out_dir>/<run_name>/arch.yaml (what `train` and `run` read). "
                    "Outputs: arch.yaml, rungs.csv (every candidate x rung), refine.png (the race), refine.json, "
                    "selection_split.json, results.jsonl (the resume log), trainings/ (checkpoints), config.yaml. "
                    "The plan and its cost are printed before the first training. Rerun the same command to "
                    "continue after an interruption; --workers N (or the same command in more terminals or machines "
                    "sharing the folder) shares the race. Shipped configs (--config NAME): "
                    f"{', '.join(shipped_configs('refine'))}; default: demo. How it works: docs/refine.md.")
    parser.add_argument("--config", action=ActionConfigFile, help="a refine config file or a shipped config's name")
    parser.add_argument("--run_name", type=str, default="refine-demo",
                        help="outputs go to <out_dir>/<run_name>/; rerunning continues the race")
    parser.add_argument("--out_dir", type=str, default="checkpoints", help="the folder of all runs")
    parser.add_argument("--search_dir", type=str, default="checkpoints/search-demo",
                        help="a search's output folder (candidates.jsonl, config.yaml): its candidates, space and limits")
    parser.add_argument("--top_k", type=int, default=8,
                        help="entrants: the search's best distinct candidates plus the largest networks that fit by "
                             "params and by FLOPs (at least 2)")
    parser.add_argument("--distinct", type=Literal["size", "spec"], default="size",
                        help="size: at most one entrant per (params, FLOPs), the search's best of that size (networks "
                             "only the proxy tells apart are not raced against each other); spec: every distinct "
                             "architecture")
    parser.add_argument("--eta", type=int, default=2,
                        help="each rung keeps the best 1/eta and trains them eta times longer (at least 2)")
    parser.add_argument("--min_epochs", type=PositiveInt, default=7, help="epochs of every entrant in rung 1")
    parser.add_argument("--budget", type=Optional[Union[PositiveInt, RetrainMultiple]], default="3x",
                        help="the most epochs (of one candidate) the race may train in all, or Nx for N full "
                             "retrains of the recipe; rungs beyond it are dropped; null = the whole race")
    parser.add_argument("--holdout", type=HoldoutSettings, default=HoldoutSettings())
    parser.add_argument("--tie_se", type=NonNegativeFloat, default=1.0,
                        help="the winner: the smallest entrant within this many standard errors of the last "
                             "rung's best (on the selection split); 0 = the most accurate. Rungs that keep several "
                             "keep the most accurate")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds every entrant's training (initialisation, data order) and, unless "
                             "holdout.seed is set, the selection split")
    parser.add_argument("--recipe", type=str, default="configs/train/cls_demo.yaml",
                        help="the classification training config the race trains with (your data and recipe); its "
                             "trainer.max_epochs is one full retrain")
    parser.add_argument("--train_args", type=list[str], default=[],
                        help="overrides of the recipe, as train's options, e.g. [--data.batch_size=128]")
    parser.add_argument("--workers", type=PositiveInt, default=1,
                        help="training processes on this machine sharing the race (each takes the next training)")
    parser.add_argument("--worker", type=Optional[str], default=None, help="this worker's name (default: host-pid)")
    parser.add_argument("--lease_s", type=PositiveFloat, default=900.0,
                        help="a claim whose worker stopped renewing it for this long is taken over by another worker")
    parser.add_argument("--threads", type=Optional[PositiveInt], default=None,
                        help="CPU threads per worker (null = torch's default, or the cores split among --workers)")
    parser.add_argument("--candidate", type=Optional[NonNegativeInt], default=None,
                        help="W&B sweep agents (configs/sweeps/refine_demo.yaml): train only this entrant (0-based) "
                             "through the whole schedule, logging the selection metric every epoch")
    add_wandb_arguments(parser)
    return parser


def check_settings(cfg: dict[str, Any]) -> None:
    """The race the options describe can be run (torch-free; also for `run`'s refine stage)."""
    from pipeline.refine.plan import full_plan

    if cfg["top_k"] < 2:
        raise ConfigError(f"--top_k={cfg['top_k']}: a race needs at least 2 entrants; use --top_k=2 or more")
    if cfg["eta"] < 2:
        raise ConfigError(f"--eta={cfg['eta']}: each rung must keep at most half of its entrants; use --eta=2 or more")
    budget = cfg["budget"]
    first = full_plan(cfg["top_k"], cfg["eta"], cfg["min_epochs"])[0]
    if isinstance(budget, int) and budget < first.cost:
        raise ConfigError(f"--budget={budget} epochs is below one rung: rung 1 trains {first.candidates} entrants x "
                          f"{first.new_epochs} epochs = {first.cost} epochs; raise --budget or lower --top_k / "
                          "--min_epochs")


def parse_config(argv: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved, checked refine config (the shipped demo config when no --config)."""
    from pipeline.refine.shortlist import check_search_dir

    parser = make_parser()
    cfg = expand_run_name(as_plain(parser, parse(parser, argv, "refine", DEFAULT_CONFIG)))
    check_run_name(cfg["run_name"])
    check_settings(cfg)
    check_search_dir(cfg["search_dir"])
    return cfg
