"""Named benchmarks (pipeline.benchmark_files): found in the cache, then ../shared, else downloaded
with a pinned SHA-256 -- the download is tested on file:// and loopback HTTP URLs, never the internet."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import socket
import threading

import pytest

from conftest import dev_benchmark
from pipeline import benchmark_files as bf
from pipeline.benchmark_files import BENCHMARKS, BenchmarkError, resolve_benchmark, vitbench101_jsonl

# The first two entries of ViT-Bench-101's gt_results/gt_autoformer_2.pth (Auto-Prox-AAAI24, Apache-2.0)
# as torch.load gives them, and the first two lines of our converted file (../shared/benchmarks).
PTH_EXCERPT = [
    {"arch": {"hidden_dim": 240, "mlp_ratio": [3.5, 3.5, 3.5, 3.5, 3.5, 4.0, 4.0, 3.5, 3.5, 3.5, 4.0, 4.0, 3.5],
              "depth": 13, "num_heads": [3, 3, 4, 4, 3, 4, 4, 4, 4, 3, 4, 4, 3]},
     "c100_base_acc": None, "c100_kd_acc": 78.07, "flower_base_acc": None, "flower_kd_acc": 68.69409999999999,
     "chaoyang_base_acc": None, "chaoyang_kd_acc": 84.75919999999999, "imagenet_super_acc": 71.13000001953125},
    {"arch": {"hidden_dim": 240, "mlp_ratio": [4.0, 4.0, 4.0, 4.0, 3.5, 3.5, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5, 3.5, 3.5],
              "depth": 14, "num_heads": [4, 4, 4, 3, 4, 3, 3, 3, 4, 3, 3, 4, 4, 3]},
     "c100_base_acc": None, "c100_kd_acc": 78.48, "flower_base_acc": None, "flower_kd_acc": 69.1657,
     "chaoyang_base_acc": None, "chaoyang_kd_acc": 85.367, "imagenet_super_acc": 75.3340000201416},
]
JSONL_EXCERPT = (
    '{"id": 0, "arch": {"family": "vit", "embed_dim": 240, "num_heads": [3, 3, 4, 4, 3, 4, 4, 4, 4, 3, 4, 4, 3], '
    '"mlp_ratio": [3.5, 3.5, 3.5, 3.5, 3.5, 4.0, 4.0, 3.5, 3.5, 3.5, 4.0, 4.0, 3.5], "img_size": 224, '
    '"patch_size": 16, "num_classes": 100, "head_dim": null, "rel_pos": false}, "metrics": {"cifar100_kd": 78.07, '
    '"flowers102_kd": 68.6941, "chaoyang_kd": 84.7592}}\n'
    '{"id": 1, "arch": {"family": "vit", "embed_dim": 240, "num_heads": [4, 4, 4, 3, 4, 3, 3, 3, 4, 3, 3, 4, 4, 3], '
    '"mlp_ratio": [4.0, 4.0, 4.0, 4.0, 3.5, 3.5, 4.0, 3.5, 4.0, 3.5, 4.0, 3.5, 3.5, 3.5], "img_size": 224, '
    '"patch_size": 16, "num_classes": 100, "head_dim": null, "rel_pos": false}, "metrics": {"cifar100_kd": 78.48, '
    '"flowers102_kd": 69.1657, "chaoyang_kd": 85.367}}\n')


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty cache, no ../shared, and a registry the test may change."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(bf.CACHE_ENV, str(cache))
    monkeypatch.setattr(bf, "SHARED_DIR", None)
    monkeypatch.setattr(bf, "BENCHMARKS", dict(BENCHMARKS))
    return cache


def _register(name: str, **fields) -> bf.Benchmark:
    bench = dataclasses.replace(BENCHMARKS.get(name) or BENCHMARKS["ood_vit_nas_tiny"], **fields)
    bf.BENCHMARKS[name] = bench
    return bench


def _excerpt_pth(path):
    import torch

    torch.save(PTH_EXCERPT, path)
    return path


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_converter_reproduces_the_committed_excerpt(tmp_path):
    assert vitbench101_jsonl(_excerpt_pth(tmp_path / "gt_autoformer_2.pth")) == JSONL_EXCERPT


def test_pins_are_commits_and_sha256():
    for name, bench in BENCHMARKS.items():
        assert re.fullmatch(r"https://raw\.githubusercontent\.com/[\w-]+/[\w-]+/[0-9a-f]{40}/.+", bench.url), name
        assert re.fullmatch(r"[0-9a-f]{64}", bench.sha256) and re.fullmatch(r"[0-9a-f]{64}", bench.source_sha256)
        assert (bench.convert is None) == (bench.sha256 == bench.source_sha256), name


def test_file_url_download_is_checked_and_cached(isolated, tmp_path):
    published = tmp_path / "published.json"
    published.write_text('{"1": {}}\n')
    _register("toy", file="toy.json", url=published.as_uri(), sha256=_sha(published.read_bytes()),
              source_sha256=_sha(published.read_bytes()))
    path = resolve_benchmark("toy")
    assert path == (isolated / "toy.json").resolve() and path.read_bytes() == published.read_bytes()
    assert sorted(p.name for p in isolated.iterdir()) == ["toy.json"]   # no temp file left
    published.unlink()   # the second call reads the cache, not the URL
    assert resolve_benchmark("toy") == path


def test_loopback_http_download_is_converted_and_checked(isolated, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    source = _excerpt_pth(served / "gt_autoformer_2.pth")
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(served))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/gt_autoformer_2.pth"
        _register("vb", file="vb.jsonl", url=url, source_sha256=_sha(source.read_bytes()),
                  sha256=_sha(JSONL_EXCERPT.encode()), convert=vitbench101_jsonl)
        assert resolve_benchmark("vb").read_text() == JSONL_EXCERPT
        # a converted result that differs from its pin is refused too
        (isolated / "vb.jsonl").unlink()
        _register("vb2", file="vb2.jsonl", url=url, source_sha256=_sha(source.read_bytes()), sha256="0" * 64,
                  convert=vitbench101_jsonl)
        with pytest.raises(BenchmarkError, match="converting .* gave SHA-256 .* nothing was written"):
            resolve_benchmark("vb2")
    finally:
        server.shutdown()
        server.server_close()
    assert not list(isolated.iterdir())


def test_sha_mismatch_is_an_error_and_writes_nothing(isolated, tmp_path):
    published = tmp_path / "published.json"
    published.write_text("tampered\n")
    _register("toy", file="toy.json", url=published.as_uri(), sha256="a" * 64, source_sha256="a" * 64)
    with pytest.raises(BenchmarkError, match=f"has SHA-256 {_sha(published.read_bytes())}, not the pinned a{{64}}"):
        resolve_benchmark("toy")
    assert not isolated.exists() or not list(isolated.iterdir())
    # a file in the cache is checked as well
    isolated.mkdir(exist_ok=True)
    (isolated / "toy.json").write_text("edited\n")
    with pytest.raises(BenchmarkError, match="delete it"):
        resolve_benchmark("toy")


def test_cache_comes_before_shared(isolated, tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    data = b'{"1": {}}\n'
    (shared / "toy.json").write_bytes(data)
    monkeypatch.setattr(bf, "SHARED_DIR", shared)
    _register("toy", file="toy.json", url=f"http://127.0.0.1:{_closed_port()}/toy.json", sha256=_sha(data),
              source_sha256=_sha(data))
    assert resolve_benchmark("toy") == (shared / "toy.json").resolve()
    isolated.mkdir()
    (isolated / "toy.json").write_bytes(data)
    assert resolve_benchmark("toy") == (isolated / "toy.json").resolve()


def test_published_file_saved_by_hand_is_converted_offline(isolated):
    isolated.mkdir()
    source = _excerpt_pth(isolated / "gt_autoformer_2.pth")
    _register("vb", file="vb.jsonl", url=f"http://127.0.0.1:{_closed_port()}/gt_autoformer_2.pth",
              source_sha256=_sha(source.read_bytes()), sha256=_sha(JSONL_EXCERPT.encode()), convert=vitbench101_jsonl)
    assert resolve_benchmark("vb").read_text() == JSONL_EXCERPT


def test_offline_correlate_says_where_to_put_the_file(isolated, tmp_path, capsys):
    """The default ground truth, unreachable: one line, exit 2, naming the URL and the cache path."""
    from pipeline.cli import main

    bench = _register("ood_vit_nas_tiny", url=f"http://127.0.0.1:{_closed_port()}/tiny.json")
    out = tmp_path / "out"
    assert main(["correlate", "--proxies=[params]", f"--output_dir={out}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --ground_truth: benchmark 'ood_vit_nas_tiny' is not on "
                                                    "this machine and could not be downloaded"), err
    assert f"save it as {isolated / bench.file}" in err and bench.url in err and bench.sha256 in err
    assert not out.exists() and not isolated.exists()


def test_unknown_name_lists_the_known_ones(isolated):
    with pytest.raises(BenchmarkError, match="unknown benchmark 'nope'; known: ood_vit_nas_tiny"):
        resolve_benchmark("nope")


@pytest.mark.parametrize("name", sorted(BENCHMARKS))
def test_dev_copies_are_the_pinned_files(name):
    """../shared/benchmarks holds exactly the pinned bytes under the names the committed splits use."""
    path = dev_benchmark(name)
    assert path.name == BENCHMARKS[name].file and bf.sha256_of(path) == BENCHMARKS[name].sha256
