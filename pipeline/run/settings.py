"""The run command's options: its own keys plus each stage's whole parser nested under its name.

``--search.*`` is the search command's parser, ``--refine.*`` the refine command's, and ``--cls.*`` /
``--seg.*`` the ``train`` parser of that task, nested with jsonargparse's ``ActionParser``: ``--cls.trainer.max_epochs=5`` is then
a typed, checked key exactly as ``train --trainer.max_epochs=5`` is, a typo is refused before the
first stage starts, and the saved ``config.yaml`` alone reproduces the run. In a run config a
stage is a config file of that command (a path relative to the run config) or a mapping.
"""
from __future__ import annotations

from typing import Any, Literal, Optional, Sequence

from pipeline.distributed import under_launcher
from pipeline.config import (command_parser, CONFIG_DIR, ConfigError, add_wandb_arguments, as_plain, check_run_name,
                             expand_run_name, parse, shipped_configs)

DEFAULT_CONFIG = CONFIG_DIR / "run" / "demo.yaml"
STAGES = ("search", "refine", "cls", "seg")   # the order stages run in
DEFAULT_STAGES = ("search", "cls", "seg")     # refine runs when --stages or the run config names it
Stage = Literal["search", "refine", "cls", "seg"]


def stage_parser(stage: str):
    """The parser of the command that runs ``stage``: ``search``, ``refine``, or ``train --task cls|seg``."""
    if stage == "search":
        from pipeline.search.settings import make_parser

        return make_parser()
    if stage == "refine":
        from pipeline.refine.settings import make_parser

        return make_parser()
    from pipeline.train.cli import make_parser

    return make_parser(stage)   # long options only: ActionParser prefixes those (--cls.config, ...)


def make_parser():
    """The run's options; ``--help`` lists every stage's keys with types and defaults."""
    from jsonargparse import ActionParser

    parser = command_parser(
        "run",
        "Search, then retrain the chosen architecture for classification, then for segmentation; "
        "each stage reads the previous stage's outputs from <out_dir>/<run_name>/. With no options: "
        "the embedded demo data on the CPU (about 20 minutes on 2 cores). Outputs in "
        "<out_dir>/<run_name>/: search/, cls/, seg/, stages/ (the config each stage ran with; "
        "<stage>.done.json once finished), config.yaml, report.md. Rerunning the same command skips "
        "finished stages and continues an interrupted one. Shipped configs (--config NAME): "
        f"{', '.join(shipped_configs('run'))}; default: demo.")
    parser.add_argument("--run_name", type=str, default="run", help="outputs go to <out_dir>/<run_name>/")
    parser.add_argument("--out_dir", type=str, default="checkpoints", help="the folder of all runs")
    parser.add_argument("--stages", type=list[Stage], default=list(DEFAULT_STAGES),
                        help="the stages to run, a subset of [search, refine, cls, seg]; always run in that order, "
                             "finished ones skipped. refine (a short training race among the search's best and "
                             "the largest networks that fit, docs/refine.md) runs only when named here")
    parser.add_argument("--search", action=ActionParser(parser=stage_parser("search")),
                        help="the search stage: a search config (path relative to the run config) or its keys")
    parser.add_argument("--refine", action=ActionParser(parser=stage_parser("refine")),
                        help="the refine stage (when --stages names it): a refine config or its keys; it races the "
                             "search stage's candidates with the cls stage's recipe and data")
    for stage in ("cls", "seg"):
        parser.add_argument(f"--{stage}", action=ActionParser(parser=stage_parser(stage)),
                            help=f"the {stage} training stage: a train config or its keys")
    parser.add_argument("--ground_truth", type=Optional[str], default=None,
                        help="a ground-truth file of the search's space (e.g. written by `pipeline groundtruth`): "
                             "report.md then says where the search's pick stands against the best and the largest "
                             "networks of that file that fit the search's limits")
    parser.add_argument("--ground_truth_metric", type=Optional[str], default=None,
                        help="the file's metric column for that comparison (null = its first)")
    add_wandb_arguments(parser)
    return parser


def parse_config(argv: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved run config: every stage's config complete, typed and checked."""
    if under_launcher():   # every rank would start its own stages and write the same files
        raise ConfigError("`python -m pipeline run` starts its stages itself; run it once, not under torchrun/"
                          "srun, and give the stages devices instead: --search.trainer.devices=N "
                          "--cls.trainer.devices=N --seg.trainer.devices=N (with --<stage>.trainer.strategy=ddp)")
    for arg in argv:  # one W&B setting for the whole run: a stage's own would be silently replaced
        stage, dot, rest = arg.split("=", 1)[0].partition(".wandb")
        if dot and stage[2:] in STAGES:
            raise ConfigError(f"{stage}{dot}{rest}: the run's --wandb.* applies to every stage; "
                              f"set --wandb{rest} instead")
    parser = make_parser()
    cfg = expand_run_name(as_plain(parser, parse(parser, argv, "run", DEFAULT_CONFIG)))
    check_run_name(cfg["run_name"])
    if not cfg["stages"]:
        raise ConfigError("--stages: name at least one of [search, refine, cls, seg], e.g. --stages=[search,cls]")
    cfg["stages"] = [s for s in STAGES if s in cfg["stages"]]
    if "refine" in cfg["stages"]:   # top_k, eta, a budget in epochs: refused now, not after the search
        from pipeline.refine.settings import check_settings

        check_settings(cfg["refine"])
    if cfg["ground_truth"]:
        from pipeline.correlate.settings import metric_columns, resolve_input

        path = resolve_input(cfg["ground_truth"], "--ground_truth:")
        cfg["ground_truth"] = str(path)
        present = metric_columns(path) or []
        if cfg["ground_truth_metric"] and cfg["ground_truth_metric"] not in present:
            raise ConfigError(f"--ground_truth_metric={cfg['ground_truth_metric']} is not a metric of {path}; "
                              f"it has: {', '.join(present) or 'none'}")
    if "search" in cfg["stages"]:   # e.g. a latency backend that is not installed: refused now, not at the stage
        from pipeline.latency.settings import check_latency_settings

        check_latency_settings(cfg["search"])
    from pipeline.train.cli import number_of_devices

    for stage in ("cls", "seg"):
        number_of_devices(cfg[stage])
    return cfg
