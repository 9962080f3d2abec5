"""W&B mode: offline by default, online when logged in, never a prompt."""
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
