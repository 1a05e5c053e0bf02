"""The userspace inner side (wgpy.tun.userspace) and the packet helpers it
uses (wgpy.inet): no TUN, no root.  Checksums are checked against an
independent RFC 1071 sum written here."""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest

from wgpy import inet
from wgpy.noise.primitives import clamp, public_key
from wgpy.runtime.interface import Interface
from wgpy.runtime.options import InterfaceOptions
from wgpy.tun.userspace import UserspaceTun, parse_addresses

A4, B4 = "10.50.0.1", "10.50.0.2"
A6, B6 = "fd50::1", "fd50::2"


def ref_sum(data: bytes) -> int:
    """RFC 1071 folded sum, the textbook way (independent of wgpy.inet)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def assert_valid_udp(packet: bytes) -> tuple[bytes, bytes, bytes]:
    """Check the IP header and UDP checksums; returns (src, dst, payload)."""
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 15) * 4
        assert ref_sum(packet[:ihl]) == 0xFFFF
        src, dst, seg = packet[12:16], packet[16:20], packet[ihl:]
        pseudo = src + dst + struct.pack("!BBH", 0, 17, len(seg))
    else:
        src, dst, seg = packet[8:24], packet[24:40], packet[40:]
        pseudo = src + dst + struct.pack("!I3xB", len(seg), 17)
    assert struct.unpack_from("!H", seg, 4)[0] == len(seg)
    assert struct.unpack_from("!H", seg, 6)[0] != 0
    assert ref_sum(pseudo + seg) == 0xFFFF
    return src, dst, seg[8:]


# -- wgpy.inet -------------------------------------------------------------------------


@pytest.mark.parametrize(("src", "dst"), [(A4, B4), (A6, B6)])
def test_udp_packets_have_valid_checksums_and_parse_back(src: str, dst: str) -> None:
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    for size in (0, 1, 7, 100, 1371):
        payload = os.urandom(size)
        pkt = inet.udp_packet(s, 4000, d, 5000, payload)
        assert assert_valid_udp(pkt) == (s, d, payload)
        udp = inet.parse_udp(pkt + b"\0" * 5)  # tunnel padding is ignored
        assert udp is not None and (udp.sport, udp.dport, udp.payload) == (4000, 5000, payload)
        bad = bytearray(pkt)
        bad[-1 if size else -3] ^= 0x40
        assert inet.parse_udp(bytes(bad)) is None


def test_parse_ip_rejects_bad_headers() -> None:
    pkt = inet.ipv4_packet(A4, B4, b"x" * 10)
    assert inet.parse_ip(pkt) is not None
    corrupt = bytearray(pkt)
    corrupt[8] ^= 1  # TTL: header checksum no longer verifies
    assert inet.parse_ip(bytes(corrupt)) is None
    assert inet.parse_ip(pkt[:19]) is None
    assert inet.parse_ip(b"\x50" + pkt[1:]) is None


@pytest.mark.parametrize(("src", "dst"), [(A4, B4), (A6, B6)])
def test_echo_reply_matches_the_request(src: str, dst: str) -> None:
    request = inet.echo_packet(src, dst, 0x1234, 7, b"payload!")
    ip = inet.parse_ip(request)
    assert ip is not None and inet.echo_checksum_ok(request, ip)
    reply = inet.echo_reply_for(request, ip)
    rip = inet.parse_ip(reply)
    assert rip is not None and inet.echo_checksum_ok(reply, rip)
    echo = inet.parse_echo(reply)
    assert echo is not None and echo.reply
    assert (echo.src, echo.dst, echo.ident, echo.seq, echo.payload) == (
        dst,
        src,
        0x1234,
        7,
        b"payload!",
    )


# -- the host ---------------------------------------------------------------------------


@pytest.fixture
def tun() -> Iterator[UserspaceTun]:
    t = UserspaceTun("us0", addresses=f"{B4}/24,{B6}/64")
    yield t
    t.close()


def test_addresses_parse_and_refuse_garbage() -> None:
    assert [str(a) for a in parse_addresses("10.0.0.2/24, fd00::2/64,10.1.1.1")] == [
        "10.0.0.2/24",
        "fd00::2/64",
        "10.1.1.1/32",
    ]
    with pytest.raises(ValueError, match="nope"):
        parse_addresses("10.0.0.2/24,nope")
    t = UserspaceTun("us1", addresses="10.0.0.2/24")
    with pytest.raises(ValueError):
        t.set_addresses("10.0.0.3/99")
    assert t.addresses == ["10.0.0.2/24"]  # nothing changed
    t.close()


@pytest.mark.parametrize(("peer", "ours"), [(A4, B4), (A6, B6)])
def test_echo_to_our_address_is_answered_and_others_are_dropped(
    tun: UserspaceTun, peer: str, ours: str
) -> None:
    tun.write_batch([inet.echo_packet(peer, ours, 9, 1, b"abc")])
    (reply,) = tun.read_batch()
    echo = inet.parse_echo(reply)
    assert echo is not None and echo.reply and (echo.src, echo.dst) == (ours, peer)
    other = "10.50.0.9" if ":" not in ours else "fd50::9"
    tun.write_batch([inet.echo_packet(peer, other, 9, 2, b"abc")])
    bad = bytearray(inet.echo_packet(peer, ours, 9, 3, b"abc"))
    bad[-1] ^= 1  # ICMP checksum
    tun.write_batch([bytes(bad), inet.echo_packet(peer, ours, 9, 4, b"x", reply=True), b"junk"])
    assert tun.read_batch() == []
    assert tun.stats == {
        "echo_answered": 1,
        "not_our_address": 1,
        "icmp_bad_checksum": 1,
        "icmp_not_echo_request": 1,
        "not_ip": 1,
    }


@pytest.mark.parametrize(
    ("family", "peer", "ours"), [(socket.AF_INET, A4, B4), (socket.AF_INET6, A6, B6)]
)
def test_udp_sockets_both_ways(tun: UserspaceTun, family: int, peer: str, ours: str) -> None:
    sock = tun.udp_socket(family)
    sock.bind(("", 7000))
    s, d = ipaddress.ip_address(peer).packed, ipaddress.ip_address(ours).packed
    tun.write_batch([inet.udp_packet(s, 1234, d, 7000, b"hello")])
    sock.settimeout(1)
    assert sock.recvfrom() == (b"hello", (peer, 1234))
    # Bad checksum, unknown port: dropped and counted.
    bad = bytearray(inet.udp_packet(s, 1234, d, 7000, b"hello"))
    bad[-1] ^= 1
    tun.write_batch([bytes(bad), inet.udp_packet(s, 1234, d, 7001, b"x")])
    sock.settimeout(0)
    with pytest.raises(BlockingIOError):
        sock.recvfrom()
    assert tun.stats["udp_bad"] == 1 and tun.stats["udp_no_socket"] == 1
    # Sending: a UDP packet from our address with valid checksums.
    assert sock.sendto(b"back", (peer, 1234)) == 4
    (out,) = tun.read_batch()
    assert assert_valid_udp(out) == (d, s, b"back")
    assert inet.parse_udp(out) == inet.Udp(d, 7000, s, 1234, b"back")
    # Bigger than the MTU: refused, not fragmented.
    with pytest.raises(OSError) as info:
        sock.sendto(b"x" * 1500, (peer, 1234))
    assert info.value.errno == errno.EMSGSIZE
    # The port is taken until the socket closes.
    other = tun.udp_socket(family)
    with pytest.raises(OSError) as info:
        other.bind(("", 7000))
    assert info.value.errno == errno.EADDRINUSE
    sock.close()
    other.bind(("", 7000))
    other.close()


def test_socket_recv_blocks_until_a_datagram_and_select_sees_it(tun: UserspaceTun) -> None:
    sock = tun.udp_socket()
    sock.bind((B4, 0))
    port = sock.getsockname()[1]
    assert sock.getsockname()[0] == B4 and port >= 49152
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(sock.recvfrom()[0]))
    reader.start()
    time.sleep(0.1)
    s, d = ipaddress.ip_address(A4).packed, ipaddress.ip_address(B4).packed
    assert select.select([sock.fileno()], [], [], 0)[0] == []
    tun.write_batch([inet.udp_packet(s, 1, d, port, b"wake")])
    reader.join(5)
    assert got == [b"wake"]
    tun.write_batch([inet.udp_packet(s, 1, d, port, b"queued")])
    assert select.select([sock.fileno()], [], [], 1)[0] == [sock.fileno()]
    sock.settimeout(0.2)
    assert sock.recvfrom()[0] == b"queued"
    with pytest.raises(TimeoutError):
        sock.recvfrom()
    sock.close()


def test_session_takes_what_the_host_does_not_or_everything(tun: UserspaceTun) -> None:
    s, d = ipaddress.ip_address(A4).packed, ipaddress.ip_address(B4).packed
    echo = inet.echo_packet(A4, B4, 1, 1, b"e")
    tcp_like = inet.ipv4_packet(s, d, b"\0" * 20, 6)
    with tun.start_session() as session:
        with pytest.raises(OSError):
            tun.start_session()
        tun.write_batch([echo, tcp_like])
        assert len(tun.read_batch()) == 1  # the host answered the echo
        assert session.wait(1)
        assert select.select([session.fileno()], [], [], 0)[0]
        assert session.receive_packet() == tcp_like
        assert session.receive_packet() is None
        # Sending raw packets into the tunnel.
        session.send_packet(tcp_like)
        assert tun.read_batch() == [tcp_like]
        with pytest.raises(ValueError):
            session.send_packet(b"\x00" * 20)
        with pytest.raises(ValueError):
            session.send_packet(inet.ipv4_packet(s, d, b"x" * 1500))
    with tun.start_session(take_over=True) as session:
        tun.write_batch([echo])
        assert tun.read_batch() == []  # taken over: the host stays out of it
        assert session.receive_packet() == echo
    assert "not_ip" not in tun.stats


# -- two engines over loopback UDP, with userspace inner sides -----------------------


def _pair() -> tuple[Interface, Interface, list[threading.Thread]]:
    ka, kb = clamp(os.urandom(32)), clamp(os.urandom(32))
    opts = InterfaceOptions()
    a = Interface(UserspaceTun("usa", addresses=f"{A4}/24,{A6}/64"), options=opts, private_key=ka)
    b = Interface(UserspaceTun("usb", addresses=f"{B4}/24,{B6}/64"), options=opts, private_key=kb)
    threads = []
    for iface in (a, b):
        iface.tun.set_up(True)  # type: ignore[attr-defined]
        iface.start()
    from wgpy.endpoint import Endpoint

    now = a.clock()[0]
    a.device.add_peer(
        public_key(kb),
        endpoint=Endpoint("127.0.0.1", b.get_listen_port()),
        allowed_ips=[f"{B4}/32", f"{B6}/128"],
        now=now,
    )
    b.device.add_peer(
        public_key(ka),
        endpoint=Endpoint("127.0.0.1", a.get_listen_port()),
        allowed_ips=[f"{A4}/32", f"{A6}/128"],
        now=now,
    )
    for iface in (a, b):
        t = threading.Thread(target=iface.run, daemon=True)
        t.start()
        threads.append(t)
    return a, b, threads


def test_two_engines_with_userspace_inner_sides_exchange_udp_and_echo() -> None:
    a, b, threads = _pair()
    try:
        tun_a, tun_b = a.tun, b.tun
        assert isinstance(tun_a, UserspaceTun) and isinstance(tun_b, UserspaceTun)
        for family, src, dst in ((socket.AF_INET, A4, B4), (socket.AF_INET6, A6, B6)):
            server = tun_b.udp_socket(family)
            server.bind(("", 9000))
            client = tun_a.udp_socket(family)
            client.settimeout(10)
            server.settimeout(10)
            client.sendto(b"ping over wireguard", (dst, 9000))
            data, source = server.recvfrom()
            assert data == b"ping over wireguard" and source[0] == src
            server.sendto(b"pong", source)
            assert client.recvfrom() == (b"pong", (dst, 9000))
            server.close()
            client.close()
        # ICMP echo through the tunnel: A's session sends, B's host answers.
        with tun_a.start_session(take_over=True) as session:
            for src, dst in ((A4, B4), (A6, B6)):
                session.send_packet(inet.echo_packet(src, dst, 77, 1, b"are you there"))
                assert session.wait(10)
                reply = session.receive_packet()
                assert reply is not None
                echo = inet.parse_echo(reply)
                assert echo is not None and echo.reply and echo.src == dst
        assert tun_b.stats["echo_answered"] == 2
        peer = a.device.peers[0]
        assert peer.last_handshake_ns > 0 and peer.rx_bytes > 0 and peer.tx_bytes > 0
    finally:
        for iface in (a, b):
            iface.stop()
        for t in threads:
            t.join(10)
        for iface in (a, b):
            iface.close()
    assert not any(t.is_alive() for t in threads)


def test_listen_port_changes_racing_the_loop_never_kill_it() -> None:
    """A configuration thread rebinding the port while the loop registers its
    sockets once left the loop registering a socket already closed (EBADF:
    "event loop failed", seen when a wireguard.h program set the port right
    after creating the adapter).  The loop must survive and keep receiving."""
    tun = UserspaceTun("usr", addresses=f"{A4}/24")
    iface = Interface(tun, options=InterfaceOptions(), private_key=clamp(os.urandom(32)))
    iface.tun.set_up(True)  # type: ignore[attr-defined]
    iface.start()
    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(iface.run()), daemon=True)
    t.start()
    try:
        for _ in range(300):
            iface.set_listen_port(0)
            assert t.is_alive(), result
        port = iface.get_listen_port()
        deadline = time.monotonic() + 5
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            stats = iface.device.stats
            while stats["rx_dropped_unknown_index"] == 0 and time.monotonic() < deadline:
                s.sendto(b"\x04\0\0\0" + bytes(28), ("127.0.0.1", port))  # no such session
                time.sleep(0.05)
        assert t.is_alive() and stats["rx_dropped_unknown_index"] > 0
    finally:
        iface.stop()
        t.join(5)
        iface.close()
