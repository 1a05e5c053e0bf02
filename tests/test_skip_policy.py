"""CI fails on a skip whose reason is not on the reviewed list
(tests/conftest.py: ALLOWED_SKIP_REASONS), so a missing tool cannot hide a
feature there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize(
    ("reason", "code"),
    [("needs a tool that is missing", 1), ("named pipes are Windows-only", 0)],
)
def test_unreviewed_skip_reasons_fail_the_run(reason: str, code: int) -> None:
    env = dict(os.environ, WGPY_STRICT_SKIPS="1", WGPY_SKIP_PROBE_REASON=reason)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(HERE / "skip_probe.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=HERE.parent,
        timeout=120,
    )
    assert done.returncode == code, done.stdout + done.stderr
    assert ("not on tests/conftest.py's reviewed list" in done.stdout) == (code == 1)
