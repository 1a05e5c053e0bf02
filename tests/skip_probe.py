"""Run only by test_skip_policy.py (the name keeps pytest from collecting it)."""

import os

import pytest


def test_probe() -> None:
    pytest.skip(os.environ.get("WGPY_SKIP_PROBE_REASON", "needs a tool that is missing"))
