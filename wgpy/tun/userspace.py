"""The inner side of an adapter without a kernel device (``WGPY_ADAPTER=userspace``).

A :class:`UserspaceTun` is a :class:`~wgpy.tun.base.TunDevice` that needs no
TUN, no Wintun and no privilege.  What the engine decrypts arrives at a small
IP host (:class:`IpHost`) instead of a kernel stack:

* ICMP and ICMPv6 echo requests to one of the adapter's addresses are
  answered;
* UDP datagrams to an address and port a :class:`TunnelSocket` is bound to
  are queued for it (checksums verified), and the socket sends datagrams into
  the tunnel (checksums computed);
* with a :class:`PacketSession` open (Wintun's session calls in shape), raw IP
  packets go to and come from the caller: everything, or what the built-in
  host does not handle;
* anything else is dropped and counted in :attr:`UserspaceTun.stats`.

The adapter state is a flag here (there is no link): :meth:`UserspaceTun.set_up`.
Thread-safe: the engine's loop reads and writes while callers use sockets and
sessions from their own threads.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from wgpy.constants import DEFAULT_MTU, IO_BATCH_SIZE
from wgpy.inet import (
    PROTO_ICMP,
    PROTO_ICMP6,
    PROTO_UDP,
    echo_checksum_ok,
    echo_reply_for,
    parse_echo,
    parse_ip,
    parse_udp,
    udp_packet,
)
from wgpy.tun.base import ReadySignal, TunClosed

__all__ = [
    "IpHost",
    "PacketSession",
    "TunnelSocket",
    "UserspaceTun",
    "parse_addresses",
]

Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: Packets a session holds before new ones are dropped (Wintun's ring holds
#: 128 KiB to 64 MiB; counted in packets here).
SESSION_CAPACITY_DEFAULT = 4096
SESSION_CAPACITY_MAX = 1 << 20
#: Datagrams a tunnel socket holds before new ones are dropped.
SOCKET_QUEUE_MAX = 4096
#: Packets waiting to enter the tunnel before new ones are dropped.
OUTBOUND_QUEUE_MAX = 8192
#: First port tried for an ephemeral bind (the IANA dynamic range).
_EPHEMERAL_FIRST = 49152


def parse_addresses(text: str | Iterable[str]) -> list[Interface]:
    """Adapter addresses from CIDR strings (``"10.0.0.2/24,fd00::2/64"`` or a
    list); a bare address means a host prefix.  ValueError names the bad one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out: list[Interface] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_interface(item))
        except ValueError:
            raise ValueError(f"not an address with prefix: {item!r}") from None
    return out


class IpHost:
    """The IP host behind a userspace adapter: which addresses are ours and
    what to do with a packet for them.  No threads and no I/O: the owner
    (:class:`UserspaceTun`) serialises calls."""

    def __init__(self, addresses: Iterable[Interface] = ()) -> None:
        self._addresses: list[Interface] = list(addresses)
        self._local = {a.ip.packed for a in self._addresses}

    @property
    def addresses(self) -> list[Interface]:
        """The adapter's addresses with their prefixes."""
        return list(self._addresses)

    def set_addresses(self, addresses: Iterable[Interface]) -> None:
        """Replace the adapter's addresses."""
        self._addresses = list(addresses)
        self._local = {a.ip.packed for a in self._addresses}

    def is_local(self, packed: bytes) -> bool:
        """Whether a packed address is one of ours."""
        return packed in self._local

    def source_for(self, destination: bytes) -> bytes | None:
        """Our address to send to ``destination`` from: one whose prefix
        contains it, else the first of the same family; None if none."""
        dst = ipaddress.ip_address(destination)
        same = [a for a in self._addresses if a.version == dst.version]
        for a in same:
            if dst in a.network:
                return a.ip.packed
        return same[0].ip.packed if same else None


class TunnelSocket:
    """A UDP socket on the tunnel side of a userspace adapter, for Python
    callers: addresses are tunnel addresses, datagrams travel through the
    WireGuard session.  Made by :meth:`UserspaceTun.udp_socket`.

    ``family`` is ``socket.AF_INET`` or ``socket.AF_INET6``.  Not bound, it
    binds to an ephemeral port on first :meth:`sendto`.  :meth:`fileno` is
    readable while datagrams are queued (for ``select``).
    """

    def __init__(self, tun: UserspaceTun, family: int) -> None:
        if family not in (socket.AF_INET, socket.AF_INET6):
            raise ValueError("family must be AF_INET or AF_INET6")
        self._tun = tun
        self.family = family
        self._local: tuple[bytes | None, int] | None = None
        self._queue: deque[tuple[bytes, tuple[str, int]]] = deque()
        self._ready = ReadySignal()
        self._cond = threading.Condition(tun.lock)
        self._timeout: float | None = None
        self._closed = False
        #: Datagrams dropped because the queue was full.
        self.dropped = 0

    # -- address -------------------------------------------------------------------

    def bind(self, address: tuple[str, int]) -> None:
        """Bind to (address, port): "" for any of the adapter's addresses of this
        family, port 0 for an ephemeral one.  OSError EADDRINUSE/EADDRNOTAVAIL."""
        host, port = address
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
        packed: bytes | None = None
        if host:
            ip = ipaddress.ip_address(host)
            if (ip.version == 4) != (self.family == socket.AF_INET):
                raise OSError(97, "address family does not match the socket")  # EAFNOSUPPORT
            packed = ip.packed
        self._tun._bind(self, packed, port)

    def getsockname(self) -> tuple[str, int]:
        """(address, port) bound; ("", 0) before a bind."""
        if self._local is None:
            return "", 0
        packed, port = self._local
        return (str(ipaddress.ip_address(packed)) if packed else ""), port

    # -- sending and receiving ------------------------------------------------------

    def sendto(self, data: bytes | bytearray | memoryview, address: tuple[str, int]) -> int:
        """Send one datagram to (tunnel address, port); returns its length.
        OSError EMSGSIZE if the packet would exceed the adapter MTU (no
        fragmentation), EDESTADDRREQ without a source address of this family."""
        host, port = address[0], address[1]
        dst = ipaddress.ip_address(host)
        if (dst.version == 4) != (self.family == socket.AF_INET):
            raise OSError(97, "address family does not match the socket")
        if not 0 < port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
        if self._local is None:
            self.bind(("", 0))
        return self._tun._send_udp(self, bytes(data), dst.packed, port)

    def settimeout(self, timeout: float | None) -> None:
        """Timeout of :meth:`recvfrom` (None: block; 0: non-blocking)."""
        self._timeout = timeout

    def recvfrom(self, bufsize: int = 65535) -> tuple[bytes, tuple[str, int]]:
        """The next datagram and its (source address, port); TimeoutError after
        the socket's timeout, BlockingIOError when non-blocking and empty."""
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        with self._cond:
            while not self._queue:
                if self._closed:
                    raise OSError(9, "socket is closed")  # EBADF
                if deadline is None:
                    self._cond.wait()
                    continue
                left = deadline - time.monotonic()
                if self._timeout == 0:
                    raise BlockingIOError(11, "no datagram waiting")
                if left <= 0:
                    raise TimeoutError("timed out")
                self._cond.wait(left)
            data, source = self._queue.popleft()
            if not self._queue:
                self._ready.clear()
        return data[:bufsize], source

    def fileno(self) -> int:
        """Readable while datagrams are queued; -1 once closed."""
        return -1 if self._closed else self._ready.fileno()

    def _deliver(self, data: bytes, source: tuple[str, int]) -> bool:
        """Queue a datagram (the owner holds the lock); False when full."""
        if len(self._queue) >= SOCKET_QUEUE_MAX:
            self.dropped += 1
            return False
        self._queue.append((data, source))
        self._ready.set()
        self._cond.notify_all()
        return True

    def close(self) -> None:
        """Release the port; idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._tun._unbind(self)
            self._queue.clear()
            self._cond.notify_all()
        self._ready.close()

    def __enter__(self) -> TunnelSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PacketSession:
    """Raw inner IP packets to and from the caller, shaped like a Wintun
    session: :meth:`receive_packet` (None when empty, as Wintun's
    ERROR_NO_MORE_ITEMS), :meth:`send_packet`, and a read-wait descriptor
    (:meth:`fileno`, readable while packets wait; on Windows also an event
    handle, :meth:`read_wait_event`).  Made by :meth:`UserspaceTun.start_session`.

    With ``take_over`` every packet from the tunnel comes here; without it
    the built-in host keeps what it handles (echo to our addresses, UDP to a
    bound port) and the session gets the rest.
    """

    def __init__(self, tun: UserspaceTun, capacity: int, take_over: bool) -> None:
        if not 1 <= capacity <= SESSION_CAPACITY_MAX:
            raise ValueError(f"capacity must be 1..{SESSION_CAPACITY_MAX} packets")
        self._tun = tun
        self.capacity = capacity
        self.take_over = take_over
        self._queue: deque[bytes] = deque()
        self._ready = ReadySignal()
        self._cond = threading.Condition(tun.lock)
        self._event = _WindowsEvent() if sys.platform == "win32" else None
        self._ended = False
        #: Packets dropped because the session was full.
        self.dropped = 0

    @property
    def ended(self) -> bool:
        """True after :meth:`end` (or once the adapter closed)."""
        return self._ended

    def receive_packet(self) -> bytes | None:
        """The next packet from the tunnel, or None if none is waiting."""
        with self._cond:
            if self._ended:
                raise OSError(9, "session ended")
            if not self._queue:
                return None
            packet = self._queue.popleft()
            if not self._queue:
                self._ready.clear()
                if self._event is not None:
                    self._event.reset()
            return packet

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a packet waits (True) or ``timeout`` passes (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._queue and not self._ended:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return bool(self._queue)

    def send_packet(self, packet: bytes | bytearray | memoryview) -> None:
        """Send one IP packet into the tunnel (the engine routes it by its
        destination).  ValueError if it is not an IP packet or exceeds the MTU."""
        data = bytes(packet)
        if parse_ip(data) is None:
            raise ValueError("not a well-formed IPv4 or IPv6 packet")
        if len(data) > self._tun.mtu:
            raise ValueError(f"packet of {len(data)} bytes exceeds the MTU ({self._tun.mtu})")
        with self._cond:
            if self._ended:
                raise OSError(9, "session ended")
        self._tun._queue_out(data)

    def fileno(self) -> int:
        """Readable while packets wait; -1 once ended."""
        return -1 if self._ended else self._ready.fileno()

    def read_wait_event(self) -> int:
        """Windows: the event handle signalled while packets wait (Wintun's
        WintunGetReadWaitEvent).  Elsewhere: the same as :meth:`fileno`."""
        if self._event is not None:
            return self._event.handle
        return self.fileno()

    def _deliver(self, packet: bytes) -> None:
        """Queue a packet from the tunnel (the owner holds the lock)."""
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            self._tun._count("session_full")
            return
        self._queue.append(packet)
        self._ready.set()
        if self._event is not None:
            self._event.set()
        self._cond.notify_all()

    def end(self) -> None:
        """End the session (WintunEndSession); idempotent."""
        with self._cond:
            if self._ended:
                return
            self._ended = True
            self._queue.clear()
            self._tun._end_session(self)
            self._cond.notify_all()
        self._ready.close()
        if self._event is not None:
            self._event.close()

    def __enter__(self) -> PacketSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.end()


class _WindowsEvent:
    """A manual-reset Win32 event (kernel32), for C callers that wait with
    WaitForSingleObject as they do on a Wintun session."""

    def __init__(self) -> None:
        import ctypes

        self._k32: Any = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        self._k32.CreateEventW.restype = ctypes.c_void_p
        self._k32.CreateEventW.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_wchar_p,
        ]
        for name in ("SetEvent", "ResetEvent", "CloseHandle"):
            getattr(self._k32, name).argtypes = [ctypes.c_void_p]
        handle = self._k32.CreateEventW(None, 1, 0, None)
        if not handle:
            raise OSError(ctypes.get_last_error(), "CreateEventW failed")  # type: ignore[attr-defined]
        self.handle = int(handle)

    def set(self) -> None:
        self._k32.SetEvent(self.handle)

    def reset(self) -> None:
        self._k32.ResetEvent(self.handle)

    def close(self) -> None:
        if self.handle:
            self._k32.CloseHandle(self.handle)
            self.handle = 0


class UserspaceTun:
    """A :class:`~wgpy.tun.base.TunDevice` with no kernel device behind it
    (see the module docstring).  Addresses are CIDRs as for
    :func:`parse_addresses`."""

    stats: dict[str, int]

    def __init__(
        self, name: str, mtu: int = DEFAULT_MTU, addresses: str | Iterable[str] = ()
    ) -> None:
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} outside 68..65535")
        self._name = name
        self._mtu = mtu
        self.stats = {}
        self.lock = threading.RLock()
        self.host = IpHost(parse_addresses(addresses))
        self._out: deque[bytes] = deque()
        self._ready = ReadySignal()
        self._sockets: dict[tuple[int, bytes | None, int], TunnelSocket] = {}
        self._session: PacketSession | None = None
        self._up = False
        self._closed = False

    # -- TunDevice -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The adapter's interface name."""
        return self._name

    @property
    def mtu(self) -> int:
        """The MTU the engine pads to and senders are held to."""
        return self._mtu

    def set_mtu(self, mtu: int) -> None:
        """Change the MTU (the engine follows on its next poll)."""
        if not 68 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu} outside 68..65535")
        self._mtu = mtu

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def fileno(self) -> int:
        """Readable while packets wait to enter the tunnel; -1 once closed."""
        return -1 if self._closed else self._ready.fileno()

    def read_batch(self, max_packets: int = IO_BATCH_SIZE) -> list[bytes]:
        """Packets for the tunnel (echo replies, socket and session sends)."""
        with self.lock:
            if self._closed:
                raise TunClosed(f"userspace adapter {self._name} is closed")
            out = self._out
            batch = [out.popleft() for _ in range(min(max_packets, len(out)))]
            if not out:
                self._ready.clear()
            return batch

    def write_batch(self, packets: Sequence[bytes | memoryview]) -> None:
        """Packets from the tunnel, for the host, the sockets and the session."""
        with self.lock:
            if self._closed:
                raise TunClosed(f"userspace adapter {self._name} is closed")
            for packet in packets:
                self._inbound(bytes(packet))

    def close(self) -> None:
        """End the session, close the sockets and the device; idempotent."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            session, self._session = self._session, None
            sockets = list(self._sockets.values())
            self._out.clear()
        if session is not None:
            session.end()
        for sock in sockets:
            sock.close()
        self._ready.close()

    # -- the adapter state (no link: a flag) ---------------------------------------------

    def is_up(self) -> bool:
        """The adapter state (WireGuardSetAdapterState)."""
        return self._up and not self._closed

    def set_up(self, up: bool) -> None:
        """Set the adapter state."""
        self._up = bool(up)

    # -- the host -----------------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        """The adapter's addresses as CIDR strings."""
        return [str(a) for a in self.host.addresses]

    def set_addresses(self, addresses: str | Iterable[str]) -> None:
        """Replace the adapter's addresses (ValueError for a bad one; nothing
        changes then)."""
        parsed = parse_addresses(addresses)
        with self.lock:
            self.host.set_addresses(parsed)

    def udp_socket(self, family: int = socket.AF_INET) -> TunnelSocket:
        """A new UDP socket on the tunnel side."""
        if self._closed:
            raise OSError(9, "adapter is closed")
        return TunnelSocket(self, family)

    def start_session(
        self, capacity: int = SESSION_CAPACITY_DEFAULT, *, take_over: bool = False
    ) -> PacketSession:
        """Open the packet session (one at a time, as with Wintun: OSError
        EBUSY if one is open)."""
        with self.lock:
            if self._closed:
                raise OSError(9, "adapter is closed")
            if self._session is not None:
                raise OSError(16, "a packet session is already open")  # EBUSY
            self._session = PacketSession(self, capacity, take_over)
            return self._session

    # -- internals -----------------------------------------------------------------------

    def _count(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1

    def _queue_out(self, packet: bytes) -> None:
        with self.lock:
            if self._closed:
                raise OSError(9, "adapter is closed")
            if len(self._out) >= OUTBOUND_QUEUE_MAX:
                self._count("outbound_full")
                return
            self._out.append(packet)
            self._ready.set()

    def _inbound(self, packet: bytes) -> None:
        """One decrypted packet (the lock is held)."""
        session = self._session
        if session is not None and session.take_over:
            session._deliver(packet)
            return
        if not self._host_handles(packet) and session is not None:
            session._deliver(packet)

    def _host_handles(self, packet: bytes) -> bool:
        """Let the built-in host take the packet; False if it is not for it
        (then counted as dropped unless a session takes it)."""
        ip = parse_ip(packet)
        if ip is None:
            return self._drop("not_ip")
        if not self.host.is_local(ip.dst):
            return self._drop("not_our_address")
        if ip.proto in (PROTO_ICMP, PROTO_ICMP6):
            echo = parse_echo(packet, ip)
            if echo is None or echo.reply:
                return self._drop("icmp_not_echo_request")
            if not echo_checksum_ok(packet, ip):
                self._count("icmp_bad_checksum")
                return True
            self._out.append(echo_reply_for(packet, ip))
            self._ready.set()
            self._count("echo_answered")
            return True
        if ip.proto == PROTO_UDP:
            udp = parse_udp(packet, ip)
            if udp is None:
                self._count("udp_bad")
                return True
            family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            sock = self._sockets.get((family, udp.dst, udp.dport))
            if sock is None:
                sock = self._sockets.get((family, None, udp.dport))
            if sock is None:
                return self._drop("udp_no_socket")
            source = (str(ipaddress.ip_address(udp.src)), udp.sport)
            if not sock._deliver(udp.payload, source):
                self._count("udp_socket_full")
            return True
        return self._drop("unhandled_protocol")

    def _drop(self, reason: str) -> bool:
        if self._session is None:
            self._count(reason)
        return False

    def _bind(self, sock: TunnelSocket, packed: bytes | None, port: int) -> None:
        import errno

        with self.lock:
            if sock._local is not None:
                raise OSError(errno.EINVAL, "socket is already bound")
            if packed is not None and not self.host.is_local(packed):
                raise OSError(errno.EADDRNOTAVAIL, "not an address of this adapter")
            family = sock.family
            if port == 0:
                port = next(
                    (
                        p
                        for p in range(_EPHEMERAL_FIRST, 65536)
                        if not self._port_taken(family, packed, p)
                    ),
                    0,
                )
                if not port:
                    raise OSError(errno.EADDRINUSE, "no free port")
            elif self._port_taken(family, packed, port):
                raise OSError(errno.EADDRINUSE, "port in use")
            self._sockets[(family, packed, port)] = sock
            sock._local = (packed, port)

    def _port_taken(self, family: int, packed: bytes | None, port: int) -> bool:
        if packed is None:
            return any(f == family and p == port for f, _, p in self._sockets)
        return (family, packed, port) in self._sockets or (family, None, port) in self._sockets

    def _unbind(self, sock: TunnelSocket) -> None:
        if sock._local is not None:
            packed, port = sock._local
            self._sockets.pop((sock.family, packed, port), None)

    def _send_udp(self, sock: TunnelSocket, data: bytes, dst: bytes, port: int) -> int:
        import errno

        assert sock._local is not None
        packed, sport = sock._local
        with self.lock:
            src = packed or self.host.source_for(dst)
        if src is None:
            raise OSError(errno.EDESTADDRREQ, "the adapter has no address of this family")
        packet = udp_packet(src, sport, dst, port, data)
        if len(packet) > self._mtu:
            raise OSError(errno.EMSGSIZE, f"{len(packet)} bytes exceed the MTU ({self._mtu})")
        self._queue_out(packet)
        return len(data)

    def _end_session(self, session: PacketSession) -> None:
        if self._session is session:
            self._session = None

    def __repr__(self) -> str:
        return f"<UserspaceTun {self._name} {','.join(self.addresses) or 'no address'}>"
