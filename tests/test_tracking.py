"""W&B mode: offline by default, online when logged in, never a prompt."""
import pytest

from pipeline.cli import UserError
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
