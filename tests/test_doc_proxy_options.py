"""Every ``--proxy.options`` value the README, the docs and the shipped configs show works.

Each is taken with the proxy it is shown with (a ``--proxy.name=`` on its line or in its paragraph,
the command's ``--proxy.name`` in a sweep, the config's ``proxy.name``; else the default). All are
parsed and scored on the demo space's smallest candidate (``check_proxy``: what the search does
before its first generation); the ones in the prose also run as a tiny search through the real CLI.
"""
from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO, run_cli

OPTION = re.compile(r"""--proxy\.options(?:=|\s+)(["']?)(\{[^{}]*\})\1""")
NAME = re.compile(r"--proxy\.name[= ]([\w-]+)")


def _default_proxy() -> str:
    from pipeline.search.settings import parse_config

    return parse_config([])["proxy"]["name"]


def from_prose() -> list[tuple[str, str, str]]:
    """(where, proxy name, options) for each ``--proxy.options`` in README.md and docs/*.md."""
    found = []
    for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = path.read_text()
        for m in OPTION.finditer(text):
            if "key" in (yaml.safe_load(m.group(2)) or {}):
                continue  # the syntax placeholder `--proxy.options={key: value}`
            line_start = text.rfind("\n", 0, m.start()) + 1
            line_end = text.find("\n", m.end())
            para_start = text.rfind("\n\n", 0, m.start()) + 1
            names = (NAME.findall(text[line_start:line_end]) or NAME.findall(text[para_start:m.start()]))
            line_no = text.count("\n", 0, m.start()) + 1
            found.append((f"{path.relative_to(REPO)}:{line_no}", names[-1] if names else _default_proxy(),
                          m.group(2)))
    return found


def from_configs() -> list[tuple[str, str, str]]:
    """(where, proxy name, options) for each proxy.options in the shipped YAML: search configs'
    values and their `e.g. {...}` comments, and the sweeps' grid values."""
    root = REPO / "pipeline" / "configs"
    found = []
    for path in sorted((root / "search").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        where = str(path.relative_to(REPO))
        options = yaml.safe_dump(cfg["proxy"]["options"], default_flow_style=True).strip()
        found.append((where, cfg["proxy"]["name"], options))
        for line in path.read_text().splitlines():
            if line.strip().startswith("options:") and "e.g." in line:
                found.append((f"{where} (comment)", cfg["proxy"]["name"], line.split("e.g.", 1)[1].strip()))
    for path in sorted((root / "sweeps").glob("*.yaml")):
        sweep = yaml.safe_load(path.read_text())
        if "proxy.options" in sweep["parameters"]:
            (name,) = [c.split("=", 1)[1] for c in sweep["command"] if str(c).startswith("--proxy.name=")]
            found += [(str(path.relative_to(REPO)), name, v) for v in sweep["parameters"]["proxy.options"]["values"]]
    return found


def _cases(found):
    seen, out = set(), []
    for where, name, options in found:
        if (name, options) not in seen:
            seen.add((name, options))
            out.append(pytest.param(name, options, id=f"{where}-{name}-{options}"))
    return out


PROSE, CONFIGS = from_prose(), from_configs()


def test_the_examples_are_found():
    """The grep finds what the docs show (so the tests below cannot pass on nothing)."""
    shown = {(name, o) for _, name, o in PROSE}
    assert ("vintk", "{views: [identity], weights: null}") in shown
    assert ("vintk", "{statistic: cond, normalize: false, params: all, views: [identity], weights: null}") in shown
    assert ("vintk_flops", "{flops_weight: 2.0}") in shown
    assert len(CONFIGS) >= 9


@pytest.fixture(scope="module")
def demo_space_and_probe():
    from pipeline.search.command import make_probe
    from pipeline.search.settings import parse_config
    from pipeline.space import SearchSpace

    cfg = parse_config([])
    space = SearchSpace.load(cfg["space"])
    return space, make_probe(cfg, space)


@pytest.mark.parametrize("name,options", _cases(PROSE + CONFIGS))
def test_options_parse_and_score_a_candidate(name, options, demo_space_and_probe):
    from pipeline.search.command import check_proxy
    from pipeline.search.settings import parse_config

    cfg = parse_config([f"--proxy.name={name}", f"--proxy.options={options}"])
    assert cfg["proxy"] == {**cfg["proxy"], "name": name, "options": yaml.safe_load(options)}
    check_proxy(cfg, *demo_space_and_probe)  # raises UserError if the proxy refuses or fails on them


@pytest.mark.slow
@pytest.mark.parametrize("name,options", _cases(PROSE))
def test_options_from_the_docs_run_a_search(name, options, tmp_path):
    res = run_cli("search", f"--proxy.name={name}", f"--proxy.options={options}", "--run_name=doc",
                  "--strategy.evolution.generations=1", "--strategy.evolution.population=2",
                  "--wandb.mode=disabled", f"--out_dir={tmp_path}")
    assert res.returncode == 0, res.stderr[-2000:]
    saved = yaml.safe_load((tmp_path / "doc" / "config.yaml").read_text())
    assert saved["proxy"]["name"] == name and saved["proxy"]["options"] == yaml.safe_load(options)
    assert (tmp_path / "doc" / "arch.yaml").is_file()
