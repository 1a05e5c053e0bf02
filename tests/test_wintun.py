"""wgpy.tun.wintun against a Linux test double of wintun.dll (tests/wintun_double/).

The double exports the 14 Wintun functions over /dev/net/tun, so the shim's ctypes
declarations, UTF-16 handling, ring primitives and error mapping run for real.
Everything that touches interfaces happens inside a network namespace made for the
test (tests/netns.py) and removed afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netns import call_in_ns, ip, unique_ifname

from wgpy.nt.abi import ErrorCode, filetime_from_unix_ns
from wgpy.tun.base import TunClosed, TunDevice
from wgpy.tun.wintun import (
    DEFAULT_RING_CAPACITY,
    WINTUN_MAX_IP_PACKET_SIZE,
    WINTUN_MAX_RING_CAPACITY,
    WINTUN_MIN_RING_CAPACITY,
    WintunError,
    WintunLibrary,
    WintunLogLevel,
    WintunRingFull,
    WintunTun,
    _utf16z,
    check_ring_capacity,
)

_BUILD = Path(__file__).resolve().parent / "wintun_double" / "build.py"
_spec = importlib.util.spec_from_file_location("wintun_double_build", _BUILD)
assert _spec is not None and _spec.loader is not None
_build_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build_module)
build_double: Callable[[Path], Path] = _build_module.build_double

SMALL = WINTUN_MIN_RING_CAPACITY
WAIT = 10.0  # upper bound for "this will arrive"; never a performance assertion


# ---------------------------------------------------------------------------
# Fixtures and helpers
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lib(tmp_path_factory: pytest.TempPathFactory) -> WintunLibrary:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the Wintun test double")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")
    try:
        path = build_double(tmp_path_factory.mktemp("wintun_double"))
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"building the Wintun double failed:\n{exc.stderr}")
    library = WintunLibrary(path)
    dll = library.dll
    dll.WintunTestSetDriverLoaded.argtypes = [ctypes.c_int]
    dll.WintunTestSetDriverLoaded.restype = None
    dll.WintunTestCorruptRing.argtypes = [ctypes.c_void_p]
    dll.WintunTestCorruptRing.restype = None
    dll.WintunTestGetStats.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(ctypes.c_uint64),
        ctypes.POINTER(ctypes.c_uint64),
    ]
    dll.WintunTestGetStats.restype = ctypes.c_int
    return library


def _double_stats(lib: WintunLibrary, session_handle: int) -> tuple[int, int]:
    rx, tx = ctypes.c_uint64(), ctypes.c_uint64()
    assert lib.dll.WintunTestGetStats(session_handle, ctypes.byref(rx), ctypes.byref(tx))
    return rx.value, tx.value


def _open_fds() -> set[int]:
    return {int(n) for n in os.listdir("/proc/self/fd")}


def _links(ns: str) -> dict[str, int]:
    out = ip(ns, "-j", "link", "show").stdout
    return {link["ifname"]: link["ifindex"] for link in json.loads(out)}


@contextlib.contextmanager
def tun_in(
    ns: str, lib: WintunLibrary, name: str | None = None, capacity: int = SMALL
) -> Iterator[WintunTun]:
    """A WintunTun created inside ``ns``; always closed afterwards."""
    name = name or unique_ifname("wt")
    tun = call_in_ns(ns, WintunTun.create, lib, name, ring_capacity=capacity)
    try:
        yield tun
    finally:
        tun.close()


def _configure(ns: str, name: str, v4: str, v6: str) -> None:
    ip(ns, "addr", "add", f"{v4}/24", "dev", name)
    ip(ns, "-6", "addr", "add", f"{v6}/64", "dev", name, "nodad")
    ip(ns, "link", "set", name, "up")


def _udp_socket(ns: str, family: int, bind: tuple[str, int] | None = None) -> socket.socket:
    sock = call_in_ns(ns, socket.socket, family, socket.SOCK_DGRAM)
    if bind is not None:
        sock.bind(bind)
    return sock


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def udp_packet(src: str, dst: str, sport: int, dport: int, payload: bytes) -> bytes:
    """A complete IPv4 or IPv6 UDP packet with valid checksums."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    length = 8 + len(payload)
    if s.version == 4:
        header = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + length, 0x1234, 0x4000, 64, 17, 0, s.packed, d.packed
        )
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, length)
    else:
        header = struct.pack("!IHBB16s16s", 0x60000000, length, 17, 64, s.packed, d.packed)
        pseudo = s.packed + d.packed + struct.pack("!IxxxB", length, 17)
    udp = struct.pack("!HHHH", sport, dport, length, 0) + payload
    csum = _checksum(pseudo + udp) or 0xFFFF
    return header + udp[:6] + struct.pack("!H", csum) + udp[8:]


def udp_payload(packet: bytes) -> tuple[str, str, int, bytes] | None:
    """(src, dst, dport, payload) of a UDP packet, or None for anything else."""
    if packet[0] >> 4 == 4 and packet[9] == 17:
        ihl = (packet[0] & 0xF) * 4
        src, dst = packet[12:16], packet[16:20]
        udp = packet[ihl:]
    elif packet[0] >> 4 == 6 and packet[6] == 17:
        src, dst = packet[8:24], packet[24:40]
        udp = packet[40:]
    else:
        return None
    (dport,) = struct.unpack_from("!H", udp, 2)
    return (
        str(ipaddress.ip_address(src)),
        str(ipaddress.ip_address(dst)),
        dport,
        bytes(udp[8:]),
    )


def carrying(payload: bytes) -> Callable[[bytes], bool]:
    """A predicate: the packet is UDP and carries ``payload``."""

    def match(packet: bytes) -> bool:
        info = udp_payload(packet)
        return info is not None and info[3] == payload

    return match


def read_until(tun: WintunTun, match: Callable[[bytes], bool]) -> bytes:
    """Read from ``tun`` (waiting on its read event) until a packet matches."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for packet in tun.read_batch():
            if match(packet):
                return packet
        tun.session.wait_readable(0.2)
    raise AssertionError("expected packet never arrived")


# ---------------------------------------------------------------------------
# Pure helpers (no root needed)
# ---------------------------------------------------------------------------


def test_ring_capacity_check() -> None:
    for good in (0x20000, 0x40000, 0x800000, 0x4000000):
        assert check_ring_capacity(good) == good
    for bad in (0, 0x10000, 0x1FFFF, 0x30000, 0x8000000, -0x20000):
        with pytest.raises(ValueError):
            check_ring_capacity(bad)
    assert (WINTUN_MIN_RING_CAPACITY, WINTUN_MAX_RING_CAPACITY) == (0x20000, 0x4000000)
    assert WINTUN_MAX_IP_PACKET_SIZE == 0xFFFF
    assert DEFAULT_RING_CAPACITY == 0x800000


def test_utf16_buffers_are_two_bytes_per_unit() -> None:
    buf = _utf16z("wé\U0001f600", "name")
    assert ctypes.sizeof(buf) == 2 * 5  # w, é, surrogate pair, NUL
    assert list(buf) == [0x77, 0xE9, 0xD83D, 0xDE00, 0]
    with pytest.raises(ValueError):
        _utf16z("a\0b", "name")


def test_errors_are_named_from_the_one_win32_table() -> None:
    err = WintunError("WintunOpenAdapter", ErrorCode.ERROR_NOT_FOUND)
    assert str(err) == "WintunOpenAdapter failed: ERROR_NOT_FOUND (1168)"
    assert "error 0x0000BEEF" in str(WintunError("WintunOpenAdapter", 0xBEEF))


def test_incomplete_library_is_rejected(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("needs gcc to build a stub library")
    src = tmp_path / "stub.c"
    src.write_text("unsigned WintunTestGetLastError(void) { return 0; }\n")
    so = tmp_path / "libstub.so"
    subprocess.run([gcc, "-shared", "-fPIC", "-o", str(so), str(src)], check=True)
    with pytest.raises(OSError, match="missing export WintunCreateAdapter"):
        WintunLibrary(so)
    with pytest.raises(OSError):
        WintunLibrary(tmp_path / "does-not-exist.so")


# ---------------------------------------------------------------------------
# Against the double
# ---------------------------------------------------------------------------


def test_driver_version_and_not_loaded(lib: WintunLibrary) -> None:
    assert lib.running_driver_version() == 0x0000000E  # 0.14
    lib.dll.WintunTestSetDriverLoaded(0)
    try:
        with pytest.raises(WintunError) as info:
            lib.running_driver_version()
        assert info.value.error_code == ErrorCode.ERROR_FILE_NOT_FOUND
    finally:
        lib.dll.WintunTestSetDriverLoaded(1)


def test_satisfies_tun_device_protocol(lib: WintunLibrary, fresh_netns: str) -> None:
    with tun_in(fresh_netns, lib) as tun:
        assert isinstance(tun, TunDevice)
        assert tun.mtu == 1420
        assert tun.fileno() >= 0
        assert tun.read_batch() == []  # link down, nothing queued: non-blocking
        assert not tun.closed


def test_socket_to_receive_packet(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns, lib) as tun:
        _configure(ns, tun.name, "10.71.0.1", "fd71::1")
        for family, dst, payload in (
            (socket.AF_INET, "10.71.0.2", b"hello over v4"),
            (socket.AF_INET6, "fd71::2", b"hello over v6"),
        ):
            with _udp_socket(ns, family) as sock:
                sock.sendto(payload, (dst, 9999))
                packet = read_until(tun, carrying(payload))
            info = udp_payload(packet)
            assert info is not None
            assert info[1:] == (dst, 9999, payload)

        # The ring primitives directly: receive, look, release.
        with _udp_socket(ns, socket.AF_INET) as sock:
            sock.sendto(b"raw ring", ("10.71.0.2", 7777))
            deadline = time.monotonic() + WAIT
            found = None
            while found is None and time.monotonic() < deadline:
                received = tun.session.receive_packet()
                if received is None:
                    tun.session.wait_readable(0.2)
                    continue
                with received:
                    data = received.tobytes()
                    assert bytes(received.view()) == data
                    assert received.size == len(data)
                    if (info := udp_payload(data)) and info[3] == b"raw ring":
                        found = info
                assert received.released
            assert found is not None and found[2] == 7777


def test_send_packet_to_socket(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns, lib) as tun:
        _configure(ns, tun.name, "10.72.0.1", "fd72::1")
        with (
            _udp_socket(ns, socket.AF_INET, ("10.72.0.1", 5001)) as s4,
            _udp_socket(ns, socket.AF_INET6, ("fd72::1", 5001)) as s6,
        ):
            s4.settimeout(WAIT)
            s6.settimeout(WAIT)
            tun.write_batch(
                [
                    udp_packet("10.72.0.2", "10.72.0.1", 4000, 5001, b"v4 via write_batch"),
                    memoryview(udp_packet("fd72::2", "fd72::1", 4000, 5001, b"v6 via write_batch")),
                ]
            )
            assert s4.recvfrom(2048) == (b"v4 via write_batch", ("10.72.0.2", 4000))
            data, addr = s6.recvfrom(2048)
            assert (data, addr[:2]) == (b"v6 via write_batch", ("fd72::2", 4000))

            # Allocate/fill/send by hand.
            packet = udp_packet("10.72.0.3", "10.72.0.1", 4001, 5001, b"by hand")
            buffer = tun.session.allocate_send_packet(len(packet))
            buffer.write(packet)
            buffer.send()
            assert buffer.sent
            assert s4.recvfrom(2048) == (b"by hand", ("10.72.0.3", 4001))
            assert tun.session.send(udp_packet("10.72.0.4", "10.72.0.1", 1, 5001, b"send()"))
            assert s4.recvfrom(2048) == (b"send()", ("10.72.0.4", 1))
        assert tun.stats == {}


def test_non_ascii_utf16_names_round_trip(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    token = os.urandom(2).hex()
    for name in (f"wé✓{token}", f"t\U0001f600{token}"):  # BMP and a surrogate pair
        with tun_in(ns, lib, name) as tun:
            links = _links(ns)
            assert name in links  # the UTF-16 name became this exact UTF-8 ifname
            luid = tun.adapter.luid()
            assert luid == (53 << 48) | (links[name] << 24)
            # Open finds it by name (ASCII letters compared without case).
            other = lib.open_adapter("".join(c.upper() if c.isascii() else c for c in name))
            try:
                assert other.luid() == luid
                assert not other.created
            finally:
                other.close()
            assert name in _links(ns)  # closing an opened handle keeps the adapter
        assert name not in _links(ns)  # closing the creating handle removes it


def test_name_errors(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    cases = {
        "x" * 128: ErrorCode.ERROR_BUFFER_OVERFLOW,  # > MAX_ADAPTER_NAME - 1 units
        "sixteen-bytes-xx": 123,  # ERROR_INVALID_NAME: the double's Linux limit
        "\ud800lone": 123,  # an unpaired surrogate passes the shim, the DLL refuses it
        "": 123,
    }
    for name, code in cases.items():
        with pytest.raises(WintunError) as info:
            call_in_ns(ns, lib.create_adapter, name)
        assert info.value.error_code == code, name
    with pytest.raises(WintunError) as info:
        call_in_ns(ns, lib.create_adapter, "ok", "T" * 121)  # "<type> Tunnel" too long
    assert info.value.error_code == ErrorCode.ERROR_BUFFER_OVERFLOW
    with pytest.raises(ValueError):
        lib.create_adapter("a\0b")
    with pytest.raises(WintunError) as info:
        lib.open_adapter("no-such-adapter")
    assert info.value.error_code == ErrorCode.ERROR_NOT_FOUND
    with tun_in(ns, lib) as tun:
        with pytest.raises(WintunError) as info:
            call_in_ns(ns, lib.create_adapter, tun.name)
        assert info.value.error_code == ErrorCode.ERROR_ALREADY_EXISTS


def test_guid_is_passed(lib: WintunLibrary, fresh_netns: str) -> None:
    name = unique_ifname("wg")
    adapter = call_in_ns(
        fresh_netns, lib.create_adapter, name, "Example", uuid.UUID(int=0xDEADC001)
    )
    try:
        assert adapter.created and adapter.luid() >> 48 == 53
    finally:
        adapter.close()


def test_bad_ring_capacity(lib: WintunLibrary, fresh_netns: str) -> None:
    adapter = call_in_ns(fresh_netns, lib.create_adapter, unique_ifname("wc"))
    try:
        for bad in (0, 0x10000, 0x30000, 0x8000000):
            # The shim refuses before calling ...
            with pytest.raises(ValueError):
                adapter.start_session(bad)
            # ... and the DLL double refuses too when called directly.
            assert not lib.dll.WintunStartSession(adapter.handle, bad)
            assert lib.last_error() == ErrorCode.ERROR_INVALID_PARAMETER
        with adapter.start_session(SMALL) as session:
            with pytest.raises(WintunError) as info:
                adapter.start_session(SMALL)  # one session per adapter
            assert info.value.error_code == ErrorCode.ERROR_ALREADY_INITIALIZED
            assert not session.ended
        assert session.ended
    finally:
        adapter.close()


def test_null_and_closed_handles(lib: WintunLibrary, fresh_netns: str) -> None:
    dll = lib.dll
    assert not dll.WintunStartSession(None, SMALL)
    assert lib.last_error() == ErrorCode.ERROR_INVALID_HANDLE
    assert not dll.WintunGetReadWaitEvent(None)
    assert lib.last_error() == ErrorCode.ERROR_INVALID_HANDLE
    size = ctypes.c_uint32()
    assert not dll.WintunReceivePacket(None, ctypes.byref(size))
    assert lib.last_error() == ErrorCode.ERROR_INVALID_HANDLE
    assert not dll.WintunAllocateSendPacket(None, 20)
    assert lib.last_error() == ErrorCode.ERROR_INVALID_HANDLE
    dll.WintunCloseAdapter(None)  # documented no-op

    adapter = call_in_ns(fresh_netns, lib.create_adapter, unique_ifname("wn"))
    stale = adapter.handle
    adapter.close()
    adapter.close()  # idempotent
    with pytest.raises(TunClosed):
        adapter.start_session(SMALL)
    with pytest.raises(TunClosed):
        adapter.luid()
    # A stale handle reaching the DLL is refused, not dereferenced.
    assert not dll.WintunStartSession(stale, SMALL)
    assert lib.last_error() == ErrorCode.ERROR_INVALID_HANDLE
    luid = ctypes.c_uint64(0)
    dll.WintunGetAdapterLUID(stale, ctypes.byref(luid))
    assert luid.value == 0
    assert lib.last_error() == ErrorCode.ERROR_INVALID_HANDLE


def test_delete_driver_only_when_unused(lib: WintunLibrary, fresh_netns: str) -> None:
    with tun_in(fresh_netns, lib):
        with pytest.raises(WintunError) as info:
            lib.delete_driver()
        assert info.value.error_code == ErrorCode.ERROR_INF_IN_USE_BY_DEVICES
    lib.delete_driver()


def test_oversize_packets(lib: WintunLibrary, fresh_netns: str) -> None:
    with tun_in(fresh_netns, lib) as tun:
        with pytest.raises(ValueError):
            tun.session.allocate_send_packet(WINTUN_MAX_IP_PACKET_SIZE + 1)
        assert not lib.dll.WintunAllocateSendPacket(tun.session._live_handle(), 0x10000)
        assert lib.last_error() == ErrorCode.ERROR_INVALID_PARAMETER
        tun.write_batch([bytes(WINTUN_MAX_IP_PACKET_SIZE + 1)])
        assert tun.stats == {"write_oversize": 1}
        # 0xFFFF itself is allowed.
        tun.session.allocate_send_packet(WINTUN_MAX_IP_PACKET_SIZE).send()


def test_send_ring_full_drops_and_recovers(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns, lib, capacity=SMALL) as tun:
        _configure(ns, tun.name, "10.73.0.1", "fd73::1")
        session = tun.session
        with _udp_socket(ns, socket.AF_INET, ("10.73.0.1", 6000)) as sock:
            # A held (allocated, unsent) packet blocks everything allocated after it.
            first = udp_packet("10.73.0.2", "10.73.0.1", 1, 6000, b"first")
            held = session.allocate_send_packet(len(first))
            held.write(first)
            tun.write_batch([udp_packet("10.73.0.2", "10.73.0.1", 2, 6000, b"second")])
            sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                sock.recv(2048)  # "second" waits behind "first"

            # Fill the rest of the ring with further held allocations.
            fillers = []
            for size in (WINTUN_MAX_IP_PACKET_SIZE, 4096, 256, 0):
                while True:
                    try:
                        fillers.append(session.allocate_send_packet(size))
                    except WintunRingFull as exc:
                        assert exc.error_code == ErrorCode.ERROR_BUFFER_OVERFLOW
                        break
            assert fillers
            tun.write_batch([udp_packet("10.73.0.2", "10.73.0.1", 3, 6000, b"dropped")])
            assert tun.stats == {"write_ring_full": 1}
            assert not session.send(b"\x45" + bytes(19))

            # Commit everything: "first" then "second" arrive, in order; the garbage
            # fillers are refused by the kernel (counted by the double).
            held.send()
            for filler in fillers:
                filler.send()
            sock.settimeout(WAIT)
            assert sock.recv(2048) == b"first"
            assert sock.recv(2048) == b"second"
            assert _double_stats(lib, session._live_handle())[1] == len(fillers)
            tun.write_batch([udp_packet("10.73.0.2", "10.73.0.1", 4, 6000, b"after")])
            assert sock.recv(2048) == b"after"


def test_receive_ring_full_drops_and_recovers(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns, lib, capacity=SMALL) as tun:
        _configure(ns, tun.name, "10.74.0.1", "fd74::1")
        session = tun.session
        count = 200  # 200 x 1028-byte packets > a 128 KiB ring
        with _udp_socket(ns, socket.AF_INET) as sock:
            for i in range(count):
                sock.sendto(i.to_bytes(4, "big") + bytes(996), ("10.74.0.2", 9000))
            assert session.wait_readable(WAIT)
            held = []
            while (packet := session.receive_packet()) is not None:
                held.append(packet)  # never released: the ring fills up
            ours = [p for p in held if (info := udp_payload(p.tobytes())) and info[2] == 9000]
            rx_dropped, _ = _double_stats(lib, session._live_handle())
            assert 0 < len(ours) < count
            assert rx_dropped > 0
            # Packets released out of order still free the ring.
            for packet in reversed(held):
                packet.release()
                packet.release()  # idempotent in the shim
            sock.sendto(b"after release", ("10.74.0.2", 9000))
            read_until(tun, carrying(b"after release"))


def test_read_event_wakes_waiter_and_can_be_signalled(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns, lib) as tun:
        _configure(ns, tun.name, "10.75.0.1", "fd75::1")
        while tun.read_batch():  # drain router solicitations and the like
            pass
        assert not tun.session.wait_readable(0)
        woke = threading.Event()

        def waiter() -> None:
            tun.session.wait_readable(None)
            woke.set()

        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        assert tun.session.signal_read_event()  # SetEvent
        thread.join(WAIT)
        assert woke.is_set()
        tun.read_batch()  # resets the signal (auto-reset semantics)
        assert not tun.session.wait_readable(0)
        with _udp_socket(ns, socket.AF_INET) as sock:
            sock.sendto(b"wake", ("10.75.0.2", 1))
            assert tun.session.wait_readable(WAIT)


def test_eof_after_interface_deleted(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    with tun_in(ns, lib) as tun:
        ip(ns, "link", "del", tun.name)
        assert tun.session.wait_readable(WAIT)  # a vanished TUN makes the event ready
        with pytest.raises(TunClosed):
            tun.read_batch()
        assert tun.closed
        with pytest.raises(TunClosed):
            tun.write_batch([b"\x45" + bytes(19)])
    # The session on its own reports EOF on both sides.
    with tun_in(ns, lib) as tun:
        ip(ns, "link", "del", tun.name)
        with pytest.raises(TunClosed):
            tun.session.allocate_send_packet(20)
        with pytest.raises(TunClosed):
            tun.session.receive_packet()


def test_eof_when_creating_handle_closed_under_session(
    lib: WintunLibrary, fresh_netns: str
) -> None:
    adapter = call_in_ns(fresh_netns, lib.create_adapter, unique_ifname("we"))
    session = adapter.start_session(SMALL)
    try:
        adapter.close()
        with pytest.raises(TunClosed):
            session.receive_packet()
        with pytest.raises(TunClosed):
            session.allocate_send_packet(20)
    finally:
        session.end()
    with pytest.raises(TunClosed):
        session.receive_packet()  # ended: refused before reaching the DLL


def test_corrupt_ring_is_an_error(lib: WintunLibrary, fresh_netns: str) -> None:
    with tun_in(fresh_netns, lib) as tun:
        lib.dll.WintunTestCorruptRing(tun.session._live_handle())
        with pytest.raises(WintunError) as info:
            tun.read_batch()
        assert info.value.error_code == ErrorCode.ERROR_INVALID_DATA
        assert tun.stats == {"read_error_13": 1}


def test_close_semantics(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    tun = call_in_ns(ns, WintunTun.create, lib, unique_ifname("wx"), ring_capacity=SMALL)
    name = tun.name
    assert name in _links(ns)
    tun.close()
    tun.close()
    assert tun.closed
    assert tun.fileno() == -1
    assert tun.session.ended and tun.adapter.closed
    assert name not in _links(ns)
    with pytest.raises(TunClosed):
        tun.read_batch()
    with pytest.raises(TunClosed):
        tun.write_batch([])


def test_logger_gets_utf16_lines(lib: WintunLibrary, fresh_netns: str) -> None:
    lines: list[tuple[WintunLogLevel, int, str]] = []
    lock = threading.Lock()

    def logger(level: WintunLogLevel, timestamp: int, message: str) -> None:
        with lock:
            lines.append((level, timestamp, message))

    lib.set_logger(logger)
    try:
        with pytest.raises(WintunError):
            lib.open_adapter("nobody")
        name = f"lé{os.urandom(2).hex()}"
        with tun_in(fresh_netns, lib, name):
            pass
    finally:
        lib.set_logger(None)
    with pytest.raises(WintunError):
        lib.open_adapter("nobody")  # logged to no one now
    levels = [line[0] for line in lines]
    assert levels == [WintunLogLevel.ERR, WintunLogLevel.INFO]
    assert lines[0][2].endswith("Code 0x00000490")  # ERROR_NOT_FOUND = 1168
    assert name in lines[1][2]  # non-ASCII text survives UTF-8 -> UTF-16 -> str
    now = filetime_from_unix_ns(time.time_ns())
    day = 24 * 3600 * 10**7
    assert all(now - day < ts < now + day for _, ts, _ in lines)


def test_logger_exceptions_do_not_escape(lib: WintunLibrary) -> None:
    def broken(level: WintunLogLevel, timestamp: int, message: str) -> None:
        raise RuntimeError("logger bug")

    lib.set_logger(broken)
    try:
        with pytest.raises(WintunError) as info:
            lib.open_adapter("nobody")
        assert info.value.error_code == ErrorCode.ERROR_NOT_FOUND
    finally:
        lib.set_logger(None)


def test_no_fd_leaks(lib: WintunLibrary, fresh_netns: str) -> None:
    ns = fresh_netns
    before = _open_fds()
    for _ in range(3):
        with tun_in(ns, lib) as tun:
            _configure(ns, tun.name, "10.76.0.1", "fd76::1")
            tun.write_batch([udp_packet("10.76.0.2", "10.76.0.1", 1, 9, b"x")])
            tun.read_batch()
            with pytest.raises(WintunError):
                call_in_ns(ns, lib.create_adapter, tun.name)  # duplicate
            with pytest.raises(WintunError):
                tun.adapter.start_session(SMALL)  # second session
        adapter = call_in_ns(ns, lib.create_adapter, unique_ifname("wl"))
        session = adapter.start_session(SMALL)
        ip(ns, "link", "del", adapter.name)
        with pytest.raises(TunClosed):
            session.receive_packet()
        session.end()
        adapter.close()
    assert _open_fds() == before
