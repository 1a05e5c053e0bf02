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
