"""Where a training run's architecture comes from, read: a spec file, an inline mapping, or the
spec inside a classification export (``model.pt``) without reading its weights.

The training runner (``--arch``, the resumed run's ``arch.yaml``) and the tasks (the
segmentation backbone's ``--backbone_ckpt``) both read specs; the reading lives here, below
both, so neither imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pipeline.space.spec import ArchSpec, SpecError


@dataclass(frozen=True)
class SpecChoice:
    """A training run's architecture and where it came from."""

    spec: ArchSpec
    source: str                  # in words: printed, and metrics.json's ``arch_source``
    file: Optional[Path] = None  # the spec file it was read from: the run's W&B ``arch`` hand-off


def as_spec(spec: ArchSpec | dict[str, Any]) -> ArchSpec:
    """An ArchSpec from an ArchSpec or a mapping of spec fields (SpecError otherwise)."""
    if isinstance(spec, ArchSpec):
        return spec
    if not isinstance(spec, dict):
        raise SpecError(f"a spec must be a mapping of spec fields, got {type(spec).__name__}")
    try:
        return ArchSpec.from_dict(dict(spec))
    except TypeError as e:
        raise SpecError(f"invalid spec: {e}") from e


def read_spec(value: str | Path | dict[str, Any]) -> SpecChoice:
    """A config's ``arch``: an inline mapping of spec fields, or a spec file (``configs/...``
    paths fall back to the shipped configs)."""
    if isinstance(value, dict):
        return SpecChoice(as_spec(value), "the config's inline `arch`")
    from pipeline.config import resolve_path

    path = resolve_path(value)
    return SpecChoice(ArchSpec.load(path), str(value), path)


def read_export(path: str | Path, weights: bool = True) -> dict[str, Any]:
    """The whole ``model.pt`` payload of ``train --task cls``, checked; SpecError with a clear message
    otherwise. ``weights=False`` maps the tensors from the file instead of reading them."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"exported model {path} does not exist; `python -m pipeline train --task cls` "
                        "writes <out_dir>/<run_name>/model.pt")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=not weights)
    except Exception as e:
        raise SpecError(f"exported model {path} cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or not {"spec", "state_dict"} <= set(payload):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise SpecError(f"{path} is not a classification export: expected a mapping with 'spec' and "
                        f"'state_dict' (the model.pt of `train --task cls`), found {found}")
    return payload


def exported_spec(path: str | Path) -> ArchSpec:
    """The spec of a classification export, its weights left unread."""
    spec = read_export(path, weights=False)["spec"]
    try:
        return ArchSpec.from_dict(dict(spec))
    except TypeError as e:
        raise SpecError(f"exported model {path}: bad spec ({e})") from e
