"""Shared pytest fixtures.  Add fixtures here; keep helpers in their own modules."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Helper modules in tests/ (netns.py, ...) import as top-level modules.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

import netns as _netns  # noqa: E402


@pytest.fixture
def netns_factory() -> Iterator[Callable[..., str]]:
    """Call ``make(prefix="wgpyt")`` to get a fresh namespace name.

    Every namespace made through it is deleted at teardown, even if the test
    failed.  Skips the test when namespaces cannot be created here.
    """
    missing = _netns.have_netns_support()
    if missing:
        pytest.skip(f"needs {missing}")
    with contextlib.ExitStack() as stack:

        def make(prefix: str = "wgpyt") -> str:
            return stack.enter_context(_netns.netns(prefix))

        yield make


@pytest.fixture
def fresh_netns(netns_factory: Callable[..., str]) -> str:
    """One fresh network namespace (``lo`` up), deleted after the test."""
    return netns_factory()


# -- skips: only for reasons on a short reviewed list ---------------------------------

#: The reasons a test may be skipped where CI runs (root, every tool
#: installed): another operating system, or a tool release too old to have the
#: feature.  Anything else skipped is a missing tool or a broken set-up that
#: would hide a feature, so with WGPY_STRICT_SKIPS=1 (.ci/run sets it) the run
#: fails.
ALLOWED_SKIP_REASONS = (
    "windows-only",
    "runs on windows only",
    "needs wireguard-tools 2025+",
)

_unexpected_skips: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = (
            str(report.longrepr[2]) if isinstance(report.longrepr, tuple) else str(report.longrepr)
        )
        if not any(ok in reason.lower() for ok in ALLOWED_SKIP_REASONS):
            _unexpected_skips.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import os

    if _unexpected_skips and os.environ.get("WGPY_STRICT_SKIPS") == "1":
        print("\nskipped for a reason not on tests/conftest.py's reviewed list:")
        for line in _unexpected_skips:
            print(f"  {line}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
