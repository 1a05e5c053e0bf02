"""The sans-IO WireGuard device.

:class:`Device` owns the static identity, the peers (by public key), the
random receiver-index table, cryptokey routing (one allowed-IPs trie for
both directions), the cookie checker and rate limiter, and the timer heap.
It never touches a socket, a TUN, a clock or a thread:

* :meth:`Device.send` takes IP packets read from the TUN,
* :meth:`Device.receive` takes UDP datagrams with their source endpoint,
* :meth:`Device.handle_timers` runs expired timers,

and each returns an :class:`Output`: datagrams to send (with their
endpoint) and packets to write to the TUN.  :meth:`Device.next_deadline` says
when to call :meth:`Device.handle_timers` next.  Every entry point takes
``now`` (monotonic seconds) and ``wall_ns`` (Unix time in nanoseconds, used
for TAI64N timestamps and the last-handshake time).

Network input never raises: whatever is malformed, unauthenticated,
replayed or unroutable is dropped and counted in :attr:`Device.stats` by
reason.  Configuration mistakes by a local caller raise ``ValueError``.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import struct
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

from wgpy.allowedips import AllowedIPs
from wgpy.constants import (
    DEFAULT_MTU,
    HANDSHAKE_BUDGET_BURST,
    HANDSHAKE_BUDGET_PER_SECOND,
    INITIATION_SIZE,
    KEY_LEN,
    MAX_PEERS,
    MAX_STAGED_PACKETS,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    REJECT_AFTER_MESSAGES,
    REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME,
    REKEY_ON_RECEIVE_AGE,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    RESPONSE_SIZE,
    ROUTE_CACHE_MAX,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
    UNDER_LOAD_AFTER_TIME,
    UNDER_LOAD_BACKLOG,
    UNDER_LOAD_BUDGET_LEFT,
)
from wgpy.endpoint import Endpoint
from wgpy.keylog import keylog_block
from wgpy.noise.cookie import CookieChecker
from wgpy.noise.handshake import (
    Handshake,
    HandshakeState,
    SessionKeys,
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    derive_transport_keys,
    initial_hash,
)
from wgpy.noise.keypair import Keypair
from wgpy.noise.messages import (
    MAC1_OFFSET_INITIATION,
    MAC1_OFFSET_RESPONSE,
    TRANSPORT_HEADER,
    MessageCookieReply,
    MessageInitiation,
    MessageResponse,
    message_type,
)
from wgpy.noise.primitives import StaticKey
from wgpy.peer import Peer
from wgpy.ratelimiter import RateLimiter
from wgpy.replay import ReplayWindow
from wgpy.rng import Rng, SystemRng, random_fraction, random_u32
from wgpy.timers import TimerAction

__all__ = ["Device", "Event", "EventKind", "Output", "Stat", "Stats"]

log = logging.getLogger("wgpy.device")

_unpack_transport = TRANSPORT_HEADER.unpack_from
_unpack_type = struct.Struct("<I").unpack_from


class Stat(StrEnum):
    """The names of :attr:`Device.stats` counters: each drop has its reason."""

    #: a cookie reply to our handshake message was stored
    COOKIE_REPLY_CONSUMED = "cookie_reply_consumed"
    #: we answered a handshake message with a cookie reply (under load)
    COOKIE_REPLY_SENT = "cookie_reply_sent"
    #: an initiation was not sent: the peer key gives an all-zero DH
    HANDSHAKE_REFUSED_LOW_ORDER = "handshake_refused_low_order"
    #: transport that did not authenticate
    RX_DROPPED_AUTH = "rx_dropped_auth"
    #: a cookie reply not bound to our last mac1, or a repeat
    RX_DROPPED_COOKIE_REPLY = "rx_dropped_cookie_reply"
    #: anything while the interface is down or has no key
    RX_DROPPED_DOWN = "rx_dropped_down"
    #: transport on an expired keypair or past REJECT_AFTER_MESSAGES
    RX_DROPPED_EXPIRED = "rx_dropped_expired"
    #: a datagram that is no WireGuard message
    RX_DROPPED_FRAMING = "rx_dropped_framing"
    #: a valid-mac1 handshake message beyond the budget
    RX_DROPPED_HANDSHAKE_OVERLOAD = "rx_dropped_handshake_overload"
    #: an initiation that did not authenticate, replayed or flooded
    RX_DROPPED_INITIATION = "rx_dropped_initiation"
    #: a datagram whose handling raised (a bug; logged)
    RX_DROPPED_INTERNAL_ERROR = "rx_dropped_internal_error"
    #: decrypted plaintext that is no IP packet
    RX_DROPPED_INVALID_PACKET = "rx_dropped_invalid_packet"
    #: a handshake message with a wrong mac1
    RX_DROPPED_MAC1 = "rx_dropped_mac1"
    #: a handshake message over the per-source limit under load
    RX_DROPPED_RATELIMITED = "rx_dropped_ratelimited"
    #: a transport counter already seen or behind the window
    RX_DROPPED_REPLAY = "rx_dropped_replay"
    #: a response that did not authenticate or was unexpected
    RX_DROPPED_RESPONSE = "rx_dropped_response"
    #: an inner source address that is not the peer's
    RX_DROPPED_SOURCE_FILTER = "rx_dropped_source_filter"
    #: a receiver index of no session
    RX_DROPPED_UNKNOWN_INDEX = "rx_dropped_unknown_index"
    #: an authenticated keepalive
    RX_KEEPALIVE = "rx_keepalive"
    #: a packet to send while the interface is down
    TX_DROPPED_DOWN = "tx_dropped_down"
    #: staged packets dropped when a handshake attempt was abandoned
    TX_DROPPED_GAVE_UP = "tx_dropped_gave_up"
    #: a packet from the TUN that is no IP packet
    TX_DROPPED_INVALID = "tx_dropped_invalid"
    #: a packet for a peer without an endpoint
    TX_DROPPED_NO_ENDPOINT = "tx_dropped_no_endpoint"
    #: a packet whose destination no peer allows
    TX_DROPPED_NO_ROUTE = "tx_dropped_no_route"
    #: a packet that did not fit the staging queue
    TX_DROPPED_STAGED_FULL = "tx_dropped_staged_full"


class Stats(Counter[str]):
    """The device's counters.  Reading a name that is not a :class:`Stat`
    raises KeyError instead of reading 0, so a misspelt counter is noticed."""

    def __missing__(self, key: str) -> int:
        if key in _STAT_NAMES:
            return 0
        raise KeyError(f"no such counter: {key!r} (see wgpy.device.Stat)")


_STAT_NAMES: Final = frozenset(s.value for s in Stat)


class EventKind(StrEnum):
    """What an :class:`Event` reports."""

    #: a session was derived
    HANDSHAKE_COMPLETE = "handshake_complete"
    #: REKEY_ATTEMPT_TIME passed without an answer
    HANDSHAKE_GAVE_UP = "handshake_gave_up"
    #: a peer's initiation was accepted
    INITIATION_CONSUMED = "initiation_consumed"
    #: we sent an initiation
    INITIATION_SENT = "initiation_sent"
    #: a peer's keys were zeroed (3 x REJECT_AFTER_TIME idle)
    KEYS_ERASED = "keys_erased"


@dataclass(frozen=True, slots=True)
class Event:
    """Something worth logging: ``kind`` names it, ``peer`` is a public key."""

    kind: EventKind
    peer: bytes


@dataclass(slots=True)
class Output:
    """The actions an entry point asks the runtime to perform, in order."""

    #: (datagram, destination) pairs to send over UDP: the order
    #: :meth:`Device.receive` takes them in.
    datagrams: list[tuple[bytes, Endpoint]] = field(default_factory=list)
    #: Decrypted IP packets to write to the TUN.
    packets: list[bytes] = field(default_factory=list)
    #: Notable protocol events (handshake completed, gave up, ...).
    events: list[Event] = field(default_factory=list)

    def clear(self) -> None:
        """Empty all three lists (the runtime reuses one Output)."""
        self.datagrams.clear()
        self.packets.clear()
        self.events.clear()


def _open_nothing(counter: int, ciphertext: memoryview) -> bytes | None:
    """Placeholder opener of :meth:`Device.receive` before the first keypair
    of a batch is known (never called: that keypair replaces it first)."""
    return None


def _accept_nothing(counter: int) -> bool:
    """Placeholder replay check, the pair of :func:`_open_nothing`."""
    return False


#: Placeholder window of the same loop: never validated, and extend() on a
#: window that accepted nothing does nothing.
_NO_WINDOW: Final = ReplayWindow()


class Device:
    """A WireGuard interface without I/O.  See the module docstring."""

    def __init__(
        self,
        private_key: bytes | None = None,
        *,
        rng: Rng | None = None,
        mtu: int = DEFAULT_MTU,
    ) -> None:
        self.rng: Rng = rng if rng is not None else SystemRng()
        self.mtu = mtu
        self.allowed_ips: AllowedIPs[Peer] = AllowedIPs()
        self.stats: Stats = Stats()
        #: Debug switch: treat every handshake as arriving under load, so the
        #: cookie path can be exercised on demand (``WGPY_FORCE_UNDER_LOAD``).
        self.force_under_load = False
        #: Where the keys of each handshake we make go, as Wireshark key-log
        #: lines (:mod:`wgpy.keylog`); None (the default) logs nothing.
        self.keylog: Callable[[str], None] | None = None
        self._static: StaticKey | None = None
        self._responder_hash = b""
        self._peers: dict[bytes, Peer] = {}
        self._index: dict[int, tuple[Peer, Keypair | None]] = {}
        self._cookie_checker = CookieChecker(self.rng)
        self._ratelimiter = RateLimiter()
        self._heap: list[tuple[float, int, Peer]] = []
        self._seq = itertools.count()
        self._routes: dict[bytes, Peer | None] = {}
        self._routes_generation = -1
        self._under_load_until = float("-inf")
        self._budget_tokens = float(HANDSHAKE_BUDGET_BURST)
        self._budget_time = 0.0
        self._up = True
        if private_key is not None:
            self.set_private_key(private_key)

    # ------------------------------------------------------------------
    # Configuration
    # ------------------------------------------------------------------

    @property
    def private_key(self) -> bytes | None:
        """Our static private key, clamped, or None."""
        return bytes(self._static.private) if self._static is not None else None

    @property
    def public_key(self) -> bytes | None:
        """Our static public key, or None without a private key."""
        return self._static.public if self._static is not None else None

    @property
    def up(self) -> bool:
        """Whether the interface passes traffic."""
        return self._up

    def set_private_key(self, private_key: bytes | None) -> None:
        """Set (or with None/all-zero, clear) the static private key.

        As the kernel and wireguard-go do: a peer whose public key equals the
        new public key is removed; every peer's static-static DH is
        recomputed; current sessions stop sending so new handshakes start.
        """
        if private_key is not None and len(private_key) != KEY_LEN:
            raise ValueError("a private key is 32 bytes")
        if private_key is not None and private_key == bytes(KEY_LEN):
            private_key = None
        new = StaticKey(private_key) if private_key is not None else None
        old = self._static
        if old is not None and new is not None and bytes(old.private) == bytes(new.private):
            return
        if new is not None and new.public in self._peers:
            self.remove_peer(new.public)
        self._static = new
        self._cookie_checker.set_public_key(new.public if new is not None else None)
        self._responder_hash = initial_hash(new.public) if new is not None else b""
        if old is not None:
            old.zero()
        for peer in self._peers.values():
            peer.handshake.precompute(new)
            self._expire_current_keypairs(peer)

    def peer(self, public_key: bytes) -> Peer | None:
        """The peer with this public key, if configured."""
        return self._peers.get(bytes(public_key))

    @property
    def peers(self) -> list[Peer]:
        """All peers in the order they were added."""
        return list(self._peers.values())

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self._peers.values()))

    def __len__(self) -> int:
        return len(self._peers)

    def add_peer(
        self,
        public_key: bytes,
        *,
        preshared_key: bytes | None = None,
        endpoint: Endpoint | None = None,
        persistent_keepalive: int = 0,
        allowed_ips: Iterable[str] = (),
        now: float = 0.0,
    ) -> Peer:
        """Add a peer.  ``ValueError`` if the key is malformed, already
        configured, equal to our own public key, or the peer table is full."""
        public_key = bytes(public_key)
        if len(public_key) != KEY_LEN:
            raise ValueError("a public key is 32 bytes")
        if public_key in self._peers:
            raise ValueError("peer already exists")
        if self._static is not None and public_key == self._static.public:
            raise ValueError("a peer cannot have the interface's own public key")
        if len(self._peers) >= MAX_PEERS:
            raise ValueError("too many peers")
        networks = list(allowed_ips)
        peer = Peer(public_key, self._jitter, preshared_key)
        peer.handshake.precompute(self._static)
        for net in networks:
            self.allowed_ips.insert_network(net, peer)
        peer.endpoint = endpoint
        self._peers[public_key] = peer
        if persistent_keepalive:
            self.set_persistent_keepalive(peer, persistent_keepalive, now)
        return peer

    def remove_peer(self, public_key: bytes) -> bool:
        """Remove a peer and erase its state; False if it was not configured."""
        peer = self._peers.pop(bytes(public_key), None)
        if peer is None:
            return False
        peer.removed = True
        self.allowed_ips.remove_by_owner(peer)
        self._zero_peer(peer)
        peer.timers.stop()
        peer.handshake.zero_all()
        peer.cookie.zero()
        self._routes.clear()
        return True

    def erase(self) -> None:
        """Wipe every secret the device holds (shutdown): each peer's
        sessions, handshake, preshared key and cookie, the cookie secret and
        the static private key.  The device is left down and without an
        identity; its peers stay listed (for a last ``get``)."""
        self._up = False
        for peer in self._peers.values():
            self._zero_peer(peer)
            peer.timers.stop()
            peer.handshake.zero_all()
            peer.cookie.zero()
        self._cookie_checker.zero()
        self._cookie_checker.set_public_key(None)
        if self._static is not None:
            self._static.zero()
        self._static = None
        self._responder_hash = b""

    def remove_all_peers(self) -> None:
        """Remove every peer (UAPI ``replace_peers``)."""
        for key in list(self._peers):
            self.remove_peer(key)

    def add_allowed_ip(self, peer: Peer, addr: bytes, cidr: int) -> None:
        """Route ``addr/cidr`` to ``peer`` (taking it from any other peer).
        Re-adding a prefix puts it last in the peer's list, as the kernel and
        wireguard-go do.  ValueError for a malformed prefix."""
        self.allowed_ips.insert(addr, cidr, peer)

    def remove_allowed_ip(self, peer: Peer, addr: bytes, cidr: int) -> bool:
        """Stop routing ``addr/cidr`` to ``peer``; False (and nothing changed)
        unless ``peer`` owns exactly that prefix."""
        return bool(self.allowed_ips.remove(addr, cidr, peer))

    def replace_allowed_ips(self, peer: Peer, networks: Iterable[str] = ()) -> None:
        """Drop all of ``peer``'s prefixes, then add ``networks`` (CIDR text)."""
        self.allowed_ips.remove_by_owner(peer)
        for net in networks:
            self.allowed_ips.insert_network(net, peer)

    def set_preshared_key(self, peer: Peer, preshared_key: bytes | None) -> None:
        """Set or (None/all-zero) clear a peer's preshared key."""
        if preshared_key is not None and len(preshared_key) != KEY_LEN:
            raise ValueError("a preshared key is 32 bytes")
        peer.handshake.preshared_key[:] = preshared_key or bytes(KEY_LEN)

    def set_endpoint(self, peer: Peer, endpoint: Endpoint | None) -> None:
        """Set the peer's endpoint (it still roams on authenticated packets)."""
        peer.endpoint = endpoint

    def set_persistent_keepalive(
        self, peer: Peer, interval: int, now: float, wall_ns: int = 0
    ) -> Output:
        """Set the persistent keepalive interval (seconds, 0 = off).

        Turning it on sends a keepalive at once, as wireguard-go does; with
        no session that starts a handshake.  Returns what to send.
        """
        if not 0 <= interval <= 0xFFFF:
            raise ValueError("persistent keepalive must be 0..65535 seconds")
        out = Output()
        was = peer.timers.persistent_keepalive_interval
        peer.timers.set_persistent_keepalive(interval, now)
        if interval and not was and self._up and self._static is not None:
            self._send_keepalive(peer, now, wall_ns, out)
        self._schedule(peer)
        return out

    def set_up(self, up: bool, now: float, wall_ns: int = 0) -> Output:
        """Bring the interface up or down.

        Down erases every session and handshake and drops staged packets (as
        wireguard-go stops its peers).  Up sends a keepalive to each peer with
        persistent keepalive, which starts its handshake.
        """
        out = Output()
        if up == self._up:
            return out
        self._up = up
        for peer in self._peers.values():
            if up:
                if peer.persistent_keepalive and self._static is not None:
                    self._send_keepalive(peer, now, wall_ns, out)
                self._schedule(peer)
            else:
                self._zero_peer(peer)
                peer.timers.stop()
                peer.last_sent_handshake = None
        return out

    # ------------------------------------------------------------------
    # Entry points
    # ------------------------------------------------------------------

    def send(
        self,
        packets: Iterable[bytes],
        now: float,
        wall_ns: int,
        out: Output | None = None,
    ) -> Output:
        """Route IP packets from the TUN to peers and encrypt them.

        Packets for peers without a session are staged and a handshake starts.
        """
        if out is None:
            out = Output()
        stats = self.stats
        if not self._up or self._static is None:
            stats[Stat.TX_DROPPED_DOWN] += sum(1 for _ in packets)
            return out
        routes = self._route_table()
        per_peer: dict[Peer, list[bytes]] = {}
        for pkt in packets:
            n = len(pkt)
            version = pkt[0] >> 4 if n else 0
            if version == 4 and n >= 20:
                dst = bytes(pkt[16:20])
            elif version == 6 and n >= 40:
                dst = bytes(pkt[24:40])
            else:
                stats[Stat.TX_DROPPED_INVALID] += 1
                continue
            peer = routes.get(dst, False)
            if peer is False:
                peer = self._lookup(dst)
            if peer is None:
                stats[Stat.TX_DROPPED_NO_ROUTE] += 1
                continue
            assert isinstance(peer, Peer)
            batch = per_peer.get(peer)
            if batch is None:
                per_peer[peer] = [pkt]
            else:
                batch.append(pkt)
        for peer, batch in per_peer.items():
            self._send_staged(peer, now, wall_ns, out, batch)
            self._schedule(peer)
        return out

    def receive(
        self,
        datagrams: Iterable[tuple[bytes, Endpoint]],
        now: float,
        wall_ns: int,
        out: Output | None = None,
    ) -> Output:
        """Process UDP datagrams, each with the endpoint it came from."""
        if out is None:
            out = Output()
        if not self._up or self._static is None:
            self.stats[Stat.RX_DROPPED_DOWN] += sum(1 for _ in datagrams)
            return out
        stats = self.stats
        index = self._index
        routes = self._route_table()
        packets_out = out.packets
        # Per-batch bookkeeping: peers heard from (with the source of their
        # last authenticated packet), peers that sent transport messages, and
        # of those the ones that sent data.
        heard: dict[Peer, Endpoint] = {}
        transport: dict[Peer, None] = {}
        sent_data: dict[Peer, None] = {}
        # Per run of datagrams on one keypair (the common case: a whole batch),
        # what is decided once: liveness, its opener and replay window, and
        # whether it still awaits key confirmation.
        last_kp: Keypair | None = None
        last_kp_live = False
        last_unconfirmed = False
        open_: Callable[[int, memoryview], bytes | None] = _open_nothing
        validate: Callable[[int], bool] = _accept_nothing
        # Replay: after a counter that became the window's head, a run of the
        # counters that follow it one by one is accepted without a window
        # call each, and marked seen by one extend() when the run ends.
        window = _NO_WINDOW
        run_next = -1  # the counter that would continue the run
        run_end = -1  # the run's last counter not yet marked, or -1
        for data, source in datagrams:
            try:
                n = len(data)
                if n >= TRANSPORT_MIN_SIZE:
                    kind, receiver, counter = _unpack_transport(data)
                else:
                    kind = 0
                if kind != MESSAGE_TRANSPORT:
                    peer = self._receive_other(data, source, now, wall_ns, out)
                    if peer is not None:
                        heard[peer] = peer.endpoint or source
                    last_kp = None  # a handshake may have rotated the keypairs
                    continue
                # -- transport: the per-packet hot path ------------------------
                entry = index.get(receiver)
                if entry is None or (kp := entry[1]) is None:
                    stats[Stat.RX_DROPPED_UNKNOWN_INDEX] += 1
                    continue
                peer = entry[0]
                if kp is not last_kp:
                    if run_end >= 0:
                        window.extend(run_end)
                        run_end = -1
                    last_kp, last_kp_live = kp, not kp.expired(now)
                    window = kp.replay
                    open_, validate = kp.open, window.validate
                    run_next = -1
                    last_unconfirmed = kp is peer.keypairs.next
                if not last_kp_live or counter >= REJECT_AFTER_MESSAGES:
                    stats[Stat.RX_DROPPED_EXPIRED] += 1
                    continue
                plain = open_(counter, memoryview(data)[TRANSPORT_HEADER_SIZE:])
                if plain is None:
                    stats[Stat.RX_DROPPED_AUTH] += 1
                    continue
                # Only now, after authentication, may the counter touch the window.
                if counter == run_next:
                    run_end = counter
                    run_next = counter + 1
                else:
                    if run_end >= 0:
                        window.extend(run_end)
                        run_end = -1
                    if not validate(counter):
                        stats[Stat.RX_DROPPED_REPLAY] += 1
                        continue
                    run_next = counter + 1 if counter == window.greatest else -1
                # Roaming: the endpoint follows authenticated packets, even
                # ones the source filter below drops (as netns.sh asserts).
                heard[peer] = source
                transport[peer] = None
                if last_unconfirmed:
                    self._confirm(peer, kp, source, now, wall_ns, out)
                    last_kp = None  # its place among the peer's keypairs changed
                m = len(plain)
                if m == 0:
                    peer.rx_bytes += n
                    stats[Stat.RX_KEEPALIVE] += 1
                    continue
                sent_data[peer] = None
                version = plain[0] >> 4
                if version == 4 and m >= 20:
                    length = (plain[2] << 8) | plain[3]
                    src = plain[12:16]
                    if length < 20:
                        length = m + 1  # rejected below
                elif version == 6 and m >= 40:
                    length = 40 + ((plain[4] << 8) | plain[5])
                    src = plain[8:24]
                else:
                    stats[Stat.RX_DROPPED_INVALID_PACKET] += 1
                    continue
                if length > m:
                    stats[Stat.RX_DROPPED_INVALID_PACKET] += 1
                    continue
                # Cryptokey routing: the inner source must belong to this peer.
                routed = routes.get(src, False)
                if routed is False:
                    routed = self._lookup(src)
                if routed is not peer:
                    stats[Stat.RX_DROPPED_SOURCE_FILTER] += 1
                    continue
                peer.rx_bytes += n
                packets_out.append(plain if length == m else plain[:length])
            except Exception:  # a bug must never stop the engine on remote input
                stats[Stat.RX_DROPPED_INTERNAL_ERROR] += 1
                log.exception("internal error while processing a datagram")
        if run_end >= 0:
            window.extend(run_end)
        for peer, source in heard.items():
            if peer.removed:
                continue
            peer.endpoint = source
            timers = peer.timers
            timers.any_authenticated_packet_received(now)
            timers.any_authenticated_packet_traversal(now)
            if peer in sent_data:
                timers.data_received(now)
            # The original initiator starts one last handshake before expiry,
            # on a transport message (keepalive or data) only: a received
            # initiation is answered, not followed by one of ours.
            cur = peer.keypairs.current
            if (
                peer in transport
                and cur is not None
                and cur.initiator
                and not peer.sent_lastminute_handshake
                and now - cur.created >= REKEY_ON_RECEIVE_AGE
            ):
                peer.sent_lastminute_handshake = True
                self._send_initiation(peer, False, now, wall_ns, out)
            self._schedule(peer)
        return out

    def screen(self, data: bytes | memoryview) -> bool:
        """The keyless first look at a datagram, for the runtime to apply
        before it builds anything for it (handshake-only sockets under a
        flood): False for a handshake message whose mac1 is wrong (counted as
        ``rx_dropped_mac1``, as :meth:`receive` would), or for anything while
        the device has no identity or is down (counted as ``rx_dropped_down``);
        True for everything else, which :meth:`receive` then examines in full.
        Changes no other state.  This is what each datagram of a junk flood
        costs, so it is kept short."""
        n = len(data)
        if n == INITIATION_SIZE:
            offset = MAC1_OFFSET_INITIATION
            kind = MESSAGE_INITIATION
        elif n == RESPONSE_SIZE:
            offset = MAC1_OFFSET_RESPONSE
            kind = MESSAGE_RESPONSE
        else:
            kind = 0
        if not self._up or self._static is None:
            self.stats[Stat.RX_DROPPED_DOWN] += 1
            return False
        if not kind or _unpack_type(data)[0] != kind:
            return True  # not a handshake message: receive() judges it
        if self._cookie_checker.check_mac1(data, offset):
            return True
        self.stats[Stat.RX_DROPPED_MAC1] += 1
        return False

    def _receive_other(
        self, data: bytes, source: Endpoint, now: float, wall_ns: int, out: Output
    ) -> Peer | None:
        """Handshake messages, cookie replies and malformed datagrams."""
        kind = message_type(data)
        if kind in (MESSAGE_INITIATION, MESSAGE_RESPONSE):
            offset = MAC1_OFFSET_INITIATION if kind == MESSAGE_INITIATION else MAC1_OFFSET_RESPONSE
            # mac1 first: one keyed hash that needs no secret.  Only a message
            # that passes it may count toward load or spend the budget, so
            # junk from a sender without our public key cannot make genuine
            # handshakes need cookies or crowd them out of the budget.
            if not self._cookie_checker.check_mac1(data, offset):
                self.stats[Stat.RX_DROPPED_MAC1] += 1
                return None
            if not self._handshake_budget(now):
                # Shed load before any DH or cookie work, as the kernel drops
                # handshakes when its queue is full: a flood must not starve
                # the data path sharing this loop.
                self.stats[Stat.RX_DROPPED_HANDSHAKE_OVERLOAD] += 1
                return None
            return self._receive_handshake(
                kind, data, source, self.under_load(now), now, wall_ns, out
            )
        if kind == MESSAGE_COOKIE_REPLY:
            self._receive_cookie_reply(data, now)
        else:
            self.stats[Stat.RX_DROPPED_FRAMING] += 1
        return None

    def _confirm(
        self, peer: Peer, kp: Keypair, source: Endpoint, now: float, wall_ns: int, out: Output
    ) -> None:
        """Key confirmation: the initiator used the session parked in next."""
        for old in peer.keypairs.confirm(kp):
            self._drop_keypair(old)
        peer.endpoint = source
        self._handshake_complete(peer, now, wall_ns, out)
        self._send_staged(peer, now, wall_ns, out)

    def handle_timers(self, now: float, wall_ns: int, out: Output | None = None) -> Output:
        """Run every timer that expired at or before ``now``."""
        if out is None:
            out = Output()
        heap = self._heap
        while heap and heap[0][0] <= now:
            deadline, _, peer = heapq.heappop(heap)
            if peer.removed:
                continue
            queued = peer.queued
            if queued is not None:
                queued.discard(deadline)
            peer.scheduled = min(queued) if queued else None
            if not self._up:
                # Down: nothing fires and nothing is re-queued (the deadline
                # stays due); set_up(True) schedules the peer again.
                continue
            for action in peer.timers.expire(now):
                self._run_timer_action(peer, action, now, wall_ns, out)
            self._schedule(peer)
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timers` should run next (monotonic seconds)."""
        heap = self._heap
        while heap and heap[0][2].removed:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def under_load(self, now: float) -> bool:
        """Whether handshakes currently need a valid mac2 (cookie)."""
        return self.force_under_load or now < self._under_load_until

    # ------------------------------------------------------------------
    # Routing
    # ------------------------------------------------------------------

    def _route_table(self) -> dict[bytes, Peer | None]:
        gen = self.allowed_ips.generation
        if gen != self._routes_generation or len(self._routes) > ROUTE_CACHE_MAX:
            self._routes.clear()
            self._routes_generation = gen
        return self._routes

    def _lookup(self, addr: bytes) -> Peer | None:
        peer = self.allowed_ips.lookup(addr)
        self._routes[addr] = peer
        return peer

    # ------------------------------------------------------------------
    # Sending
    # ------------------------------------------------------------------

    def _emit(self, peer: Peer, datagram: bytes, out: Output) -> bool:
        ep = peer.endpoint
        if ep is None:
            self.stats[Stat.TX_DROPPED_NO_ENDPOINT] += 1
            return False
        out.datagrams.append((datagram, ep))
        peer.tx_bytes += len(datagram)
        return True

    def _send_staged(
        self,
        peer: Peer,
        now: float,
        wall_ns: int,
        out: Output,
        fresh: list[bytes] | None = None,
    ) -> None:
        """Encrypt staged packets, then ``fresh`` ones, with the current
        session; without a usable session, stage them and start one."""
        kp = peer.keypairs.current
        usable = kp is not None and kp.can_send(now)
        if peer.staged_count or not usable:
            if fresh:
                staged = peer.staged
                overflow = len(staged) + len(fresh) - MAX_STAGED_PACKETS
                if overflow > 0:
                    self.stats[Stat.TX_DROPPED_STAGED_FULL] += overflow
                staged.extend(fresh)
            if not peer.staged_count:
                return
            if not usable:
                self._send_initiation(peer, False, now, wall_ns, out)
                return
            pending = list(peer.staged)
            peer.clear_staged()
        elif fresh:
            pending = fresh
        else:
            return
        assert kp is not None
        ep = peer.endpoint
        if ep is None:
            self.stats[Stat.TX_DROPPED_NO_ENDPOINT] += len(pending)
            return
        msgs = kp.seal_batch(pending, self.mtu)
        sent = len(msgs)
        out.datagrams.extend([(m, ep) for m in msgs])
        peer.tx_bytes += sum(map(len, msgs))
        if sent < len(pending):  # counter exhausted: keep the rest for the next session
            peer.staged.extend(pending[sent:])
        timers = peer.timers
        if sent and any(pending[:sent]):
            timers.data_sent(now)
        timers.any_authenticated_packet_traversal(now)
        timers.any_authenticated_packet_sent(now)
        # Keep the key fresh: rekey after enough messages, or if we initiated
        # this session and it is older than REKEY_AFTER_TIME.  Packets still
        # staged mean the counter ran out: a new session is due as well.
        if (
            kp.send_counter > REKEY_AFTER_MESSAGES
            or (kp.initiator and now - kp.created >= REKEY_AFTER_TIME)
            or sent < len(pending)
        ):
            self._send_initiation(peer, False, now, wall_ns, out)

    def _send_keepalive(self, peer: Peer, now: float, wall_ns: int, out: Output) -> None:
        """Queue an empty packet unless data is already waiting, then flush."""
        if not peer.staged_count:
            peer.staged.append(b"")
        self._send_staged(peer, now, wall_ns, out)

    def _send_initiation(
        self, peer: Peer, retry: bool, now: float, wall_ns: int, out: Output
    ) -> None:
        """Send a handshake initiation, at most one per REKEY_TIMEOUT."""
        static = self._static
        if static is None:
            return
        peer.timers.handshake_started(retry)
        last = peer.last_sent_handshake
        if last is not None and 0 <= now - last < REKEY_TIMEOUT:
            return
        peer.last_sent_handshake = now
        self._release_pending_index(peer)
        index = self._new_index()
        ephemeral = self.rng.random_bytes(KEY_LEN)
        body = create_initiation(
            static, peer.handshake, index, ephemeral, peer.stamper.stamp(wall_ns)
        )
        if body is None:
            self.stats[Stat.HANDSHAKE_REFUSED_LOW_ORDER] += 1
            return
        self._log_keys(peer, ephemeral)
        self._index[index] = (peer, None)
        peer.pending_index = index
        msg = peer.cookie.add_macs(body, now)
        timers = peer.timers
        timers.any_authenticated_packet_traversal(now)
        timers.any_authenticated_packet_sent(now)
        self._emit(peer, msg, out)
        timers.handshake_initiated(now)
        out.events.append(Event(EventKind.INITIATION_SENT, peer.public_key))

    def _log_keys(self, peer: Peer, ephemeral: bytes) -> None:
        """Hand the keys of a handshake we just made to the key-log sink."""
        if self.keylog is not None and self._static is not None:
            hs = peer.handshake
            self.keylog(
                keylog_block(self._static.private, peer.public_key, ephemeral, hs.preshared_key)
            )

    def _send_response(self, peer: Peer, now: float, out: Output) -> None:
        """Answer the initiation just consumed and park the new session as next."""
        hs = peer.handshake
        index = self._new_index()
        ephemeral = self.rng.random_bytes(KEY_LEN)
        body = create_response(hs, index, ephemeral)
        if body is None:
            hs.clear()
            return
        self._log_keys(peer, ephemeral)
        msg = peer.cookie.add_macs(body, now)
        keys = derive_transport_keys(hs)
        if keys is None:  # pragma: no cover - create_response guarantees state
            return
        self._install_keypair(peer, keys, now)
        # A response is a handshake sent: REKEY_TIMEOUT now holds back our own
        # initiation, so data crossing the handshake starts no second one
        # (the kernel and wireguard-go set last_sent_handshake here too).
        peer.last_sent_handshake = now
        timers = peer.timers
        timers.session_derived(now)
        timers.any_authenticated_packet_traversal(now)
        timers.any_authenticated_packet_sent(now)
        self._emit(peer, msg, out)

    def _install_keypair(self, peer: Peer, keys: SessionKeys, now: float) -> Keypair:
        """Turn handshake output into a session; its index now maps to it."""
        kp = Keypair.from_handshake(keys, now)
        self._index[keys.local_index] = (peer, kp)
        for old in peer.keypairs.install(kp):
            self._drop_keypair(old)
        return kp

    # ------------------------------------------------------------------
    # Receiving
    # ------------------------------------------------------------------

    def _budget_tokens_at(self, now: float) -> float:
        """The handshake token bucket refilled up to ``now`` (not stored)."""
        elapsed = now - self._budget_time
        tokens = self._budget_tokens
        if elapsed > 0:
            tokens = min(HANDSHAKE_BUDGET_BURST, tokens + elapsed * HANDSHAKE_BUDGET_PER_SECOND)
        return tokens

    def handshake_budget(self, now: float) -> int:
        """How many handshake messages may be examined right now (the token
        bucket's whole tokens); the runtime reads a handshake-only socket no
        faster than this."""
        return int(self._budget_tokens_at(now))

    def _handshake_budget(self, now: float) -> bool:
        """Token bucket over all handshake messages: True if one may be
        examined.  Its deficit is the core's measure of load: fewer than
        :data:`UNDER_LOAD_BUDGET_LEFT` tokens left puts the device under load."""
        tokens = self._budget_tokens_at(now)
        self._budget_time = now
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._budget_tokens = tokens
        if tokens < UNDER_LOAD_BUDGET_LEFT:
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME
        return allowed

    def handshake_backlog(self, queued: int, now: float) -> None:
        """The runtime's report of its handshake queue: ``queued`` valid-mac1
        messages were read in one go and more still wait.  At
        :data:`UNDER_LOAD_BACKLOG` or more the device is under load for
        :data:`UNDER_LOAD_AFTER_TIME`, as wireguard-go is when its queue
        backs up (the machine is not keeping up, whatever the budget says)."""
        if queued >= UNDER_LOAD_BACKLOG:
            self._under_load_until = now + UNDER_LOAD_AFTER_TIME

    def _receive_handshake(
        self,
        kind: int,
        data: bytes,
        source: Endpoint,
        under_load: bool,
        now: float,
        wall_ns: int,
        out: Output,
    ) -> Peer | None:
        """A handshake message whose mac1 verified: mac2 and the per-source
        limit under load, then the DH work."""
        stats = self.stats
        checker = self._cookie_checker
        mac1_offset = MAC1_OFFSET_INITIATION if kind == MESSAGE_INITIATION else MAC1_OFFSET_RESPONSE
        if under_load:
            if not checker.check_mac2(data, mac1_offset, source, now):
                sender = int.from_bytes(data[4:8], "little")
                out.datagrams.append(
                    (checker.create_reply(data, mac1_offset, sender, source, now), source)
                )
                stats[Stat.COOKIE_REPLY_SENT] += 1
                return None
            if not self._ratelimiter.allow(source.ip_bytes(), now):
                stats[Stat.RX_DROPPED_RATELIMITED] += 1
                return None
        if kind == MESSAGE_INITIATION:
            return self._consume_initiation(data, source, now, out)
        return self._consume_response(data, source, now, wall_ns, out)

    def _find_handshake(self, public_key: bytes) -> Handshake | None:
        peer = self._peers.get(bytes(public_key))
        return peer.handshake if peer is not None else None

    def _consume_initiation(
        self, data: bytes, source: Endpoint, now: float, out: Output
    ) -> Peer | None:
        static = self._static
        assert static is not None
        msg = MessageInitiation.parse(data)
        hs = consume_initiation(static, self._responder_hash, msg, self._find_handshake, now)
        if hs is None:
            self.stats[Stat.RX_DROPPED_INITIATION] += 1
            return None
        peer = self._peers[hs.remote_static]
        # Our own pending initiation (if any) was superseded: free its index.
        self._release_pending_index(peer)
        peer.endpoint = source
        peer.rx_bytes += INITIATION_SIZE
        peer.timers.any_authenticated_packet_received(now)
        peer.timers.any_authenticated_packet_traversal(now)
        self._send_response(peer, now, out)
        out.events.append(Event(EventKind.INITIATION_CONSUMED, peer.public_key))
        return peer

    def _consume_response(
        self, data: bytes, source: Endpoint, now: float, wall_ns: int, out: Output
    ) -> Peer | None:
        static = self._static
        assert static is not None
        msg = MessageResponse.parse(data)
        entry = self._index.get(msg.receiver)
        if entry is None or entry[1] is not None:
            self.stats[Stat.RX_DROPPED_UNKNOWN_INDEX] += 1
            return None
        peer = entry[0]
        hs = peer.handshake
        if (
            hs.state != HandshakeState.CREATED_INITIATION
            or hs.local_index != msg.receiver
            or not consume_response(static, hs, msg)
        ):
            self.stats[Stat.RX_DROPPED_RESPONSE] += 1
            return None
        keys = derive_transport_keys(hs)
        if keys is None:  # pragma: no cover - consume_response guarantees state
            return None
        peer.pending_index = 0  # the index now belongs to the keypair
        self._install_keypair(peer, keys, now)
        peer.endpoint = source
        peer.rx_bytes += len(data)
        timers = peer.timers
        timers.session_derived(now)
        self._handshake_complete(peer, now, wall_ns, out)
        timers.any_authenticated_packet_received(now)
        timers.any_authenticated_packet_traversal(now)
        # Confirm the session to the responder at once (data or a keepalive).
        self._send_keepalive(peer, now, wall_ns, out)
        return peer

    def _receive_cookie_reply(self, data: bytes, now: float) -> None:
        msg = MessageCookieReply.parse(data)
        entry = self._index.get(msg.receiver)
        if entry is None:
            self.stats[Stat.RX_DROPPED_UNKNOWN_INDEX] += 1
            return
        # Cookie replies never move the endpoint nor touch the timers.
        if entry[0].cookie.consume_reply(msg, now):
            self.stats[Stat.COOKIE_REPLY_CONSUMED] += 1
        else:
            self.stats[Stat.RX_DROPPED_COOKIE_REPLY] += 1

    def _handshake_complete(self, peer: Peer, now: float, wall_ns: int, out: Output) -> None:
        peer.timers.handshake_complete(now)
        peer.sent_lastminute_handshake = False
        peer.last_handshake_ns = wall_ns
        out.events.append(Event(EventKind.HANDSHAKE_COMPLETE, peer.public_key))

    # ------------------------------------------------------------------
    # Timers
    # ------------------------------------------------------------------

    def _jitter(self) -> float:
        return random_fraction(self.rng) * REKEY_TIMEOUT_JITTER_MAX

    def _schedule(self, peer: Peer) -> None:
        """Make sure the heap holds an entry no later than the peer's deadline."""
        deadline = peer.timers.next_deadline()
        if deadline is None or peer.removed:
            return
        scheduled = peer.scheduled
        if scheduled is not None and scheduled <= deadline:
            return  # an earlier entry will pop first and reschedule
        peer.scheduled = deadline
        queued = peer.queued
        if queued is None:
            queued = peer.queued = set()
        elif deadline in queued:
            return  # this very deadline is already in the heap
        queued.add(deadline)
        heapq.heappush(self._heap, (deadline, next(self._seq), peer))

    def _run_timer_action(
        self, peer: Peer, action: TimerAction, now: float, wall_ns: int, out: Output
    ) -> None:
        if action is TimerAction.RETRANSMIT_HANDSHAKE:
            self._forget_local_source(peer)
            self._send_initiation(peer, True, now, wall_ns, out)
        elif action is TimerAction.NEW_HANDSHAKE:
            self._forget_local_source(peer)
            self._send_initiation(peer, False, now, wall_ns, out)
        elif action is TimerAction.SEND_KEEPALIVE:
            self._send_keepalive(peer, now, wall_ns, out)
            peer.timers.passive_keepalive_sent(now)
        elif action is TimerAction.PERSISTENT_KEEPALIVE:
            self._send_keepalive(peer, now, wall_ns, out)
        elif action is TimerAction.GIVE_UP:
            self.stats[Stat.TX_DROPPED_GAVE_UP] += peer.clear_staged()
            out.events.append(Event(EventKind.HANDSHAKE_GAVE_UP, peer.public_key))
        elif action is TimerAction.ZERO_KEY_MATERIAL:
            self._zero_peer(peer)
            out.events.append(Event(EventKind.KEYS_ERASED, peer.public_key))

    @staticmethod
    def _forget_local_source(peer: Peer) -> None:
        # Retries may leave from whichever local address routing now prefers.
        ep = peer.endpoint
        if ep is not None and ep.local is not None:
            peer.endpoint = ep.with_local(None)

    # ------------------------------------------------------------------
    # Index table and erasure
    # ------------------------------------------------------------------

    def _new_index(self) -> int:
        index = self._index
        while True:
            candidate = random_u32(self.rng)
            if candidate and candidate not in index:
                return candidate

    def _release_pending_index(self, peer: Peer) -> None:
        idx = peer.pending_index
        if idx:
            entry = self._index.get(idx)
            if entry is not None and entry[0] is peer and entry[1] is None:
                del self._index[idx]
            peer.pending_index = 0

    def _drop_keypair(self, kp: Keypair) -> None:
        entry = self._index.get(kp.local_index)
        if entry is not None and entry[1] is kp:
            del self._index[kp.local_index]
        kp.zero()

    def _zero_peer(self, peer: Peer) -> None:
        """Erase all sessions and the handshake of a peer; drop staged packets."""
        for kp in peer.keypairs.clear():
            self._drop_keypair(kp)
        self._release_pending_index(peer)
        peer.handshake.clear()
        peer.clear_staged()

    def _expire_current_keypairs(self, peer: Peer) -> None:
        """After a private-key change: stop sending on existing sessions and
        allow an immediate new initiation."""
        self._release_pending_index(peer)
        peer.handshake.clear()
        peer.last_sent_handshake = None
        for kp in (peer.keypairs.current, peer.keypairs.next):
            if kp is not None:
                kp.send_counter = REJECT_AFTER_MESSAGES
