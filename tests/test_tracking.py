"""W&B mode: offline by default, online when logged in (to the configured host), never a prompt."""
import os
from pathlib import Path

import pytest

from pipeline.errors import UserError
from pipeline.tracking import wandb_logger


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))   # no ~/.netrc login
    return monkeypatch


@pytest.mark.parametrize("key,expected", [(None, "offline"), ("k" * 40, "online")])
def test_auto_mode_is_online_only_when_logged_in(clean_env, tmp_path, key, expected):
    import os

    if key:
        clean_env.setenv("WANDB_API_KEY", key)
    logger = wandb_logger({"wandb": {"mode": "auto"}}, tmp_path / "run", job_type="test")
    assert logger and os.environ["WANDB_MODE"] == expected


def test_online_without_login_fails_fast_and_disabled_logs_nothing(clean_env, tmp_path):
    with pytest.raises(UserError, match="needs a W&B login"):
        wandb_logger({"wandb": {"mode": "online"}}, tmp_path / "run", job_type="test")
    assert wandb_logger({"wandb": {"mode": "disabled"}}, tmp_path / "run", job_type="test") is False
    assert wandb_logger({"wandb": {"enabled": False}}, tmp_path / "run", job_type="test") is False


def test_model_artifact_carries_the_exports(tmp_path):
    """Producer and consumer build the same `model` artifact: model.pt with its exports beside it."""
    from pipeline.tracking import handoff_artifact

    run = tmp_path / "cls-demo"
    run.mkdir()
    for name, data in (("model.pt", b"weights"), ("model.pt2", b"program"), ("arch.yaml", b"spec")):
        (run / name).write_bytes(data)
    art = handoff_artifact("model", "group", run / "model.pt")
    assert art.name == "model-group-cls-demo" and art.type == "model"
    assert sorted(art.manifest.entries) == ["model.pt", "model.pt2"]  # model.onnx absent: not invented
    (run / "model.onnx").write_bytes(b"graph")
    assert sorted(handoff_artifact("model", "group", run / "model.pt").manifest.entries) == [
        "model.onnx", "model.pt", "model.pt2"]
    assert sorted(handoff_artifact("model", None, run / "model.pt2").manifest.entries) == ["model.onnx", "model.pt2"]
    assert sorted(handoff_artifact("arch", None, run / "arch.yaml").manifest.entries) == ["arch.yaml"]


# ----------------------------------------------------------------------------- W&B login
KEY = "a" * 40


@pytest.fixture
def fake_home(monkeypatch, tmp_path):
    for var in ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_CONFIG_DIR", "WANDB_IDENTITY_TOKEN_FILE", "NETRC",
                "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _netrc(home: Path, host: str) -> None:
    (home / ".netrc").write_text(f"machine {host}\n  login user\n  password {KEY}\n")
    (home / ".netrc").chmod(0o600)


def test_wandb_login_to_a_self_hosted_server_counts(fake_home, monkeypatch):
    from pipeline.tracking import _logged_in, wandb_logger

    _netrc(fake_home, "wandb.example.com")
    assert not _logged_in()                        # the public cloud is configured: no key for it
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert _logged_in()                            # WANDB_BASE_URL names the self-hosted server
    monkeypatch.delenv("WANDB_BASE_URL")
    (fake_home / ".config" / "wandb").mkdir(parents=True)
    (fake_home / ".config" / "wandb" / "settings").write_text("[default]\nbase_url = https://wandb.example.com\n")
    assert _logged_in()                            # what `wandb login --host` leaves behind
    logger = wandb_logger({"wandb": {"mode": "online"}}, fake_home / "run", job_type="test")
    assert logger and os.environ["WANDB_MODE"] == "online"


def test_wandb_login_is_per_host(fake_home, monkeypatch):
    from pipeline.tracking import _logged_in, wandb_logger

    _netrc(fake_home, "api.wandb.ai")
    assert _logged_in()
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.com")
    assert not _logged_in()                        # a cloud key is no login to another server
    with pytest.raises(UserError, match="needs a W&B login for the configured host"):
        wandb_logger({"wandb": {"mode": "online"}}, fake_home / "run", job_type="test")
    monkeypatch.setenv("WANDB_API_KEY", "short")   # a key wandb would reject
    assert not _logged_in()
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    assert _logged_in()
