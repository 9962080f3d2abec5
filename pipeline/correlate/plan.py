"""The plan of a correlate run: the config checked against the proxy registry, the ground-truth
file and torch, the architectures selected, the probe batches built -- all before any scoring."""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence, get_args, get_origin, get_type_hints

from pipeline.errors import UserError

BASE_COLUMNS = ["key", "proxy", "value", "valid", "reason", "seconds", "params_m", "flops_m", "components"]
LEGACY_BASE_COLUMNS = BASE_COLUMNS[:-1]   # scores.csv before population-ranked proxies (no components)


@dataclass
class Plan:
    """Everything a run needs, validated before any work starts."""

    cfg: dict[str, Any]
    gt_path: Path
    out_dir: Path
    metrics: list[str]                       # metric columns reported (and stored in scores.csv)
    proxies: list[str]
    higher_is_better: dict[str, bool]
    options: dict[str, dict[str, Any]]
    entries: list[Any]                       # selected groundtruth.Entry objects
    device: str
    n_without_metric: int = 0
    split: str = "all"                       # which half of the file: all, tune, test
    split_path: Optional[Path] = None
    budgets: list[float] = field(default_factory=list)  # params budgets (millions) of the regret
    budget_source: str = ""                  # where the budgets come from (said in summary.md)
    probes: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # image size -> (images, labels)
    # metric -> (tau between two training seeds, architectures, the seeds), for files that carry seeds
    noise_ceiling: dict[str, tuple[float, int, tuple[int, int]]] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return BASE_COLUMNS + list(self.metrics)


def default_budgets(params_m: Sequence[float]) -> list[float]:
    """The 25/50/75/100 % quantiles of the parameter counts, rounded *up* to 0.01 M."""
    from pipeline.groundtruth import params_budgets

    return params_budgets(list(params_m))


def committed_budgets(cfg: dict[str, Any], gt_path: Path) -> tuple[Optional[list[float]], Optional[Path]]:
    """The params budgets committed with the file's halves (``budgets_m`` of its split file), if any:
    fixed per file, so that tune and test halves, and every run, are judged under the same budgets."""
    from pipeline.correlate.settings import SPLIT_DIR, resolve_input
    from pipeline.errors import ConfigError
    from pipeline.groundtruth import load_budgets

    try:
        path = resolve_input(cfg["split_file"] or SPLIT_DIR / f"{gt_path.stem}.json", "split file")
    except ConfigError:
        return None, None
    try:
        return load_budgets(path), path
    except ValueError as e:  # includes JSONDecodeError and SpecError
        raise UserError(f"split file {path}: {e}") from e


def check_proxy_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Option names the proxy takes (registry), and values within an option's ``Literal`` choices."""
    from pipeline.proxies import check_options, get_proxy

    try:
        check_options(name, options)
    except ValueError as e:
        raise UserError(f"--proxy_options.{name}: {e}") from None
    try:
        hints = get_type_hints(get_proxy(name).fn)
    except (NameError, TypeError):
        hints = {}
    for key, value in options.items():
        choices = get_args(hints.get(key)) if get_origin(hints.get(key)) is Literal else ()
        if choices and value not in choices:
            raise UserError(f"proxy_options.{name}.{key}={value!r} is not one of {list(choices)}")
    return dict(options)


def resolve_device(name: Any) -> str:
    import torch

    name = str(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise UserError(f"device {name!r} is not a torch device (use auto, cpu, cuda, cuda:N): {e}") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} was requested but CUDA is not available; use --device=cpu or auto")
    return name


def prepare(cfg: dict[str, Any]) -> Plan:
    """Validate the config, load and select the ground truth, build the probe batches."""
    from pipeline.groundtruth import load_ground_truth, load_split, override_specs, seed_agreement, select_half

    cfg = dict(cfg)
    gt_path = Path(cfg["ground_truth"])
    split_path = Path(cfg["split_file"]) if cfg["split"] != "all" else None
    metrics, proxies, overrides = cfg["metric"], cfg["proxies"], cfg["arch_overrides"]

    # proxies and their options (importing the registry loads torch: after the parse-time checks)
    from pipeline.proxies.registry import available_proxies, get_proxy

    known = available_proxies()
    unknown = [p for p in proxies if p not in known]
    if unknown:
        raise UserError(f"--proxies: unknown proxy name(s) {unknown}; available proxies: {', '.join(known)}")
    stray = sorted(set(cfg["proxy_options"]) - set(known))
    if stray:
        raise UserError(f"--proxy_options names unknown proxy(ies) {stray}; available proxies: {', '.join(known)}")
    infos = {p: get_proxy(p) for p in proxies}
    options = {p: check_proxy_options(p, cfg["proxy_options"].get(p) or {}) for p in proxies}

    entries = load_ground_truth(gt_path, space=cfg["space"])
    if not entries:
        raise UserError(f"ground-truth file {gt_path} holds no architectures")
    present = list(dict.fromkeys(m for e in entries for m in e.metrics))  # file order
    if metrics == ["all"]:
        metrics = present
    missing = [m for m in metrics if m not in present]
    if missing or not metrics:
        raise UserError(f"metric(s) {missing} not in {gt_path}; metrics present: {present or 'none'} "
                        "(--metric=all reports every one)")
    cfg["metric"] = metrics
    seen: set[str] = set()
    for e in entries:
        if e.key in seen:
            raise UserError(f"ground-truth file {gt_path} has two architectures with key {e.key!r}; "
                            "keys must be unique")
        seen.add(e.key)
    entries = override_specs(entries, overrides)
    if split_path is not None:
        try:
            halves = load_split(split_path)
        except ValueError as e:  # includes JSONDecodeError
            raise UserError(f"split file {split_path} is not a split (pipeline.groundtruth.write_split makes "
                            f"one): {e}") from e
        entries = select_half(entries, halves, cfg["split"], source=f"split file {split_path}")
    usable = [e for e in entries if all(m in e.metrics and math.isfinite(e.metrics[m]) for m in metrics)]
    order = list(range(len(usable)))
    if cfg["limit"] is not None:
        random.Random(cfg["seed"]).shuffle(order)  # a smaller limit with the same seed is a prefix
        order = sorted(order[:cfg["limit"]])       # file order: results never depend on the shuffle order
    selected = [usable[i] for i in order]
    check_proxies_apply(proxies, selected, gt_path)

    device = resolve_device(cfg["device"])
    out = cfg["output_dir"] or Path("checkpoints") / "correlate" / gt_path.stem
    out_dir = Path(str(out)).expanduser().resolve()
    cfg["output_dir"] = str(out_dir)

    from pipeline.models.complexity import count_params

    plan = Plan(cfg, gt_path, out_dir, metrics, proxies, {p: infos[p].higher_is_better for p in proxies},
                options, selected, device, n_without_metric=len(entries) - len(usable),
                split=cfg["split"], split_path=split_path)
    committed, committed_path = committed_budgets(cfg, gt_path)
    if cfg["budgets"]:
        plan.budgets, plan.budget_source = cfg["budgets"], "--budgets"
    elif committed:
        plan.budgets, plan.budget_source = committed, f"the file's committed budgets, {committed_path.name}"
    else:
        plan.budgets = default_budgets([count_params(e.spec) / 1e6 for e in selected])
        plan.budget_source = "the 25/50/75/100 % quantiles of the scored architectures' params"
    if any(e.seeds for e in selected):
        plan.noise_ceiling = {m: seed_agreement(selected, m) for m in metrics}
    plan.probes = _probe_batches(plan)
    return plan


def check_proxies_apply(proxies: Sequence[str], entries: Sequence[Any], gt_path: Path) -> None:
    """Every proxy can score every selected architecture (what it ``requires`` of a network), or one
    line naming the first that cannot, before any work."""
    from pipeline.proxies.registry import unsupported_reason

    for proxy in proxies:
        for e in entries:
            reason = unsupported_reason(proxy, e.spec)
            if reason:
                raise UserError(f"--proxies: {proxy} cannot score architecture {e.key} of {gt_path.name} "
                                f"({e.spec.short()}): {reason}; leave {proxy} out for this file")


def _probe_batches(plan: Plan) -> dict[int, tuple[Any, Any]]:
    from pipeline.data.errors import DataError
    from pipeline.data.probe import folder_probe_batch, probe_batch

    probe = plan.cfg["probe"]
    sizes = {probe["image_size"] or e.spec.img_size for e in plan.entries}
    batches = {}
    for size in sorted(sizes):
        try:
            if probe["source"] == "folder":
                batches[size] = folder_probe_batch(probe["root"], probe["n"], image_size=size, seed=probe["seed"])
            else:
                batches[size] = probe_batch(probe["n"], size, seed=probe["seed"], source=probe["source"])
        except (DataError, ValueError) as e:
            raise UserError(f"cannot build the probe batch (probe.source={probe['source']}, n={probe['n']}, "
                            f"image size {size}): {e}") from e
    return batches
