"""UdpBind: the listen-port sockets, run in fresh network namespaces over veth."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import netns as nsh
import pytest

from wgpy.endpoint import Endpoint
from wgpy.net import UdpBind
from wgpy.net import udp as udp_mod

WAIT = 5.0  # upper bound for a datagram to arrive (not a timing assertion)
SO_MARK = 36


@dataclass
class Link:
    """Two namespaces joined by a veth, with IPv4 and IPv6 addresses on each side."""

    a: str
    b: str
    va: str
    vb: str
    a4: str = "10.210.0.1"
    a4_second: str = "10.210.0.11"
    b4: str = "10.210.0.2"
    a6: str = "fd00:210::1"
    a6_second: str = "fd00:211::11"  # another /64: source selection stays predictable
    b6: str = "fd00:210::2"


@pytest.fixture
def link(netns_factory: Callable[..., str]) -> Link:
    a, b = netns_factory("udpa"), netns_factory("udpb")
    va, vb = nsh.veth_pair(
        a,
        b,
        addrs_a=["10.210.0.1/24", "10.210.0.11/24", "fd00:210::1/64", "fd00:211::11/64"],
        addrs_b=["10.210.0.2/24", "fd00:210::2/64"],
    )
    nsh.ip(b, "route", "add", "fd00:211::/64", "dev", vb)
    return Link(a, b, va, vb)


@pytest.fixture
def binds(link: Link) -> Iterator[tuple[UdpBind, UdpBind]]:
    """A UdpBind on a random port in each namespace; closed after the test."""
    a = nsh.call_in_ns(link.a, UdpBind, 0)
    try:
        b = nsh.call_in_ns(link.b, UdpBind, 0)
    except BaseException:
        a.close()
        raise
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def fd_of(bind: UdpBind, family: int) -> int:
    return bind.filenos()[bind.families.index(family)]


def recv_one(bind: UdpBind, family: int) -> tuple[bytes, Endpoint]:
    """Wait for and return exactly one datagram on the ``family`` socket."""
    fd = fd_of(bind, family)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(int(WAIT * 1000)), "no datagram arrived"
    got = bind.recv_batch(fd)
    assert len(got) == 1
    return got[0]


def dup_socket(fd: int) -> socket.socket:
    return socket.socket(fileno=os.dup(fd))


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


FAMILIES = [
    pytest.param(socket.AF_INET, id="ipv4"),
    pytest.param(socket.AF_INET6, id="ipv6"),
]


def addrs(link: Link, family: int) -> tuple[str, str, str]:
    """(our primary address, our second address, the peer's address)."""
    if family == socket.AF_INET:
        return link.a4, link.a4_second, link.b4
    return link.a6, link.a6_second, link.b6


# -- binding ----------------------------------------------------------------------


def test_port0_gives_both_sockets_the_same_port(fresh_netns: str) -> None:
    with nsh.call_in_ns(fresh_netns, UdpBind, 0) as bind:
        assert bind.families == [socket.AF_INET, socket.AF_INET6]
        assert 0 < bind.port <= 0xFFFF
        for fd in bind.filenos():
            with dup_socket(fd) as sock:
                assert sock.getsockname()[1] == bind.port
                assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
                # We are root: the *FORCE variants lift the buffers past rmem_max.
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 7 << 20
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 7 << 20
                if sock.family == socket.AF_INET6:
                    assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


def test_port0_retries_when_ipv6_port_is_taken(
    fresh_netns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = UdpBind._open
    refused: list[int] = []

    def flaky_open(self: UdpBind, family: int, port: int) -> socket.socket:
        if family == socket.AF_INET6 and not refused:
            refused.append(port)
            raise OSError(errno.EADDRINUSE, "taken")
        return real_open(self, family, port)

    monkeypatch.setattr(UdpBind, "_open", flaky_open)
    before = open_fds()
    with nsh.call_in_ns(fresh_netns, UdpBind, 0) as bind:
        assert refused and len(bind.filenos()) == 2
        for fd in bind.filenos():
            with dup_socket(fd) as sock:
                assert sock.getsockname()[1] == bind.port
    assert open_fds() == before  # the abandoned IPv4 socket was closed


def test_fixed_port_in_use_raises_eaddrinuse(fresh_netns: str) -> None:
    with nsh.call_in_ns(fresh_netns, UdpBind, 0) as first:
        with pytest.raises(OSError) as info:
            nsh.call_in_ns(fresh_netns, UdpBind, first.port)
        assert info.value.errno == errno.EADDRINUSE


def test_split_handshake_binds_do_not_share_a_port(fresh_netns: str) -> None:
    # The handshake socket joins the data socket with SO_REUSEPORT; that must
    # not let a second bind (another interface of the same user) onto the port.
    with nsh.call_in_ns(fresh_netns, UdpBind, 0, split_handshakes=True) as first:
        for split in (True, False):
            with pytest.raises(OSError) as info:
                nsh.call_in_ns(fresh_netns, UdpBind, first.port, split_handshakes=split)
            assert info.value.errno == errno.EADDRINUSE
    with nsh.call_in_ns(fresh_netns, UdpBind, 0) as plain:
        with pytest.raises(OSError) as info:
            nsh.call_in_ns(fresh_netns, UdpBind, plain.port, split_handshakes=True)
        assert info.value.errno == errno.EADDRINUSE


def test_port_taken_on_ipv6_only_raises_and_leaks_nothing(fresh_netns: str) -> None:
    def v6_holder() -> socket.socket:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(("::", 0))
        return sock

    holder = nsh.call_in_ns(fresh_netns, v6_holder)
    try:
        before = open_fds()
        with pytest.raises(OSError) as info:
            nsh.call_in_ns(fresh_netns, UdpBind, holder.getsockname()[1])
        assert info.value.errno == errno.EADDRINUSE
        assert open_fds() == before
    finally:
        holder.close()


def test_ipv6_unavailable_falls_back_to_ipv4(
    fresh_netns: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    real_socket = socket.socket

    def no_v6(family: int = -1, *args: object, **kwargs: object) -> socket.socket:
        if family == socket.AF_INET6:
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        return real_socket(family, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(udp_mod.socket, "socket", no_v6)
    with caplog.at_level(logging.WARNING, logger="wgpy.net.udp"):
        bind = nsh.call_in_ns(fresh_netns, UdpBind, 0)
    monkeypatch.undo()
    with bind:
        assert bind.families == [socket.AF_INET]
        assert "IPv6 unavailable" in caplog.text
        bind.send(b"x", Endpoint("fd00::1", 9))
        assert bind.stats == {"no_socket_ipv6": 1}


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        UdpBind(70000)
    with pytest.raises(ValueError):
        UdpBind(0, ipv4=False, ipv6=False)


def test_single_family(fresh_netns: str) -> None:
    with nsh.call_in_ns(fresh_netns, UdpBind, 0, ipv4=False) as bind:
        assert bind.families == [socket.AF_INET6]
        bind.send(b"x", Endpoint("10.0.0.1", 9))
        assert bind.stats == {"no_socket_ipv4": 1}


# -- traffic ------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_datagrams_both_ways(link: Link, binds: tuple[UdpBind, UdpBind], family: int) -> None:
    a, b = binds
    ours, _, peer = addrs(link, family)
    payload = os.urandom(1200)
    b.send(payload, Endpoint(ours, a.port))
    data, ep = recv_one(a, family)
    assert data == payload
    assert (ep.ip, ep.port, ep.family) == (peer, b.port, family)
    assert ep.local == ours
    assert ep.local_ifindex == nsh.call_in_ns(link.a, socket.if_nametoindex, link.va)

    a.send(memoryview(payload)[:100], ep)
    data, back = recv_one(b, family)
    assert data == payload[:100]
    assert (back.ip, back.port) == (ours, a.port)
    assert a.stats == {} and b.stats == {}


@pytest.mark.parametrize("family", FAMILIES)
def test_sticky_source_replies_from_the_address_the_peer_used(
    link: Link, binds: tuple[UdpBind, UdpBind], family: int
) -> None:
    a, b = binds
    primary, second, _ = addrs(link, family)
    b.send(b"to-second", Endpoint(second, a.port))
    _, ep = recv_one(a, family)
    assert ep.local == second

    a.send(b"sticky", ep)
    data, seen = recv_one(b, family)
    assert data == b"sticky"
    assert seen.ip == second  # the reply left from the address the peer used

    # Control: without the remembered source the kernel picks the primary one.
    a.send(b"plain", ep.with_local(None))
    data, seen = recv_one(b, family)
    assert (data, seen.ip) == (b"plain", primary)
    assert a.stats == {}


@pytest.mark.parametrize("family", FAMILIES)
def test_vanished_source_falls_back_to_routing(
    link: Link, binds: tuple[UdpBind, UdpBind], family: int
) -> None:
    a, b = binds
    primary, second, _ = addrs(link, family)
    b.send(b"hi", Endpoint(second, a.port))
    _, ep = recv_one(a, family)
    assert ep.local == second
    plen = "24" if family == socket.AF_INET else "64"
    nsh.ip(link.a, "addr", "del", f"{second}/{plen}", "dev", link.va)

    a.send(b"after-del", ep)  # must not raise; resent without the dead source
    data, seen = recv_one(b, family)
    assert (data, seen.ip) == (b"after-del", primary)
    assert a.stats == {"source_fallback": 1}
    assert ep.local == second  # the endpoint is not changed; the engine decides


def test_link_local_sticky_source(netns_factory: Callable[..., str]) -> None:
    a, b = netns_factory("udpa"), netns_factory("udpb")
    va, vb = nsh.veth_pair(a, b, up=False)
    for ns, dev, addr in ((a, va, "fe80::a"), (b, vb, "fe80::b")):
        nsh.ip(ns, "link", "set", dev, "addrgenmode", "none")  # only our address
        nsh.ip(ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
        nsh.ip(ns, "link", "set", dev, "up")
    with (
        nsh.call_in_ns(a, UdpBind, 0, ipv4=False) as bind_a,
        nsh.call_in_ns(b, UdpBind, 0, ipv4=False) as bind_b,
    ):
        ifindex_a = nsh.call_in_ns(a, socket.if_nametoindex, va)
        ifindex_b = nsh.call_in_ns(b, socket.if_nametoindex, vb)
        bind_b.send(b"ll", Endpoint(f"fe80::a%{ifindex_b}", bind_a.port))
        _, ep = recv_one(bind_a, socket.AF_INET6)
        assert ep.ip.partition("%")[0] == "fe80::b"
        assert (ep.local, ep.local_ifindex) == ("fe80::a", ifindex_a)
        bind_a.send(b"back", ep)
        data, seen = recv_one(bind_b, socket.AF_INET6)
        assert (data, seen.ip.partition("%")[0]) == (b"back", "fe80::a")
        assert bind_a.stats == {}


def test_recv_batch_drains_with_limit_and_send_batch(
    link: Link, binds: tuple[UdpBind, UdpBind]
) -> None:
    a, b = binds
    target = Endpoint(link.a4, a.port)
    b.send_batch([(bytes([i]) * 20, target) for i in range(5)])
    fd = fd_of(a, socket.AF_INET)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(int(WAIT * 1000))
    first = a.recv_batch(fd, max_datagrams=2)
    rest = a.recv_batch(fd)
    assert [d for d, _ in first] == [bytes([0]) * 20, bytes([1]) * 20]
    assert [d for d, _ in rest] == [bytes([i]) * 20 for i in range(2, 5)]
    assert a.recv_batch(fd) == []
    # One sender: the endpoint object is shared (parsed once, then cached).
    assert len({id(ep) for _, ep in first + rest}) == 1


def test_non_sticky_bind_has_no_local(link: Link) -> None:
    with (
        nsh.call_in_ns(link.a, UdpBind, 0, sticky=False) as a,
        nsh.call_in_ns(link.b, UdpBind, 0, sticky=False) as b,
    ):
        for family, ours in ((socket.AF_INET, link.a4_second), (socket.AF_INET6, link.a6)):
            b.send(b"x", Endpoint(ours, a.port))
            data, ep = recv_one(a, family)
            assert (data, ep.port, ep.local, ep.local_ifindex) == (b"x", b.port, None, 0)


def test_network_errors_are_counted_not_raised(link: Link, binds: tuple[UdpBind, UdpBind]) -> None:
    a, _ = binds
    a.send(b"x", Endpoint("192.0.2.1", 9))  # no default route in the namespace
    a.send(b"x", Endpoint("2001:db8::1", 9))
    a.send(b"x", Endpoint("192.0.2.1", 9, local=link.a4))  # retried without source
    a.send(bytes(65508), Endpoint(link.b4, 9))  # larger than any IPv4 datagram
    assert a.stats == {
        "send_enetunreach": 3,
        "source_fallback": 1,
        "send_emsgsize": 1,
    }


def test_recv_batch_rejects_foreign_fd(binds: tuple[UdpBind, UdpBind]) -> None:
    a, _ = binds
    with pytest.raises(ValueError):
        a.recv_batch(12345)


# -- fwmark and close ------------------------------------------------------------------


def test_fwmark_is_set_cleared_and_routes(link: Link) -> None:
    # Policy routing: marked packets hit an unreachable route.
    nsh.ip(link.a, "rule", "add", "fwmark", "0x51", "table", "51", "prio", "10")
    nsh.ip(link.a, "route", "add", "unreachable", "10.210.0.0/24", "table", "51")
    with nsh.call_in_ns(link.a, UdpBind, 0, fwmark=0x51) as a:
        assert a.fwmark == 0x51
        for fd in a.filenos():
            with dup_socket(fd) as sock:
                raw = sock.getsockopt(socket.SOL_SOCKET, SO_MARK, 4)
                assert struct.unpack("=I", raw)[0] == 0x51
        a.send(b"x", Endpoint(link.b4, 9))
        assert a.stats == {"send_ehostunreach": 1}
        a.set_fwmark(0)
        a.send(b"x", Endpoint(link.b4, 9))
        assert a.stats == {"send_ehostunreach": 1}
        a.set_fwmark(0xFFFFFFFF)  # full 32-bit range
        with pytest.raises(ValueError):
            a.set_fwmark(1 << 32)


def test_close_releases_everything(fresh_netns: str) -> None:
    before = open_fds()
    bind = nsh.call_in_ns(fresh_netns, UdpBind, 0)
    fds = bind.filenos()
    assert len(open_fds() - before) == 2
    bind.close()
    bind.close()  # idempotent
    assert open_fds() == before
    assert bind.closed and bind.filenos() == []
    assert bind.recv_batch(fds[0]) == []
    bind.send(b"x", Endpoint("10.0.0.1", 9))  # a late send during shutdown: counted
    assert bind.stats == {"closed": 1}


def test_send_to_zone_of_vanished_interface_is_counted_not_raised(fresh_netns: str) -> None:
    from netns import call_in_ns

    from wgpy.endpoint import Endpoint as _Ep
    from wgpy.net.udp import UdpBind as _Bind

    bind = call_in_ns(fresh_netns, _Bind, 0, ipv4=False, ipv6=True)
    try:
        bind.send(b"x", _Ep("fe80::1%wgpy-no-such-if", 9))
        assert any(k.startswith("send_") for k in bind.stats)
    finally:
        bind.close()


def test_wireguard_framing_filter_drops_non_wireguard_in_the_kernel(fresh_netns: str) -> None:
    import socket as _socket
    import time as _time

    from netns import call_in_ns

    from wgpy.net.udp import UdpBind as _Bind

    bind = call_in_ns(fresh_netns, _Bind, 0, ipv6=False, wireguard_filter=True)
    sender = call_in_ns(fresh_netns, _socket.socket, _socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        good = [
            b"\x04\0\0\0" + bytes(28),  # keepalive-sized transport
            b"\x04\0\0\0" + bytes(1400),
            b"\x01\0\0\0" + bytes(144),
            b"\x02\0\0\0" + bytes(88),
            b"\x03\0\0\0" + bytes(60),
        ]
        bad = [
            b"",
            b"\x04\0\0",
            b"\x04\0\0\0" + bytes(27),  # shorter than header + tag
            b"\x01\0\0\0" + bytes(143),  # initiation too short
            b"\x04\x01\0\0" + bytes(60),  # reserved byte set
            b"\x05\0\0\0" + bytes(60),  # unknown type
            b"hello, world, this is not wireguard at all",
        ]
        for payload in bad + good:
            sender.sendto(payload, ("127.0.0.1", bind.port))
        got: list[bytes] = []
        deadline = _time.monotonic() + 5
        while len(got) < len(good) and _time.monotonic() < deadline:
            got += [d for d, _ in bind.recv_batch(bind.filenos()[0])]
        assert sorted(got) == sorted(good)
    finally:
        sender.close()
        bind.close()


def test_split_handshakes_steers_handshake_messages_to_their_own_socket(
    fresh_netns: str,
) -> None:
    import socket as _socket
    import time as _time

    from netns import call_in_ns

    from wgpy.net.udp import UdpBind as _Bind

    bind = call_in_ns(fresh_netns, _Bind, 0, wireguard_filter=True, split_handshakes=True)
    sender = call_in_ns(fresh_netns, _socket.socket, _socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        assert len(bind.handshake_fds) == 2 and len(bind.filenos()) == 4
        data_fds = [fd for fd in bind.filenos() if fd not in bind.handshake_fds]
        transport = b"\x04\0\0\0" + bytes(60)
        initiation = b"\x01\0\0\0" + bytes(144)
        for payload in (transport, initiation, transport, initiation):
            sender.sendto(payload, ("127.0.0.1", bind.port))
        got: dict[str, list[bytes]] = {"data": [], "hs": []}
        deadline = _time.monotonic() + 5
        while len(got["data"]) + len(got["hs"]) < 4 and _time.monotonic() < deadline:
            for fd in bind.filenos():
                kind = "hs" if fd in bind.handshake_fds else "data"
                got[kind] += [d for d, _ in bind.recv_batch(fd)]
        assert got == {"data": [transport, transport], "hs": [initiation, initiation]}
        assert data_fds  # replies leave from the data socket's port either way
    finally:
        sender.close()
        bind.close()
