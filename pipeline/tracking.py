"""Weights & Biases logging for every stage: online when logged in, else offline, never prompting.

Offline runs need no account and land in ``<run dir>/wandb/`` (sync later with ``wandb sync``).
The default mode ``auto`` logs online when the user is logged in and offline otherwise, never
prompting; ``online`` asked for without a login fails fast, before any work.
"""
from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Literal, Optional

from pipeline.errors import UserError


@dataclass
class WandbSettings:
    """Weights & Biases logging of a command.

    Args:
        enabled: log to W&B at all (false is the same as mode=disabled).
        mode: auto = online when logged in (`wandb login`, WANDB_API_KEY), else offline into the
            run folder; offline | online | disabled. An explicit WANDB_MODE wins.
        project: the W&B project.
        group: the W&B group (``pipeline run`` puts its stages in one).
    """

    enabled: bool = True
    mode: Literal["auto", "offline", "online", "disabled"] = "auto"
    project: str = "pipeline"
    group: Optional[str] = None


def _configured_host() -> str:
    """The W&B server wandb would use: WANDB_BASE_URL, else ``wandb login --host``'s setting.

    Read into a fresh ``wandb.Settings`` the way wandb loads them: wandb's process-wide settings
    are frozen at first use, so touching them here would hide the WANDB_MODE set below.
    """
    from wandb import env
    from wandb.sdk.wandb_settings import Settings

    settings = Settings()
    config_dir = Path(os.environ.get(env.CONFIG_DIR) or "~/.config/wandb").expanduser()
    settings.settings_system = str(config_dir / "settings")
    settings.update_from_system_settings()
    settings.update_from_env_vars(dict(os.environ))
    return settings.base_url


def _logged_in() -> bool:
    """Whether wandb would find credentials for the configured host; no prompt, no network.

    wandb's own lookup order: an API key (or identity-token file) in the environment, then the
    netrc entry of the host the user configured (``WANDB_BASE_URL`` or ``wandb login --host``,
    else the public cloud). A key wandb would reject as malformed counts as no login.
    """
    from wandb import env
    from wandb.errors import AuthenticationError
    from wandb.sdk.lib import wbauth

    key = os.environ.get(env.API_KEY)
    if key:
        return wbauth.check_api_key(key) is None
    if os.environ.get(env.IDENTITY_TOKEN_FILE):
        return True
    try:
        return wbauth.read_netrc_auth(host=_configured_host()) is not None
    except (AuthenticationError, ValueError):
        return False


def wandb_logger(cfg: dict[str, Any], run_dir: Path, job_type: str, name: Optional[str] = None):
    """A Lightning ``WandbLogger`` from the config's ``wandb`` section, or False when disabled.

    Keys: enabled (bool), mode (auto | offline | online | disabled), project, group. ``auto``:
    online when the user is logged in (``wandb login`` or WANDB_API_KEY), else offline.
    An explicit WANDB_MODE in the environment wins over the config.
    """
    w = cfg.get("wandb") or {}
    if not w.get("enabled", True) or w.get("mode") == "disabled":
        return False
    mode = w.get("mode") or "auto"
    if mode == "auto":
        mode = "online" if _logged_in() else "offline"
    mode = os.environ.setdefault("WANDB_MODE", mode)
    if mode == "online" and not _logged_in():
        raise UserError("wandb.mode=online needs a W&B login for the configured host (`wandb login "
                        "[--host URL]` or WANDB_API_KEY); use --wandb.mode=offline to log locally")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    from lightning.pytorch.loggers import WandbLogger

    run_dir.mkdir(parents=True, exist_ok=True)
    import wandb

    # Lightning 2.6 passes anonymous=None to wandb.init, which wandb 0.31 answers with a deprecation
    # warning before it reads WANDB_SILENT; setting wandb up first (public API) applies WANDB_SILENT,
    # set above unless the user chose otherwise, so the warning goes to wandb's log, not the terminal.
    wandb.setup()
    return WandbLogger(project=w.get("project") or "pipeline", group=w.get("group"), name=name or run_dir.name,
                       save_dir=str(run_dir), job_type=job_type, config=cfg)


# What the stages hand each other, by kind: W&B artifact type.
ARTIFACT_TYPES = {"arch": "architecture", "model": "model"}
# Files that travel in a hand-off's artifact when they sit beside it: the model's exports, which
# load without this package (a teammate pulls the artifact and needs nothing else).
COMPANIONS = {"model": ("model.pt2", "model.onnx")}


def artifact_name(kind: str, group: Optional[str], run_dir: Path) -> str:
    """``<kind>-<group>-<run>``: unique across the stages of one ``pipeline run`` (its W&B group)."""
    return "-".join(str(p) for p in (kind, group, run_dir.name) if p)


def handoff_artifact(kind: str, group: Optional[str], path: Path, run_dir: Optional[Path] = None,
                     metadata: Optional[dict[str, Any]] = None):
    """The W&B artifact of one hand-off file (plus its companions), named after the stage folder
    that wrote it. Producer and consumer build it alike, so online both name the same version."""
    import wandb

    art = wandb.Artifact(artifact_name(kind, group, run_dir or path.parent), type=ARTIFACT_TYPES[kind],
                         metadata=metadata)
    art.add_file(str(path))
    for name in COMPANIONS.get(kind, ()):
        companion = path.parent / name
        if name != path.name and companion.is_file():
            art.add_file(str(companion))
    return art


def record_handoff(loggers, run_dir: Path, produced: Optional[tuple[str, Path]] = None,
                   consumed: Optional[dict[str, Path]] = None) -> None:
    """Log what a stage hands on (``produced``: kind and file) and what it was handed (kind: file).

    Stages meet through files (``arch.yaml``, ``model.pt``); logging them as W&B artifacts makes
    each hand-off visible in the group. Online, a consumed file is declared with ``use_artifact``
    under the name its producer logged it with (W&B draws the lineage); W&B cannot use artifacts
    offline, so there its path and SHA-256 go into the run's config, enough to match it later.
    """
    from lightning.pytorch.loggers import WandbLogger

    wb = next((lg for lg in loggers if isinstance(lg, WandbLogger)), None)
    if wb is None:
        return
    import hashlib

    run = wb.experiment
    offline: dict[str, dict[str, str]] = {}
    for kind, path in (consumed or {}).items():
        path = Path(path)
        if run.settings.mode == "offline":
            offline[kind] = {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        else:
            run.use_artifact(handoff_artifact(kind, run.group, path))
    if offline:
        run.config.update({"handoff": offline}, allow_val_change=True)
    if produced is not None:
        kind, path = produced
        run.log_artifact(handoff_artifact(kind, run.group, Path(path), run_dir))


def finish_wandb(loggers) -> None:
    """End the stage's W&B run (rank 0, after it logged) now, so its artifacts are written before the process exits.

    Left to wandb's exit hook, a run whose process shares a W&B service started by its parent
    (``refine``'s workers, any stage launched from a Python process that used wandb) can exit
    before the service has written the run's last records, its artifacts among them.
    """
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.finish()
