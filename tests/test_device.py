"""Two sans-IO devices over the in-memory network: sessions, data, replay,
silence, roaming, routing, counters, configuration.

Timer behaviour lives in test_device_timers.py; the cookie path in
test_device_cookie.py.
"""

from __future__ import annotations

import os
import random

import pytest
from simutil import A4, B4, count_dh, kinds, ping, snapshot

from wgpy.constants import (
    INITIATION_SIZE,
    MESSAGE_TRANSPORT,
    REJECT_AFTER_MESSAGES,
    REKEY_AFTER_MESSAGES,
    RESPONSE_SIZE,
)
from wgpy.device import Device
from wgpy.endpoint import Endpoint
from wgpy.noise.primitives import public_key
from wgpy.rng import SeededRng
from wgpy.sim import SimNetwork, ipv4_packet, ipv6_packet, make_pair


def established(**kw: object) -> tuple[SimNetwork, object, object]:
    net, a, b = make_pair(**kw)  # type: ignore[arg-type]
    ping(net, a, b"hello")
    ping(net, b, b"back")
    return net, a, b


# -- handshake and data --------------------------------------------------------


def test_handshake_a_initiates_and_data_flows_both_ways() -> None:
    net, a, b = make_pair()
    ping(net, a, b"hello")
    assert [len(d) for _, d in a.sent][:2] == [
        INITIATION_SIZE,
        32 + 32,
    ]  # 25-byte packet padded to 32
    assert [len(d) for _, d in b.sent] == [RESPONSE_SIZE]
    assert b.delivered == [ipv4_packet(A4, B4, b"hello")]
    ping(net, b, b"back")
    assert a.delivered == [ipv4_packet(B4, A4, b"back")]
    pa, pb = a.device.peers[0], b.device.peers[0]
    assert pa.last_handshake_ns == pb.last_handshake_ns == net.clock.wall_ns
    assert pa.keypairs.current is not None and pa.keypairs.current.initiator
    assert pb.keypairs.current is not None and not pb.keypairs.current.initiator
    assert a.device.stats == {} and b.device.stats == {}


def test_handshake_b_initiates() -> None:
    net, a, b = make_pair()
    ping(net, b, b"first")
    assert kinds(b.sent)[0] == 1 and kinds(a.sent)[0] == 2
    assert a.delivered == [ipv4_packet(B4, A4, b"first")]
    ping(net, a, b"reply")
    assert b.delivered == [ipv4_packet(A4, B4, b"reply")]


def test_ipv6_inner_packets() -> None:
    net, a, b = established()
    ping(net, a, b"six", v6=True)
    assert b.delivered[-1] == ipv6_packet("fd00::1", "fd00::2", b"six")
    ping(net, b, b"xis", v6=True)
    assert a.delivered[-1] == ipv6_packet("fd00::2", "fd00::1", b"xis")


def test_preshared_key_both_sides() -> None:
    psk = os.urandom(32)
    _net, a, b = established(psk=psk)
    assert len(b.delivered) == 1 and len(a.delivered) == 1


def test_mismatched_preshared_key_never_completes() -> None:
    net, a, b = make_pair()
    b.device.set_preshared_key(b.device.peers[0], os.urandom(32))
    ping(net, a, b"x")
    # B answered (it cannot know), but A's AEAD check of the response fails.
    assert kinds(b.sent) == [2]
    assert a.device.stats["rx_dropped_response"] == 1
    assert b.delivered == [] and a.device.peers[0].keypairs.current is None


def test_simultaneous_initiations_converge() -> None:
    net, a, b = make_pair()
    net.send_packets(a, [ipv4_packet(A4, B4, b"a")])
    net.send_packets(b, [ipv4_packet(B4, A4, b"b")])
    net.run()
    net.tick(12)
    assert ipv4_packet(A4, B4, b"a") in b.delivered
    assert ipv4_packet(B4, A4, b"b") in a.delivered
    ping(net, a, b"again")
    assert b.delivered[-1] == ipv4_packet(A4, B4, b"again")


# -- key confirmation and rotation ---------------------------------------------


def test_responder_sends_nothing_on_unconfirmed_session() -> None:
    net, a, b = make_pair()
    net.fault = lambda s, d, data: [] if data[0] == 2 else [(s, d, data)]  # lose the response
    ping(net, a, b"x")
    pb = b.device.peers[0]
    assert pb.keypairs.next is not None and pb.keypairs.current is None
    net.send_packets(b, [ipv4_packet(B4, A4, b"early")])
    # Nothing at all: no data on the unconfirmed keypair, and the response
    # B just sent holds back its own initiation for REKEY_TIMEOUT.
    assert kinds(b.sent)[1:] == []
    assert pb.staged_count == 1
    net.fault = None
    net.tick(7)  # A retransmits (REKEY_TIMEOUT + jitter); B's staged packet follows
    assert ipv4_packet(B4, A4, b"early") in a.delivered
    assert kinds(b.sent).count(1) == 0  # B never initiated


def test_confirmation_flushes_staged_packets_and_rotates() -> None:
    net, a, b = established()
    pb = b.device.peers[0]
    old_b = pb.keypairs.current
    # A re-keys; B parks the new session as next until A's first packet.
    net.clock.advance(121)
    ping(net, a, b"after-rekey")
    assert b.delivered[-1] == ipv4_packet(A4, B4, b"after-rekey")
    assert pb.keypairs.current is not old_b and pb.keypairs.previous is old_b
    assert pb.keypairs.next is None


def test_previous_session_still_decrypts_in_flight_packets() -> None:
    net, a, b = established()
    # A packet from B under the first session, held back in the network.
    net.send_packets(b, [ipv4_packet(B4, A4, b"in-flight")])
    held, net.in_flight = net.in_flight, []
    net.clock.advance(121)
    ping(net, a, b"rekey")  # A initiates, B confirms: both rotate
    pa = a.device.peers[0]
    assert pa.keypairs.previous is not None
    net.in_flight.extend(held)
    net.run()
    assert a.delivered[-1] == ipv4_packet(B4, A4, b"in-flight")


def test_oldest_session_is_gone_after_two_rotations() -> None:
    net, a, b = established()
    net.send_packets(b, [ipv4_packet(B4, A4, b"ancient")])
    held, net.in_flight = net.in_flight, []
    first = a.device.peers[0].keypairs.current
    for _ in range(2):
        net.clock.advance(121)
        ping(net, a, b"rekey")
        ping(net, b, b"ack")
    assert first is not None and first.erased
    before = len(a.delivered)
    net.in_flight.extend(held)
    net.run()
    assert len(a.delivered) == before
    assert a.device.stats["rx_dropped_unknown_index"] == 1


# -- replay and forgery ----------------------------------------------------------


def test_replayed_transport_is_dropped_once_accepted() -> None:
    net, a, b = established()
    ping(net, a, b"once")
    replay = a.sent[-1]
    n = len(b.delivered)
    net.in_flight.append((a.address, replay[0], replay[1]))
    net.in_flight.append((a.address, replay[0], replay[1]))
    net.run()
    assert len(b.delivered) == n
    assert b.device.stats["rx_dropped_replay"] == 2


def test_same_packet_twice_in_one_batch_is_delivered_once() -> None:
    net, a, b = established()
    net.send_packets(a, [ipv4_packet(A4, B4, b"dup")])
    net.in_flight = net.in_flight * 2
    n = len(b.delivered)
    net.run()
    assert len(b.delivered) == n + 1


def test_runs_of_consecutive_counters_accept_each_counter_once() -> None:
    # The receive path accepts a run of consecutive counters with one window
    # update at its end: replays inside the run, right after it, in the next
    # batch, and a forgery in the middle must all be judged as one by one.
    net, a, b = established()
    c = net.clock
    out = a.device.send([ipv4_packet(A4, B4, b"r%d" % i) for i in range(12)], c.now, c.wall_ns)
    dgs = [(data, a.address) for data, _ in out.datagrams]
    forged = bytearray(dgs[7][0])
    forged[-1] ^= 1
    stats = b.device.stats
    n = len(b.delivered)
    first = [*dgs[:3], dgs[1], *dgs[3:6], (bytes(forged), a.address), *dgs[6:7], dgs[0], dgs[6]]
    net.collect(b, b.device.receive(first, c.now, c.wall_ns))
    # Fresh: 0..6; replays: 1, 0, 6; the forgery fails authentication.
    assert stats["rx_dropped_replay"] == 3 and stats["rx_dropped_auth"] == 1
    second = [*dgs[4:9], *dgs[9:]]
    net.collect(b, b.device.receive(second, c.now, c.wall_ns))
    # 4..6 were seen in the first batch; 7..11 are new.
    assert stats["rx_dropped_replay"] == 6
    got = [bytes(p[20:]) for p in b.delivered[n:]]
    assert got == [b"r%d" % i for i in range(12)]
    b.device.receive(dgs, c.now, c.wall_ns)
    assert stats["rx_dropped_replay"] == 18 and len(b.delivered) == n + 12
    # A late counter below the head starts no run: its successor, seen
    # already, is still a replay.
    out = a.device.send([ipv4_packet(A4, B4, b"s%d" % i) for i in range(4)], c.now, c.wall_ns)
    e = [(data, a.address) for data, _ in out.datagrams]
    net.collect(b, b.device.receive([e[0], e[2], e[3], e[1], e[2], e[3]], c.now, c.wall_ns))
    assert stats["rx_dropped_replay"] == 20 and len(b.delivered) == n + 16


def test_forged_counter_does_not_move_the_window() -> None:
    net, a, b = established()
    kp = b.device.peers[0].keypairs.current
    assert kp is not None
    greatest = kp.replay.greatest
    forged = bytearray(a.sent[-1][1])
    forged[8:16] = (2**60).to_bytes(8, "little")
    net.in_flight.append((a.address, b.address, bytes(forged)))
    net.run()
    assert b.device.stats["rx_dropped_auth"] == 1
    assert kp.replay.greatest == greatest
    ping(net, a, b"still-fine")
    assert b.delivered[-1] == ipv4_packet(A4, B4, b"still-fine")


def test_replayed_initiation_does_not_disturb_session() -> None:
    net, a, b = make_pair()
    ping(net, a, b"x")
    initiation = a.sent[0][1]
    ping(net, b, b"y")
    pb = b.device.peers[0]
    before = (pb.keypairs.current, pb.handshake.latest_timestamp)
    net.clock.advance(1)
    net.in_flight.append((a.address, b.address, initiation))
    net.run()
    assert kinds(b.sent).count(2) == 1  # no second response
    assert b.device.stats["rx_dropped_initiation"] == 1
    assert (pb.keypairs.current, pb.handshake.latest_timestamp) == before
    ping(net, a, b"z")
    assert b.delivered[-1] == ipv4_packet(A4, B4, b"z")


# -- silence -------------------------------------------------------------------


def test_garbage_of_every_length_and_type_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b = established()
    rnd = random.Random(1)
    attacker = Endpoint("198.51.100.7", 4444)
    before = snapshot(b.device)
    c = net.clock

    def dropped() -> int:
        return sum(n for k, n in b.device.stats.items() if k.startswith("rx_dropped_"))

    drops_before, sent = dropped(), 0
    with count_dh(monkeypatch) as dh_calls:
        for length in range(0, 2001):
            payload = rnd.randbytes(length)
            candidates = [payload]
            if length >= 4:
                for t in (1, 2, 3, 4):
                    candidates.append(bytes([t, 0, 0, 0]) + payload[4:])
            out = b.device.receive([(p, attacker) for p in candidates], c.now, c.wall_ns)
            assert out.datagrams == [] and out.packets == []
            sent += len(candidates)
        assert dh_calls == []
    assert snapshot(b.device) == before
    # Every datagram was dropped for a named reason, none by an internal error.
    assert dropped() - drops_before == sent
    assert b.device.stats["rx_dropped_internal_error"] == 0
    # The session still works afterwards.
    ping(net, a, b"alive")
    assert b.delivered[-1] == ipv4_packet(A4, B4, b"alive")


def test_bad_mac1_costs_no_dh(monkeypatch: pytest.MonkeyPatch) -> None:
    net, a, b = make_pair()
    net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
    ((src, _dst, initiation),) = net.in_flight
    net.in_flight = []
    c = net.clock
    with count_dh(monkeypatch) as dh_calls:
        for bit in range(128):
            bad = bytearray(initiation)
            bad[116 + bit // 8] ^= 1 << (bit % 8)
            out = b.device.receive([(bytes(bad), src)], c.now, c.wall_ns)
            assert out.datagrams == []
        assert dh_calls == []
    assert b.device.stats["rx_dropped_mac1"] == 128
    # An initiation meant for someone else (mac1 under another key) is silent too.
    other = Device(os.urandom(32), rng=SeededRng(b"o"))
    with count_dh(monkeypatch) as dh_calls:
        assert other.receive([(initiation, src)], c.now, c.wall_ns).datagrams == []
        assert dh_calls == []
    assert other.stats["rx_dropped_mac1"] == 1


# -- roaming -------------------------------------------------------------------


@pytest.mark.parametrize("mover", ["A", "B"])
def test_roaming_follows_authenticated_packets(mover: str) -> None:
    net, a, b = established()
    node, other = (a, b) if mover == "A" else (b, a)
    new = Endpoint("203.0.113.9", 40000)
    net.move(node, new)
    ping(net, node, b"from-new-address")
    assert other.device.peers[0].endpoint == new
    ping(net, other, b"reply")
    assert node.delivered[-1].endswith(b"reply")


def test_unauthenticated_or_replayed_packets_do_not_roam() -> None:
    net, a, b = established()
    pb = b.device.peers[0]
    ep = pb.endpoint
    evil = Endpoint("198.51.100.66", 666)
    forged = bytearray(a.sent[-1][1])
    forged[-1] ^= 1
    replay = a.sent[-1][1]
    c = net.clock
    b.device.receive([(bytes(forged), evil), (replay, evil)], c.now, c.wall_ns)
    assert pb.endpoint == ep
    assert b.device.stats["rx_dropped_auth"] == 1 and b.device.stats["rx_dropped_replay"] == 1


def test_roaming_happens_even_when_source_filter_drops() -> None:
    net, a, b = established()
    new = Endpoint("203.0.113.50", 1234)
    net.move(b, new)
    # B sends a packet whose inner source is not in A's allowed IPs for B.
    net.send_packets(b, [ipv4_packet("10.0.0.99", A4, b"spoofed-inner")])
    net.run()
    assert a.device.stats["rx_dropped_source_filter"] == 1
    assert not any(p.endswith(b"spoofed-inner") for p in a.delivered)
    assert a.device.peers[0].endpoint == new


# -- routing -------------------------------------------------------------------


def test_outbound_without_route_is_dropped() -> None:
    net, a, _b = established()
    n = len(a.sent)
    net.send_packets(a, [ipv4_packet(A4, "10.9.9.9", b"nowhere"), b"", b"\x50junk"])
    assert len(a.sent) == n
    assert a.device.stats["tx_dropped_no_route"] == 1
    assert a.device.stats["tx_dropped_invalid"] == 2


def test_routing_picks_longest_prefix_peer() -> None:
    dev = Device(os.urandom(32), rng=SeededRng(b"r"))
    k1, k2 = public_key(os.urandom(32)), public_key(os.urandom(32))
    p1 = dev.add_peer(k1, endpoint=Endpoint("192.0.2.10", 1), allowed_ips=["10.0.0.0/8"])
    p2 = dev.add_peer(k2, endpoint=Endpoint("192.0.2.11", 1), allowed_ips=["10.1.0.0/16"])
    out = dev.send([ipv4_packet(A4, "10.1.2.3"), ipv4_packet(A4, "10.2.2.3")], 0.0, 0)
    assert [ep for _, ep in out.datagrams] == [p2.endpoint, p1.endpoint]
    # Moving a prefix to the other peer takes effect immediately (cache invalidated).
    dev.allowed_ips.insert_network("10.1.0.0/16", p1)
    assert dev._route_table().get(bytes([10, 1, 2, 3])) is None
    assert dev.allowed_ips.lookup(bytes([10, 1, 2, 3])) is p1


def test_decrypted_packet_with_bad_ip_header_is_dropped() -> None:
    net, a, b = established()
    pkt = bytearray(ipv4_packet(A4, B4, b"x" * 20))
    pkt[2:4] = (500).to_bytes(2, "big")  # claims more than was sent
    net.send_packets(a, [bytes(pkt)])
    net.run()
    assert b.device.stats["rx_dropped_invalid_packet"] == 1


def test_padding_is_trimmed_by_ip_length() -> None:
    net, a, b = established()
    for size in (0, 1, 15, 16, 17, 100):
        ping(net, a, b"p" * size)
        assert b.delivered[-1] == ipv4_packet(A4, B4, b"p" * size)
        assert (len(a.sent[-1][1]) - 32) % 16 == 0


# -- padding, MTU and counters -------------------------------------------------


def test_padding_never_exceeds_mtu() -> None:
    net, a, b = established()
    a.device.mtu = 1300
    for inner in (1295, 1299, 1300):
        ping(net, a, b"z" * (inner - 20))
        assert len(a.sent[-1][1]) - 32 == min(1300, -(-inner // 16) * 16)
        assert b.delivered[-1] == ipv4_packet(A4, B4, b"z" * (inner - 20))


def test_keepalive_is_32_bytes_and_not_delivered() -> None:
    net, a, b = established()
    n = len(a.delivered)
    net.tick(10.5)  # B received "hello" and A received "back": passive keepalives
    kas = [d for _, d in a.sent + b.sent if len(d) == 32]
    assert kas and all(d[0] == MESSAGE_TRANSPORT for d in kas)
    assert len(a.delivered) == n


def test_byte_counters_match_kernel_netns_expectations() -> None:
    # netns.sh: 10 pings (84-byte ICMP) from the initiator, then on its side
    # rx == 1372 and tx == 1428 (or 1460 with an extra keepalive).
    net, a, b = make_pair()
    for seq in range(10):
        ping(net, b, b"i" * 56 + bytes([seq]) * 8)  # 20 + 64 = 84 bytes
        ping(net, a, b"r" * 56 + bytes([seq]) * 8)
    pb = b.device.peers[0]
    assert pb.rx_bytes == 1372
    assert pb.tx_bytes in (1428, 1460)
    pa = a.device.peers[0]
    assert pa.rx_bytes == pb.tx_bytes and pa.tx_bytes == pb.rx_bytes


# -- message limits --------------------------------------------------------------


def test_rekey_after_messages_and_reject_after_messages() -> None:
    net, a, _b = established()
    pa = a.device.peers[0]
    kp = pa.keypairs.current
    assert kp is not None
    kp.send_counter = REKEY_AFTER_MESSAGES + 1
    pa.last_sent_handshake = None
    n = len(a.sent)
    net.send_packets(a, [ipv4_packet(A4, B4, b"late")])
    assert kinds(a.sent[n:]) == [MESSAGE_TRANSPORT, 1]  # data, then a new handshake
    net.in_flight = []
    kp.send_counter = REJECT_AFTER_MESSAGES
    pa.last_sent_handshake = None
    n = len(a.sent)
    net.send_packets(a, [ipv4_packet(A4, B4, b"refused")])
    assert kinds(a.sent[n:]) == [1]  # nothing encrypted at the limit
    assert pa.staged_count == 1


def test_counter_at_limit_is_dropped_on_receive() -> None:
    net, a, b = established()
    kp = a.device.peers[0].keypairs.current
    assert kp is not None
    kp.send_counter = REJECT_AFTER_MESSAGES
    msg = kp.seal(ipv4_packet(A4, B4, b"limit"), 0)
    net.in_flight.append((a.address, b.address, msg))
    net.run()
    assert b.device.stats["rx_dropped_expired"] == 1


# -- configuration -------------------------------------------------------------


def test_configuration_errors_raise_and_keep_state() -> None:
    dev = Device(os.urandom(32))
    key = public_key(os.urandom(32))
    dev.add_peer(key)
    with pytest.raises(ValueError):
        dev.add_peer(key)
    with pytest.raises(ValueError):
        dev.add_peer(b"short")
    assert dev.public_key is not None
    with pytest.raises(ValueError):
        dev.add_peer(dev.public_key)
    with pytest.raises(ValueError):
        dev.set_private_key(b"x" * 31)
    with pytest.raises(ValueError):
        dev.add_peer(public_key(os.urandom(32)), allowed_ips=["10.0.0.0/33"])
    with pytest.raises(ValueError):
        dev.set_persistent_keepalive(dev.peers[0], 70000, 0.0)
    assert len(dev) == 1


def test_private_key_equal_to_peer_removes_that_peer() -> None:
    _net, a, b = make_pair()
    priv_b = b.device.private_key
    assert priv_b is not None
    a.device.set_private_key(priv_b)
    assert len(a.device) == 0


def test_private_key_change_then_fresh_handshake() -> None:
    net, a, b = established()
    new = os.urandom(32)
    old_pub = a.device.public_key
    a.device.set_private_key(new)
    assert old_pub is not None
    b.device.remove_peer(old_pub)
    b.device.add_peer(public_key(new), endpoint=a.address, allowed_ips=["10.0.0.1/32"])
    n = len(a.sent)
    ping(net, a, b"new-identity")
    assert kinds(a.sent[n:])[0] == 1  # the old session no longer sends
    assert b.delivered[-1] == ipv4_packet(A4, B4, b"new-identity")


def test_peer_removed_mid_handshake_leaves_nothing_behind() -> None:
    net, a, _b = make_pair()
    net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
    assert len(a.device._index) == 1
    a.device.remove_peer(a.device.peers[0].public_key)
    assert a.device._index == {}
    net.run()  # B's response arrives for an index that no longer exists
    assert a.device.stats["rx_dropped_unknown_index"] == 1
    assert a.device.next_deadline() is None


def test_removing_a_peer_stops_traffic_and_erases_keys() -> None:
    net, a, b = established()
    pa = a.device.peers[0]
    kp = pa.keypairs.current
    a.device.remove_peer(pa.public_key)
    assert kp is not None and kp.erased and bytes(kp.send_key) == bytes(32)
    n = len(a.sent)
    net.send_packets(a, [ipv4_packet(A4, B4, b"gone")])
    assert len(a.sent) == n
    ping(net, b, b"to-removed")
    assert not a.delivered or not a.delivered[-1].endswith(b"to-removed")


def test_device_down_drops_everything_and_erases() -> None:
    net, a, b = established()
    kp = a.device.peers[0].keypairs.current
    c = net.clock
    a.device.set_up(False, c.now, c.wall_ns)
    assert kp is not None and kp.erased
    assert a.device.send([ipv4_packet(A4, B4)], c.now, c.wall_ns).datagrams == []
    assert a.device.stats["tx_dropped_down"] == 1
    c.advance(1)  # B accepts at most one initiation per peer every 20 ms
    a.device.set_up(True, c.now, c.wall_ns)
    ping(net, a, b"up-again")
    assert b.delivered[-1] == ipv4_packet(A4, B4, b"up-again")


def test_counters_are_named_and_a_misspelt_one_raises() -> None:
    from wgpy.device import EventKind, Stat

    net, a, b = make_pair()
    junk = b"\x01\0\0\0" + os.urandom(144)  # an initiation with a wrong mac1
    b.device.receive([(junk, a.address)], net.clock.now, net.clock.wall_ns)
    assert b.device.stats[Stat.RX_DROPPED_MAC1] == b.device.stats["rx_dropped_mac1"] == 1
    assert b.device.stats[Stat.RX_DROPPED_REPLAY] == 0  # a known name not yet counted
    with pytest.raises(KeyError, match="no such counter"):
        b.device.stats["rx_droped_mac1"]
    out = a.device.send([ipv4_packet(A4, B4, b"x")], net.clock.now, net.clock.wall_ns)
    assert [e.kind for e in out.events] == [EventKind.INITIATION_SENT]
