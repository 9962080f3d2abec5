"""The options of ``python -m pipeline train --task cls|seg``: Lightning's ``LightningCLI``.

Sections as Lightning users know them: ``model`` (the LightningModule's typed constructor),
``data`` (the DataModule's), ``trainer`` (every ``lightning.Trainer`` argument, callbacks
included), ``seed_everything``, ``--config`` files that compose and ``--print_config``. Beside
them, the recipe sections (``optim``, and ``aug`` for classification or ``eval`` for
segmentation, typed dataclasses), where the architecture comes from (``arch``,
``default_arch``, ``resume``, ``backbone_ckpt``), the run folder and ``wandb``.

The module and DataModule are not built here: they need the architecture, which the training
runner resolves first (``pipeline.train.runner``); the constructor arguments it passes itself
(the spec, the classes, the batch size, the recipe sections) are not options.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Union

from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from pipeline.config import (CONFIG_DIR, TRAINER_DEFAULTS, ConfigError, add_wandb_arguments, as_plain,
                             check_run_name, expand_run_name, one_line, prepare_argv)

Task = Literal["cls", "seg"]
DEFAULT_CONFIGS = {"cls": CONFIG_DIR / "train" / "cls_demo.yaml", "seg": CONFIG_DIR / "train" / "seg_demo.yaml"}
# Constructor arguments the runner passes (from the spec, the data, the recipe sections).
INJECTED = {
    "cls": {"model": {"spec", "batch_size", "class_names", "init_seed", "epochs", "lr", "base_batch", "opt",
                      "weight_decay", "opt_eps", "betas", "momentum", "sched", "warmup_epochs", "warmup_lr",
                      "min_lr", "fused", "label_smoothing", "mixup", "cutmix", "mixup_prob", "switch_prob",
                      "mixup_mode"},
            "data": {"aug", "holdout", "holdout_seed", "validate_on"}},   # the selection split: refine's
    "seg": {"model": {"spec", "classes", "palette", "val_size", "crop_size", "optim", "evaluation", "trainer"},
            "data": {"seed"}},
}
DESCRIPTIONS = {
    "cls": "Retrain a chosen architecture for image classification (timm recipe + torchmetrics, in "
           "Lightning). With no options: the embedded Fashion-MNIST demo set on the CPU. Outputs in "
           "<out_dir>/<run_name>/: best.ckpt, last.ckpt, model.pt (spec + state_dict, the segmentation "
           "backbone), model.pt2 and model.onnx, metrics.json, arch.yaml, config.yaml, csv/, wandb/.",
    "seg": "Retrain a searched ViT/PiT for semantic segmentation: mmsegmentation's ViT-UPerNet driven by "
           "Lightning. With no options: the embedded demo scenes on the CPU. Outputs in "
           "<out_dir>/<run_name>/: best.ckpt, last.ckpt, model.pt2, metrics.json, val_examples.png, "
           "arch.yaml, config.yaml, csv/, wandb/.",
}


@dataclass
class DefaultArch:
    """Where the architecture comes from when none is given (the demo configs only).

    Args:
        space: take the newest <search_dir>/*/arch.yaml whose spec is in this space ...
        search_dir: ... under this folder; null = out_dir.
        fallback: ... else this spec file.
    """

    space: str = "demo"
    search_dir: Optional[str] = None
    fallback: Optional[str] = "configs/train/demo_default_arch.yaml"


def _classes(task: Task):
    if task == "cls":
        from pipeline.classification import ClassificationDataModule, ClassificationModule

        return ClassificationModule, ClassificationDataModule
    import pipeline.segmentation  # noqa: F401  (mmcv.ops stand-in and registrations before mmseg)
    from pipeline.segmentation.datamodule import SegDataModule
    from pipeline.segmentation.module import SegmentationModule

    return SegmentationModule, SegDataModule


def make_parser(task: Task) -> LightningArgumentParser:
    """The parser of ``train --task TASK``: what :class:`TrainCLI` parses, and what ``pipeline run``
    nests under ``--cls`` / ``--seg``.

    The sections LightningCLI would add (``--config``, ``--seed_everything``, ``trainer``,
    ``model``, ``data``) with its parser's public methods, the module's and DataModule's
    constructor arguments that the runner passes itself left out (``INJECTED``), and the recipe
    and run sections. ``--config`` has no ``-c`` (``prepare_argv`` reads ``-c FILE`` as ``--config``):
    nested parsers are prefixed on their long options only.
    """
    from jsonargparse import ActionConfigFile
    from lightning.pytorch import __version__ as lightning_version

    model_class, data_class = _classes(task)
    parser = LightningArgumentParser(prog=f"python -m pipeline train --task {task}", description=DESCRIPTIONS[task],
                                     exit_on_error=False, dump_header=[f"lightning.pytorch=={lightning_version}"])
    parser.add_argument("--config", action=ActionConfigFile, help="Path to a configuration file in json or yaml format.")
    parser.add_argument("--seed_everything", type=Union[bool, int], default=0,
                        help="seeds every random number generator (and the DataLoader workers) before the run; "
                             "true picks a random seed, false seeds nothing")
    parser.add_lightning_class_args(Trainer, "trainer")
    parser.set_defaults({f"trainer.{k}": v for k, v in TRAINER_DEFAULTS.items()})
    for key, cls in (("model", model_class), ("data", data_class)):
        parser.add_class_arguments(cls, key, skip=INJECTED[task][key], instantiate=False, fail_untyped=False,
                                   sub_configs=True)
    parser.add_argument("--run_name", type=str, default=f"{task}", help="outputs go to <out_dir>/<run_name>/")
    parser.add_argument("--out_dir", type=str, default="checkpoints", help="the folder of all runs")
    parser.add_argument("--arch", type=Optional[Union[str, dict[str, Any]]], default=None,
                        help="the architecture: an arch.yaml written by `python -m pipeline search`, or an "
                             "inline spec mapping; null = the resumed run's, else the --backbone_ckpt's "
                             "(seg), else default_arch")
    parser.add_argument("--default_arch", type=Optional[DefaultArch], default=None,
                        help="the architecture when none is given (demo configs); null = --arch is required")
    # `--resume` alone (as before) or `--resume=true|false` (as sweeps and `pipeline run` pass it)
    parser.add_argument("--resume", type=bool, nargs="?", const=True, default=False,
                        help="continue <out_dir>/<run_name>/last.ckpt")
    if task == "cls":
        from pipeline.classification.settings import Augmentation, Optimization

        parser.add_argument("--optim", type=Optimization, default=Optimization())
        parser.add_argument("--aug", type=Augmentation, default=Augmentation())
    else:
        from pipeline.segmentation.settings import SegEvaluation, SegOptimization

        parser.add_argument("--backbone_ckpt", "--backbone-ckpt", type=Optional[str], default=None,
                            help="initialise the backbone from a classification export (model.pt of "
                                 "`train --task cls`); its spec is the default architecture")
        parser.add_argument("--optim", type=SegOptimization, default=SegOptimization())
        parser.add_argument("--eval", type=SegEvaluation, default=SegEvaluation())
    add_wandb_arguments(parser)
    return parser


class TrainCLI(LightningCLI):
    """LightningCLI that parses ``args`` with :func:`make_parser`, seeds, and instantiates what the
    config names by class path (the trainer's callbacks), leaving the module and the data to the
    runner, which first resolves the architecture. Only LightningCLI's public hooks are overridden."""

    def __init__(self, task: Task, args: Sequence[str]) -> None:
        self.task = task
        model_class, data_class = _classes(task)
        super().__init__(model_class, data_class, save_config_callback=None, run=False, args=list(args),
                         auto_configure_optimizers=False, load_from_checkpoint_support=False,
                         seed_everything_default=0)

    def setup_parser(self, add_subcommands: bool, main_kwargs: dict[str, Any],
                     subparser_kwargs: dict[str, Any]) -> None:
        self.parser = make_parser(self.task)

    def parse_arguments(self, parser, args) -> None:
        self.config = parser.parse_args(args)   # args come from `python -m pipeline train`, not sys.argv

    def instantiate_classes(self) -> None:
        # Only what the config names by class path (trainer callbacks, plugins): the module and the
        # DataModule are built by the runner once the architecture is known.
        self.config_init = self.parser.instantiate_classes(self.config)


def parse_config(task: Task, argv: Sequence[str]) -> tuple[dict[str, Any], list]:
    """The resolved training config (plain data) and the callbacks the config asks for.

    ``task`` picks the shipped default config (``configs/train/{cls,seg}_demo.yaml``) when no
    ``--config`` is given. Bad input raises a one-line :class:`ConfigError`.
    """
    from jsonargparse import ArgumentError

    args = prepare_argv(argv, "train", DEFAULT_CONFIGS[task])
    try:
        cli = TrainCLI(task, args)
    except ArgumentError as e:
        raise ConfigError(one_line(e)) from None
    cfg = expand_run_name(as_plain(cli.parser, cli.config))
    check_run_name(cfg["run_name"])
    number_of_devices(cfg)
    callbacks = cli.config_init.trainer.get("callbacks") or []
    cfg["trainer"].pop("callbacks", None)
    return cfg, list(callbacks) if isinstance(callbacks, list) else [callbacks]


def number_of_devices(cfg: dict[str, Any]) -> dict[str, Any]:
    """``trainer.devices: "2"`` -> 2. Trainer types devices as list[int] | str | int, so jsonargparse
    reads "2" as the string first; the saved config (and a rerun's comparison with it) says the number."""
    devices = cfg["trainer"].get("devices")
    if isinstance(devices, str) and devices.isdigit():
        cfg["trainer"]["devices"] = int(devices)
    return cfg
