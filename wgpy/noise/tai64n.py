"""TAI64N timestamps for handshake initiations (whitepaper 5.4.2).

12 bytes, big-endian: seconds + 2^62 + 10, then nanoseconds.  The nanoseconds
are rounded down to a multiple of 2^24 (about 16.8 ms) so a timestamp is not a
precise clock oracle, as the kernel and wireguard-go do.  Timestamps compare
bytewise; a responder accepts only strictly newer ones per peer.
"""

from __future__ import annotations

import struct
from typing import Final

from wgpy.constants import TAI64_BASE, TAI64N_WHITENING_MASK, TIMESTAMP_LEN

__all__ = ["Tai64nStamper", "is_after", "tai64n"]

_PACK: Final = struct.Struct(">QI")
_GRANULE: Final = TAI64N_WHITENING_MASK + 1


def tai64n(wall_ns: int) -> bytes:
    """The whitened TAI64N label of a wall-clock time in Unix nanoseconds."""
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    return _PACK.pack(seconds + TAI64_BASE, nanos & ~TAI64N_WHITENING_MASK)


def is_after(candidate: bytes, reference: bytes) -> bool:
    """True when ``candidate`` is strictly later than ``reference``."""
    return len(candidate) == TIMESTAMP_LEN and candidate > reference


def _next_granule(value: int) -> int:
    """The label one whitening granule after ``value`` (as a 96-bit integer)."""
    seconds, nanos = value >> 32, (value & 0xFFFFFFFF) + _GRANULE
    if nanos >= 1_000_000_000:
        seconds, nanos = seconds + 1, 0
    return (seconds << 32) | nanos


class Tai64nStamper:
    """The timestamps of the initiations sent to one peer.

    A responder accepts an initiation only if its timestamp is strictly newer
    than the last one it accepted from us, so two initiations to the same
    peer within one whitening granule would lose the second.  Such a stamp is
    moved up by one granule, but never further than ``max_ahead`` granules
    past the wall clock: a stamp that ran ahead would make the peer reject
    our initiations after a restart (the new process stamps with the real
    clock) for as long as the lead.  When the clock stepped back further than
    that, the stamp follows the clock, as the kernel's does, and the peer
    accepts us again once the clock has caught up.

    Keep one stamper per peer: the ordering a responder enforces is per
    initiator and peer, so a device-wide sequence would make every peer's
    stamps run ahead whenever many peers handshake at once.  ``max_ahead=None``
    (test tools that send bursts of initiations) lets stamps lead without
    bound.
    """

    __slots__ = ("_last", "_max_ahead")

    def __init__(self, max_ahead: int | None = 1) -> None:
        self._last = 0
        self._max_ahead = max_ahead

    def stamp(self, wall_ns: int) -> bytes:
        """The timestamp for an initiation created at ``wall_ns``."""
        value = int.from_bytes(tai64n(wall_ns), "big")
        if value <= self._last:
            bumped = _next_granule(self._last)
            ceiling = value
            if self._max_ahead is None:
                ceiling = bumped
            else:
                for _ in range(self._max_ahead):
                    ceiling = _next_granule(ceiling)
            if bumped <= ceiling:
                value = bumped
        self._last = max(self._last, value)
        return value.to_bytes(TIMESTAMP_LEN, "big")
