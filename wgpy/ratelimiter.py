"""Per-source token bucket for handshake messages (the kernel's ratelimiter.c).

Only handshakes that carry a valid mac2 while the device is under load reach
this check (the caller's job).  Each source gets a bucket holding up to
RATELIMIT_PACKETS_BURSTABLE packet-costs of tokens, refilled at
RATELIMIT_PACKETS_PER_SECOND.  Sources are grouped as the kernel groups them:
an IPv4 address by itself (/32), an IPv6 address by its /64; an IPv4-mapped
IPv6 address counts as the IPv4 address it carries.

Time is passed in as monotonic seconds and kept internally as integer
nanoseconds, so fake clocks stepping by exact packet costs behave exactly.
Dropping an entry idle longer than RATELIMIT_GC_INTERVAL loses nothing: it
had refilled to the maximum (5 costs = 0.25 s), which is what a recreated
entry gets, minus the packet being admitted.
"""

from __future__ import annotations

from typing import Final

from wgpy.constants import (
    RATELIMIT_GC_INTERVAL,
    RATELIMIT_MAX_ENTRIES,
    RATELIMIT_PACKETS_BURSTABLE,
    RATELIMIT_PACKETS_PER_SECOND,
)

__all__ = ["RateLimiter"]

_NS_PER_S: Final = 1_000_000_000
#: Tokens (in ns) one handshake costs: 1/20 s.
PACKET_COST_NS: Final = _NS_PER_S // RATELIMIT_PACKETS_PER_SECOND
#: Bucket capacity: the burst.
TOKEN_MAX_NS: Final = PACKET_COST_NS * RATELIMIT_PACKETS_BURSTABLE
_GC_INTERVAL_NS: Final = round(RATELIMIT_GC_INTERVAL * _NS_PER_S)
_V4_MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"


def _source_key(ip: bytes) -> bytes:
    """The bucket key: 4 bytes for IPv4 (/32), 8 bytes for an IPv6 /64."""
    n = len(ip)
    if n == 4:
        return bytes(ip)
    if n == 16:
        if ip[:12] == _V4_MAPPED_PREFIX:
            return bytes(ip[12:])
        return bytes(ip[:8])
    raise ValueError(f"source address must be 4 or 16 bytes, not {n}")


class RateLimiter:
    """Per-source token bucket for handshake messages: 20/s, burst 5; IPv4 keyed by /32,
    IPv6 by /64; bounded table; time is always passed in (monotonic seconds).

    A clock that steps backwards neither raises nor grants tokens: elapsed
    time is never negative and an entry's timestamp never moves back, so a
    source simply refills from its last-seen time once the clock passes it.
    Not thread-safe: the caller serialises calls.
    """

    __slots__ = ("_last_gc_ns", "_max_entries", "_table")

    def __init__(self, max_entries: int = RATELIMIT_MAX_ENTRIES) -> None:
        if max_entries < 0:
            raise ValueError("max_entries must not be negative")
        self._max_entries = max_entries
        # key -> [tokens_ns, last_time_ns]
        self._table: dict[bytes, list[int]] = {}
        self._last_gc_ns: int | None = None

    def allow(self, ip: bytes, now: float) -> bool:
        """Spend one packet-cost from the bucket of ``ip``; True if allowed.

        ``ip`` is the packed source address (4 or 16 bytes; other lengths
        raise ValueError).  A source not in the table is allowed and starts
        with a full bucket minus this packet, unless the table is full, in
        which case it is refused.  Idle entries are collected first if
        RATELIMIT_GC_INTERVAL has passed since the last collection.
        """
        key = _source_key(ip)
        now_ns = round(now * _NS_PER_S)
        last_gc = self._last_gc_ns
        if last_gc is None or now_ns - last_gc >= _GC_INTERVAL_NS:
            self._collect_ns(now_ns)

        entry = self._table.get(key)
        if entry is None:
            if len(self._table) >= self._max_entries:
                return False  # table full: refuse new sources, keep old ones
            self._table[key] = [TOKEN_MAX_NS - PACKET_COST_NS, now_ns]
            return True

        tokens, last_ns = entry
        if now_ns > last_ns:
            # Refill by elapsed time, capped at the burst.
            tokens = min(tokens + (now_ns - last_ns), TOKEN_MAX_NS)
            entry[1] = now_ns
        if tokens >= PACKET_COST_NS:
            entry[0] = tokens - PACKET_COST_NS
            return True
        entry[0] = tokens
        return False

    def collect(self, now: float) -> None:
        """Drop entries idle for more than RATELIMIT_GC_INTERVAL at ``now``."""
        self._collect_ns(round(now * _NS_PER_S))

    def _collect_ns(self, now_ns: int) -> None:
        cutoff = now_ns - _GC_INTERVAL_NS
        table = self._table
        stale = [key for key, entry in table.items() if entry[1] < cutoff]
        for key in stale:
            del table[key]
        if self._last_gc_ns is None or now_ns > self._last_gc_ns:
            self._last_gc_ns = now_ns

    def __len__(self) -> int:
        """Number of sources currently tracked."""
        return len(self._table)
