"""The architecture spec: the one file `search` writes and `train` reads.

A spec is immutable and complete: it carries the searched choices (embed dim, per-layer heads
and MLP ratios, stage depths) *and* the fixed settings of its space (image size, patch, head
width convention, relative positions, classes), so a spec file alone rebuilds the network.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

FAMILIES = ("vit", "pit")
GLOBAL_POOLS = ("token", "avg")


class SpecError(ValueError):
    """A spec or space that is malformed or outside its search space."""


@dataclass(frozen=True)
class ArchSpec:
    """One Vision Transformer architecture.

    Args:
        family: "vit" (plain, isotropic ViT) or "pit" (pooling ViT with stages).
        embed_dim: token width for "vit"; channels per head (base dim) for "pit".
        num_heads: heads of every layer (len = depth).
        mlp_ratio: MLP hidden ratio of every layer (len = depth).
        stage_depths: layers per stage ("pit"); a single stage for "vit".
        img_size, patch_size, patch_stride, in_chans, num_classes: input/output geometry.
        head_dim: channels per attention head; None splits embed_dim across heads.
        rel_pos: 2-D relative position embeddings for keys and values (AutoFormer).
        rel_pos_max: largest clipped relative distance (table rows = 2 * rel_pos_max + 2).
        global_pool: what the classifier reads (timm's name): "token" (the class token, DeiT/PiT)
            or "avg" (the mean of the patch tokens, AutoFormer's ``--gp``, with which its
            supernets were trained and its benchmarks measured).
        space: name of the search space this spec was drawn from (informational).
    """

    family: str
    embed_dim: int
    num_heads: tuple[int, ...]
    mlp_ratio: tuple[float, ...]
    stage_depths: tuple[int, ...] = ()
    img_size: int = 224
    patch_size: int = 16
    patch_stride: Optional[int] = None
    in_chans: int = 3
    num_classes: int = 1000
    head_dim: Optional[int] = None
    rel_pos: bool = False
    rel_pos_max: int = 14
    global_pool: str = "token"
    space: str = ""

    def __post_init__(self) -> None:
        # Normalise containers so equality and hashing ignore list/tuple/int/float spelling.
        object.__setattr__(self, "num_heads", tuple(int(h) for h in self.num_heads))
        object.__setattr__(self, "mlp_ratio", tuple(float(m) for m in self.mlp_ratio))
        stages = tuple(int(d) for d in self.stage_depths) or (len(self.num_heads),)
        object.__setattr__(self, "stage_depths", stages)
        self.check()

    # ----------------------------------------------------------------- structure
    @property
    def depth(self) -> int:
        return len(self.num_heads)

    @property
    def stride(self) -> int:
        return self.patch_stride or self.patch_size

    @property
    def grid_size(self) -> int:
        """Tokens per side after the patch embedding."""
        return (self.img_size - self.patch_size) // self.stride + 1

    def layer_width(self, layer: int) -> int:
        """Token width of one layer: embed_dim (vit) or base_dim * heads (pit)."""
        if self.family == "vit":
            return self.embed_dim
        return self.embed_dim * self.num_heads[layer]

    def layer_head_dim(self, layer: int) -> int:
        if self.family == "pit":
            return self.embed_dim
        return self.head_dim or self.embed_dim // self.num_heads[layer]

    def stage_of(self, layer: int) -> int:
        edge = 0
        for s, d in enumerate(self.stage_depths):
            edge += d
            if layer < edge:
                return s
        raise IndexError(layer)

    def check(self) -> None:
        """Internal consistency, independent of any space."""
        if self.family not in FAMILIES:
            raise SpecError(f"family={self.family!r} is unknown; use one of {FAMILIES}")
        if len(self.mlp_ratio) != len(self.num_heads):
            raise SpecError(
                f"num_heads has {len(self.num_heads)} entries but mlp_ratio has "
                f"{len(self.mlp_ratio)}; give one value per layer for both"
            )
        if sum(self.stage_depths) != self.depth:
            raise SpecError(f"stage_depths {self.stage_depths} sum to {sum(self.stage_depths)}, "
                            f"but there are {self.depth} layers (num_heads entries)")
        if self.depth == 0:
            raise SpecError("a spec needs at least one layer")
        if self.family == "vit" and self.head_dim is None:
            bad = [h for h in self.num_heads if self.embed_dim % h]
            if bad:
                raise SpecError(f"embed_dim={self.embed_dim} is not divisible by num_heads {bad}; "
                                "set head_dim or choose heads that divide embed_dim")
        if self.global_pool not in GLOBAL_POOLS:
            raise SpecError(f"global_pool={self.global_pool!r} is unknown; use one of {GLOBAL_POOLS}")
        if self.family == "pit" and self.global_pool != "token":
            raise SpecError("family 'pit' classifies from its class token; set global_pool: token")
        if self.family == "pit":
            start = 0
            for s, d in enumerate(self.stage_depths):
                heads = set(self.num_heads[start:start + d])
                if len(heads) > 1:   # a stage's width is base_dim x heads: one width per stage
                    raise SpecError(f"PiT stage {s} has heads {list(self.num_heads[start:start + d])}; a PiT "
                                    "stage keeps one head count (its width is embed_dim x heads): give every "
                                    "layer of a stage the same num_heads (in a space: num_heads: {per: stage})")
                start += d
        if self.family == "pit" and self.rel_pos:
            raise SpecError("rel_pos is only supported for family 'vit'")
        if self.img_size < self.patch_size:
            raise SpecError(f"img_size={self.img_size} is smaller than patch_size={self.patch_size}")

    # ------------------------------------------------------------- serialization
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["num_heads"] = list(self.num_heads)
        d["mlp_ratio"] = list(self.mlp_ratio)
        d["stage_depths"] = list(self.stage_depths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ArchSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SpecError(f"unknown spec field(s) {unknown}; valid fields are {sorted(known)}")
        missing = [k for k in ("family", "embed_dim", "num_heads", "mlp_ratio") if k not in d]
        if missing:
            raise SpecError(f"spec is missing required field(s) {missing}")
        return cls(**d)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def save(self, path: str | Path) -> Path:
        """Write atomically (temp file + rename): a crash never leaves half a spec."""
        from pipeline.utils.io import atomic_write_text

        path = Path(path)
        text = self.to_json() if path.suffix == ".json" else self.to_yaml()
        return atomic_write_text(path, text)

    @classmethod
    def load(cls, path: str | Path) -> "ArchSpec":
        path = Path(path)
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist; pass the arch.yaml written by "
                            "`python -m pipeline search` (checkpoints/<run>/arch.yaml)")
        try:
            data = yaml.safe_load(path.read_text())  # YAML is a superset of JSON
        except yaml.YAMLError as e:
            raise SpecError(f"spec file {path} is not valid YAML/JSON: {e}") from e
        if not isinstance(data, dict):
            raise SpecError(f"spec file {path} must hold a mapping of spec fields, got {type(data).__name__}")
        if "arch" in data and isinstance(data["arch"], dict):
            data = data["arch"]
        try:
            return cls.from_dict(data)
        except TypeError as e:
            raise SpecError(f"spec file {path}: {e}") from e

    def short(self) -> str:
        """A compact human-readable summary for tables and logs."""
        heads = "".join(str(h) for h in self.num_heads)
        mlps = ",".join(f"{m:g}" for m in self.mlp_ratio)
        return f"{self.family} E{self.embed_dim} D{self.depth} H[{heads}] M[{mlps}]"
