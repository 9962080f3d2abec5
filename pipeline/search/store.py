"""Persistence of a search: every scored candidate as one JSON line, appended as it finishes.

The file doubles as the resume cache: a rerun replays the (deterministic) strategy and takes
each candidate's score -- and its latency and memory on the target, when the search measures
them -- from here instead of recomputing it. A line cut short by a crash is ignored, so killing
a search at any moment loses at most the candidate being written. Logs written before latency
was recorded load as they are (no latency); such candidates are costed when a search needs it.

For a population-ranked proxy (AZ-NAS) a line holds what was measured, the ``components``, and
a NaN score: the score is a rank among the candidates seen so far, re-derived from the logged
components whenever the population grows, so a resumed search recomputes no network and
reaches the same ranks.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

from pipeline.space import ArchSpec
from pipeline.space.sources import SpecChoice


@dataclass
class Candidate:
    spec: ArchSpec
    generation: int
    score: float            # the proxy value as computed (NaN when invalid)
    rank_value: float       # oriented: larger is better, -inf when invalid
    valid: bool
    reason: str
    params_m: float
    flops_m: float
    seconds: float
    latency_ms: Optional[float] = None   # on the target (``latency_on``), per ``latency_source``
    latency_source: str = ""             # "predicted" or "measured"; "" = not costed
    memory_mb: Optional[float] = None    # peak inference memory on the target
    latency_on: str = ""                 # device/backend/batch/threads the costs hold for
    components: dict[str, float] = field(default_factory=dict)   # population-ranked proxies: what was measured

    def to_json(self) -> str:
        d = asdict(self)
        d["spec"] = self.spec.to_dict()
        return json.dumps(d, allow_nan=True)

    def with_costs(self, costs) -> "Candidate":
        """This candidate with its costs on the target (a ``pipeline.latency.costs.Costs``)."""
        return replace(self, latency_ms=costs.latency_ms, latency_source=costs.source,
                       memory_mb=costs.memory_mb, latency_on=costs.conditions)

    @classmethod
    def from_json(cls, line: str) -> "Candidate":
        d = json.loads(line)
        d["spec"] = ArchSpec.from_dict(d["spec"])
        return cls(**d)


class CandidateStore:
    """Append-only JSON-lines log of candidates, keyed by spec."""

    def __init__(self, path: Path, writable: bool = True,
                 records: Optional[dict[ArchSpec, Candidate]] = None) -> None:
        """``records``: the log's content read elsewhere (rank 0 reads, the other ranks are handed it)."""
        self.path = Path(path)
        self.writable = writable
        self.by_spec: dict[ArchSpec, Candidate] = self.read(self.path) if records is None else dict(records)
        if self.writable and self.path.exists():
            self._rewrite_clean()

    @staticmethod
    def read(path: Path) -> dict[ArchSpec, Candidate]:
        """The candidates of a log (empty when it does not exist), skipping a line cut short."""
        by_spec: dict[ArchSpec, Candidate] = {}
        if Path(path).exists():
            for line in Path(path).read_text().splitlines():
                try:
                    c = Candidate.from_json(line)
                except (json.JSONDecodeError, TypeError, KeyError, ValueError):
                    continue   # a line cut short by an interruption
                by_spec[c.spec] = c
        return by_spec

    def _rewrite_clean(self) -> None:
        """Drop a truncated tail so later appends start on a fresh line."""
        from pipeline.utils.io import atomic_write_text

        atomic_write_text(self.path, "".join(c.to_json() + "\n" for c in self.by_spec.values()))

    def get(self, spec: ArchSpec) -> Optional[Candidate]:
        return self.by_spec.get(spec)

    def add(self, c: Candidate) -> None:
        self.by_spec[c.spec] = c
        if not self.writable:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(c.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())


def newest_searched_spec(out_dir: str | Path, space) -> Optional[Path]:
    """The newest ``arch.yaml`` a search (or a refine race) wrote under ``out_dir`` whose spec is in ``space``.

    Looks at ``<out_dir>/*/arch.yaml`` (``python -m pipeline search`` and ``refine``) and
    ``<out_dir>/*/search/arch.yaml`` (``python -m pipeline run``); a search's folder holds its
    ``candidates.jsonl`` and a finished race's its ``refine.json``, which tell them from a training
    run (those write ``arch.yaml`` too).
    """
    from pipeline.space import SpecError

    found = []
    for pattern in ("*/arch.yaml", "*/search/arch.yaml"):
        for path in Path(out_dir).glob(pattern):
            if not ((path.parent / "candidates.jsonl").is_file() or (path.parent / "refine.json").is_file()):
                continue
            try:
                space.validate(ArchSpec.load(path))
            except (SpecError, OSError):
                continue
            found.append((path.stat().st_mtime, str(path)))
    return Path(max(found)[1]) if found else None


def searched_spec(cfg: dict[str, Any], alternative: str = "") -> SpecChoice:
    """A training config's ``default_arch``: the newest spec a search wrote under its ``search_dir``
    (null: the run's ``out_dir``) that lies in its space, else its ``fallback`` file.

    Without ``default_arch`` the config names no architecture at all: a UserError saying to pass
    ``--arch`` (or ``alternative``, the task's other way to name one).
    """
    from pipeline.config import resolve_path
    from pipeline.errors import UserError
    from pipeline.space import SearchSpace

    default = cfg.get("default_arch")
    if not default:
        raise UserError("no architecture given: pass --arch checkpoints/<run>/arch.yaml (written by "
                        "`python -m pipeline search`)" + (f" or {alternative}" if alternative else "")
                        + "; this config has no default_arch")
    space = SearchSpace.load(default["space"])
    search_dir = Path(default.get("search_dir") or cfg["out_dir"])
    newest = newest_searched_spec(search_dir, space)
    if newest is not None:
        return SpecChoice(space.validate(ArchSpec.load(newest)), f"{newest} (newest searched {space.name!r} spec)",
                          newest)
    if not default.get("fallback"):
        raise UserError(f"no searched {space.name!r} spec under {search_dir}/ and default_arch has no fallback; "
                        "pass --arch checkpoints/<run>/arch.yaml")
    fallback = resolve_path(default["fallback"])
    spec = space.validate(ArchSpec.load(fallback))
    return SpecChoice(spec, f"{fallback} (default spec: no searched {space.name!r} spec under {search_dir}/)",
                      fallback)
