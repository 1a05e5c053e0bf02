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


def tai64n(wall_ns: int) -> bytes:
    """The whitened TAI64N label of a wall-clock time in Unix nanoseconds."""
    seconds, nanos = divmod(wall_ns, 1_000_000_000)
    return _PACK.pack(seconds + TAI64_BASE, nanos & ~TAI64N_WHITENING_MASK)


def is_after(candidate: bytes, reference: bytes) -> bool:
    """True when ``candidate`` is strictly later than ``reference``."""
    return len(candidate) == TIMESTAMP_LEN and candidate > reference


class Tai64nStamper:
    """Produces timestamps that never go backwards within this process.

    A wall clock stepping back would otherwise make our own initiations look
    stale to every peer until the clock caught up again.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = bytes(TIMESTAMP_LEN)

    def stamp(self, wall_ns: int) -> bytes:
        """The timestamp for an initiation created at ``wall_ns``."""
        ts = tai64n(wall_ns)
        if ts < self._last:
            ts = self._last
        self._last = ts
        return ts
