import pytest

from conftest import run_cli
from pipeline.config import ConfigError, apply_overrides, parse_overrides


def test_help_lists_subcommands():
    res = run_cli("--help")
    assert res.returncode == 0
    for cmd in ("search", "train", "correlate", "run"):
        assert cmd in res.stdout


def test_unknown_command_fails():
    res = run_cli("frobnicate")
    assert res.returncode != 0
    assert "unknown command" in res.stderr


def test_overrides_parse_yaml_values():
    parsed = parse_overrides(["--a.b=1e-3", "--a.c=true", "--d=[1, 2]", "--e", "text", "--f=null"])
    assert parsed == [(["a", "b"], 1e-3), (["a", "c"], True), (["d"], [1, 2]), (["e"], "text"), (["f"], None)]
    cfg = {"a": {"b": 0.1, "c": False}, "d": [], "e": "", "f": 3}
    out = apply_overrides(cfg, parsed)
    assert out == {"a": {"b": 1e-3, "c": True}, "d": [1, 2], "e": "text", "f": None}
    assert cfg["a"]["b"] == 0.1  # original untouched


def test_unknown_override_key_is_an_error():
    with pytest.raises(ConfigError, match=r"--a\.x.*valid keys there: \['b'\]"):
        apply_overrides({"a": {"b": 1}}, parse_overrides(["--a.x=2"]))
    with pytest.raises(ConfigError, match="has no value"):
        parse_overrides(["--a.b"])
