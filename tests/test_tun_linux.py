"""Linux TUN device (in fresh network namespaces), MemoryTun, and the netns helper."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import subprocess
from collections.abc import Callable, Iterator

import netns as nsh
import pytest

from wgpy.tun import MemoryTun, TunClosed, TunDevice
from wgpy.tun.linux import LinuxTun, interface_exists

WAIT = 5.0  # upper bound for a wanted packet to show up (not a timing assertion)


# -- packet helpers -------------------------------------------------------------


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _udp(src: bytes, dst: bytes, sport: int, dport: int, payload: bytes) -> bytes:
    """A UDP header + payload with a correct checksum over the pseudo-header."""
    length = 8 + len(payload)
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    else:
        pseudo = src + dst + struct.pack("!I3xB", length, 17)
    header = struct.pack("!HHHH", sport, dport, length, 0)
    csum = _csum(pseudo + header + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, csum) + payload


def ipv4_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    udp = _udp(s, d, sport, dport, payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0x1234, 0x4000, 64, 17, 0, s, d)
    hdr = hdr[:10] + struct.pack("!H", _csum(hdr)) + hdr[12:]
    return hdr + udp


def ipv6_udp(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    s = socket.inet_pton(socket.AF_INET6, src)
    d = socket.inet_pton(socket.AF_INET6, dst)
    udp = _udp(s, d, sport, dport, payload)
    return struct.pack("!IHBB16s16s", 6 << 28, len(udp), 17, 64, s, d) + udp


def parse_udp(packet: bytes) -> tuple[str, str, int, int, bytes] | None:
    """Validate an IPv4/IPv6 UDP packet (lengths, checksums); None if not UDP."""
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0xF) * 4
        assert _csum(packet[:ihl]) == 0, "bad IPv4 header checksum"
        assert struct.unpack("!H", packet[2:4])[0] == len(packet), "bad IPv4 total length"
        if packet[9] != 17:
            return None
        src, dst, body = packet[12:16], packet[16:20], packet[ihl:]
        pseudo = src + dst + struct.pack("!BBH", 0, 17, len(body))
        family = socket.AF_INET
    elif version == 6:
        assert struct.unpack("!H", packet[4:6])[0] + 40 == len(packet), "bad IPv6 length"
        if packet[6] != 17:
            return None
        src, dst, body = packet[8:24], packet[24:40], packet[40:]
        pseudo = src + dst + struct.pack("!I3xB", len(body), 17)
        family = socket.AF_INET6
    else:
        raise AssertionError(f"not an IP packet: {packet[:8].hex()}")
    sport, dport, length, csum = struct.unpack("!HHHH", body[:8])
    assert length == len(body), "bad UDP length"
    if csum or family == socket.AF_INET6:
        assert _csum(pseudo + body) == 0, "bad UDP checksum"
    return (
        socket.inet_ntop(family, src),
        socket.inet_ntop(family, dst),
        sport,
        dport,
        body[8:],
    )


def wait_readable(fd: int, timeout: float = WAIT) -> int:
    """poll() events on ``fd`` (0 if none within ``timeout``)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    events = poller.poll(int(timeout * 1000))
    return events[0][1] if events else 0


def read_until(tun: LinuxTun, match: Callable[[bytes], bool]) -> bytes | None:
    """Read packets until one matches (other traffic, e.g. IPv6 RS, is skipped)."""
    for _ in range(50):
        if not wait_readable(tun.fileno()):
            return None
        for packet in tun.read_batch():
            if match(packet):
                return packet
    return None


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@contextlib.contextmanager
def tun_in(ns: str, name: str | None = None, mtu: int = 1420) -> Iterator[LinuxTun]:
    tun = nsh.call_in_ns(ns, LinuxTun.create, name or nsh.unique_ifname("wt"), mtu)
    try:
        yield tun
    finally:
        tun.close()  # the open fd keeps the namespace alive; always close it


def ns_socket(ns: str, family: int, bind: tuple[object, ...]) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind(bind)
        sock.settimeout(WAIT)
        return sock

    return nsh.call_in_ns(ns, make)


def sysctl(ns: str, setting: str) -> None:
    nsh.run_in_ns(ns, ["sysctl", "-qw", setting])


# -- name validation (no root needed) -------------------------------------------


@pytest.mark.parametrize("name", ["a" * 16, "bad/name", "bad:name", "has space", ".", ".."])
def test_invalid_names_rejected(name: str) -> None:
    with pytest.raises(ValueError):
        LinuxTun.create(name)


# -- real TUN devices ----------------------------------------------------------------


def test_create_sets_mtu_and_reports_state(fresh_netns: str) -> None:
    name = "t" * 15  # the longest valid name
    with tun_in(fresh_netns, name, mtu=1380) as tun:
        assert isinstance(tun, TunDevice)
        assert tun.name == name
        assert tun.get_mtu() == 1380
        assert b"mtu 1380" in nsh.ip(fresh_netns, "link", "show", name).stdout
        assert nsh.call_in_ns(fresh_netns, interface_exists, name)
        assert nsh.call_in_ns(fresh_netns, socket.if_nametoindex, name) == tun.ifindex
        assert not tun.is_up()
        nsh.ip(fresh_netns, "link", "set", name, "up")
        assert tun.is_up()
        tun.set_mtu(1500)
        assert b"mtu 1500" in nsh.ip(fresh_netns, "link", "show", name).stdout
        # A change made from outside (as wg-quick does) is seen by .mtu.
        nsh.ip(fresh_netns, "link", "set", name, "mtu", "1300")
        assert tun.mtu == 1300
        with pytest.raises(ValueError):
            tun.set_mtu(10)
        assert not tun.closed
    assert not nsh.call_in_ns(fresh_netns, interface_exists, name)


def test_kernel_chosen_name(fresh_netns: str) -> None:
    with tun_in(fresh_netns, "wgpy%d") as tun:
        assert tun.name.startswith("wgpy") and tun.name[4:].isdigit()
        assert nsh.call_in_ns(fresh_netns, interface_exists, tun.name)


def test_name_in_use_is_refused(fresh_netns: str) -> None:
    name = nsh.unique_ifname("wt")
    with tun_in(fresh_netns, name), pytest.raises(OSError):
        nsh.call_in_ns(fresh_netns, LinuxTun.create, name)


@pytest.mark.parametrize(
    ("family", "local", "peer", "prefix"),
    [
        (socket.AF_INET, "10.201.0.1", "10.201.0.2", "24"),
        (socket.AF_INET6, "fd00:201::1", "fd00:201::2", "64"),
    ],
)
def test_packets_both_ways(
    fresh_netns: str, family: int, local: str, peer: str, prefix: str
) -> None:
    ns = fresh_netns
    with tun_in(ns) as tun:
        nodad = ["nodad"] if family == socket.AF_INET6 else []
        nsh.ip(ns, "addr", "add", f"{local}/{prefix}", "dev", tun.name, *nodad)
        nsh.ip(ns, "link", "set", tun.name, "up")
        any_addr = "0.0.0.0" if family == socket.AF_INET else "::"
        sock = ns_socket(ns, family, (any_addr, 0))
        try:
            port = sock.getsockname()[1]
            # Local stack -> TUN: a datagram to the "remote" side is readable from the TUN.
            payload = os.urandom(100)
            sock.sendto(payload, (peer, 4444))
            packet = read_until(tun, lambda p: (parse_udp(p) or ("",))[-1] == payload)
            assert packet is not None, "datagram never reached the TUN"
            assert parse_udp(packet) == (local, peer, port, 4444, payload)

            # TUN -> local stack: a crafted packet written to the TUN reaches the socket.
            reply = os.urandom(200)
            build = ipv4_udp if family == socket.AF_INET else ipv6_udp
            tun.write_batch([build(peer, local, 5555, port, reply)])
            data, addr = sock.recvfrom(2048)
            assert data == reply
            assert (addr[0], addr[1]) == (peer, 5555)
            assert tun.stats == {}
        finally:
            sock.close()


def test_read_batch_respects_limit_and_drains(fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns) as tun:
        sysctl(ns, f"net.ipv6.conf.{tun.name}.disable_ipv6=1")  # no RS/MLD noise
        nsh.ip(ns, "addr", "add", "10.202.0.1/24", "dev", tun.name)
        nsh.ip(ns, "link", "set", tun.name, "up")
        sock = ns_socket(ns, socket.AF_INET, ("10.202.0.1", 0))
        try:
            for i in range(5):
                sock.sendto(bytes([i]) * 10, ("10.202.0.2", 4444))
            assert wait_readable(tun.fileno())
            first = tun.read_batch(2)
            assert len(first) == 2
            rest = tun.read_batch()
            assert [parse_udp(p)[-1] for p in first + rest] == [  # type: ignore[index]
                bytes([i]) * 10 for i in range(5)
            ]
            assert tun.read_batch() == []
        finally:
            sock.close()


def test_refused_writes_are_counted_and_batch_continues(fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns) as tun:
        good = ipv4_udp("10.203.0.2", "10.203.0.1", 5555, 6666, b"ok")
        # Link down: the kernel refuses every write with EIO.
        tun.write_batch([good])
        assert tun.stats == {"write_eio": 1}
        nsh.ip(ns, "addr", "add", "10.203.0.1/24", "dev", tun.name)
        nsh.ip(ns, "link", "set", tun.name, "up")
        sock = ns_socket(ns, socket.AF_INET, ("10.203.0.1", 6666))
        try:
            # Not IPv4/IPv6 (first nibble) and empty: EINVAL; the good one still goes in.
            tun.write_batch([b"\x00" * 40, b"", memoryview(good)])
            assert tun.stats == {"write_eio": 1, "write_einval": 2}
            assert sock.recvfrom(100)[0] == b"ok"
        finally:
            sock.close()


def test_interface_deleted_from_outside_raises_tunclosed(fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns) as tun:
        assert not tun.closed
        nsh.ip(ns, "link", "del", tun.name)
        # The kernel reports POLLERR on the detached descriptor, waking a loop.
        assert wait_readable(tun.fileno()) & select.POLLERR
        with pytest.raises(TunClosed):
            tun.read_batch()
        with pytest.raises(TunClosed):
            tun.write_batch([ipv4_udp("10.0.0.2", "10.0.0.1", 1, 2, b"x")])
        assert tun.closed


def test_closed_detected_without_io(fresh_netns: str) -> None:
    with tun_in(fresh_netns) as tun:
        nsh.ip(fresh_netns, "link", "del", tun.name)
        assert tun.closed  # probed with an ioctl, no read needed


def test_close_releases_everything(fresh_netns: str) -> None:
    before = open_fds()
    tun = nsh.call_in_ns(fresh_netns, LinuxTun.create, nsh.unique_ifname("wt"))
    assert len(open_fds() - before) == 2  # the TUN fd and the ioctl socket
    name = tun.name
    tun.close()
    tun.close()  # idempotent
    assert open_fds() == before
    assert tun.closed
    assert tun.fileno() == -1
    assert not nsh.call_in_ns(fresh_netns, interface_exists, name)
    with pytest.raises(TunClosed):
        tun.read_batch()
    with pytest.raises(TunClosed):
        tun.write_batch([b"\x45"])


# -- MemoryTun ---------------------------------------------------------------------


def test_memory_tun_queue_and_fileno() -> None:
    with MemoryTun("m0", mtu=1280) as tun:
        assert isinstance(tun, TunDevice)
        assert (tun.name, tun.mtu) == ("m0", 1280)
        assert not wait_readable(tun.fileno(), 0)
        assert tun.read_batch() == []
        packets = [ipv4_udp("10.0.0.1", "10.0.0.2", 1, 2, bytes([i])) for i in range(3)]
        tun.inject_batch(packets)
        assert wait_readable(tun.fileno(), 0) & select.POLLIN
        assert tun.read_batch(2) == packets[:2]
        assert wait_readable(tun.fileno(), 0)  # one left: still readable
        assert tun.read_batch() == packets[2:]
        assert not wait_readable(tun.fileno(), 0)  # drained: quiet again
        tun.write_batch([packets[0], b"\x00\x01", b"", memoryview(packets[1])])
        assert tun.written == packets[:2]
        assert tun.stats == {"write_einval": 2}


def test_memory_tun_remove_and_close() -> None:
    before = open_fds()
    tun = MemoryTun()
    tun.inject(b"\x45" + bytes(19))
    tun.remove()  # like `ip link del`: wakes the loop, then TunClosed
    assert wait_readable(tun.fileno(), 0)
    assert tun.closed
    with pytest.raises(TunClosed):
        tun.read_batch()
    with pytest.raises(TunClosed):
        tun.write_batch([b"\x45"])
    tun.close()
    tun.close()
    assert tun.fileno() == -1
    assert open_fds() == before


# -- the netns helper itself ----------------------------------------------------------


def test_netns_deleted_even_when_body_raises(netns_factory: Callable[..., str]) -> None:
    names: list[str] = []
    with pytest.raises(RuntimeError, match="boom"), nsh.netns("wgpyx") as ns:
        names.append(ns)
        assert nsh.netns_exists(ns)
        nsh.veth_pair(ns, ns, addrs_a=["10.204.0.1/24"], addrs_b=["10.204.0.2/24"])
        raise RuntimeError("boom")
    assert names and not nsh.netns_exists(names[0])


def test_call_in_ns_enters_namespace_and_leaves_caller_alone(fresh_netns: str) -> None:
    ns = fresh_netns
    va, vb = nsh.veth_pair(ns, ns)
    assert nsh.call_in_ns(ns, interface_exists, va)
    assert not interface_exists(va)  # the test's own namespace is unchanged
    with pytest.raises(KeyError):
        nsh.call_in_ns(ns, {}.__getitem__, "missing")  # exceptions propagate
    proc = nsh.python_in_ns(ns, "import socket, sys; print(socket.if_nametoindex(sys.argv[1]))", vb)
    assert int(proc.stdout) == nsh.call_in_ns(ns, socket.if_nametoindex, vb)
    with pytest.raises(subprocess.CalledProcessError, match="does not exist"):
        nsh.ip(ns, "link", "show", "nosuchdev0")
