"""UdpBind with UDP GSO (UDP_SEGMENT sends) and GRO (coalesced receives), over a veth.

Two namespaces joined by a veth; a UdpBind in each.  The tests check what
the kernel really did (how many sends carried how many datagrams, how many
receives were coalesced) and that every datagram arrived intact, in order,
from the right source, including the fallbacks (EIO without checksum
offload, EINVAL when a segment does not fit the MTU).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
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

WAIT = 5.0  # upper bound for datagrams to arrive (not a timing assertion)
SOL_UDP, UDP_GRO = 17, 104


@dataclass
class Link:
    a: str
    b: str
    va: str
    vb: str
    a4: str = "10.241.0.1"
    a4_second: str = "10.241.0.11"
    b4: str = "10.241.0.2"
    a6: str = "fd00:241::1"
    b6: str = "fd00:241::2"


@pytest.fixture
def link(netns_factory: Callable[..., str]) -> Link:
    a, b = netns_factory("udpoa"), netns_factory("udpob")
    va, vb = nsh.veth_pair(
        a,
        b,
        addrs_a=["10.241.0.1/24", "10.241.0.11/24", "fd00:241::1/64"],
        addrs_b=["10.241.0.2/24", "fd00:241::2/64"],
    )
    return Link(a, b, va, vb)


@pytest.fixture
def binds(link: Link) -> Iterator[tuple[UdpBind, UdpBind]]:
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


def receive(
    bind: UdpBind, family: int, count: int, limit: int = 64
) -> list[tuple[bytes, Endpoint]]:
    """Collect ``count`` datagrams from the ``family`` socket, batch by batch."""
    fd = fd_of(bind, family)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    got: list[tuple[bytes, Endpoint]] = []
    while len(got) < count:
        batch = bind.recv_batch(fd, limit)
        if not batch:
            assert poller.poll(int(WAIT * 1000)), f"only {len(got)} of {count} datagrams arrived"
            continue
        assert len(batch) <= limit
        got.extend(batch)
    assert bind.recv_batch(fd) == []
    return got


def numbered(n: int, size: int, tag: int = 0) -> list[bytes]:
    return [struct.pack("!HH", tag, i) + os.urandom(size - 4) for i in range(n)]


FAMILIES = [pytest.param(socket.AF_INET, id="ipv4"), pytest.param(socket.AF_INET6, id="ipv6")]


def addr(link: Link, family: int, side: str) -> str:
    if family == socket.AF_INET:
        return link.a4 if side == "a" else link.b4
    return link.a6 if side == "a" else link.b6


# -- capabilities -------------------------------------------------------------------------


def test_offloads_on_by_default_and_switchable(link: Link) -> None:
    with nsh.call_in_ns(link.a, UdpBind, 0) as bind:
        for family in (socket.AF_INET, socket.AF_INET6):
            assert bind.gso_enabled(family) and bind.gro_enabled(family)
        for fd in bind.filenos():
            with socket.socket(fileno=os.dup(fd)) as sock:
                assert sock.getsockopt(SOL_UDP, UDP_GRO) == 1
    with nsh.call_in_ns(link.a, UdpBind, 0, gso=False, gro=False) as bind:
        for family in (socket.AF_INET, socket.AF_INET6):
            assert not bind.gso_enabled(family) and not bind.gro_enabled(family)
        for fd in bind.filenos():
            with socket.socket(fileno=os.dup(fd)) as sock:
                assert sock.getsockopt(SOL_UDP, UDP_GRO) == 0


# -- GSO send + GRO receive ----------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_gso_send_gro_receive(link: Link, binds: tuple[UdpBind, UdpBind], family: int) -> None:
    a, b = binds
    target = Endpoint(addr(link, family, "b"), b.port)
    data = numbered(40, 1200)
    data[-1] = data[-1][:700]  # a shorter last datagram rides along
    a.send_batch([(d, target) for d in data])
    assert a.offload_stats == {"gso_sends": 1, "gso_datagrams": 40}
    got = receive(b, family, 40)
    assert [d for d, _ in got] == data
    assert {(ep.ip, ep.port, ep.local) for _, ep in got} == {
        (addr(link, family, "a"), a.port, addr(link, family, "b"))
    }
    # The super-datagram went through intact and was split here.
    assert b.offload_stats["gro_reads"] >= 1
    assert b.offload_stats["gro_datagrams"] == 40
    assert a.stats == {} and b.stats == {}


def test_runs_split_by_endpoint_size_and_count(link: Link, binds: tuple[UdpBind, UdpBind]) -> None:
    a, b = binds
    to_b = Endpoint(link.b4, b.port)

    def other() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((link.b4, 0))
        sock.settimeout(WAIT)
        return sock

    side = nsh.call_in_ns(link.b, other)
    try:
        to_side = Endpoint(link.b4, side.getsockname()[1])
        first = numbered(5, 1000, 1)
        bigger = numbered(3, 1100, 2)  # larger than the run before: a new run
        many = numbered(150, 500, 3)  # more than 64: three sends
        items = [
            *((d, to_b) for d in first[:3]),
            (b"interleaved", to_side),  # another endpoint breaks the run
            *((d, to_b) for d in first[3:]),
            *((d, to_b) for d in bigger),
            *((d, to_b) for d in many),
        ]
        a.send_batch(items)
        # runs: first[:3] | single | first[3:] (2) | bigger (3) | many 64+64+22
        assert a.offload_stats == {"gso_sends": 6, "gso_datagrams": 3 + 2 + 3 + 150}
        got = receive(b, socket.AF_INET, 5 + 3 + 150)
        assert [d for d, _ in got] == first + bigger + many
        assert side.recv(100) == b"interleaved"
    finally:
        side.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_payload_limit_splits_sends(
    link: Link, binds: tuple[UdpBind, UdpBind], family: int
) -> None:
    a, b = binds
    target = Endpoint(addr(link, family, "b"), b.port)
    data = numbered(60, 1400)  # 84,000 bytes: more than one send may carry
    a.send_batch([(d, target) for d in data])
    limit = 65507 if family == socket.AF_INET else 65527
    per_send = limit // 1400
    assert a.offload_stats["gso_sends"] == -(-60 // per_send)
    assert [d for d, _ in receive(b, family, 60)] == data


def test_sticky_source_with_gso(link: Link, binds: tuple[UdpBind, UdpBind]) -> None:
    a, b = binds
    b.send(b"hello", Endpoint(link.a4_second, a.port))
    ((_, ep),) = receive(a, socket.AF_INET, 1)
    assert ep.local == link.a4_second
    data = numbered(10, 800)
    a.send_batch([(d, ep) for d in data])
    assert a.offload_stats["gso_sends"] == 1
    got = receive(b, socket.AF_INET, 10)
    assert [d for d, _ in got] == data
    assert {seen.ip for _, seen in got} == {link.a4_second}  # left from the address used


def test_gro_off_receiver_gets_kernel_segmented_datagrams(link: Link) -> None:
    with (
        nsh.call_in_ns(link.a, UdpBind, 0) as a,
        nsh.call_in_ns(link.b, UdpBind, 0, gro=False) as b,
    ):
        data = numbered(20, 1000)
        a.send_batch([(d, Endpoint(link.b4, b.port)) for d in data])
        assert a.offload_stats["gso_sends"] == 1
        assert [d for d, _ in receive(b, socket.AF_INET, 20)] == data
        assert b.offload_stats == {}


def test_gso_off_sends_one_by_one(link: Link) -> None:
    with (
        nsh.call_in_ns(link.a, UdpBind, 0, gso=False) as a,
        nsh.call_in_ns(link.b, UdpBind, 0, sticky=False) as b,
    ):
        data = numbered(20, 1000)
        a.send_batch([(d, Endpoint(link.b4, b.port)) for d in data])
        assert a.offload_stats == {}
        got = receive(b, socket.AF_INET, 20)
        assert [d for d, _ in got] == data
        assert {(ep.local, ep.port) for _, ep in got} == {(None, a.port)}


# -- receive batch limits with GRO ---------------------------------------------------------------


def test_gro_receive_respects_the_batch_limit(link: Link, binds: tuple[UdpBind, UdpBind]) -> None:
    a, b = binds
    data = numbered(10, 600)
    a.send_batch([(d, Endpoint(link.b4, b.port)) for d in data])
    fd = fd_of(b, socket.AF_INET)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(int(WAIT * 1000))
    batches = [b.recv_batch(fd, 3) for _ in range(4)]
    # One super-datagram of 10: the surplus is kept and handed out first.
    assert [len(x) for x in batches] == [3, 3, 3, 1]
    assert [d for batch in batches for d, _ in batch] == data
    assert b.recv_batch(fd) == []


def test_next_super_datagram_waits_in_the_socket(
    link: Link, binds: tuple[UdpBind, UdpBind]
) -> None:
    a, b = binds
    target = Endpoint(link.b4, b.port)
    first, second = numbered(10, 600, 1), numbered(10, 600, 2)
    a.send_batch([(d, target) for d in first])
    a.send_batch([(d, target) for d in second])
    assert b.offload_stats == {}
    fd = fd_of(b, socket.AF_INET)
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    assert poller.poll(int(WAIT * 1000))
    # After the first super-datagram only 5 slots are left: a peek shows the
    # second would not fit, so it stays in the socket instead of being split.
    batch = b.recv_batch(fd, 15)
    assert [d for d, _ in batch] == first
    assert [d for d, _ in receive(b, socket.AF_INET, 10, limit=15)] == second
    assert b.offload_stats == {"gro_reads": 2, "gro_datagrams": 20}


# -- fallbacks against the kernel ----------------------------------------------------------------

SIOCETHTOOL = 0x8946
ETHTOOL_STXCSUM = 0x17


def disable_tx_checksum(dev: str) -> None:
    """``ethtool -K dev tx off`` through the SIOCETHTOOL ioctl (no ethtool binary here)."""
    value = (ctypes.c_uint32 * 2)(ETHTOOL_STXCSUM, 0)
    ifreq = struct.pack("16sP8x", dev.encode(), ctypes.addressof(value))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, SIOCETHTOOL, ifreq)


def test_no_tx_checksum_offload_still_delivers(link: Link, binds: tuple[UdpBind, UdpBind]) -> None:
    """Older kernels refuse UDP_SEGMENT with EIO here; 6.18 checksums in software.

    Either way every datagram arrives: through GSO, or one by one after EIO.
    """
    a, b = binds
    try:
        nsh.call_in_ns(link.a, disable_tx_checksum, link.va)
    except OSError as exc:
        pytest.skip(f"needs SIOCETHTOOL to turn off veth tx checksumming ({exc})")
    target = Endpoint(link.b4, b.port)
    data = numbered(8, 1000)
    a.send_batch([(d, target) for d in data])
    if a.stats:
        assert a.stats == {"gso_disabled": 1}
    else:
        assert a.offload_stats == {"gso_sends": 1, "gso_datagrams": 8}
    assert [d for d, _ in receive(b, socket.AF_INET, 8)] == data


class EioOnGso:
    """A socket stand-in whose UDP_SEGMENT sends fail with EIO (as old kernels do)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)

    def sendmsg(
        self, buffers: list[bytes], cmsgs: list[tuple[int, int, bytes]], *rest: object
    ) -> int:
        if any(level == SOL_UDP and kind == 103 for level, kind, _ in cmsgs):
            raise OSError(errno.EIO, "Input/output error")
        return self.sock.sendmsg(buffers, cmsgs, *rest)  # type: ignore[arg-type]


def test_eio_disables_gso_for_that_socket(link: Link, binds: tuple[UdpBind, UdpBind]) -> None:
    a, b = binds
    a._v4 = EioOnGso(a._v4)  # type: ignore[assignment,arg-type]
    target = Endpoint(link.b4, b.port)
    data = numbered(8, 1000)
    a.send_batch([(d, target) for d in data])  # EIO, then one by one
    assert a.stats == {"gso_disabled": 1}
    assert not a.gso_enabled(socket.AF_INET)
    assert a.gso_enabled(socket.AF_INET6)  # per socket
    a.send_batch([(d, target) for d in data])  # no second attempt
    assert a.stats == {"gso_disabled": 1}
    assert a.offload_stats == {}
    assert [d for d, _ in receive(b, socket.AF_INET, 16)] == data + data


def test_segment_larger_than_mtu_is_resent_plainly(
    link: Link, binds: tuple[UdpBind, UdpBind]
) -> None:
    a, b = binds
    nsh.ip(link.a, "link", "set", link.va, "mtu", "1280")
    target = Endpoint(link.b4, b.port)
    data = numbered(6, 1400)  # too big for one 1280 frame: GSO refuses (EINVAL)
    a.send_batch([(d, target) for d in data])
    assert a.stats == {}  # not counted as a failure: each went out fragmented
    assert a.offload_stats == {}
    assert a.gso_enabled(socket.AF_INET)  # the socket keeps GSO for other sizes
    assert [d for d, _ in receive(b, socket.AF_INET, 6)] == data
