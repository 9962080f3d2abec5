"""Classification for the training runner: module, data and exports of ``train --task cls``.

Outputs beside the runner's (checkpoints, ``config.yaml``, ``arch.yaml``, ``metrics.json``):
``model.pt`` (the best weights as a plain ``state_dict`` with the spec and metrics: what the
segmentation task loads as its backbone), ``model.pt2`` (``torch.export``) and ``model.onnx``
(the network without this package, [0, 1] RGB in, logits out), all three in the W&B ``model``
artifact.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from pipeline.accelerator import resolve_fused
from pipeline.config import ConfigError
from pipeline.errors import UserError
from pipeline.space.sources import SpecChoice
from pipeline.space.spec import ArchSpec, SpecError
from pipeline.task import Built


class ClassificationTask:
    name = "cls"
    monitor = "val/top1"

    def default_spec(self, cfg: dict[str, Any]) -> SpecChoice:
        from pipeline.search.store import searched_spec

        return searched_spec(cfg)

    def build(self, cfg: dict[str, Any], spec: ArchSpec, source: str) -> Built:
        if spec.in_chans != 3:
            raise SpecError(f"spec {source} has in_chans={spec.in_chans}; the image data is RGB (3 channels)")
        from pipeline.data import DataError

        try:
            dm = self.datamodule(cfg, spec)
            classes = dm.check()
        except DataError:
            raise   # the runner words it as a one-line UserError
        except (TypeError, ValueError, KeyError, AssertionError) as e:  # timm asserts on unknown augmentation names
            raise ConfigError(f"invalid data/aug settings: {type(e).__name__}: {e}") from None
        try:
            module = self.module(cfg, spec, dm.batch_size, classes)
            module.check_optimisation(int(cfg["trainer"].get("max_epochs") or 1))
        except (SpecError, ConfigError):
            raise
        except (TypeError, ValueError, KeyError, AssertionError) as e:  # timm asserts on unknown names
            raise ConfigError(f"invalid model/optim/aug settings: {type(e).__name__}: {e}") from None
        spec = module.spec
        if len(classes) != spec.num_classes:
            where = f"{dm.source} data" + (f" at {dm.root}" if dm.root else "")
            raise UserError(f"class-count mismatch: the spec ({source}) has num_classes={spec.num_classes} "
                            f"but the {where} has {len(classes)} classes; train a spec with num_classes: "
                            f"{len(classes)} or pass --model.num_classes={len(classes)} to retrain it with a "
                            "new classifier")
        if module.mixup_fn is not None and dm.batch_size % 2:
            raise UserError(f"Mixup/CutMix needs an even batch size, got data.batch_size={dm.batch_size}")
        from pipeline.models import count_flops, count_params

        note = (f"architecture: {spec.short()} ({count_params(spec) / 1e6:.2f}M params, "
                f"{count_flops(spec) / 1e6:.1f}M FLOPs) from {source}")
        return Built(spec, module, dm, notes=[note])

    @staticmethod
    def datamodule(cfg: dict[str, Any], spec: ArchSpec):
        """The ClassificationDataModule of a resolved config: ``data`` (the image size defaults to the
        spec's) and the per-image part of ``aug``."""
        from pipeline.classification import ClassificationDataModule
        from pipeline.classification.settings import MIXUP_KEYS

        data, aug = cfg["data"], cfg["aug"]
        return ClassificationDataModule(**{**data, "image_size": data.get("image_size") or spec.img_size},
                                        aug={k: v for k, v in aug.items() if k not in MIXUP_KEYS})

    @staticmethod
    def module(cfg: dict[str, Any], spec: ArchSpec, batch_size: int, classes: list[str]):
        """The ClassificationModule of a resolved config: ``model``, ``optim`` and the batch-mixing
        part of ``aug``, seeded by ``seed_everything``."""
        from pipeline.classification import ClassificationModule
        from pipeline.classification.settings import MIXUP_KEYS

        optim, aug = cfg["optim"], cfg["aug"]
        return ClassificationModule(spec, **cfg["model"], **{k: v for k, v in optim.items() if k != "fused"},
                                    fused=resolve_fused(optim["fused"]), **{k: aug[k] for k in MIXUP_KEYS},
                                    batch_size=batch_size, init_seed=int(cfg["seed_everything"] or 0),
                                    class_names=classes)

    def validate(self, trainer, built: Built, best: str) -> dict[str, float]:
        if best:
            results = trainer.validate(built.module, datamodule=built.datamodule, ckpt_path=best, verbose=False)
            return {k: float(v) for k, v in (results[0] if results else {}).items()}
        return {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}

    def finish(self, trainer, built: Built, run_dir: Path, metrics: dict[str, float]):
        from pipeline.classification import export_model, export_portable

        module, dm = built.module, built.datamodule
        model_pt = export_model(run_dir / "model.pt", built.spec, module.net, metrics)
        portable = export_portable(run_dir, module.net, dm.image_size, dm.mean, dm.std)
        summary = {**metrics, "epochs": trainer.current_epoch, "exports": [p.name for p in portable]}
        shown = "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/"))
        lines = [f"final metrics: {shown or 'none'}"]
        throughput = trainer.callback_metrics.get("train/throughput")
        if throughput is not None and math.isfinite(float(throughput)):
            lines.append(f"train throughput: {float(throughput):.0f} images/s")
        lines.append(f"exported model:  {model_pt}  (spec + state_dict, the segmentation backbone)")
        lines += [f"                 {p}  ({'torch.export' if p.suffix == '.pt2' else 'ONNX'}: [0, 1] RGB in, "
                  "logits out)" for p in portable]
        return summary, ("model", model_pt), lines

    def consumed(self, cfg: dict[str, Any], choice: SpecChoice) -> Optional[dict[str, Path]]:
        return {"arch": choice.file} if choice.file else None
