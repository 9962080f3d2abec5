"""The search's options: typed dataclasses that jsonargparse turns into ``--section.key`` options.

Kept free of torch and Lightning imports, so a mistyped option is refused in a fraction of a
second, before the search imports anything heavy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Sequence

from jsonargparse.typing import ClosedUnitInterval, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

from pipeline.config import (command_parser, CONFIG_DIR, ConfigError, DeviceSettings, add_wandb_arguments, as_plain, check_run_name,
                             expand_run_name, parse, shipped_configs, space_file, unknown_space)
from pipeline.latency.settings import LatencySettings, check_latency_settings

DEFAULT_CONFIG = CONFIG_DIR / "search" / "demo.yaml"


@dataclass
class ProxySettings:
    """The training-free proxy that scores candidates.

    Args:
        name: a registered proxy; vintk_size (log FLOPs + 0.5 x the per-block ViNTK kernel shape) is the
            default: among the ViNTK forms that agree with size on every space preset, the lowest mean
            regret on the tune halves of three dev files (docs/proxies.md); naswot and vintk_flops were
            the previous defaults, vintk is the ViNTK reconstruction.
        init_seed: seeds every candidate's initialisation.
        options: overrides of the proxy's defaults, e.g. {statistic: cond, views: [identity]} for vintk;
            names the proxy does not take are refused.
    """

    name: str = "vintk_size"
    init_seed: int = 0
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeSettings:
    """The probe batch every candidate is scored on.

    Args:
        source: photos (shipped natural photos), demo (Fashion-MNIST) or folder (root/train/<class>/*).
        root: the ImageNet-style dataset root for source=folder.
        n: probe images (each ViNTK view adds this many samples).
        image_size: null = the space's image size.
        seed: which images are drawn.
    """

    source: Literal["photos", "demo", "folder"] = "photos"
    root: Optional[str] = None
    n: PositiveInt = 8
    image_size: Optional[PositiveInt] = None
    seed: int = 0


@dataclass
class EvolutionSettings:
    """AutoFormer's evolutionary schedule: population x generations candidates.

    Args:
        population: candidates per generation.
        generations: generations.
        parents: the best candidates so far that mutate and cross over.
        mutations: mutated children per generation.
        crossovers: crossed-over children per generation.
        layer_prob: probability of mutating each per-layer choice.
        global_prob: probability of mutating each global choice (depth, width).
        max_tries: draws for a new child within the limits before a generation gives up on it.
    """

    population: PositiveInt = 50
    generations: PositiveInt = 20
    parents: PositiveInt = 10
    mutations: NonNegativeInt = 25
    crossovers: NonNegativeInt = 25
    layer_prob: ClosedUnitInterval = 0.2
    global_prob: ClosedUnitInterval = 0.4
    max_tries: PositiveInt = 100


@dataclass
class RandomSettings:
    """TF-TAS-style random sampling.

    Args:
        samples: architectures drawn within the limits and scored.
    """

    samples: PositiveInt = 1000


@dataclass
class StrategySettings:
    """How candidates are proposed.

    Args:
        name: evolution or random; the section of that name holds its settings.
        evolution: the evolution's settings.
        random: random sampling's settings.
    """

    name: Literal["evolution", "random"] = "evolution"
    evolution: EvolutionSettings = field(default_factory=EvolutionSettings)
    random: RandomSettings = field(default_factory=RandomSettings)


@dataclass
class LimitSettings:
    """Inclusive params / FLOPs window in millions (FLOPs = multiply-adds), and the device's limits
    (on the --latency target); null = unbounded.

    Args:
        min_params: smallest parameter count (millions).
        max_params: largest parameter count (millions).
        min_flops: fewest multiply-adds per image (millions).
        max_flops: most multiply-adds per image (millions).
        max_latency_ms: most milliseconds per forward of a batch on the --latency target.
        max_memory_mb: most peak inference memory (MB: weights, input, live activations) there.
    """

    min_params: Optional[NonNegativeFloat] = None
    max_params: Optional[NonNegativeFloat] = None
    min_flops: Optional[NonNegativeFloat] = None
    max_flops: Optional[NonNegativeFloat] = None
    max_latency_ms: Optional[PositiveFloat] = None
    max_memory_mb: Optional[PositiveFloat] = None


def make_parser():
    """The search's typed options; ``--help`` prints them with types and defaults."""
    parser = command_parser(
        "search",
        "Score candidate ViTs of a search space at initialisation with a training-free proxy "
        "(vintk_size by default: ViNTK, size-led), under params/FLOPs limits, with an evolutionary or random "
        "strategy, optionally under latency / peak-memory limits measured on a device (--latency.*), "
        "and write the chosen architecture to <out_dir>/<run_name>/arch.yaml (what "
        "`train` reads). Rerunning the same command continues an interrupted search. Outputs: "
        "arch.yaml, candidates.jsonl (the resume log), candidates.csv, state.json, config.yaml, "
        "pareto.png, convergence.png (with a latency limit or objective: the pick's latency in arch.yaml, "
        "latency_predictor.json, and front/ for --objective=pareto; docs/latency.md). Every option can be "
        "given as --section.key=value. Shipped "
        f"configs (--config NAME): {', '.join(shipped_configs('search'))}; default: demo. "
        "Proxies: docs/proxies.md.")
    parser.add_argument("--run_name", type=str, default="search", help="outputs go to <out_dir>/<run_name>/")
    parser.add_argument("--out_dir", type=str, default="checkpoints", help="the folder of all runs")
    parser.add_argument("--seed", type=int, default=0, help="seeds the strategy: same config + seed = same pick")
    parser.add_argument("--space", type=str, default="demo", help="a preset of configs/spaces/ or a space YAML")
    parser.add_argument("--limits", type=LimitSettings, default=LimitSettings())
    parser.add_argument("--objective", type=Literal["score", "pareto"], default="score",
                        help="score: the best proxy score within the limits; pareto: trade score against latency "
                             "on the --latency target (the front's knee is picked, every front member written)")
    parser.add_argument("--latency", type=LatencySettings, default=LatencySettings())
    parser.add_argument("--proxy", type=ProxySettings, default=ProxySettings())
    parser.add_argument("--probe", type=ProbeSettings, default=ProbeSettings())
    parser.add_argument("--strategy", type=StrategySettings, default=StrategySettings())
    parser.add_argument("--trainer", type=DeviceSettings, default=DeviceSettings(),
                        help="the devices the candidates are scored on (ranks split every generation)")
    add_wandb_arguments(parser)
    return parser


def parse_config(argv: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved search config from argv: typed, the shipped demo config when no --config."""
    parser = make_parser()
    cfg = expand_run_name(as_plain(parser, parse(parser, argv, "search", DEFAULT_CONFIG)))
    check_run_name(cfg["run_name"])
    check_limit_window(cfg["limits"])
    check_space_and_probe(cfg)
    check_latency_settings(cfg)
    return cfg


def check_space_and_probe(cfg: dict[str, Any]) -> None:
    """The space names a preset or a file (as ``SearchSpace.load`` resolves it) and a folder probe
    has its root: refused here, before torch loads, rather than after."""
    check_space(cfg["space"])
    if cfg["probe"]["source"] == "folder" and not cfg["probe"].get("root"):
        raise ConfigError("probe.source=folder needs --probe.root=/path/to/dataset (root/train/<class>/*)")


def check_space(space: Any) -> None:
    """``--space`` names a preset or a space YAML file (as ``SearchSpace.load`` resolves it)."""
    if space_file(str(space)) is None:
        raise ConfigError(f"--space: {unknown_space(str(space))}")


def check_limit_window(limits: dict[str, Any]) -> None:
    """An empty window (min above max) is refused here, before the space is built; whether a
    window meets the space is checked later (``SearchSpace.check_limits``)."""
    for what in ("params", "flops"):
        lo, hi = limits.get(f"min_{what}"), limits.get(f"max_{what}")
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"--limits.min_{what}={lo} is larger than --limits.max_{what}={hi}: "
                              "no network fits")
