"""Ground-truth benchmarks known by name: where their files come from, checked byte for byte.

``python -m pipeline correlate --ground_truth=ood_vit_nas_tiny`` names a public benchmark instead
of a file. :func:`resolve_benchmark` finds its file, in this order:

1. the user's cache folder, ``$PIPELINE_BENCHMARKS`` when set, else
   ``$XDG_CACHE_HOME/pipeline/benchmarks`` (``~/.cache/pipeline/benchmarks``);
2. ``../shared/benchmarks/`` beside a clone of the repository (our CI's copies);
3. a download from the benchmark's public release, pinned to a commit and to the SHA-256 of its
   bytes, checked before anything is written; the file then goes into the cache (temp file +
   rename). A benchmark published in another format (ViT-Bench-101's ``.pth``) is converted
   here, deterministically, and the result is checked against a second pinned SHA-256.

A file found in the cache or in ``../shared`` is checked against the same SHA-256: a name always
means the same bytes. The resolved files keep the names of the dev copies (the committed splits,
``configs/correlate/splits/<file stem>.json``, are looked up by stem). Nothing here imports torch
except the ViT-Bench-101 conversion.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from pipeline.errors import UserError
from pipeline.utils.io import atomic_write

CACHE_ENV = "PIPELINE_BENCHMARKS"
# Beside a clone: <clone>/../shared/benchmarks (not beside an installed package).
CLONE = Path(__file__).resolve().parents[1]
SHARED_DIR: Optional[Path] = CLONE.parent / "shared" / "benchmarks" if (CLONE / "pyproject.toml").is_file() else None
DOWNLOAD_TIMEOUT_S = 30.0
MAX_DOWNLOAD_BYTES = 64 << 20   # the known files are under 1 MB


class BenchmarkError(UserError):
    """A named benchmark that cannot be found, fetched or trusted (one line, exit status 2)."""


def vitbench101_jsonl(pth: Path) -> str:
    """ViT-Bench-101's AutoFormer-T results (Auto-Prox, ``gt_results/gt_autoformer_2.pth``: a list of
    ``{'arch': {hidden_dim, depth, mlp_ratio, num_heads}, 'c100_kd_acc', 'flower_kd_acc',
    'chaoyang_kd_acc', ...}``) as our JSON lines (:mod:`pipeline.groundtruth`).

    Their model (Auto-Prox's ``AutoFormerSub``): qkv width = embed dim split across the heads
    (``head_dim: null``), no relative positions, CIFAR-100's 100-way head, 224x224 patch 16. The
    accuracies are rounded to 4 decimals (the file holds float noise such as 68.69409999999999).
    """
    import torch

    rows = torch.load(pth, map_location="cpu", weights_only=True)
    lines = []
    for i, row in enumerate(rows):
        a = row["arch"]
        if not int(a["depth"]) == len(a["num_heads"]) == len(a["mlp_ratio"]):
            raise BenchmarkError(f"{pth}: entry {i} has depth {a['depth']} but {len(a['num_heads'])} head counts")
        arch = {"family": "vit", "embed_dim": int(a["hidden_dim"]), "num_heads": [int(h) for h in a["num_heads"]],
                "mlp_ratio": [float(m) for m in a["mlp_ratio"]], "img_size": 224, "patch_size": 16,
                "num_classes": 100, "head_dim": None, "rel_pos": False}
        metrics = {"cifar100_kd": round(float(row["c100_kd_acc"]), 4),
                   "flowers102_kd": round(float(row["flower_kd_acc"]), 4),
                   "chaoyang_kd": round(float(row["chaoyang_kd_acc"]), 4)}
        lines.append(json.dumps({"id": i, "arch": arch, "metrics": metrics}))
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Benchmark:
    """One public ground-truth file.

    Args:
        file: the resolved file's name (as in ``../shared/benchmarks``).
        sha256: SHA-256 of that file's bytes.
        url: the public release's file, pinned to a commit.
        source_sha256: SHA-256 of the download (= ``sha256`` when the file is used as published).
        convert: published file -> our file's text (None: used as published).
        about: one line for listings.
    """

    file: str
    sha256: str
    url: str
    source_sha256: str
    convert: Optional[Callable[[Path], str]] = None
    about: str = ""

    @property
    def download_name(self) -> str:
        """What the download is saved as by hand: our file, or the published file to convert."""
        return self.file if self.convert is None else self.url.rsplit("/", 1)[-1]


_OOD = "https://raw.githubusercontent.com/vovantuan1999a/OoD-ViT-NAS/037c8e0aeb053759cbbdd82c9bdab2dfb424aaa2/"
_AUTOPROX = "https://raw.githubusercontent.com/lliai/Auto-Prox-AAAI24/90ed458eff6948a6f0d23e440a8d21bbec50d091/"
_TINY_SHA = "5e07b49782d4f808c81fa565bcff5432293f832b8822224469f69edb380a1e70"
_SMALL_SHA = "d70fb30822848d71ce88efcff071973dce7f2256bc1a5eb663fcc138ca6ee789"

BENCHMARKS: dict[str, Benchmark] = {
    "ood_vit_nas_tiny": Benchmark(
        "autoformer_tiny_ood_vit_nas.json", _TINY_SHA,
        _OOD + "architecture_infors/1k_Vit_Architecture_from_AutoFM_tiny.json", _TINY_SHA,
        about="OoD-ViT-NAS (NeurIPS 2024): 1,001 AutoFormer-T subnets, ImageNet top-1 of supernet weights"),
    "ood_vit_nas_small": Benchmark(
        "autoformer_small_ood_vit_nas.json", _SMALL_SHA,
        _OOD + "architecture_infors/1k_Vit_Architecture_from_AutoFM_small.json", _SMALL_SHA,
        about="OoD-ViT-NAS (NeurIPS 2024): 1,001 AutoFormer-S subnets, ImageNet top-1 of supernet weights"),
    "vitbench101_autoformer_tiny_kd": Benchmark(
        "vitbench101_autoformer_tiny_kd.jsonl", "ec9928908cb697681cabfaa296d1b5e986f58c7314f74586ad736524fb7d0443",
        _AUTOPROX + "gt_results/gt_autoformer_2.pth",
        "05f5df6a41f338fb5f47eafebfc8758c75e451606856b278ccda1c60b26e7bca", convert=vitbench101_jsonl,
        about="ViT-Bench-101 (AAAI 2024): 100 AutoFormer-T networks trained from scratch (CIFAR-100, Flowers, "
              "Chaoyang)"),
}


def cache_dir() -> Path:
    """Where named benchmarks are kept: ``$PIPELINE_BENCHMARKS``, else the user's cache folder."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "pipeline" / "benchmarks"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def find_benchmark(name: str) -> Optional[Path]:
    """The benchmark's file in the cache or ``../shared/benchmarks`` (checked), or None; no download."""
    bench = _known(name)
    for folder in (cache_dir(), SHARED_DIR):
        path = folder / bench.file if folder is not None else None
        if path is not None and path.is_file():
            got = sha256_of(path)
            if got != bench.sha256:
                raise BenchmarkError(f"{path} has SHA-256 {got}, not the pinned {bench.sha256} of benchmark "
                                     f"{name!r}; delete it (it is fetched again) or pass the file's path instead "
                                     "of the name")
            return path.resolve()
    return None


def resolve_benchmark(name: str, download: bool = True) -> Path:
    """The checked file of a named benchmark: cache, ``../shared/benchmarks``, else downloaded into the
    cache (see the module docstring). Raises :class:`BenchmarkError` naming where to put the file."""
    found = find_benchmark(name)
    if found is not None:
        return found
    bench = _known(name)
    by_hand = cache_dir() / bench.download_name
    if bench.convert is not None and by_hand.is_file():   # the published file, saved there by hand
        return _store(name, bench, by_hand.read_bytes(), str(by_hand))
    where = (f"download {bench.url} (SHA-256 {bench.source_sha256}) and save it as {by_hand} (${CACHE_ENV} "
             "sets that folder), or pass a file's path instead of the name")
    if not download:
        raise BenchmarkError(f"benchmark {name!r} is not on this machine: {where}")
    try:
        with urllib.request.urlopen(bench.url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except (OSError, ValueError) as e:   # URLError, HTTPError, timeouts, refused connections are OSErrors
        reason = getattr(e, "reason", None) or e
        raise BenchmarkError(f"benchmark {name!r} is not on this machine and could not be downloaded "
                             f"({type(e).__name__}: {reason}): {where}") from None
    return _store(name, bench, data, bench.url)


def _store(name: str, bench: Benchmark, data: bytes, origin: str) -> Path:
    """Check the published bytes, convert them if needed, check the result, write it into the cache."""
    got = hashlib.sha256(data).hexdigest()
    if len(data) > MAX_DOWNLOAD_BYTES or got != bench.source_sha256:
        raise BenchmarkError(f"{origin} has SHA-256 {got}, not the pinned {bench.source_sha256} of benchmark "
                             f"{name!r}; nothing was written (a changed release or a broken download: fetch "
                             f"{bench.url} again, or pass a file's path instead of the name)")
    target = cache_dir() / bench.file
    try:
        if bench.convert is None:
            atomic_write(target, lambda p: p.write_bytes(data))
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                source = Path(tmp) / bench.download_name
                source.write_bytes(data)
                text = bench.convert(source)
            got = hashlib.sha256(text.encode()).hexdigest()
            if got != bench.sha256:
                raise BenchmarkError(f"converting {origin} gave SHA-256 {got}, not the pinned {bench.sha256} of "
                                     f"benchmark {name!r}; nothing was written")
            atomic_write(target, lambda p: p.write_bytes(text.encode()))
    except OSError as e:
        raise BenchmarkError(f"cannot write benchmark {name!r} to {target} ({e.strerror or e}); set "
                             f"${CACHE_ENV} to a writable folder") from None
    print(f"benchmark {name!r}: {origin} (SHA-256 checked) saved as {target}", flush=True)
    return target.resolve()


def _known(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]
