"""``python -m pipeline search``: run :class:`ArchitectureSearch` under a Lightning Trainer.

The options are typed dataclasses parsed by jsonargparse (``--help`` lists them); everything
that can be checked -- types, the space, the limits, the proxy and its options (by scoring one
candidate), the probe, the output folder -- is checked before the first generation.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import LightningModule
from torch.utils.data import DataLoader, TensorDataset

from pipeline.errors import UserError
from pipeline.config import device_line, make_trainer, save_config
from pipeline.data import DataError, probe_batch
from pipeline.distributed import is_rank_zero
from pipeline.proxies import check_options, compute_proxy, get_proxy
from pipeline.proxies.registry import unsupported_reason
from pipeline.search.callback import ArchitectureSearch, check_probe_labels
from pipeline.search.settings import parse_config
from pipeline.space import Limits, SearchSpace
from pipeline.tracking import finish_wandb, wandb_logger

class _NothingToTrain(LightningModule):
    """Lets a Trainer run the search callback's setup hook without training anything."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def set_architecture(self, spec) -> None:
        self.spec = spec

    def training_step(self, batch, batch_idx):
        return None

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(1, 1)), batch_size=1)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def make_probe(cfg: dict[str, Any], space: SearchSpace):
    """Probe batch from the config: the natural photos, the demo set, or a user folder."""
    p = cfg["probe"]
    size = p.get("image_size") or space.fixed.get("img_size", 224)
    source = p["source"]
    if source == "folder":
        from pipeline.data.probe import folder_probe_batch

        if not p.get("root"):
            raise UserError("probe.source=folder needs --probe.root=/path/to/dataset (root/train/<class>/*)")
        return folder_probe_batch(p["root"], int(p["n"]), image_size=int(size), seed=int(p["seed"]))
    return probe_batch(int(p["n"]), image_size=int(size), seed=int(p["seed"]), source=source)


def check_proxy(cfg: dict[str, Any], space: SearchSpace, probe) -> None:
    """The proxy exists, takes the given options, and scores the space's smallest network with them.

    A setting the proxy rejects (e.g. two ViNTK ``weights`` for one view) would otherwise fail
    every candidate of a long search; scoring one candidate first turns it into one line now.
    """
    name, options = cfg["proxy"]["name"], cfg["proxy"].get("options") or {}
    try:
        get_proxy(name)
        check_options(name, options)
    except KeyError as e:
        raise UserError(f"--proxy.name: {str(e).strip(chr(34) + chr(39))}") from None
    except ValueError as e:
        raise UserError(f"--proxy.options: {e}") from None
    for extreme in (space.extreme_spec(False), space.extreme_spec(True)):
        reason = unsupported_reason(name, extreme)
        if reason:
            raise UserError(f"--proxy.name={name} cannot score the networks of space {space.name!r}: {reason}; "
                            "choose another proxy (docs/proxies.md)")
    spec = space.extreme_spec(False)
    images, labels = probe
    try:
        compute_proxy(name, spec, images, labels, seed=int(cfg["proxy"]["init_seed"]), options=options)
    except Exception as e:  # noqa: BLE001 -- any failure here would repeat on every candidate
        raise UserError(f"--proxy.options={options}: proxy {name!r} fails on the space's smallest network "
                        f"({type(e).__name__}: {e}); fix the options") from None


def make_costs(cfg: dict[str, Any], space: SearchSpace):
    """The candidates' costs on the ``latency`` target (None when the search does not measure them).

    Checks the target (a GPU for cuda, ONNX Runtime's provider) and, on rank 0, the limits against
    the space's smallest network, measured: a limit nothing meets is one line, in seconds. Under a
    latency limit rank 0 then calibrates the predictor (or takes it from the cache) and checks the
    limit against its fastest prediction, still before the search's Trainer starts.
    """
    from pipeline.latency.settings import latency_wanted

    if not latency_wanted(cfg):
        return None
    from pipeline.latency.costs import DeviceCosts
    from pipeline.latency.target import Target

    limits = cfg.get("limits") or {}
    costs = DeviceCosts(space, Target.from_settings(cfg["latency"]), method=cfg["latency"]["method"],
                        max_latency_ms=limits.get("max_latency_ms"), max_memory_mb=limits.get("max_memory_mb"))
    if is_rank_zero() and (costs.max_latency_ms is not None or costs.max_memory_mb is not None):
        costs.check_feasible()
    if is_rank_zero() and costs.max_latency_ms is not None:
        out = Path(cfg["out_dir"]) / cfg["run_name"]
        with _progress_bar("calibrating the latency predictor (network runs)") as progress:
            costs.prepare(out, progress, save=False)
    return costs


@contextmanager
def _progress_bar(what: str):
    """A rich progress bar for work before the search's own (``progress(done, total)``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True) as bar:
        task = bar.add_task(what, total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def build_search(cfg: dict[str, Any]) -> tuple[ArchitectureSearch, Path]:
    """Validate everything that can be checked before any work, then make the callback."""
    space = SearchSpace.load(cfg["space"])
    limits = Limits.of_space(cfg.get("limits"))
    space.check_limits(limits)
    costs = make_costs(cfg, space)
    try:
        probe = make_probe(cfg, space)
        check_probe_labels(probe[1], space)
    except (DataError, ValueError) as e:
        raise UserError(str(e)) from None
    check_proxy(cfg, space, probe)
    strategy = cfg["strategy"]["name"]
    out = Path(cfg["out_dir"]) / cfg["run_name"]
    search = ArchitectureSearch(space, out, probe, proxy=cfg["proxy"]["name"],
                                proxy_options=cfg["proxy"].get("options") or {}, strategy=strategy,
                                strategy_options=cfg["strategy"][strategy], limits=limits,
                                seed=int(cfg["seed"]), init_seed=int(cfg["proxy"].get("init_seed", 0)),
                                costs=costs, objective=cfg.get("objective", "score"))
    return search, out


SCORING_KEYS = ("space", "proxy", "probe")  # settings that change a candidate's score


def check_resumable(cfg: dict[str, Any], out: Path) -> None:
    """Refuse to resume a search whose cached scores came from other scoring settings.

    ``candidates.jsonl`` is a cache keyed by spec alone; reusing it under another proxy, probe or
    space would silently mix incomparable scores. (Strategy, seed and limits may change: they
    only pick which specs are scored.)
    """
    saved = out / "config.yaml"
    if not (out / "candidates.jsonl").is_file() or not saved.is_file():
        return
    import yaml

    old = yaml.safe_load(saved.read_text()) or {}
    changed = [k for k in SCORING_KEYS if old.get(k) != cfg.get(k)]
    if changed:
        raise UserError(f"{out} holds a search scored with other {'/'.join(changed)} settings; rerunning "
                        "there would mix incomparable scores. Use another --run_name, or delete the folder")


def main(argv: Sequence[str]) -> int:
    return run(parse_config(argv))


def run(cfg: dict[str, Any]) -> int:
    """Search with a config from :func:`pipeline.search.settings.parse_config`."""
    search, out = build_search(cfg)
    if is_rank_zero():   # rank 0 owns the output folder; the callback hands its resume log to the others
        check_resumable(cfg, out)
    logger = wandb_logger(cfg, out, job_type="search")
    # The search runs in the callback's setup hook; no training batch is ever drawn (limit_train_batches=0),
    # so the fit loop ends without a "max_epochs=0 reached" line or a logging-interval warning.
    trainer = make_trainer(cfg, out, max_epochs=1, limit_train_batches=0, logger=logger, callbacks=[search],
                           enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(out))
    if trainer.global_rank == 0:
        print(device_line(trainer))
        save_config(cfg, out / "config.yaml")
    trainer.fit(_NothingToTrain())
    if trainer.global_rank == 0:
        print(f"chosen architecture: {search.chosen.short()}")   # the callback has said where arch.yaml is
        if search.latency_record is not None:
            from pipeline.latency.costs import latency_line

            print(f"latency: {latency_line(search.latency_record)}")
        finish_wandb(trainer.loggers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
