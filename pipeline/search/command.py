"""``python -m pipeline search``: run :class:`ArchitectureSearch` under a Lightning Trainer."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from torch.utils.data import DataLoader, TensorDataset

from pipeline.cli import UserError
from pipeline.config import CONFIG_DIR, find_config, load_config, pop_option, save_config
from pipeline.data import DataError, probe_batch
from pipeline.distributed import is_rank_zero
from pipeline.proxies import available_proxies, get_proxy
from pipeline.search.callback import ArchitectureSearch, check_probe_labels
from pipeline.space import Limits, SearchSpace
from pipeline.tracking import wandb_logger

DEFAULT_CONFIG = CONFIG_DIR / "search" / "demo.yaml"

HELP = f"""usage: python -m pipeline search [--config FILE] [--section.key=value ...]

Score candidate ViTs of a search space at initialisation with a training-free proxy (ViNTK by
default), under params/FLOPs limits, with an evolutionary or random strategy, and write the
chosen architecture to <out_dir>/<run_name>/arch.yaml (the file `train` reads).

  --config FILE   search config file, or a shipped one by name (default: demo, i.e.
                  {DEFAULT_CONFIG.relative_to(CONFIG_DIR.parent)}; also autoformer_tiny, autoformer_small,
                  autoformer_base, pit_tiny)
  --KEY=VALUE     override any config value, e.g. --strategy.name=random --limits.max_params=6
                  --proxy.name=ntk_cond --trainer.devices=2 --wandb.mode=disabled

Outputs: arch.yaml, candidates.jsonl (the resume log), candidates.csv, state.json, config.yaml,
pareto.png, convergence.png. Rerunning the same command continues an interrupted search.
Proxies: {', '.join(available_proxies())}
"""


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
    if source in ("photos", "demo"):
        return probe_batch(int(p["n"]), image_size=int(size), seed=int(p["seed"]), source=source)
    if source == "folder":
        from pipeline.data.probe import folder_probe_batch

        if not p.get("root"):
            raise UserError("probe.source=folder needs --probe.root=/path/to/dataset (root/train/<class>/*)")
        return folder_probe_batch(p["root"], int(p["n"]), image_size=int(size), seed=int(p["seed"]))
    raise UserError(f"probe.source={source!r} is unknown; use photos, demo or folder")


def build_search(cfg: dict[str, Any]) -> tuple[ArchitectureSearch, Path]:
    """Validate everything that can be checked before any work, then make the callback."""
    space = SearchSpace.load(cfg["space"])
    try:
        get_proxy(cfg["proxy"]["name"])
    except KeyError as e:
        raise UserError(str(e).strip("'\"")) from None
    limits = Limits.from_dict(cfg.get("limits"))
    space.check_limits(limits)
    try:
        probe = make_probe(cfg, space)
        check_probe_labels(probe[1], space)
    except (DataError, ValueError) as e:
        raise UserError(str(e)) from None
    strategy = cfg["strategy"]["name"]
    if strategy not in ("evolution", "random"):
        raise UserError(f"strategy.name={strategy!r} is unknown; use evolution or random")
    out = Path(cfg["out_dir"]) / cfg["run_name"]
    search = ArchitectureSearch(space, out, probe, proxy=cfg["proxy"]["name"],
                                proxy_options=cfg["proxy"].get("options") or {}, strategy=strategy,
                                strategy_options=cfg["strategy"].get(strategy) or {}, limits=limits,
                                seed=int(cfg["seed"]), init_seed=int(cfg["proxy"].get("init_seed", 0)))
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


def main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(HELP)
        return 0
    config_path, argv = pop_option(argv, "--config", DEFAULT_CONFIG)
    cfg = load_config(find_config(config_path, "search"), argv)
    search, out = build_search(cfg)
    if is_rank_zero():   # rank 0 owns the output folder; the callback hands its resume log to the others
        check_resumable(cfg, out)
    logger = wandb_logger(cfg, out, job_type="search")
    trainer = Trainer(**cfg["trainer"], max_epochs=0, logger=logger, callbacks=[search],
                      enable_checkpointing=False, enable_model_summary=False, default_root_dir=str(out))
    if trainer.global_rank == 0:
        save_config(cfg, out / "config.yaml")
    trainer.fit(_NothingToTrain())
    if trainer.global_rank == 0:
        print(f"chosen architecture: {search.chosen.short()}\nwritten to: {out / 'arch.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
