"""Per-peer state: configuration, handshake, keypairs, timers, counters.

A :class:`Peer` is plain state owned by a :class:`wgpy.device.Device`; the
device runs the protocol logic on it (it holds the shared pieces a peer
needs: the index table, the RNG, our static key).  Change configuration
through the device's methods so routing caches and timers stay consistent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from wgpy.constants import KEY_LEN, MAX_STAGED_PACKETS
from wgpy.endpoint import Endpoint
from wgpy.noise.cookie import CookieGenerator
from wgpy.noise.handshake import Handshake
from wgpy.noise.keypair import Keypairs
from wgpy.noise.tai64n import Tai64nStamper
from wgpy.timers import PeerTimers

__all__ = ["Peer"]


class Peer:
    """One configured peer.

    Read-only for callers: ``public_key``, ``endpoint``, ``rx_bytes``,
    ``tx_bytes``, ``last_handshake_ns`` (Unix nanoseconds of the last
    completed handshake, 0 for never), ``persistent_keepalive``,
    ``preshared_key`` (None when unset).
    """

    __slots__ = (
        "__weakref__",
        "_staged",
        "cookie",
        "endpoint",
        "handshake",
        "keypairs",
        "last_handshake_ns",
        "last_sent_handshake",
        "pending_index",
        "queued",
        "removed",
        "rx_bytes",
        "scheduled",
        "sent_lastminute_handshake",
        "stamper",
        "timers",
        "tx_bytes",
    )

    def __init__(
        self,
        public_key: bytes,
        jitter: Callable[[], float],
        preshared_key: bytes | None = None,
    ) -> None:
        if len(public_key) != KEY_LEN:
            raise ValueError("a public key is 32 bytes")
        if preshared_key is not None and len(preshared_key) != KEY_LEN:
            raise ValueError("a preshared key is 32 bytes")
        self.handshake = Handshake(public_key, preshared_key)
        self.cookie = CookieGenerator(public_key)
        self.keypairs = Keypairs()
        self.timers = PeerTimers(jitter)
        #: TAI64N of our initiations to this peer (increasing per peer only).
        self.stamper = Tai64nStamper()
        self.endpoint: Endpoint | None = None
        self._staged: deque[bytes] | None = None  # created on first use: saves memory
        self.rx_bytes = 0
        self.tx_bytes = 0
        self.last_handshake_ns = 0
        self.last_sent_handshake: float | None = None
        self.sent_lastminute_handshake = False
        self.pending_index = 0  # receiver index of our outstanding initiation
        self.scheduled: float | None = None  # earliest deadline queued in the device heap
        self.queued: set[float] | None = None  # deadlines queued in the heap (no duplicates)
        self.removed = False

    @property
    def public_key(self) -> bytes:
        """The peer's static public key."""
        return self.handshake.remote_static

    @property
    def preshared_key(self) -> bytes | None:
        """The preshared key, or None when none is set (all zero)."""
        psk = bytes(self.handshake.preshared_key)
        return None if psk == bytes(KEY_LEN) else psk

    @property
    def persistent_keepalive(self) -> int:
        """Persistent keepalive interval in seconds (0 = off)."""
        return self.timers.persistent_keepalive_interval

    @property
    def staged(self) -> deque[bytes]:
        """Packets waiting for a session (oldest dropped beyond the cap)."""
        if self._staged is None:
            self._staged = deque(maxlen=MAX_STAGED_PACKETS)
        return self._staged

    @property
    def staged_count(self) -> int:
        """How many packets wait for a session."""
        return len(self._staged) if self._staged else 0

    def clear_staged(self) -> int:
        """Drop every staged packet; returns how many."""
        n = self.staged_count
        self._staged = None
        return n

    def __repr__(self) -> str:
        import base64

        return f"<Peer {base64.b64encode(self.public_key).decode()} endpoint={self.endpoint}>"
