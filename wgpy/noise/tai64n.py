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
    """Produces strictly increasing timestamps within this process.

    If the wall clock stepped back (or has not moved past the whitening
    granule since the last stamp), the next stamp is the previous one plus
    one granule, so a responder that saw our last initiation still accepts
    the next: without this, a clock step backwards blocks every handshake
    until the clock catches up.  Replay protection is unaffected, since the
    sequence only ever increases.
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def stamp(self, wall_ns: int) -> bytes:
        """The timestamp for an initiation created at ``wall_ns``."""
        value = int.from_bytes(tai64n(wall_ns), "big")
        if value <= self._last:
            value = self._bump(self._last)
        self._last = value
        return value.to_bytes(TIMESTAMP_LEN, "big")

    @staticmethod
    def _bump(value: int) -> int:
        seconds, nanos = value >> 32, value & 0xFFFFFFFF
        nanos += TAI64N_WHITENING_MASK + 1
        if nanos >= 1_000_000_000:
            seconds, nanos = seconds + 1, 0
        return (seconds << 32) | nanos
