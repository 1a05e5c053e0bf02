"""Tests for wgpy.ratelimiter: the kernel's selftest/ratelimiter.c on a fake clock."""

from __future__ import annotations

import ipaddress
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.constants import (
    RATELIMIT_GC_INTERVAL,
    RATELIMIT_PACKETS_BURSTABLE,
    RATELIMIT_PACKETS_PER_SECOND,
)
from wgpy.ratelimiter import RateLimiter

BURST = RATELIMIT_PACKETS_BURSTABLE
RATE = RATELIMIT_PACKETS_PER_SECOND
COST_NS = 1_000_000_000 // RATE
GC = RATELIMIT_GC_INTERVAL

# The kernel's expected_results[]: (allowed, packet-costs to wait before).
# Five in a burst, the sixth denied; after one cost one more and then a
# denial; after two costs two more and then a denial.
TIMINGS: list[tuple[bool, int]] = [
    *[(True, 0)] * BURST,
    (False, 0),
    (True, 1),
    (False, 0),
    (True, 2),
    (True, 0),
    (False, 0),
]


def v4(text: str) -> bytes:
    return ipaddress.IPv4Address(text).packed


def v6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def secs(ns: int) -> float:
    return ns / 1e9


@pytest.mark.parametrize("base", [0.0, 1000.0, 123456.789])
def test_kernel_timings_ipv4(base: float) -> None:
    limiter = RateLimiter()
    start = int(ipaddress.IPv4Address("0.0.31.246"))  # htonl(8182), as the kernel
    src = start.to_bytes(4, "big")
    base_ns = round(base * 1e9)
    t_ns = base_ns
    for i, (expected, wait) in enumerate(TIMINGS):
        t_ns += wait * COST_NS
        assert limiter.allow(src, secs(t_ns)) is expected, f"step {i}"
        # A different source is never affected (the kernel uses saddr+i+1).
        other = (start + i + 1).to_bytes(4, "big")
        assert limiter.allow(other, secs(t_ns)), f"step {i}: other source"


@pytest.mark.parametrize("base", [0.0, 1000.0])
def test_kernel_timings_ipv6_groups_by_64(base: float) -> None:
    limiter = RateLimiter()
    # addr32[0] = 1212, addr32[1] = 289188, as the kernel; the low 64 bits vary.
    top = (1212 << 32) | 289188
    t_ns = round(base * 1e9)
    for i, (expected, wait) in enumerate(TIMINGS):
        t_ns += wait * COST_NS
        low = (i << 32) | i  # addr32[2] = addr32[3] = i: same /64 every step
        src = ((top << 64) | low).to_bytes(16, "big")
        assert limiter.allow(src, secs(t_ns)) is expected, f"step {i}"
        # Changing the top 32-bit word lands in a different bucket.
        other_top = (((1212 + i + 1) << 32) | 289188) << 64
        assert limiter.allow((other_top | low).to_bytes(16, "big"), secs(t_ns)), f"step {i}"


def test_refill_boundary_is_exactly_one_cost() -> None:
    limiter = RateLimiter()
    src = v4("192.0.2.1")
    for _ in range(BURST):
        assert limiter.allow(src, 5.0)
    assert not limiter.allow(src, 5.0)
    # One nanosecond short of a cost is not enough; the exact cost is.
    assert not limiter.allow(src, secs(5 * 10**9 + COST_NS - 1))
    assert limiter.allow(src, secs(5 * 10**9 + COST_NS))
    assert not limiter.allow(src, secs(5 * 10**9 + COST_NS))


def test_bucket_caps_at_burst_after_long_idle() -> None:
    limiter = RateLimiter()
    src = v4("192.0.2.2")
    assert limiter.allow(src, 0.0)
    # Within the GC interval, but long enough to refill many times over.
    t = 0.9
    assert all(limiter.allow(src, t) for _ in range(BURST))
    assert not limiter.allow(src, t)


def test_ipv4_mapped_ipv6_is_the_ipv4_source() -> None:
    limiter = RateLimiter()
    for _ in range(BURST):
        assert limiter.allow(v4("198.51.100.7"), 1.0)
    assert not limiter.allow(v6("::ffff:198.51.100.7"), 1.0)
    assert limiter.allow(v6("::ffff:198.51.100.8"), 1.0)
    assert len(limiter) == 2


def test_ipv6_prefix_distinct_from_ipv4_bytes() -> None:
    # An IPv6 /64 whose first bytes spell an IPv4 address is a different source.
    limiter = RateLimiter()
    for _ in range(BURST):
        assert limiter.allow(v4("32.1.13.184"), 1.0)
    assert not limiter.allow(v4("32.1.13.184"), 1.0)
    assert limiter.allow(v6("2001:db8::1"), 1.0)


@pytest.mark.parametrize("length", [0, 1, 3, 5, 8, 15, 17])
def test_bad_address_length_raises(length: int) -> None:
    with pytest.raises(ValueError):
        RateLimiter().allow(bytes(length), 0.0)


def test_negative_max_entries_raises() -> None:
    with pytest.raises(ValueError):
        RateLimiter(max_entries=-1)


@pytest.mark.parametrize("max_entries", [1, 7, 64])
def test_capacity(max_entries: int) -> None:
    limiter = RateLimiter(max_entries=max_entries)
    for i in range(max_entries):
        assert limiter.allow(i.to_bytes(4, "big"), 0.0)
    assert len(limiter) == max_entries
    # The kernel's capacity test: after collection the table is empty, then
    # max_entries sources are allowed and the next one is refused.
    t = 10.0
    limiter.collect(t)
    assert len(limiter) == 0
    for i in range(max_entries + 1):
        assert limiter.allow((1000 + i).to_bytes(4, "big"), t) is (i != max_entries), i
    assert len(limiter) == max_entries
    # Sources already in the table keep working while it is full.
    assert limiter.allow((1000).to_bytes(4, "big"), t)
    assert not limiter.allow(v6("2001:db8::"), t)


def test_collect_drops_only_entries_idle_longer_than_interval() -> None:
    limiter = RateLimiter()
    a, b = v4("10.0.0.1"), v4("10.0.0.2")
    assert limiter.allow(a, 0.0)
    assert limiter.allow(b, 0.5)
    limiter.collect(GC)  # a idle exactly GC: kept
    assert len(limiter) == 2
    limiter.collect(GC + 1e-6)  # a idle just over GC: dropped
    assert len(limiter) == 1
    limiter.collect(0.5 + GC + 1e-6)
    assert len(limiter) == 0


def test_collected_source_starts_fresh() -> None:
    limiter = RateLimiter()
    src = v4("10.0.0.3")
    for _ in range(BURST):
        assert limiter.allow(src, 0.0)
    assert not limiter.allow(src, 0.0)
    limiter.collect(2 * GC)
    assert len(limiter) == 0
    assert all(limiter.allow(src, 2 * GC) for _ in range(BURST))
    assert not limiter.allow(src, 2 * GC)


def test_allow_collects_at_most_once_per_interval() -> None:
    limiter = RateLimiter(max_entries=2)
    a, b, c = v4("10.1.0.1"), v4("10.1.0.2"), v4("10.1.0.3")
    assert limiter.allow(a, 0.0)  # first call: collection scheduled from here
    assert limiter.allow(b, 0.0)
    assert not limiter.allow(c, 0.5)  # full
    # At t = GC a collection runs, but nothing is idle *more* than GC yet.
    assert limiter.allow(a, GC)
    assert not limiter.allow(c, GC)
    # b is now idle for 1.5 GC, yet no collection is due until t = 2 GC.
    assert not limiter.allow(c, 1.5 * GC)
    assert len(limiter) == 2
    # At t = 2 GC, b (idle 2 GC) goes; a (idle exactly GC) stays.
    assert limiter.allow(c, 2 * GC)
    assert len(limiter) == 2
    assert not limiter.allow(b, 2 * GC)  # full again: a and c


def test_table_stays_bounded_under_a_flood_of_sources() -> None:
    limiter = RateLimiter(max_entries=100)
    allowed = 0
    for step in range(50):
        t = step * 0.1
        for j in range(40):
            allowed += limiter.allow((step * 40 + j).to_bytes(4, "big"), t)
            assert len(limiter) <= 100
    # Collection every second frees room, so sources keep being admitted.
    assert allowed > 100


def test_backwards_clock_is_harmless() -> None:
    limiter = RateLimiter()
    src = v4("10.2.0.1")
    for _ in range(BURST):
        assert limiter.allow(src, 10.0)
    assert not limiter.allow(src, 10.0)
    # Stepping back neither raises nor refills ...
    assert not limiter.allow(src, 5.0)
    assert not limiter.allow(src, -100.0)
    limiter.collect(3.0)
    assert len(limiter) == 1
    # ... and stepping forward again to the old time grants nothing either.
    assert not limiter.allow(src, 10.0)
    assert limiter.allow(src, 10.0 + COST_NS / 1e9)
    assert not limiter.allow(src, 10.0 + COST_NS / 1e9)
    # New sources at an earlier time still work.
    assert limiter.allow(v4("10.2.0.2"), 1.0)


@settings(max_examples=200, deadline=None)
@given(gaps=st.lists(st.integers(0, 200_000_000), min_size=1, max_size=120))
def test_never_exceeds_rate_plus_burst(gaps: list[int]) -> None:
    # Token bucket property: over any interval [t_i, t_j] of calls from one
    # source, at most BURST + (t_j - t_i) * RATE are allowed; and a call made
    # after the bucket has had a full cost to refill since a denial is allowed.
    limiter = RateLimiter()
    src = v6("2001:db8:1:2::9")
    times: list[int] = []
    results: list[bool] = []
    t = 0
    for gap in gaps:
        t += gap
        times.append(t)
        results.append(limiter.allow(src, secs(t)))
    assert results[0]
    prefix = [0]
    for r in results:
        prefix.append(prefix[-1] + r)
    for i in range(len(times)):
        for j in range(i, len(times)):
            allowed = prefix[j + 1] - prefix[i]
            assert allowed <= BURST + Fraction(times[j] - times[i], COST_NS)
    for k in range(1, len(times)):
        if times[k] - times[k - 1] >= COST_NS:
            assert results[k], k
