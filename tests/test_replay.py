"""Tests for wgpy.replay: the kernel's counter self-test as data, edges, and a model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.constants import COUNTER_WINDOW_SIZE, REJECT_AFTER_MESSAGES
from wgpy.replay import ReplayWindow

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "replay"
W = COUNTER_WINDOW_SIZE


def _load_selftest() -> dict[str, Any]:
    with (VECTORS / "kernel_counter_selftest.json").open() as f:
        data: dict[str, Any] = json.load(f)
    return data


SELFTEST = _load_selftest()


def _expand(steps: list[dict[str, Any]]) -> Iterator[tuple[str, int, bool]]:
    """Yield (label, counter, expected) for every step, unrolling ranges."""
    for n, step in enumerate(steps, 1):
        if "counter" in step:
            label = f"case {step.get('case', n)}"
            yield label, step["counter"], step["accept"]
        else:
            lo, hi = step["from"], step["to"]
            walk = range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1)
            for c in walk:
                yield f"step {n} (range {lo}..{hi})", c, step["accept"]


def test_vector_constants_match_ours() -> None:
    # The table is only meaningful for the kernel's geometry, which we share.
    assert SELFTEST["window_size"] == COUNTER_WINDOW_SIZE == 8128
    assert SELFTEST["reject_after_messages"] == REJECT_AFTER_MESSAGES


def test_scripted_run_has_34_cases() -> None:
    scripted = SELFTEST["runs"][0]
    assert scripted["name"] == "scripted"
    assert [s["case"] for s in scripted["steps"]] == list(range(1, 35))


@pytest.mark.parametrize("run", SELFTEST["runs"], ids=lambda r: r["name"])
def test_kernel_counter_selftest(run: dict[str, Any]) -> None:
    window = ReplayWindow()
    count = 0
    for label, counter, expected in _expand(run["steps"]):
        assert window.validate(counter) is expected, f"{run['name']}: {label}, counter {counter}"
        count += 1
    assert count >= 3


def test_bulk_runs_cover_the_whole_window() -> None:
    # Guard against a truncated table: each bulk run walks the whole window.
    lengths = [sum(1 for _ in _expand(run["steps"])) for run in SELFTEST["runs"][1:]]
    assert lengths == [W + 2, W + 2, W + 1, W + 2, W + 2, W + 2]


def test_fresh_window_state() -> None:
    window = ReplayWindow()
    assert window.greatest is None
    assert window.validate(5)
    assert window.greatest == 5
    assert not window.validate(5)
    assert window.validate(4)
    assert window.greatest == 5


def test_sequential_counters_and_replays() -> None:
    window = ReplayWindow()
    n = 3 * 8192 + 17  # wraps the ring several times
    assert all(window.validate(c) for c in range(n))
    assert window.greatest == n - 1
    # Everything still inside the window is a replay; below it is too old.
    assert not any(window.validate(c) for c in range(n - 1, n - 1 - W - 100, -1))


def test_exact_lower_edge() -> None:
    window = ReplayWindow()
    top = 10 * W + 123
    assert window.validate(top)
    assert not window.validate(top - W - 1)  # one below the edge: too old
    assert window.validate(top - W)  # the edge itself is inside
    assert not window.validate(top - W)
    # Advancing by one moves the edge past it.
    assert window.validate(top + 1)
    assert not window.validate(top - W)
    assert window.validate(top + 1 - W)


def test_limit_boundary_and_rejections_leave_state_alone() -> None:
    window = ReplayWindow()
    assert window.validate(100)
    assert not window.validate(REJECT_AFTER_MESSAGES)
    assert not window.validate(REJECT_AFTER_MESSAGES + 1)
    assert not window.validate(1 << 64)
    assert not window.validate(-1)
    assert window.greatest == 100
    assert window.validate(99)  # the window did not move
    # A caller-supplied limit applies the same way.
    assert not window.validate(200, limit=200)
    assert window.validate(199, limit=200)
    assert window.greatest == 199
    assert window.validate(REJECT_AFTER_MESSAGES - 1)
    assert window.greatest == REJECT_AFTER_MESSAGES - 1


@pytest.mark.parametrize("jump", [1, 63, 64, 65, 4096, 8128, 8191, 8192, 8193, 50_000])
def test_jump_clears_stale_bits_in_reused_words(jump: int) -> None:
    # Fill every bit of the ring, then move the head forward: counters that
    # land in reused words (including the new head word) must read as fresh,
    # the rest of the window as replays, and anything older as too old.
    window = ReplayWindow()
    assert all(window.validate(c) for c in range(8192))
    head = 8191 + jump
    assert window.validate(head)
    for c in range(head - 1, max(head - W, 0) - 1, -1):
        assert window.validate(c) is (c >= 8192), c
    for c in range(max(head - W - 70, 0), head - W):
        assert not window.validate(c), c
    assert window.greatest == head


def test_reset() -> None:
    window = ReplayWindow()
    for c in (0, 1, 5000, 100_000):
        assert window.validate(c)
    window.reset()
    assert window.greatest is None
    for c in (0, 1, 5000, 100_000):
        assert window.validate(c)


class _Model:
    """Naive model: a set of every accepted counter."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.greatest = -1

    def validate(self, counter: int, limit: int) -> bool:
        if counter < 0 or counter >= limit or counter in self.seen:
            return False
        # The kernel's rule: counter + 1 + W < greatest + 1 means too old.
        if counter < self.greatest - W:
            return False
        self.seen.add(counter)
        self.greatest = max(self.greatest, counter)
        return True


# An operation moves relative to the current greatest (to exercise word and
# ring boundaries), or picks an absolute value (small or near the limit).
_relative = st.tuples(
    st.just("rel"),
    st.one_of(
        st.integers(-W - 70, 70),
        st.integers(-2 * 8192, 2 * 8192),
        st.sampled_from([-W - 1, -W, -W + 1, 63, 64, 65, 8128, 8129, 8191, 8192, 8193]),
    ),
)
# Revisit an earlier counter shifted by whole rings: the same bit of the same
# ring word, so stale bits would show.
_alias = st.tuples(
    st.just("alias"),
    st.tuples(
        st.integers(0, 1 << 16),
        st.integers(-1, 2),
        st.one_of(st.just(0), st.integers(-64, 64)),
    ),
)
# A run of consecutive counters near the head sets many bits at once.
_fill = st.tuples(
    st.just("fill"),
    st.tuples(st.integers(-W - 70, 300), st.integers(1, 300)),
)
_absolute = st.tuples(
    st.just("abs"),
    st.one_of(
        st.integers(0, 3 * 8192),
        st.integers(REJECT_AFTER_MESSAGES - 3 * 8192, REJECT_AFTER_MESSAGES + 3),
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    ops=st.lists(st.one_of(_relative, _alias, _fill, _absolute), max_size=200),
    limit=st.sampled_from([REJECT_AFTER_MESSAGES, 20_000, 1 << 64]),
)
def test_matches_naive_model(ops: list[tuple[str, Any]], limit: int) -> None:
    window = ReplayWindow()
    model = _Model()
    history: list[int] = [0]
    for kind, value in ops:
        head = max(model.greatest, 0)
        if kind == "rel":
            counters = [head + value]
        elif kind == "alias":
            pick, rings, nudge = value
            counters = [history[pick % len(history)] + rings * 8192 + nudge]
        elif kind == "fill":
            offset, length = value
            counters = list(range(head + offset, head + offset + length))
        else:
            counters = [value]
        for counter in counters:
            history.append(counter)
            expected = model.validate(counter, limit)
            assert window.validate(counter, limit) is expected, counter
        assert window.greatest == (model.greatest if model.greatest >= 0 else None)


@settings(max_examples=300, deadline=None)
@given(
    before=st.lists(st.one_of(_relative, _fill), max_size=40),
    start=st.sampled_from([0, 1, 62, 63, 64, 65, 127, 8191, 8192, 100_000]),
    length=st.one_of(st.integers(1, 200), st.sampled_from([8127, 8128, 8129, 8192, 8256, 20_000])),
)
def test_extend_equals_validating_the_run_one_by_one(
    before: list[tuple[str, Any]], start: int, length: int
) -> None:
    # The receive path accepts the first counter of a consecutive run with
    # validate() and the rest with one extend(): the window must end up
    # accepting exactly what validating each counter in turn would.
    window, model = ReplayWindow(), _Model()
    window.validate(start)
    model.validate(start, REJECT_AFTER_MESSAGES)
    for kind, value in before:
        head = max(model.greatest, 0)
        offset, count = (value, 1) if kind == "rel" else value
        for counter in range(head + offset, head + offset + count):
            assert window.validate(counter) is model.validate(counter, REJECT_AFTER_MESSAGES)
    first = model.greatest + 1
    last = first + length - 1
    assert window.validate(first)
    window.extend(last)
    for counter in range(first, last + 1):
        assert model.validate(counter, REJECT_AFTER_MESSAGES)
    assert window.greatest == model.greatest == last
    # Every edge of what extend() wrote: the words at both ends of the run,
    # the head word it shared with older counters, the window's lower edge.
    probes = {*range(first - 70, first + 130), *range(last - 130, last + 70)}
    probes |= set(range(last - W - 70, last - W + 130))
    for counter in sorted(c for c in probes if c >= 0):
        assert window.validate(counter) is model.validate(counter, REJECT_AFTER_MESSAGES), counter


def test_extend_is_a_no_op_below_the_head_and_on_a_fresh_window() -> None:
    window = ReplayWindow()
    window.extend(10)
    assert window.greatest is None and window.validate(3)
    window.extend(2)
    assert window.greatest == 3 and window.validate(2)
