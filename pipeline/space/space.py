"""Search spaces: YAML data under ``configs/spaces/`` and this one generic implementation.

A space lists the allowed values of every searched choice and how finely each is chosen
(``per: layer`` / ``stage`` / ``global``), plus fixed settings copied into every spec.
Sampling, mutation and crossover all take an explicit ``random.Random`` so runs are seeded.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from pipeline.models.complexity import count_flops, count_params
from pipeline.space.spec import ArchSpec, SpecError

GRANULARITIES = ("layer", "stage", "global")
FIXED_KEYS = ("img_size", "patch_size", "patch_stride", "in_chans", "num_classes", "head_dim",
              "rel_pos", "rel_pos_max", "global_pool")


DEVICE_LIMITS = ("max_latency_ms", "max_memory_mb")   # the search's limits measured on a device (pipeline.latency)


@dataclass(frozen=True)
class Limits:
    """Inclusive params / FLOPs window, in millions (FLOPs = multiply-adds). None = unbounded."""

    min_params: Optional[float] = None
    max_params: Optional[float] = None
    min_flops: Optional[float] = None
    max_flops: Optional[float] = None

    @classmethod
    def from_dict(cls, d: Optional[dict[str, Any]]) -> "Limits":
        d = dict(d or {})
        unknown = sorted(set(d) - {"min_params", "max_params", "min_flops", "max_flops"})
        if unknown:
            raise SpecError(f"unknown limit(s) {unknown}; use min_params, max_params, min_flops, "
                            "max_flops (millions)")
        return cls(**{k: (None if v is None else float(v)) for k, v in d.items()})

    @classmethod
    def of_space(cls, d: Optional[dict[str, Any]]) -> "Limits":
        """The params/FLOPs window of a search's ``limits`` section, without its device limits
        (``DEVICE_LIMITS``: judged on the latency target by the search, not by the space)."""
        return cls.from_dict({k: v for k, v in (d or {}).items() if k not in DEVICE_LIMITS})

    def admits(self, params_m: float, flops_m: float) -> bool:
        return ((self.min_params is None or params_m >= self.min_params)
                and (self.max_params is None or params_m <= self.max_params)
                and (self.min_flops is None or flops_m >= self.min_flops)
                and (self.max_flops is None or flops_m <= self.max_flops))

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.min_params, self.max_params, self.min_flops, self.max_flops))


@dataclass(frozen=True)
class Choice:
    values: tuple
    per: str = "layer"


@dataclass
class SearchSpace:
    """Allowed values for every searched dimension of a family of ViTs.

    Args:
        name: preset name (file stem under configs/spaces/).
        family: "vit" or "pit".
        embed_dim: allowed embed dims (vit) or base dims (pit), shared by all layers.
        stage_depths: per stage, the allowed number of layers (a vit has one stage).
        mlp_ratio / num_heads: allowed values and granularity ("layer", "stage" or "global").
        fixed: settings copied into every spec (img_size, patch_size, head_dim, rel_pos, ...).
    """

    name: str
    family: str
    embed_dim: tuple[int, ...]
    stage_depths: tuple[tuple[int, ...], ...]
    mlp_ratio: Choice
    num_heads: Choice
    fixed: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str = "") -> "SearchSpace":
        d = dict(d)
        choices = dict(d.get("choices") or {})

        def choice(key: str, default_per: str) -> Choice:
            c = choices.get(key)
            if c is None:
                raise SpecError(f"space {name!r}: choices.{key} is missing")
            if isinstance(c, dict):
                vals, per = c.get("values"), c.get("per", default_per)
            else:
                vals, per = c, default_per
            if per not in GRANULARITIES:
                raise SpecError(f"space {name!r}: choices.{key}.per={per!r}; use one of {GRANULARITIES}")
            if not vals:
                raise SpecError(f"space {name!r}: choices.{key} has no values")
            return Choice(tuple(sorted(vals)), per)

        family = d.get("family", "vit")
        if "stage_depths" in choices:
            stages = tuple(tuple(sorted(int(x) for x in s)) for s in choices["stage_depths"])
        elif "depth" in choices:
            stages = (tuple(sorted(int(x) for x in choices["depth"])),)
        else:
            raise SpecError(f"space {name!r}: give choices.depth (vit) or choices.stage_depths (pit)")
        fixed = dict(d.get("fixed") or {})
        bad = sorted(set(fixed) - set(FIXED_KEYS))
        if bad:
            raise SpecError(f"space {name!r}: unknown fixed setting(s) {bad}; valid: {list(FIXED_KEYS)}")
        space = cls(
            name=d.get("name", name),
            family=family,
            embed_dim=tuple(sorted(int(e) for e in choices.get("embed_dim", ()))),
            stage_depths=stages,
            mlp_ratio=choice("mlp_ratio", "layer"),
            num_heads=choice("num_heads", "layer"),
            fixed=fixed,
            description=d.get("description", ""),
        )
        space._check()
        return space

    @classmethod
    def load(cls, name_or_path: str | Path) -> "SearchSpace":
        """Load a preset by name (``autoformer_tiny``) or a YAML file by path."""
        from pipeline.config import space_file, unknown_space

        path = space_file(name_or_path)
        if path is None:
            raise SpecError(unknown_space(name_or_path))
        return cls.from_dict(yaml.safe_load(path.read_text()), name=path.stem)

    def _check(self) -> None:
        if not self.embed_dim:
            raise SpecError(f"space {self.name!r}: choices.embed_dim has no values")
        if self.family == "pit" and self.num_heads.per == "layer":
            raise SpecError(f"space {self.name!r}: a PiT stage keeps one head count; set "
                            "choices.num_heads.per to 'stage' or 'global'")
        if self.family == "vit" and len(self.stage_depths) != 1:
            raise SpecError(f"space {self.name!r}: a 'vit' space has one stage; use choices.depth")
        if self.family == "vit" and self.fixed.get("head_dim") is None:
            for e in self.embed_dim:
                for h in self.num_heads.values:
                    if e % h:
                        raise SpecError(f"space {self.name!r}: embed_dim {e} is not divisible by "
                                        f"num_heads {h}; set fixed.head_dim or change the choices")
        # Building the extreme specs validates the fixed settings once, at load time.
        self.extreme_spec(largest=False)

    # --------------------------------------------------------------- building specs
    def make_spec(self, embed_dim: int, stage_depths: Sequence[int], num_heads: Sequence[int],
                  mlp_ratio: Sequence[float]) -> ArchSpec:
        return ArchSpec(family=self.family, embed_dim=embed_dim, num_heads=tuple(num_heads),
                        mlp_ratio=tuple(mlp_ratio), stage_depths=tuple(stage_depths),
                        space=self.name, **self.fixed)

    def extreme_spec(self, largest: bool) -> ArchSpec:
        """Every choice at its smallest (or largest) value.

        Params and FLOPs grow monotonically with each choice (width, depth, heads, MLP ratio),
        so these two specs carry the space's exact minimum and maximum of both.
        """
        pick = max if largest else min
        stages = [pick(s) for s in self.stage_depths]
        depth = sum(stages)
        return self.make_spec(pick(self.embed_dim), stages, [pick(self.num_heads.values)] * depth,
                              [pick(self.mlp_ratio.values)] * depth)

    def bounds(self) -> dict[str, tuple[float, float]]:
        """Exact (min, max) params and FLOPs of the space, in millions."""
        lo, hi = self.extreme_spec(False), self.extreme_spec(True)
        return {"params": (count_params(lo) / 1e6, count_params(hi) / 1e6),
                "flops": (count_flops(lo) / 1e6, count_flops(hi) / 1e6)}

    # --------------------------------------------------------------- validation
    def validate(self, spec: ArchSpec) -> ArchSpec:
        """Raise SpecError naming the field and its allowed values if ``spec`` is outside the space."""
        def fail(field_name: str, got: Any, allowed: Any) -> None:
            raise SpecError(f"spec is outside space {self.name!r}: {field_name}={got!r}, "
                            f"allowed: {allowed}")

        if spec.family != self.family:
            fail("family", spec.family, self.family)
        if spec.embed_dim not in self.embed_dim:
            fail("embed_dim", spec.embed_dim, list(self.embed_dim))
        if len(spec.stage_depths) != len(self.stage_depths):
            fail("stage_depths", list(spec.stage_depths), [list(s) for s in self.stage_depths])
        for s, (d, allowed) in enumerate(zip(spec.stage_depths, self.stage_depths)):
            name = "depth" if self.family == "vit" else f"stage_depths[{s}]"
            if d not in allowed:
                fail(name, d, list(allowed))
        for key, choice in (("num_heads", self.num_heads), ("mlp_ratio", self.mlp_ratio)):
            values = getattr(spec, key)
            for i, v in enumerate(values):
                if v not in choice.values:
                    fail(f"{key}[{i}]", v, list(choice.values))
            groups = self._groups(spec.stage_depths, choice.per)
            for g in groups:
                if len({values[i] for i in g}) > 1:
                    fail(key, list(values), f"one value per {choice.per} from {list(choice.values)}")
        for k, v in self.fixed.items():
            if getattr(spec, k) != v:
                fail(k, getattr(spec, k), v)
        return spec

    def contains(self, spec: ArchSpec) -> bool:
        try:
            self.validate(spec)
            return True
        except SpecError:
            return False

    @staticmethod
    def _groups(stage_depths: Sequence[int], per: str) -> list[list[int]]:
        """Layer indices that share one value under granularity ``per``."""
        depth = sum(stage_depths)
        if per == "layer":
            return [[i] for i in range(depth)]
        if per == "global":
            return [list(range(depth))]
        groups, start = [], 0
        for d in stage_depths:
            groups.append(list(range(start, start + d)))
            start += d
        return groups

    # ------------------------------------------------------------------ sampling
    def _draw(self, choice: Choice, stage_depths: Sequence[int], rng: random.Random) -> list:
        out = [None] * sum(stage_depths)
        for g in self._groups(stage_depths, choice.per):
            v = rng.choice(choice.values)
            for i in g:
                out[i] = v
        return out

    def sample(self, rng: random.Random) -> ArchSpec:
        """Uniform over each choice (depth first, then per-layer values)."""
        stages = [rng.choice(s) for s in self.stage_depths]
        embed = rng.choice(self.embed_dim)
        heads = self._draw(self.num_heads, stages, rng)
        mlps = self._draw(self.mlp_ratio, stages, rng)
        return self.make_spec(embed, stages, heads, mlps)

    def _resize(self, spec: ArchSpec, stages: Sequence[int], rng: random.Random) -> tuple[list, list]:
        """Keep each stage's existing layer values; draw values for added layers."""
        fresh_h = self._draw(self.num_heads, stages, rng)
        fresh_m = self._draw(self.mlp_ratio, stages, rng)
        heads, mlps, old, new = [], [], 0, 0
        for s, d in enumerate(stages):
            for j in range(d):
                if j < spec.stage_depths[s]:
                    heads.append(spec.num_heads[old + j])
                    mlps.append(spec.mlp_ratio[old + j])
                else:
                    heads.append(fresh_h[new + j])
                    mlps.append(fresh_m[new + j])
            old += spec.stage_depths[s]
            new += d
        return heads, mlps

    def _regroup(self, values: list, choice: Choice, stages: Sequence[int]) -> list:
        """Re-impose stage/global sharing after layers were added or mixed."""
        for g in self._groups(stages, choice.per):
            for i in g:
                values[i] = values[g[0]]
        return values

    def mutate(self, spec: ArchSpec, rng: random.Random, layer_prob: float = 0.2,
               global_prob: float = 0.4) -> ArchSpec:
        """AutoFormer-style mutation: depth and embed dim are redrawn with ``global_prob``;
        each layer's (or stage's / the global) heads and MLP ratio with ``layer_prob``."""
        stages = [rng.choice(allowed) if rng.random() < global_prob else d
                  for d, allowed in zip(spec.stage_depths, self.stage_depths)]
        embed = rng.choice(self.embed_dim) if rng.random() < global_prob else spec.embed_dim
        heads, mlps = self._resize(spec, stages, rng)
        for key, values in (("num_heads", heads), ("mlp_ratio", mlps)):
            choice = getattr(self, key)
            prob = global_prob if choice.per == "global" else layer_prob
            for g in self._groups(stages, choice.per):
                if rng.random() < prob:
                    v = rng.choice(choice.values)
                    for i in g:
                        values[i] = v
        heads = self._regroup(heads, self.num_heads, stages)
        mlps = self._regroup(mlps, self.mlp_ratio, stages)
        return self.make_spec(embed, stages, heads, mlps)

    def crossover(self, a: ArchSpec, b: ArchSpec, rng: random.Random) -> ArchSpec:
        """Uniform crossover: each stage depth, the embed dim and every layer value come from
        either parent; layers only one parent has come from that parent."""
        stages = [rng.choice((x, y)) for x, y in zip(a.stage_depths, b.stage_depths)]
        embed = rng.choice((a.embed_dim, b.embed_dim))
        ha, ma = self._resize(a, stages, rng)
        hb, mb = self._resize(b, stages, rng)
        pick = [rng.random() < 0.5 for _ in ha]
        heads = [x if p else y for x, y, p in zip(ha, hb, pick)]
        mlps = [x if p else y for x, y, p in zip(ma, mb, pick)]
        heads = self._regroup(heads, self.num_heads, stages)
        mlps = self._regroup(mlps, self.mlp_ratio, stages)
        return self.make_spec(embed, stages, heads, mlps)

    # ----------------------------------------------------------- constrained sampling
    def check_limits(self, limits: Limits) -> None:
        """Fail fast, with the space's true range, if no architecture can satisfy ``limits``."""
        b = self.bounds()
        p_lo, p_hi = b["params"]
        f_lo, f_hi = b["flops"]
        problems = []
        if limits.min_params is not None and limits.min_params > p_hi:
            problems.append(f"min_params={limits.min_params}M exceeds the largest model ({p_hi:.3f}M)")
        if limits.max_params is not None and limits.max_params < p_lo:
            problems.append(f"max_params={limits.max_params}M is below the smallest model ({p_lo:.3f}M)")
        if limits.min_flops is not None and limits.min_flops > f_hi:
            problems.append(f"min_flops={limits.min_flops}M exceeds the largest model ({f_hi:.1f}M)")
        if limits.max_flops is not None and limits.max_flops < f_lo:
            problems.append(f"max_flops={limits.max_flops}M is below the smallest model ({f_lo:.1f}M)")
        for lo, hi, what in ((limits.min_params, limits.max_params, "params"),
                             (limits.min_flops, limits.max_flops, "flops")):
            if lo is not None and hi is not None and lo > hi:
                problems.append(f"min_{what}={lo} is larger than max_{what}={hi}")
        if problems:
            raise SpecError(f"infeasible limits for space {self.name!r}: " + "; ".join(problems)
                            + f". The space spans params {p_lo:.3f}-{p_hi:.3f}M and "
                            f"FLOPs {f_lo:.1f}-{f_hi:.1f}M (multiply-adds).")

    def admits(self, spec: ArchSpec, limits: Limits) -> bool:
        return limits.admits(count_params(spec) / 1e6, count_flops(spec) / 1e6)

    def sample_within(self, rng: random.Random, limits: Limits, max_tries: int = 20000) -> ArchSpec:
        """Rejection sampling under ``limits`` (checked for feasibility first)."""
        self.check_limits(limits)
        for _ in range(max_tries):
            spec = self.sample(rng)
            if not limits.active or self.admits(spec, limits):
                return spec
        raise SpecError(f"no architecture of space {self.name!r} within {limits} after {max_tries} "
                        "random draws: the window is feasible but very narrow; widen the limits")


def available_spaces() -> list[str]:
    """Names of the shipped space presets (the files ``space_file`` resolves names to)."""
    from pipeline.config import shipped_configs

    return shipped_configs("spaces")
