"""WireGuard's per-peer timers as a pure state machine (whitepaper 6.2-6.5).

Five timers per peer, each just a deadline (monotonic seconds) or None:

=====================  ===============================================  =======================
timer                  armed by                                         on expiry
=====================  ===============================================  =======================
retransmit_handshake   an initiation was sent: 5 s + jitter             resend, or give up after
                                                                        MAX_TIMER_HANDSHAKES
send_keepalive         data received and nothing sent: 10 s             send a keepalive
new_handshake          data sent and nothing received: 15 s + jitter    start a new handshake
zero_key_material      a session was derived: 540 s                     erase all key material
persistent_keepalive   any authenticated packet, if configured          send a keepalive
=====================  ===============================================  =======================

The event hooks carry the kernel's and wireguard-go's names
(``data_sent``, ``any_authenticated_packet_received``, ...).  The peer calls
them as packets move; :meth:`PeerTimers.expire` returns what must be done
at a given time, as :class:`TimerAction` values, and updates its own state
(attempt counter, re-arming) exactly as the reference implementations do on
expiry.  Nothing here sends, sleeps or reads a clock; jitter comes from the
callable passed in, which draws from the injected RNG.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from wgpy.constants import (
    KEEPALIVE_TIMEOUT,
    MAX_TIMER_HANDSHAKES,
    REKEY_TIMEOUT,
    ZERO_KEY_MATERIAL_AFTER,
)

__all__ = ["PeerTimers", "TimerAction"]


class TimerAction(Enum):
    """What an expired timer asks the peer to do."""

    #: Resend the initiation (a retry: the attempt counter is kept).
    RETRANSMIT_HANDSHAKE = "retransmit_handshake"
    #: Retries exhausted: drop staged packets; erasure is armed.
    GIVE_UP = "give_up"
    #: Passive keepalive after receiving data.
    SEND_KEEPALIVE = "send_keepalive"
    #: Sent data without hearing back: new handshake (attempts reset).
    NEW_HANDSHAKE = "new_handshake"
    #: Erase every keypair and the handshake state.
    ZERO_KEY_MATERIAL = "zero_key_material"
    #: Persistent keepalive interval elapsed.
    PERSISTENT_KEEPALIVE = "persistent_keepalive"


class PeerTimers:
    """Deadlines and counters for one peer.  All times are monotonic seconds.

    Every event method takes ``now``, also the few that do not need it, so
    callers never have to know which do (one convention, as the kernel's
    timer hooks)."""

    __slots__ = (
        "_jitter",
        "handshake_attempts",
        "need_another_keepalive",
        "new_handshake",
        "persistent_keepalive",
        "persistent_keepalive_interval",
        "retransmit_handshake",
        "send_keepalive",
        "zero_key_material",
    )

    def __init__(self, jitter: Callable[[], float]) -> None:
        self._jitter = jitter
        self.retransmit_handshake: float | None = None
        self.send_keepalive: float | None = None
        self.new_handshake: float | None = None
        self.zero_key_material: float | None = None
        self.persistent_keepalive: float | None = None
        self.need_another_keepalive = False
        self.handshake_attempts = 0
        self.persistent_keepalive_interval = 0

    # -- event hooks ---------------------------------------------------------

    def data_sent(self, now: float) -> None:
        """A packet carrying data (not a keepalive) was sent."""
        if self.new_handshake is None:
            self.new_handshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + self._jitter()

    def data_received(self, now: float) -> None:
        """A packet carrying data was received."""
        if self.send_keepalive is None:
            self.send_keepalive = now + KEEPALIVE_TIMEOUT
        else:
            self.need_another_keepalive = True

    def any_authenticated_packet_sent(self, now: float) -> None:
        """Initiation, response or transport sent: no passive keepalive needed."""
        self.send_keepalive = None

    def any_authenticated_packet_received(self, now: float) -> None:
        """Initiation, response or transport received: the peer is alive."""
        self.new_handshake = None

    def any_authenticated_packet_traversal(self, now: float) -> None:
        """Any authenticated packet sent or received: restart persistent keepalive."""
        if self.persistent_keepalive_interval:
            self.persistent_keepalive = now + self.persistent_keepalive_interval

    def handshake_initiated(self, now: float) -> None:
        """An initiation was sent."""
        self.retransmit_handshake = now + REKEY_TIMEOUT + self._jitter()

    def handshake_complete(self, now: float) -> None:
        """A session was confirmed (response consumed, or first packet on next)."""
        self.retransmit_handshake = None
        self.handshake_attempts = 0

    def session_derived(self, now: float) -> None:
        """New session keys exist: erase everything 540 s from now unless renewed."""
        self.zero_key_material = now + ZERO_KEY_MATERIAL_AFTER

    def handshake_started(self, retry: bool) -> None:
        """An initiation is about to be sent; a fresh attempt resets the count."""
        if not retry:
            self.handshake_attempts = 0

    def passive_keepalive_sent(self, now: float) -> None:
        """Called after the SEND_KEEPALIVE action sent its keepalive: if more
        data arrived meanwhile, another keepalive is due in 10 s (the re-arm
        comes after the send, whose any_authenticated_packet_sent cancels)."""
        if self.need_another_keepalive:
            self.need_another_keepalive = False
            self.send_keepalive = now + KEEPALIVE_TIMEOUT

    def set_persistent_keepalive(self, interval: int, now: float) -> None:
        """Change the persistent keepalive interval (0 disables it)."""
        self.persistent_keepalive_interval = interval
        if not interval:
            self.persistent_keepalive = None
        elif self.persistent_keepalive is None or self.persistent_keepalive > now + interval:
            self.persistent_keepalive = now + interval

    def stop(self) -> None:
        """Disarm everything (peer removed or device down)."""
        self.retransmit_handshake = None
        self.send_keepalive = None
        self.new_handshake = None
        self.zero_key_material = None
        self.persistent_keepalive = None
        self.need_another_keepalive = False
        self.handshake_attempts = 0

    # -- expiry --------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """The earliest armed deadline, or None."""
        best: float | None = None
        for t in (
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ):
            if t is not None and (best is None or t < best):
                best = t
        return best

    def expire(self, now: float) -> list[TimerAction]:
        """Fire every timer whose deadline is <= ``now``; return the actions.

        Order: erasure first (so nothing is sent with keys about to vanish),
        then handshake timers, then keepalives.
        """
        actions: list[TimerAction] = []
        t = self.zero_key_material
        if t is not None and t <= now:
            self.zero_key_material = None
            actions.append(TimerAction.ZERO_KEY_MATERIAL)
        t = self.retransmit_handshake
        if t is not None and t <= now:
            self.retransmit_handshake = None
            if self.handshake_attempts > MAX_TIMER_HANDSHAKES:
                # Give up: no keepalive either, and erase keys in 540 s
                # unless erasure is already pending.
                self.send_keepalive = None
                self.need_another_keepalive = False
                if self.zero_key_material is None:
                    self.zero_key_material = now + ZERO_KEY_MATERIAL_AFTER
                actions.append(TimerAction.GIVE_UP)
            else:
                self.handshake_attempts += 1
                actions.append(TimerAction.RETRANSMIT_HANDSHAKE)
        t = self.new_handshake
        if t is not None and t <= now:
            self.new_handshake = None
            actions.append(TimerAction.NEW_HANDSHAKE)
        t = self.send_keepalive
        if t is not None and t <= now:
            self.send_keepalive = None
            actions.append(TimerAction.SEND_KEEPALIVE)
        t = self.persistent_keepalive
        if t is not None and t <= now:
            self.persistent_keepalive = None
            if self.persistent_keepalive_interval:
                actions.append(TimerAction.PERSISTENT_KEEPALIVE)
        return actions
