"""Atomic file writes (pipeline.utils.io): the user's umask, no temp file left, stale temps removed."""
import os

import pytest

from pipeline.space import ArchSpec
from pipeline.utils.io import atomic_write_text


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_users_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "metrics.json", "{}")
        ArchSpec(family="vit", embed_dim=32, num_heads=(2,), mlp_ratio=(2.0,)).save(tmp_path / "arch.yaml")
    finally:
        os.umask(old)
    for name in ("metrics.json", "arch.yaml"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arch.yaml", "metrics.json"]   # no temp file left


def test_a_run_removes_the_temp_files_a_kill_left_of_its_own_files_only(tmp_path):
    from pipeline.utils.io import remove_stale_temps

    left = [".report.md.4d6l27cv.tmp", ".report.md.x.tmp", ".metrics.json.ab12.tmp", "report.md", ".report.md"]
    for name in left:
        (tmp_path / name).write_text("x")
    remove_stale_temps(tmp_path, ["report.md", "missing.yaml"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".metrics.json.ab12.tmp", ".report.md", "report.md"]
