"""The timer table (checklist 18) and key erasure (19), end to end with a fake clock."""

from __future__ import annotations

import itertools

from simutil import A4, B4, kinds, ping

from wgpy.constants import MAX_TIMER_HANDSHAKES, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX
from wgpy.device import Output
from wgpy.endpoint import Endpoint
from wgpy.sim import SimNetwork, SimNode, ipv4_packet, make_pair


def established() -> tuple[SimNetwork, SimNode, SimNode]:
    net, a, b = make_pair()
    ping(net, a, b"hello")
    ping(net, b, b"back")
    return net, a, b


def sent_times(
    net: SimNetwork, node: SimNode, seconds: float, step: float = 0.05
) -> list[tuple[float, bytes]]:
    """Tick in small steps, recording when each of ``node``'s datagrams left."""
    out = []
    end = net.clock.now + seconds
    n = len(node.sent)
    while net.clock.now < end:
        net.tick(step, step=step)
        for _, d in node.sent[n:]:
            out.append((net.clock.now, d))
        n = len(node.sent)
    return out


def test_initiator_rekeys_when_sending_after_120s_responder_does_not() -> None:
    net, a, b = established()
    net.clock.advance(119)
    n_a, n_b = len(a.sent), len(b.sent)
    ping(net, a, b"at-119")
    assert 1 not in kinds(a.sent[n_a:])
    net.clock.advance(2)  # 121 s after the session began
    n_b = len(b.sent)
    net.send_packets(b, [ipv4_packet(B4, A4, b"b-at-121")])
    assert kinds(b.sent[n_b:]) == [4]  # the responder never rekeys on age
    net.run()
    n_a = len(a.sent)
    net.send_packets(a, [ipv4_packet(A4, B4, b"a-at-121")])
    assert kinds(a.sent[n_a:]) == [4, 1]  # data still goes out, then a new handshake


def test_original_initiator_rekeys_on_receive_at_165s_once() -> None:
    net, a, b = established()
    net.clock.advance(166)
    n = len(a.sent)
    ping(net, b, b"late-1")  # B (responder) still sends on its 166 s old session
    assert a.delivered[-1].endswith(b"late-1")
    assert kinds(a.sent[n:]).count(1) == 1
    net.in_flight.clear()  # lose the handshake so it cannot complete
    n = len(a.sent)
    net.send_packets(b, [ipv4_packet(B4, A4, b"late-2")])
    net.run()
    assert kinds(a.sent[n:]).count(1) == 0  # only one last-minute handshake


def test_a_received_initiation_does_not_trigger_the_165s_rekey() -> None:
    net, a, b = established()
    net.clock.advance(166)  # A's session (A initiated it) is past 165 s
    # B initiates (as a peer whose own timers decided so would); A answers it
    # with a response and must not start a handshake of its own as well.
    out = Output()
    b.device._send_initiation(b.device.peers[0], False, net.clock.now, net.clock.wall_ns, out)
    net.collect(b, out)
    n = len(a.sent)
    net.run()
    assert kinds(a.sent[n:])[:1] == [2]
    assert kinds(a.sent[n:]).count(1) == 0


def test_a_sent_response_holds_back_our_own_initiation() -> None:
    # B answers A's initiation; data B sends right after (crossing traffic,
    # A's confirmation still in flight) is staged, and B does not start a
    # second handshake within REKEY_TIMEOUT.
    net, a, b = make_pair()
    net.fault = lambda s, d, data: [] if data[0] == 2 else [(s, d, data)]  # lose the response
    net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
    net.run()
    n = len(b.sent)
    for _ in range(10):
        net.send_packets(b, [ipv4_packet(B4, A4, b"crossing")])
        net.clock.advance(0.4)
    assert kinds(b.sent[n:]).count(1) == 0


def test_sessions_refuse_send_and_receive_at_180s() -> None:
    net, a, b = established()
    net.send_packets(b, [ipv4_packet(B4, A4, b"old")])
    held, net.in_flight = net.in_flight, []
    net.clock.advance(180)
    pa = a.device.peers[0]
    kp = pa.keypairs.current
    assert kp is not None and not kp.can_send(net.clock.now)
    net.in_flight.extend(held)
    net.run()
    assert a.device.stats["rx_dropped_expired"] == 1
    n = len(a.sent)
    net.send_packets(a, [ipv4_packet(A4, B4, b"new")])
    assert kinds(a.sent[n:]) == [1]  # no data on the expired session: handshake first
    net.run()
    assert b.delivered[-1].endswith(b"new")


def test_passive_keepalive_after_10s() -> None:
    net, a, b = make_pair()
    ping(net, a, b"one-way")
    events = sent_times(net, b, 11)
    keepalives = [t for t, d in events if len(d) == 32]
    start = net.clock.now - 11
    assert len(keepalives) == 1 and 9.99 <= keepalives[0] - start <= 10.1


def test_no_keepalive_when_traffic_flows_both_ways_and_none_when_idle() -> None:
    net, a, b = established()
    net.tick(11)
    n_a, n_b = len(a.sent), len(b.sent)
    net.tick(100)  # idle tunnel: WireGuard stays silent
    assert len(a.sent) == n_a and len(b.sent) == n_b


def test_new_handshake_after_15s_without_reply() -> None:
    net, a, b = established()
    net.tick(11)
    net.fault = lambda s, d, data: [] if s == b.address else [(s, d, data)]  # B mute
    ping(net, a, b"unanswered")
    start = net.clock.now
    events = sent_times(net, a, 16)
    inits = [t - start for t, d in events if d[0] == 1]
    assert len(inits) == 1
    assert 15.0 <= inits[0] <= 15.0 + REKEY_TIMEOUT_JITTER_MAX + 0.06


def test_retries_every_5s_then_give_up_and_drop_staged() -> None:
    net, a, b = make_pair()
    del net.nodes[b.address]  # B is gone
    start = net.clock.now
    net.send_packets(a, [ipv4_packet(A4, B4, b"lost")])
    events = [(start, a.sent[0][1])]
    events += sent_times(net, a, 130, step=0.05)
    inits = [t for t, d in events if d[0] == 1]
    assert len(inits) == MAX_TIMER_HANDSHAKES + 2 == 20
    gaps = [b_ - a_ for a_, b_ in itertools.pairwise(inits)]
    assert all(
        REKEY_TIMEOUT - 0.001 <= g <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + 0.06 for g in gaps
    )
    pa = a.device.peers[0]
    assert pa.staged_count == 0 and a.device.stats["tx_dropped_gave_up"] == 1
    assert pa.timers.zero_key_material is not None
    # More data later starts a fresh attempt.
    n = len(a.sent)
    net.send_packets(a, [ipv4_packet(A4, B4, b"retry")])
    assert kinds(a.sent[n:]) == [1]


def test_at_most_one_initiation_per_5s() -> None:
    net, a, b = make_pair()
    del net.nodes[b.address]
    for _ in range(20):
        net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
        net.clock.advance(0.2)
    assert kinds(a.sent).count(1) == 1


def test_key_erasure_at_540s_zeroes_buffers() -> None:
    net, a, b = established()
    pa = a.device.peers[0]
    kp = pa.keypairs.current
    assert kp is not None
    # Leave a pending handshake too, so its ephemeral must be wiped as well.
    net.clock.advance(200)
    net.fault = lambda s, d, data: []  # the network is gone: retries fail
    net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
    eph = pa.handshake.ephemeral_private
    assert eph != bytearray(32)
    net.tick(539 - 200)
    assert not kp.erased
    net.tick(2)
    net.fault = None
    assert kp.erased and kp.send_key == bytearray(32) and kp.recv_key == bytearray(32)
    assert pa.keypairs.current is None and pa.keypairs.previous is None
    assert eph == bytearray(32) and pa.handshake.symmetric is None
    assert a.device._index == {}
    # The peer handshakes again on the next packet.
    net.clock.advance(1)
    ping(net, a, b"after-erasure")
    assert b.delivered[-1].endswith(b"after-erasure")


def test_persistent_keepalive_on_schedule_and_immediately_when_enabled() -> None:
    net, a, _b = established()
    pa = a.device.peers[0]
    c = net.clock
    out = a.device.set_persistent_keepalive(pa, 25, c.now, c.wall_ns)
    assert [len(d) for d, _ in out.datagrams] == [32]  # one at once
    net.collect(a, out)
    net.run()
    start = net.clock.now
    events = sent_times(net, a, 80, step=0.5)
    kas = [t - start for t, d in events if len(d) == 32]
    assert [round(t) for t in kas] == [25, 50, 75]


def test_persistent_keepalive_brings_the_tunnel_up() -> None:
    net, a, b = make_pair()
    c = net.clock
    out = a.device.set_persistent_keepalive(a.device.peers[0], 5, c.now, c.wall_ns)
    assert [d[0] for d, _ in out.datagrams] == [1]
    net.collect(a, out)
    net.run()
    assert b.device.peers[0].keypairs.current is not None  # confirmed by the keepalive


def test_two_persistent_keepalive_peers_reconnect_after_expiry_without_thrashing() -> None:
    net, a, b = make_pair()
    c = net.clock
    for node in (a, b):
        net.collect(
            node, node.device.set_persistent_keepalive(node.device.peers[0], 1, c.now, c.wall_ns)
        )
    net.run()
    net.tick(400, step=0.5)
    inits = kinds(a.sent).count(1) + kinds(b.sent).count(1)
    # About one handshake per 120 s (plus the first); never a storm.
    assert 3 <= inits <= 8
    ping(net, a, b"alive")
    assert b.delivered[-1].endswith(b"alive")


def test_clock_jumps_do_not_raise() -> None:
    net, a, b = established()
    net.clock.now -= 50  # a "monotonic" clock going backwards must not break anything
    ping(net, a, b"back-in-time")
    net.clock.step_wall(-3600)
    net.clock.now += 10_000
    ping(net, a, b"far-future")
    assert b.delivered[-1].endswith(b"far-future")
    assert a.device.stats["rx_dropped_internal_error"] == 0


def test_endpoint_source_forgotten_on_retry() -> None:
    net, a, b = established()
    pa = a.device.peers[0]
    pa.endpoint = Endpoint(b.address.ip, b.address.port, local="192.0.2.1")
    del net.nodes[b.address]
    net.clock.advance(200)
    net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
    net.tick(6)
    assert pa.endpoint is not None and pa.endpoint.local is None
