"""The groundtruth command's options: typed, parsed by jsonargparse, free of torch imports.

A mistyped key, an unknown space, an empty limits window, ``--num_archs=0``, a malformed
``--shard`` or a bad seed list is refused in a fraction of a second, before anything is sampled
or trained. What needs torch or the space (limits that no architecture meets, the recipe's own
keys, an existing results file) is checked by the command, still before the first training.
"""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt

from pipeline.config import (command_parser, CONFIG_DIR, ConfigError, add_wandb_arguments, as_plain, check_run_name, expand_run_name,
                             parse, shipped_configs)
from pipeline.search.settings import LimitSettings, check_limit_window, check_space

DEFAULT_CONFIG = CONFIG_DIR / "groundtruth" / "demo.yaml"
RESULTS_NAME = "groundtruth.jsonl"
# Settings whose change would mix incomparable lines into one file (checked before resuming).
PLAN_KEYS = ("space", "limits", "num_archs", "bands", "sample_seed", "seeds", "seed_subset", "recipe", "train_args")


def make_parser():
    """The command's typed options; ``--help`` prints them with types and defaults."""
    parser = command_parser(
        "groundtruth",
        "Build ground truth for your own task: sample architectures of a space (stratified across "
        "params bands, seeded, within the limits), retrain each with the classification recipe of "
        "`train --task cls` on a short schedule, and append one JSON line per (architecture, seed) to "
        f"<out_dir>/<run_name>/{RESULTS_NAME}, the format `correlate --ground_truth=FILE` reads. "
        "Rerun the same command to continue after an interruption; start the same command in several "
        "processes or machines sharing the folder (or as W&B sweep agents) to share the work. Shipped "
        f"configs (--config NAME): {', '.join(shipped_configs('groundtruth'))}; default: demo.")
    parser.add_argument("--run_name", type=str, default="groundtruth-demo",
                        help=f"outputs go to <out_dir>/<run_name>/ ({RESULTS_NAME}, claims/, config.yaml)")
    parser.add_argument("--out_dir", type=str, default="checkpoints", help="the folder of all runs")
    parser.add_argument("--space", type=str, default="demo", help="a preset of configs/spaces/ or a space YAML")
    parser.add_argument("--limits", type=LimitSettings, default=LimitSettings())
    parser.add_argument("--num_archs", type=PositiveInt, default=48, help="architectures to sample and train")
    parser.add_argument("--bands", type=PositiveInt, default=4,
                        help="params bands the sample is stratified over (equal numbers per band)")
    parser.add_argument("--sample_seed", type=int, default=0, help="seeds the sample: same settings, same architectures")
    parser.add_argument("--seeds", type=list[int], default=[0, 1],
                        help="training seeds; the first for every architecture, the others for the first seed_subset")
    parser.add_argument("--seed_subset", type=NonNegativeInt, default=12,
                        help="architectures (the sample's first, spread over every band) also trained with the "
                             "other seeds: the file's own noise ceiling")
    parser.add_argument("--recipe", type=str, default="configs/train/cls_demo.yaml",
                        help="the classification training config each architecture is trained with")
    parser.add_argument("--train_args", type=list[str], default=[],
                        help="overrides of the recipe, as train's options, e.g. [--trainer.max_epochs=6]")
    parser.add_argument("--shard", type=Optional[str], default=None,
                        help="i/n: this worker takes only every n-th item starting at i (optional; workers sharing "
                             "the folder split the work by claims anyway)")
    parser.add_argument("--worker", type=Optional[str], default=None, help="this worker's name (default: host-pid)")
    parser.add_argument("--lease_s", type=PositiveFloat, default=900.0,
                        help="a claim whose worker stopped renewing it for this long is taken over by another worker")
    parser.add_argument("--threads", type=Optional[PositiveInt], default=None,
                        help="CPU threads for torch (null = torch's default; 1 per worker when several share a CPU)")
    add_wandb_arguments(parser)
    return parser


def parse_shard(value: Optional[str]) -> Optional[tuple[int, int]]:
    """``i/n`` -> (i, n) with 0 <= i < n; None for no shard."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(value))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ConfigError(f"--shard={value!r}: expected i/n with 0 <= i < n, e.g. --shard=0/4 (or no --shard)")
    return int(m.group(1)), int(m.group(2))


SPACE_LIMITS = ("min_params", "max_params", "min_flops", "max_flops")   # what sampling can honour


def parse_config(argv: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved, checked groundtruth config (the shipped demo config when no --config)."""
    parser = make_parser()
    cfg = expand_run_name(as_plain(parser, parse(parser, argv, "groundtruth", DEFAULT_CONFIG)))
    check_run_name(cfg["run_name"])
    check_limit_window(cfg["limits"])
    device = [k for k, v in cfg["limits"].items() if k not in SPACE_LIMITS and v is not None]
    if device:
        raise ConfigError(f"--limits.{device[0]}: groundtruth samples within params/FLOPs limits only (a latency "
                          "or memory limit belongs to `search --latency.*`); drop it")
    cfg["limits"] = {k: v for k, v in cfg["limits"].items() if k in SPACE_LIMITS}
    check_space(cfg["space"])
    parse_shard(cfg["shard"])
    seeds = cfg["seeds"]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds={seeds}: give one or more distinct training seeds, e.g. [0, 1]")
    if cfg["seed_subset"] > cfg["num_archs"]:
        raise ConfigError(f"--seed_subset={cfg['seed_subset']} is more than --num_archs={cfg['num_archs']}")
    return cfg
