"""Handshake rules at unit level: replayed and stale initiations, the 20 ms
flood limit, responses that try to hijack a pending handshake, low-order
keys, and injected-fault handshakes that must get no reply (checklist 4-9)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from simutil import A4, B4, kinds
from test_primitives import LOW_ORDER_POINTS

from wgpy.device import Device, Stat
from wgpy.endpoint import Endpoint
from wgpy.noise.cookie import mac1_key
from wgpy.noise.handshake import (
    Handshake,
    HandshakeState,
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    initial_hash,
)
from wgpy.noise.messages import MessageInitiation, MessageResponse
from wgpy.noise.primitives import StaticKey, mac
from wgpy.noise.tai64n import tai64n
from wgpy.rng import SeededRng
from wgpy.sim import ipv4_packet, make_pair

WALL = 1_767_225_600 * 10**9


class Pair:
    """Two static identities with handshake records for each other."""

    def __init__(self) -> None:
        self.i = StaticKey(os.urandom(32))
        self.r = StaticKey(os.urandom(32))
        self.hs_i = Handshake(self.r.public)
        self.hs_i.precompute(self.i)
        self.hs_r = Handshake(self.i.public)
        self.hs_r.precompute(self.r)

    def find(self, key: bytes) -> Handshake | None:
        return self.hs_r if key == self.i.public else None

    def initiation(self, wall_ns: int = WALL, index: int = 1) -> MessageInitiation:
        body = create_initiation(self.i, self.hs_i, index, os.urandom(32), tai64n(wall_ns))
        assert body is not None
        return MessageInitiation.parse(body + bytes(32))

    def consume(self, msg: MessageInitiation, now: float) -> Handshake | None:
        return consume_initiation(self.r, initial_hash(self.r.public), msg, self.find, now)


def test_replayed_equal_or_older_timestamps_rejected_newer_accepted() -> None:
    p = Pair()
    first = p.initiation(WALL)
    assert p.consume(first, 0.0) is p.hs_r
    assert p.consume(first, 1.0) is None  # exact replay
    assert p.consume(p.initiation(WALL), 2.0) is None  # equal timestamp
    assert p.consume(p.initiation(WALL - 10**9), 3.0) is None  # older
    assert p.consume(p.initiation(WALL + 10**9), 4.0) is p.hs_r


def test_stored_timestamp_never_decreases_out_of_order() -> None:
    p = Pair()
    newer, older = p.initiation(WALL + 5 * 10**9), p.initiation(WALL)
    assert p.consume(newer, 0.0) is p.hs_r
    stored = p.hs_r.latest_timestamp
    assert p.consume(older, 1.0) is None
    assert p.hs_r.latest_timestamp == stored


def test_initiation_flood_limit_20ms() -> None:
    p = Pair()
    assert p.consume(p.initiation(WALL), 10.0) is p.hs_r
    assert p.consume(p.initiation(WALL + 10**8), 10.019) is None
    assert p.consume(p.initiation(WALL + 2 * 10**8), 10.0201) is p.hs_r


def test_whitened_timestamps_within_17ms_are_equal() -> None:
    base = WALL  # a whole second
    assert tai64n(base) == tai64n(base + 16_000_000)
    assert tai64n(base) != tai64n(base + 17_000_000)


def test_failed_initiation_leaves_record_untouched() -> None:
    p = Pair()
    assert p.consume(p.initiation(WALL), 0.0) is p.hs_r
    state = (p.hs_r.state, p.hs_r.remote_index, p.hs_r.latest_timestamp)
    bad = p.initiation(WALL + 10**9)
    tampered = MessageInitiation(
        bad.sender, bad.ephemeral, bad.encrypted_static, bytes(28), bad.mac1, bad.mac2
    )
    assert p.consume(tampered, 1.0) is None
    assert (p.hs_r.state, p.hs_r.remote_index, p.hs_r.latest_timestamp) == state


def test_response_hijack_attempts_leave_pending_handshake_intact() -> None:
    p = Pair()
    init = p.initiation(WALL, index=77)
    assert p.consume(init, 0.0) is p.hs_r
    genuine_body = create_response(p.hs_r, 99, os.urandom(32))
    assert genuine_body is not None
    genuine = MessageResponse.parse(genuine_body + bytes(32))
    pending = (p.hs_i.state, bytes(p.hs_i.ephemeral_private), p.hs_i.symmetric.handshake_hash)  # type: ignore[union-attr]
    forgeries = [
        MessageResponse(99, 77, os.urandom(32), genuine.encrypted_nothing),  # other ephemeral
        MessageResponse(99, 77, genuine.ephemeral, os.urandom(16)),  # bad AEAD
        MessageResponse(99, 77, bytes(32), genuine.encrypted_nothing),  # zero ephemeral
    ]
    for forged in forgeries:
        assert not consume_response(p.i, p.hs_i, forged)
        assert (
            p.hs_i.state,
            bytes(p.hs_i.ephemeral_private),
            p.hs_i.symmetric.handshake_hash,  # type: ignore[union-attr]
        ) == pending
    assert consume_response(p.i, p.hs_i, genuine)
    assert p.hs_i.state == HandshakeState.CONSUMED_RESPONSE
    # A second (replayed) response has no pending initiation to complete.
    assert not consume_response(p.i, p.hs_i, genuine)


def test_device_ignores_forged_responses_then_completes() -> None:
    net, a, b = make_pair()
    net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
    ((src, dst, initiation),) = net.in_flight
    net.in_flight = []
    c = net.clock
    response = b.device.receive([(initiation, src)], c.now, c.wall_ns).datagrams[0][0]
    assert b.device.public_key is not None and a.device.public_key is not None
    key = mac1_key(a.device.public_key)

    def with_mac1(body: bytes) -> bytes:
        return body + mac(key, body) + bytes(16)

    wrong_index = bytearray(response)
    wrong_index[8:12] = b"\xde\xad\xbe\xef"
    bad_mac1 = bytearray(response)
    bad_mac1[60] ^= 1
    bad_aead = with_mac1(response[:12] + os.urandom(32) + response[44:60])
    for forged, reason in (
        # A valid mac1 over the changed index, so the index lookup is what refuses it.
        (with_mac1(bytes(wrong_index[:60])), Stat.RX_DROPPED_UNKNOWN_INDEX),
        (bytes(bad_mac1), Stat.RX_DROPPED_MAC1),
        (bad_aead, Stat.RX_DROPPED_RESPONSE),
    ):
        before = dict(a.device.stats)
        out = a.device.receive([(forged, dst)], c.now, c.wall_ns)
        assert out.datagrams == []
        assert _moved(before, a.device.stats) == {reason: 1}
    pa = a.device.peers[0]
    assert pa.handshake.state == HandshakeState.CREATED_INITIATION
    out = a.device.receive([(response, dst)], c.now, c.wall_ns)
    assert pa.keypairs.current is not None and [d[0] for d, _ in out.datagrams] == [4]


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_low_order_peer_keys_produce_no_traffic(point: bytes) -> None:
    dev = Device(os.urandom(32), rng=SeededRng(b"lo"))
    peer = dev.add_peer(point, endpoint=Endpoint("127.0.0.1", 1), allowed_ips=["10.0.0.0/8"])
    out = dev.set_persistent_keepalive(peer, 1, 0.0, WALL)
    assert out.datagrams == []
    for t in range(1, 10):
        out = dev.handle_timers(float(t), WALL)
        assert out.datagrams == []
    assert dev.send([ipv4_packet(A4, "10.0.0.9")], 10.0, WALL).datagrams == []


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_low_order_ephemeral_in_initiation_and_response_rejected(point: bytes) -> None:
    p = Pair()
    good = p.initiation(WALL)
    evil = MessageInitiation(good.sender, point, good.encrypted_static, good.encrypted_timestamp)
    assert p.consume(evil, 0.0) is None
    assert p.consume(good, 0.0) is p.hs_r
    body = create_response(p.hs_r, 5, os.urandom(32))
    assert body is not None
    real = MessageResponse.parse(body + bytes(32))
    assert not consume_response(p.i, p.hs_i, MessageResponse(5, 1, point, real.encrypted_nothing))


# -- injected faults (the salty-stun enum): each gets no datagram back ----------


def _fault_cases() -> dict[str, Callable[[bytes, bytes], bytes]]:
    def remac(msg: bytes, key: bytes) -> bytes:
        body = msg[:116]
        return body + mac(key, body) + bytes(16)

    return {
        "too_short": lambda m, k: m[:-1],
        "too_long": lambda m, k: m + b"\0",
        "mac1_flipped": lambda m, k: m[:116] + bytes([m[116] ^ 1]) + m[117:],
        "zero_ephemeral": lambda m, k: remac(m[:8] + bytes(32) + m[40:], k),
        "zero_encrypted_static": lambda m, k: remac(m[:40] + bytes(48) + m[88:], k),
        "zero_encrypted_timestamp": lambda m, k: remac(m[:88] + bytes(28) + m[116:], k),
    }


#: The drop counter each fault must move (and no other).
_FAULT_REASONS = {
    "too_short": Stat.RX_DROPPED_FRAMING,
    "too_long": Stat.RX_DROPPED_FRAMING,
    "mac1_flipped": Stat.RX_DROPPED_MAC1,
    "zero_ephemeral": Stat.RX_DROPPED_INITIATION,
    "zero_encrypted_static": Stat.RX_DROPPED_INITIATION,
    "zero_encrypted_timestamp": Stat.RX_DROPPED_INITIATION,
}


def _moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that changed, by how much."""
    return {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}


@pytest.mark.parametrize("fault", list(_fault_cases()))
def test_injected_fault_initiations_get_no_reply(fault: str) -> None:
    net, a, b = make_pair()
    net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
    ((src, _, initiation),) = net.in_flight
    net.in_flight = []
    assert b.device.public_key is not None
    bad = _fault_cases()[fault](initiation, mac1_key(b.device.public_key))
    c = net.clock
    before = dict(b.device.stats)
    assert b.device.receive([(bad, src)], c.now, c.wall_ns).datagrams == []
    assert b.device.peers[0].handshake.state == HandshakeState.ZEROED
    assert _moved(before, b.device.stats) == {_FAULT_REASONS[fault]: 1}


def test_initiation_from_unknown_static_key_gets_no_reply() -> None:
    # "zero static": an initiator whose static key the responder does not know.
    net, a, b = make_pair()
    stranger = Device(bytes(31) + b"\x01", rng=SeededRng(b"s"))
    assert b.device.public_key is not None
    stranger.add_peer(b.device.public_key, endpoint=b.address, allowed_ips=["10.0.0.0/8"])
    out = stranger.send([ipv4_packet(A4, B4)], 0.0, WALL)
    c = net.clock
    assert b.device.receive([(out.datagrams[0][0], a.address)], c.now, c.wall_ns).datagrams == []
    assert b.device.stats["rx_dropped_initiation"] == 1
    assert kinds(b.sent) == []
