"""Ground-truth files: architectures with measured accuracy, for judging proxies.

Two formats are read:

* the OoD-ViT-NAS dev benchmark (one JSON object keyed by id, each entry with ``net_setting``,
  ``performance.Imagenet.clean``, ``params`` and ``flops``), AutoFormer's encoding of the
  AutoFormer-T space;
* our generic JSON-lines format, one architecture per line::

      {"arch": {...ArchSpec fields...}, "space": "autoformer_tiny", "metrics": {"top1": 75.3}}

  ``arch`` holds every :class:`ArchSpec` field (head_dim, rel_pos, num_classes, img_size, ...),
  so any space, including user-defined ones, can be expressed. A line may also carry ``id`` (the
  architecture's key), ``seed`` (the training seed: ``python -m pipeline groundtruth`` writes one
  line per architecture and seed), ``params_m``, ``flops_m``, ``wall_s`` and ``reported``.
  Lines of one ``id`` with different seeds are one architecture: its metrics are the mean over
  seeds, and the per-seed values stay in ``Entry.seeds`` (the file's own noise ceiling:
  :func:`seed_agreement`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from pipeline.space import ArchSpec, SearchSpace, SpecError


@dataclass(frozen=True)
class Entry:
    key: str
    spec: ArchSpec
    metrics: dict[str, float] = field(default_factory=dict)
    reported: dict[str, float] = field(default_factory=dict)  # e.g. params/FLOPs as published
    seeds: dict[int, dict[str, float]] = field(default_factory=dict)  # per training seed, when the file has them


def _from_net_setting(key: str, item: dict[str, Any], space: SearchSpace) -> Entry:
    ns = item["net_setting"]
    embeds = set(ns["embed_dim"]) if isinstance(ns["embed_dim"], list) else {ns["embed_dim"]}
    if len(embeds) != 1:
        raise SpecError(f"entry {key}: AutoFormer shares one embed dim across layers, got {sorted(embeds)}")
    depth = int(ns["layer_num"])
    spec = space.make_spec(embeds.pop(), [depth], ns["num_heads"][:depth], ns["mlp_ratio"][:depth])
    perf = item.get("performance", {}).get("Imagenet", {})
    metrics = {"top1": float(perf["clean"])} if "clean" in perf else {}
    reported = {k: float(item[k]) for k in ("params", "flops") if k in item}
    return Entry(key, spec, metrics, reported)


def load_ground_truth(path: str | Path, space: Optional[str] = None) -> list[Entry]:
    """Read a ground-truth file in either supported format (chosen by content)."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"ground-truth file {path} does not exist")
    text = path.read_text()
    stripped = text.lstrip()
    entries: list[Entry] = []
    if stripped.startswith("{") and "\n{" not in stripped.strip():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise SpecError(f"{path} is neither a benchmark JSON object nor JSON lines: {e}") from e
        if isinstance(data, dict) and "arch" not in data:
            sp = SearchSpace.load(space or "autoformer_tiny")
            for key, item in data.items():
                if "net_setting" not in item:
                    raise SpecError(f"{path}: entry {key!r} has no 'net_setting'; expected the "
                                    "OoD-ViT-NAS benchmark format or JSON lines with 'arch'")
                entries.append(_from_net_setting(str(key), item, sp))
            return entries
    grouped: dict[str, list[tuple[int, dict[str, Any], ArchSpec]]] = {}
    spaces: dict[str, SearchSpace] = {}
    for n, row, spec in _json_lines(path, text):
        if row.get("space"):
            name = str(row["space"])
            if name not in spaces:
                spaces[name] = SearchSpace.load(name)
            spaces[name].validate(spec)
        key = str(row.get("id", n))
        if key in grouped and "seed" not in row:
            entries.append(_entry(key, [(n, row, spec)]))   # a duplicate key without seeds: refused downstream
            continue
        grouped.setdefault(key, []).append((n, row, spec))
    try:
        return [_entry(key, rows) for key, rows in grouped.items()] + entries
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from None


def _json_lines(path: Path, text: str):
    """(line number, row, spec) of every non-empty line; a malformed one is an error naming its line."""
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            spec = ArchSpec.from_dict(row["arch"])
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SpecError(f"{path}:{n}: expected {{\"arch\": {{...}}, \"metrics\": {{...}}}}: {e}") from e
        yield n, row, spec


def _entry(key: str, rows: list[tuple[int, dict[str, Any], ArchSpec]]) -> Entry:
    """One architecture from its line(s): one line as it is, several seeds averaged per metric."""
    n, row, spec = rows[0]
    reported = {k: float(v) for k, v in row.get("reported", {}).items()}
    if len(rows) == 1 and "seed" not in row:
        return Entry(key, spec, {k: float(v) for k, v in row.get("metrics", {}).items()}, reported)
    seeds: dict[int, dict[str, float]] = {}
    for n, r, s in rows:
        if s != spec:
            raise SpecError(f"line {n}: id {key!r} names another architecture than line {rows[0][0]}")
        seed = r.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise SpecError(f"line {n}: id {key!r} appears on several lines, so each needs an integer 'seed'")
        if seed in seeds:
            raise SpecError(f"line {n}: id {key!r} with seed {seed} appears twice")
        seeds[seed] = {k: float(v) for k, v in r.get("metrics", {}).items()}
    names = [m for m in dict.fromkeys(m for v in seeds.values() for m in v) if all(m in v for v in seeds.values())]
    metrics = {m: sum(v[m] for v in seeds.values()) / len(seeds) for m in names}
    return Entry(key, spec, metrics, reported, dict(sorted(seeds.items())))


def seed_agreement(entries: list[Entry], metric: str) -> tuple[float, int, tuple[int, int]]:
    """The file's own noise ceiling: Kendall tau between the two lowest training seeds that at least
    three architectures share, over those architectures: (tau, n, (seed a, seed b)); nan when none.

    A proxy cannot rank the file's architectures better than a second training run does.
    """
    import math
    from collections import Counter

    from pipeline.metrics import kendall_tau

    counts = Counter(s for e in entries for s, v in e.seeds.items() if metric in v)
    common = sorted(s for s, c in counts.items() if c >= 3)
    if len(common) < 2:
        return math.nan, 0, (-1, -1)
    a, b = common[:2]
    pairs = [(e.seeds[a][metric], e.seeds[b][metric]) for e in entries
             if metric in e.seeds.get(a, {}) and metric in e.seeds.get(b, {})]
    return kendall_tau([p[0] for p in pairs], [p[1] for p in pairs]), len(pairs), (a, b)


# ------------------------------------------------------------------ tune / test halves
SPLITS = ("all", "tune", "test")


def make_split(keys: list[str], seed: int = 0) -> dict[str, Any]:
    """A fixed, seeded half split of a file's architectures: ``tune`` chooses, ``test`` reports.

    Keys are sorted before the seeded shuffle, so the split depends on the set of keys and the
    seed only, never on file order. The halves are committed (``configs/correlate/splits/``)
    so that no later choice can move an architecture between them.
    """
    import random

    order = sorted(keys, key=lambda k: (len(k), k))
    random.Random(seed).shuffle(order)
    half = len(order) // 2
    return {"seed": seed, "tune": sorted(order[:half], key=lambda k: (len(k), k)),
            "test": sorted(order[half:], key=lambda k: (len(k), k))}


def params_budgets(params_m: list[float]) -> list[float]:
    """The 25/50/75/100 % quantiles of the parameter counts (millions), rounded *up* to 0.01 M so
    that each budget admits the architecture at its quantile (and the last one every architecture)."""
    import math

    import numpy as np

    if not len(params_m):
        return []
    qs = np.quantile(np.asarray(params_m, dtype=float), [0.25, 0.5, 0.75, 1.0])
    return sorted({math.ceil(round(float(q) * 100, 6)) / 100 for q in qs})


def load_split(path: str | Path) -> dict[str, list[str]]:
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or not {"tune", "test"} <= set(data):
        raise SpecError(f"split file {path} must hold {{'tune': [...], 'test': [...]}}")
    overlap = set(data["tune"]) & set(data["test"])
    if overlap:
        raise SpecError(f"split file {path}: {len(overlap)} architectures are in both halves")
    return {"tune": [str(k) for k in data["tune"]], "test": [str(k) for k in data["test"]]}


def load_budgets(path: str | Path) -> Optional[list[float]]:
    """The fixed params budgets (millions) a split file commits for its ground-truth file, if any."""
    budgets = json.loads(Path(path).read_text()).get("budgets_m")
    if budgets is None:
        return None
    if not isinstance(budgets, list) or not budgets or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and b > 0 for b in budgets):
        raise SpecError(f"split file {path}: budgets_m must be a list of positive params budgets (millions), "
                        f"got {budgets!r}")
    return sorted({float(b) for b in budgets})


def write_split(ground_truth: str | Path, out: str | Path, seed: int = 0, space: Optional[str] = None) -> Path:
    """Write the fixed protocol of a ground-truth file: its halves (:func:`make_split`) and its params
    budgets (:func:`params_budgets` of the whole file, our count), the regret table's default.

    Run once per file and commit the result, e.g. ``configs/correlate/splits/<file stem>.json``:
    every later choice is made on the same tune half and judged under the same budgets.
    """
    from pipeline.models.complexity import count_params
    from pipeline.utils.io import atomic_write_text

    gt = Path(ground_truth)
    entries = load_ground_truth(gt, space=space)
    split = make_split([e.key for e in entries], seed=seed)
    data = {"file": gt.name, "note": "fixed tune/test halves (pipeline.groundtruth.make_split, "
            f"seed {seed}): choose on tune, report on test; budgets_m: the regret table's params budgets "
            "(25/50/75/100 % quantiles of the whole file's params, rounded up)",
            "budgets_m": params_budgets([count_params(e.spec) / 1e6 for e in entries]), **split}
    return atomic_write_text(out, json.dumps(data) + "\n")


def select_half(entries: list[Entry], split: dict[str, list[str]], half: str, source: str = "split file") -> list[Entry]:
    """The entries of one half (``tune`` / ``test``), in file order; ``all`` keeps every entry.

    The split must cover the file exactly: a key the file lacks, or an architecture in neither
    half, means the split was made for another file (or an edited one).
    """
    if half == "all":
        return list(entries)
    if half not in SPLITS:
        raise SpecError(f"split must be one of {list(SPLITS)}, got {half!r}")
    keys = {e.key for e in entries}
    named = set(split["tune"]) | set(split["test"])
    if named != keys:
        raise SpecError(f"{source} does not match the ground-truth file: {len(named - keys)} key(s) the file "
                        f"lacks (e.g. {sorted(named - keys)[:3]}), {len(keys - named)} architecture(s) in neither "
                        "half; make a split for this file with pipeline.groundtruth.write_split")
    chosen = set(split[half])
    return [e for e in entries if e.key in chosen]


def override_specs(entries: list[Entry], overrides: dict[str, Any]) -> list[Entry]:
    """Entries whose specs have ``overrides`` (ArchSpec fields) applied, each checked again.

    For facts a file's format cannot state, e.g. ViT-Bench-101's mean-pooled classifier
    (``{"global_pool": "avg"}``), which its JSON lines do not record.
    """
    if not overrides:
        return list(entries)
    import dataclasses

    known = {f.name for f in dataclasses.fields(ArchSpec)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SpecError(f"arch_overrides names unknown spec field(s) {unknown}; valid fields are {sorted(known)}")
    out = []
    for e in entries:
        try:
            spec = ArchSpec.from_dict({**e.spec.to_dict(), **overrides})
        except (SpecError, TypeError) as err:
            raise SpecError(f"arch_overrides {overrides} do not fit architecture {e.key!r}: {err}") from err
        out.append(dataclasses.replace(e, spec=spec))
    return out
