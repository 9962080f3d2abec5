"""The test suite's own rules: no test passes by skipping under CI=true."""
import os
import shutil
import subprocess
import sys

from conftest import REPO

SKIPPING = '''
import pytest


def test_skips_itself():
    pytest.skip("no data here")


@pytest.mark.skipif(True, reason="not on this machine")
def test_skipped_by_a_mark():
    pass


@pytest.mark.xfail(reason="a known bug", strict=True)
def test_expected_to_fail():
    assert False
'''


def _pytest(folder, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": "true"} if ci else {})
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", str(folder)],
                          cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_under_ci_and_only_there(tmp_path):
    shutil.copy(REPO / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    plain = _pytest(tmp_path, ci=False)
    assert plain.returncode == 0 and "2 skipped, 1 xfailed" in plain.stdout, plain.stdout[-2000:]
    ci = _pytest(tmp_path, ci=True)
    summary = ci.stdout.strip().splitlines()[-1]   # a skip in the test fails it, one in its setup errors it
    assert ci.returncode == 1 and "skipped" not in summary and "1 failed, 1 xfailed, 1 error" in summary, summary
    assert "no data here (CI=true: a test may not skip in CI)" in ci.stdout
    assert "not on this machine (CI=true: a test may not skip in CI)" in ci.stdout
