"""TUN offloads against the kernel: two namespaces, each with a TUN, bridged by Python.

The bridge reads batches from one TUN and writes them into the other, in both
directions (no encryption: just the offload paths).  Real TCP transfers
(ncat, compared by SHA-256) and UDP GSO traffic go through it; the tests
assert that super-packets were really read and written, that the data
arrived intact, and that the kernel on both sides counted no checksum
errors and no drops.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import selectors
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import netns as nsh
import pytest

from wgpy.tun import linux as linux_mod
from wgpy.tun.linux import LinuxTun

WAIT = 30.0  # upper bound for a transfer to finish (not a timing assertion)


# -- the bridge ---------------------------------------------------------------------------


class Bridge:
    """Move packets between two TUNs in both directions on one thread."""

    def __init__(self, a: LinuxTun, b: LinuxTun) -> None:
        self.a, self.b = a, b
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.batches = 0
        self.thread = threading.Thread(target=self._run, name="tun-bridge", daemon=True)

    def _run(self) -> None:
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(self.a.fileno(), selectors.EVENT_READ, (self.a, self.b))
                sel.register(self.b.fileno(), selectors.EVENT_READ, (self.b, self.a))
                while not self.stop.is_set():
                    for key, _ in sel.select(0.05):
                        src, dst = key.data
                        for _ in range(8):
                            packets = src.read_batch(64)
                            if not packets:
                                break
                            self.batches += 1
                            dst.write_batch(packets)
        except BaseException as exc:  # surfaced by close()
            self.error = exc

    def __enter__(self) -> Bridge:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive(), "bridge thread did not stop"
        if self.error is not None:
            raise self.error


@dataclass
class Pair:
    a: str
    b: str
    ta: LinuxTun
    tb: LinuxTun
    a4: str = "10.231.0.1"
    b4: str = "10.231.0.2"
    a6: str = "fd00:231::1"
    b6: str = "fd00:231::2"


@contextlib.contextmanager
def tun_pair(
    netns_factory: Callable[..., str], offload: bool = True, mtu: int = 1420
) -> Iterator[Pair]:
    a, b = netns_factory("offa"), netns_factory("offb")
    ta = nsh.call_in_ns(a, LinuxTun.create, nsh.unique_ifname("ta"), mtu, offload)
    try:
        tb = nsh.call_in_ns(b, LinuxTun.create, nsh.unique_ifname("tb"), mtu, offload)
        try:
            pair = Pair(a, b, ta, tb)
            for ns, tun, v4, v6 in ((a, ta, pair.a4, pair.a6), (b, tb, pair.b4, pair.b6)):
                nsh.ip(ns, "addr", "add", f"{v4}/24", "dev", tun.name)
                nsh.ip(ns, "addr", "add", f"{v6}/64", "dev", tun.name, "nodad")
                nsh.ip(ns, "link", "set", tun.name, "up")
            yield pair
        finally:
            tb.close()
    finally:
        ta.close()  # the open fds keep the namespaces alive; always close them


# -- kernel counters ----------------------------------------------------------------------


def snmp(ns: str) -> dict[str, int]:
    """The namespace's /proc/net/snmp and snmp6 counters, as 'Tcp.InCsumErrors' etc."""
    out: dict[str, int] = {}
    lines = nsh.run_in_ns(ns, ["cat", "/proc/net/snmp"]).stdout.decode().splitlines()
    for keys, values in zip(lines[::2], lines[1::2], strict=True):
        proto, _, names = keys.partition(":")
        for name, value in zip(names.split(), values.partition(":")[2].split(), strict=True):
            out[f"{proto}.{name}"] = int(value)
    for line in nsh.run_in_ns(ns, ["cat", "/proc/net/snmp6"]).stdout.decode().splitlines():
        name, value = line.split()
        out[name] = int(value)
    return out


CSUM_COUNTERS = ("Tcp.InCsumErrors", "Udp.InCsumErrors", "Udp6InCsumErrors", "Ip.InHdrErrors")


def link_stats(ns: str, dev: str) -> dict[str, int]:
    """Error and drop counters of ``dev`` that mean a refused or damaged packet.

    ``tx_dropped`` is left out: on a TUN it counts packets the kernel could
    not queue for a reader that fell behind (TCP recovers); it says nothing
    about what we wrote.
    """
    data = json.loads(nsh.ip(ns, "-s", "-j", "link", "show", "dev", dev).stdout)
    stats = data[0]["stats64"]
    return {
        "rx_errors": int(stats["rx"]["errors"]),
        "rx_dropped": int(stats["rx"]["dropped"]),
        "tx_errors": int(stats["tx"]["errors"]),
    }


def assert_clean(pair: Pair) -> None:
    """No checksum errors in either kernel, no refused writes, no drops in our layer."""
    for ns, tun in ((pair.a, pair.ta), (pair.b, pair.tb)):
        counters = snmp(ns)
        assert {k: counters[k] for k in CSUM_COUNTERS} == dict.fromkeys(CSUM_COUNTERS, 0)
        assert link_stats(ns, tun.name) == {"rx_errors": 0, "rx_dropped": 0, "tx_errors": 0}
        assert tun.stats == {}


def wait_listening(ns: str, port: int) -> None:
    for _ in range(200):
        if f":{port} ".encode() in nsh.run_in_ns(ns, ["ss", "-Hltn"]).stdout:
            return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on port {port} in {ns}")


def transfer(pair: Pair, dst: str, data: Path, out: Path) -> None:
    """Send ``data`` from namespace a to ``dst`` in namespace b with ncat over TCP."""
    port = 20000 + os.getpid() % 10000
    server = ["sh", "-c", f"exec ncat -l --recv-only {dst} {port} > {out}"]
    with nsh.popen_in_ns(pair.b, server) as proc:
        wait_listening(pair.b, port)
        nsh.run_in_ns(
            pair.a, ["sh", "-c", f"exec ncat --send-only {dst} {port} < {data}"], timeout=WAIT
        )
        assert proc.wait(WAIT) == 0


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


needs_ncat = pytest.mark.skipif(shutil.which("ncat") is None, reason="needs ncat")


# -- TCP through the bridge ------------------------------------------------------------------


@needs_ncat
@pytest.mark.parametrize(
    ("offload", "family"),
    [
        pytest.param(True, socket.AF_INET, id="offload-ipv4"),
        pytest.param(True, socket.AF_INET6, id="offload-ipv6"),
        pytest.param(False, socket.AF_INET, id="plain-ipv4"),
    ],
)
def test_tcp_transfer_through_bridge(
    netns_factory: Callable[..., str], tmp_path: Path, offload: bool, family: int
) -> None:
    data = tmp_path / "data"
    data.write_bytes(os.urandom(24 << 20))
    out = tmp_path / "out"
    with tun_pair(netns_factory, offload) as pair:
        assert pair.ta.offload is offload and pair.tb.offload is offload
        dst = pair.b4 if family == socket.AF_INET else pair.b6
        with Bridge(pair.ta, pair.tb):
            transfer(pair, dst, data, out)
        assert sha256(out) == sha256(data)
        assert_clean(pair)
        sent, received = pair.ta.offload_stats, pair.tb.offload_stats
        if offload:
            # The sender's stack handed us TSO super-packets, which were cut up ...
            assert sent["gso_reads"] > 0
            assert sent["gso_segments"] > 2 * sent["gso_reads"]
            # ... and merged again before entering the receiver's stack.
            assert received["gro_writes"] > 0
            assert received["gro_segments"] > 2 * received["gro_writes"]
            # ACKs and the handshake carry partial checksums we completed.
            assert received["csum_completed"] > 0
        else:
            assert sent == {} and received == {}


# -- UDP (USO) through the bridge --------------------------------------------------------------

SOL_UDP = 17
UDP_SEGMENT = 103


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6], ids=["ipv4", "ipv6"])
def test_udp_gso_through_bridge(netns_factory: Callable[..., str], family: int) -> None:
    with tun_pair(netns_factory) as pair:
        if not pair.ta.uso:
            pytest.skip("needs USO on the TUN (Linux >= 6.2)")
        src, dst = (pair.a4, pair.b4) if family == socket.AF_INET else (pair.a6, pair.b6)

        def receiver() -> socket.socket:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            sock.bind((dst, 0))
            sock.settimeout(WAIT)
            return sock

        def sender() -> socket.socket:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            sock.bind((src, 0))
            return sock

        rx = nsh.call_in_ns(pair.b, receiver)
        tx = nsh.call_in_ns(pair.a, sender)
        try:
            port = rx.getsockname()[1]
            size, per_send, sends = 1000, 16, 20
            expected = []
            with Bridge(pair.ta, pair.tb):
                for n in range(sends):
                    chunk = [
                        struct.pack("!HH", n, i) + os.urandom(size - 4) for i in range(per_send)
                    ]
                    chunk[-1] = chunk[-1][:500]  # a shorter last datagram
                    expected.extend(chunk)
                    cmsg = [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))]
                    tx.sendmsg([b"".join(chunk)], cmsg, 0, (dst, port))
                got = [rx.recv(4096) for _ in expected]
            assert got == expected  # all there, intact and in order
        finally:
            rx.close()
            tx.close()
        assert pair.ta.offload_stats["gso_reads"] >= sends
        assert pair.tb.offload_stats["gro_writes"] >= 1
        assert_clean(pair)


# -- checksum verification before coalescing -----------------------------------------------------


def _tcp_segment(src: str, dst: str, seq: int, payload: bytes, corrupt: bool = False) -> bytes:
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", 33333, 44444, seq, 1, 5 << 4, 0x10, 1000, 0, 0) + payload
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    csum = _csum(pseudo + tcp)
    if corrupt:
        csum ^= 0x0F0F
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 7, 0x4000, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    return ip + tcp


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_corrupt_segment_is_not_laundered(netns_factory: Callable[..., str], verify: bool) -> None:
    """A segment with a bad TCP checksum must still reach the kernel as bad.

    Merged into a super-packet it would be trusted (CHECKSUM_PARTIAL); with
    verification it is written alone and the kernel counts the error.  The
    no-verify case shows the hazard the default guards against.
    """
    with tun_pair(netns_factory) as pair:
        tun = pair.tb
        tun.verify_checksums = verify
        before = snmp(pair.b)["Tcp.InCsumErrors"]
        segs = [
            _tcp_segment(pair.a4, pair.b4, 1000 + 800 * i, bytes([i]) * 800, corrupt=i == 2)
            for i in range(4)
        ]
        tun.write_batch(segs)
        after = snmp(pair.b)["Tcp.InCsumErrors"]
        if verify:
            assert after - before == 1
            assert tun.offload_stats["gro_segments"] == 2  # segments 0 and 1 only
        else:
            assert after - before == 0
            assert tun.offload_stats["gro_segments"] == 4


# -- setup fallbacks -----------------------------------------------------------------------------


def _probe_packet_roundtrip(ns: str, tun: LinuxTun, local: str, peer: str) -> None:
    """A UDP datagram from the namespace reaches the TUN and a crafted one comes back."""
    nsh.ip(ns, "addr", "add", f"{local}/24", "dev", tun.name)
    nsh.ip(ns, "link", "set", tun.name, "up")

    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((local, 0))
        sock.settimeout(5)
        return sock

    sock = nsh.call_in_ns(ns, make)
    try:
        sock.sendto(b"ping", (peer, 9))
        deadline = time.monotonic() + 5
        got = None
        while got is None and time.monotonic() < deadline:
            for packet in tun.read_batch():
                if packet[0] >> 4 == 4 and packet[9] == 17 and packet.endswith(b"ping"):
                    got = packet
            time.sleep(0.01)
        assert got is not None
        assert _csum(got[12:20] + struct.pack("!BBH", 0, 17, len(got) - 20) + got[20:]) == 0
    finally:
        sock.close()


def test_offload_refused_falls_back_to_plain(
    fresh_netns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linux_mod, "_set_offloads", lambda fd: None)
    tun = nsh.call_in_ns(fresh_netns, LinuxTun.create, nsh.unique_ifname("tf"))
    try:
        assert not tun.offload and not tun.uso
        _probe_packet_roundtrip(fresh_netns, tun, "10.232.0.1", "10.232.0.2")
    finally:
        tun.close()


def test_uso_refused_keeps_tcp_offloads(fresh_netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_ioctl = linux_mod.fcntl.ioctl

    def no_uso(fd: int, request: int, arg: object = 0, *rest: object) -> object:
        if request == linux_mod._TUNSETOFFLOAD and isinstance(arg, int) and arg & 0x60:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_ioctl(fd, request, arg, *rest)  # type: ignore[call-overload]

    monkeypatch.setattr(linux_mod.fcntl, "ioctl", no_uso)
    tun = nsh.call_in_ns(fresh_netns, LinuxTun.create, nsh.unique_ifname("tf"))
    monkeypatch.undo()
    try:
        assert tun.offload and not tun.uso
        _probe_packet_roundtrip(fresh_netns, tun, "10.233.0.1", "10.233.0.2")
    finally:
        tun.close()


def test_gso_write_refused_stops_merging(fresh_netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that refuses GSO writes (EINVAL) gets the segments one by one instead."""
    ns = fresh_netns
    tun = nsh.call_in_ns(ns, LinuxTun.create, nsh.unique_ifname("tf"))
    try:
        nsh.ip(ns, "addr", "add", "10.234.0.1/24", "dev", tun.name)
        nsh.ip(ns, "link", "set", tun.name, "up")
        real_writev = os.writev

        def no_gso(fd: int, buffers: list[bytes]) -> int:
            if len(buffers) > 2:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_writev(fd, buffers)

        monkeypatch.setattr(linux_mod.os, "writev", no_gso)
        try:
            before = snmp(ns)
            segs = [
                _tcp_segment("10.234.0.2", "10.234.0.1", 1000 + 800 * i, b"s" * 800)
                for i in range(4)
            ]
            tun.write_batch(segs)
            tun.write_batch(segs)  # merging is off now: no second refusal
            after = snmp(ns)
        finally:
            monkeypatch.undo()
        assert tun.stats == {"gro_write_einval": 1}
        # all 8 segments reached TCP (no socket: each answered with a reset)
        assert after["Tcp.InSegs"] - before["Tcp.InSegs"] == 8
        assert after["Tcp.InCsumErrors"] == before["Tcp.InCsumErrors"]
    finally:
        tun.close()
