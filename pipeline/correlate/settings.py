"""The correlate command's options: a typed dataclass that jsonargparse turns into ``--key`` options.

Kept free of torch imports, so a mistyped option, a missing ground-truth file or a metric the file
does not have is refused in a fraction of a second. What needs the proxy registry (proxy names and
options), torch (the device) or the architectures themselves is checked by the runner, still
before any scoring and before the output folder is made.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, Union

from jsonargparse.typing import PositiveFloat, PositiveInt, restricted_number_type

from pipeline.config import command_parser, CONFIG_DIR, ConfigError, as_plain, parse, resolve_path, shipped_configs
from pipeline.search.settings import ProbeSettings

# A clone's root: relative input paths are also looked up there.
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = CONFIG_DIR / "correlate" / "default.yaml"
SPLIT_DIR = Path("configs") / "correlate" / "splits"  # committed halves, <ground-truth file stem>.json
ALL_PROXIES = ["vintk_size", "vintk_flops", "vintk", "ntk_cond", "ntk_trace", "ntk_fro", "lga", "dss", "naswot", "synflow",
               "grad_norm", "snip", "params", "flops", "mlp_units"]

Fraction = restricted_number_type("Fraction", float, [(">", 0), ("<=", 1)], join="and")
Names = Union[list[str], str]


@dataclass
class CorrelateSettings:
    """Score the architectures of a ground-truth file with training-free proxies.

    Args:
        ground_truth: a known benchmark's name (ood_vit_nas_tiny, ood_vit_nas_small,
            vitbench101_autoformer_tiny_kd: found in $PIPELINE_BENCHMARKS or ~/.cache/pipeline/benchmarks,
            then ../shared/benchmarks beside a clone, else downloaded once, SHA-256 checked) or a file:
            the OoD-ViT-NAS benchmark JSON or our JSON-lines format (pipeline/groundtruth.py); a
            relative path is looked up in the working directory, the shipped configs, then the
            repository root.
        space: search space of the benchmark format (JSON lines carry their own).
        metric: metric column(s) to rank against (larger = better): all, a name, a,b or [a, b].
        arch_overrides: spec fields set on every architecture, e.g. {global_pool: avg}.
        split: all, tune or test: a fixed half of the file (choose settings on tune, report on test);
            applied before limit.
        split_file: the halves; null = configs/correlate/splits/<ground-truth file stem>.json.
        proxies: proxies to evaluate: a list or a comma-separated string of registered names.
        proxy_options: per-proxy keyword options, e.g. {ntk_cond: {batch: 16}}.
        probe: the one fixed input batch every network is scored on.
        model_seed: seed of the network initialisation.
        limit: score only this many architectures (null = all), chosen by a shuffle with seed.
        seed: the shuffle of limit (a smaller limit with the same seed is a prefix).
        bands: equal-count parameter bands of the banded tau.
        top_fraction: the top-fraction precision's fraction: 0.1 = top 10%.
        budgets: params budgets (millions) of the regret table, e.g. [5.8, 6.2]; null = the budgets
            committed with the file's halves (budgets_m of its split file: the dev files have them),
            else the 25/50/75/100 % quantiles of the scored architectures' params.
        device: auto (cuda if available, else cpu), cpu, cuda, cuda:1, ...
        threads: CPU threads for torch (null = torch's default; 1 on a busy shared machine).
        output_dir: null = checkpoints/correlate/<ground-truth file stem>.
        fresh: discard scores.csv in output_dir and start over.
        retry_errors: recompute the pairs whose proxy raised an error last time.
        plots: write scatter_<proxy>.png per proxy.
    """

    ground_truth: str = "ood_vit_nas_tiny"
    space: str = "autoformer_tiny"
    metric: Names = "all"
    arch_overrides: dict[str, Any] = field(default_factory=dict)
    split: Literal["all", "tune", "test"] = "all"
    split_file: Optional[str] = None
    proxies: Names = field(default_factory=lambda: list(ALL_PROXIES))
    proxy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    model_seed: int = 0
    limit: Optional[PositiveInt] = None
    seed: int = 0
    bands: PositiveInt = 5
    top_fraction: Fraction = 0.1
    budgets: Optional[Union[list[PositiveFloat], PositiveFloat]] = None
    device: str = "auto"
    threads: Optional[PositiveInt] = None
    output_dir: Optional[str] = None
    fresh: bool = False
    retry_errors: bool = False
    plots: bool = True


def make_parser():
    """The correlate command's typed options; ``--help`` prints them with types and defaults."""
    parser = command_parser(
        "correlate",
        "Score the architectures of a ground-truth file with training-free proxies and report, per "
        "metric column and proxy, Kendall tau, Spearman rho, tau within parameter-count bands, "
        "top-10% precision, and the regret of the proxy's top pick under params budgets. Results go "
        "to output_dir: config.yaml, scores.csv (appended after every score; rerunning resumes and "
        "never recomputes a pair), summary.csv, summary.md, regret.csv, scatter_<proxy>.png. Shipped "
        f"configs (--config NAME): {', '.join(shipped_configs('correlate'))}; default: default.")
    parser.add_class_arguments(CorrelateSettings, as_group=False)
    return parser


def parse_config(argv: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved, checked correlate config: input paths absolute, name lists as lists."""
    parser = make_parser()
    cfg = as_plain(parser, parse(parser, argv, "correlate", DEFAULT_CONFIG))
    cfg["proxies"] = names(cfg["proxies"], "--proxies: name at least one proxy")
    cfg["metric"] = names(cfg["metric"], "--metric: name a metric column of the ground-truth file or pass "
                                         "--metric=all")
    if cfg["budgets"] is not None:
        budgets = cfg["budgets"] if isinstance(cfg["budgets"], list) else [cfg["budgets"]]
        if not budgets:
            raise ConfigError("--budgets: give positive parameter counts in millions, e.g. [5.8, 6.2], or null")
        cfg["budgets"] = sorted(set(budgets))
    if cfg["probe"]["source"] == "folder" and not cfg["probe"]["root"]:
        raise ConfigError("--probe.source=folder needs --probe.root=/path/to/dataset (root/train/<class>/*)")
    gt_path = ground_truth_file(cfg["ground_truth"])
    cfg["ground_truth"] = str(gt_path)
    check_metrics(cfg["metric"], gt_path)
    if cfg["split"] != "all":
        cfg["split_file"] = str(split_file(cfg["split"], cfg["split_file"], gt_path))
    return cfg


def names(value: Union[str, list[str]], empty: str) -> list[str]:
    """A list or a comma-separated string -> unique, stripped names (in order)."""
    items = value.split(",") if isinstance(value, str) else value
    out = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not out:
        raise ConfigError(empty)
    return out


def resolve_input(path: str | Path, what: str) -> Path:
    """A relative path is looked up in the current directory, then among the shipped configs
    (``configs/...``), then in the repository root."""
    p = Path(str(path)).expanduser()
    candidates = [p] if p.is_absolute() else list(dict.fromkeys(
        [Path.cwd() / p, resolve_path(p).absolute(), REPO_ROOT / p]))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise ConfigError(f"{what} {str(path)!r} does not exist (looked for {' and '.join(str(c) for c in candidates)})")


def ground_truth_file(value: str) -> Path:
    """``--ground_truth``: a known benchmark's name (:mod:`pipeline.benchmark_files`) or a file."""
    from pipeline.benchmark_files import BENCHMARKS, BenchmarkError, resolve_benchmark

    if value in BENCHMARKS:
        try:
            return resolve_benchmark(value)
        except BenchmarkError as e:
            raise ConfigError(f"--ground_truth: {e}") from None
    try:
        return resolve_input(value, "--ground_truth: the ground-truth file")
    except ConfigError as e:
        raise ConfigError(f"{e}; or name a known benchmark: {', '.join(BENCHMARKS)}") from None


def metric_columns(path: Path) -> Optional[list[str]]:
    """The metric columns of a ground-truth file, in file order, read without building any spec
    (None when the file is not readable this cheaply: loading it later gives the precise error).

    Mirrors the two formats of :func:`pipeline.groundtruth.load_ground_truth`: the benchmark
    JSON's ``performance.Imagenet.clean`` is ``top1``; JSON lines name theirs under ``metrics``.
    """
    text = path.read_text()
    stripped = text.strip()
    try:
        if stripped.startswith("{") and "\n{" not in stripped:
            data = json.loads(text)
            if isinstance(data, dict) and "arch" not in data:
                clean = any("clean" in ((v or {}).get("performance") or {}).get("Imagenet", {})
                            for v in data.values() if isinstance(v, dict))
                return ["top1"] if clean else []
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        return list(dict.fromkeys(m for row in rows for m in (row.get("metrics") or {})))
    except (ValueError, AttributeError, TypeError):
        return None


def check_metrics(metrics: list[str], gt_path: Path) -> None:
    """Every named metric is a column of the file (``all`` stands for every one)."""
    present = metric_columns(gt_path)
    if present is None:
        return
    missing = [] if metrics == ["all"] else [m for m in metrics if m not in present]
    if missing or not present:
        raise ConfigError(f"--metric: metric(s) {missing} not in {gt_path}; metrics present: {present or 'none'} "
                          "(--metric=all reports every one)")


def split_file(split: str, given: Optional[str], gt_path: Path) -> Path:
    """The split file for ``split: tune|test``: ``split_file`` or the committed one of this file."""
    name = given or SPLIT_DIR / f"{gt_path.stem}.json"
    try:
        return resolve_input(name, "--split_file:")
    except ConfigError:
        if given:
            raise
    raise ConfigError(f"--split: split={split} needs the fixed halves of {gt_path.name}, and there is no {name}; "
                      f"make them once with python -c \"from pipeline.groundtruth import write_split; "
                      f"write_split('{gt_path}', '{name}')\" (pipeline.groundtruth.make_split), commit that file, "
                      "or pass --split_file=FILE")
