"""UDP sockets for the WireGuard listen port (the network side of the I/O shell).

One IPv4 socket and one IPv6 socket (``IPV6_V6ONLY``) share the listen port,
as in wireguard-go.  Both are non-blocking, get large buffers, and (when
``sticky``) report the local address each datagram was sent to, so a reply
leaves from the address the peer used ("sticky source").

Kernel behaviour this module relies on (checked on Linux 6.18):

* Sending with an ``IP_PKTINFO``/``IPV6_PKTINFO`` source that is not (or no
  longer) a local address fails: IPv4 with ENETUNREACH (the route lookup
  finds no device owning the source), IPv6 with EINVAL; a source the route
  cannot use (e.g. 127.0.0.1 towards the LAN) gives EINVAL and a vanished
  interface index ENODEV.  The datagram is then resent without a source and
  the kernel picks one by route.
* With ``net.ipv6.conf.all.disable_ipv6=1`` an IPv6 socket still binds; only
  sends fail (EADDRNOTAVAIL, counted).  IPv6 is "unavailable" only when the
  socket cannot be created at all (EAFNOSUPPORT, ``ipv6.disable=1``).
* Unconnected UDP sockets do not report ICMP errors on receive, so a receive
  error other than EAGAIN is unexpected; it is counted and ends the batch.
* UDP GSO: one ``sendmsg`` with a ``UDP_SEGMENT`` cmsg sends up to 64
  equal-sized datagrams (the last may be shorter) to one address, also with
  an IP_PKTINFO/IPV6_PKTINFO source cmsg beside it.  Older kernels fail it
  with EIO when the egress device lacks checksum offload (6.18 does not: it
  checksums in software; xfrm still gives EIO); GSO is then switched off for
  the socket.  It fails with EINVAL when a segment would not fit the path
  MTU (a plain datagram would be fragmented).  Both are resent one by one.
* UDP GRO (``UDP_GRO`` socket option, used from Linux 5.12 as wireguard-go
  does): one receive may return several same-sized datagrams from one
  sender back to back, with their size in a ``(SOL_UDP, UDP_GRO)`` cmsg.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ..constants import (
    IO_BATCH_SIZE,
    UDP_BIND_PORT_ATTEMPTS,
    UDP_GSO_MAX_SEGMENTS,
    UDP_SOCKET_BUFFER_SIZE,
)
from ..endpoint import Endpoint

__all__ = ["UdpBind"]

log = logging.getLogger(__name__)

_LINUX = sys.platform.startswith("linux")

# Linux <bits/socket.h>, <linux/in.h> values the socket module may not export.
_SO_RCVBUFFORCE = 33
_SO_SNDBUFFORCE = 32
_SO_MARK = 36
_IP_PKTINFO = 8
_IPV6_RECVPKTINFO = 49
_IPV6_PKTINFO = 50
_SOL_UDP = 17
_UDP_SEGMENT = 103
_UDP_GRO = 104
# Plain ints: the socket module's enum members make hot-path arithmetic slow.
_IPPROTO_IP = int(socket.IPPROTO_IP)
_IPPROTO_IPV6 = int(socket.IPPROTO_IPV6)
_AF_INET = int(socket.AF_INET)
_MSG_TRUNC = int(socket.MSG_TRUNC)
_MSG_PEEK = int(socket.MSG_PEEK)

_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst (local), addr (header dst)
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
# CMSG_SPACE is POSIX-only (absent on Windows, where recvmsg is not used).
_CMSG_SPACE = getattr(socket, "CMSG_SPACE", lambda n: 16 + ((n + 7) & ~7))
_ANC_SIZE = _CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))
_GRO_ANC_SIZE = _CMSG_SPACE(4)  # UDP_GRO carries an int
#: Most datagrams the kernel merges into one GRO receive (UDP_GRO_CNT_MAX).
_GRO_MAX_SEGMENTS = 64
_INT = struct.Struct("=i")
_GSO_SIZE = struct.Struct("=H")
#: Largest UDP payload in one (GSO) send: 65535 minus IP and UDP headers.
_MAX_PAYLOAD = {int(socket.AF_INET): 65535 - 20 - 8, int(socket.AF_INET6): 65535 - 8}
_RECV_BUFFER_SIZE = 65536  # largest UDP payload plus one: MSG_TRUNC never hides data
_CACHE_MAX = 4096

#: Errors a send with a pinned source gets when that source is unusable.
#: ENETUNREACH is ambiguous (also "no route"); the retry without a source
#: then fails the same way and is counted as such.
_SOURCE_REFUSED = frozenset({errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.ENODEV})
#: Errors after which a GSO send is retried one datagram at a time.
_GSO_RETRY = _SOURCE_REFUSED | {errno.EIO, errno.EMSGSIZE}
#: Errors meaning IPv6 is absent from this kernel or namespace.
_NO_FAMILY = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT})


def _errname(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err)).lower()


def _gro_size(anc: list[tuple[int, int, bytes]]) -> int:
    """The segment size in a UDP_GRO cmsg, 0 without one."""
    for level, kind, data in anc:
        if level == _SOL_UDP and kind == _UDP_GRO:
            if len(data) >= 4:
                return int(_INT.unpack_from(data)[0])
            if len(data) >= 2:
                return int(_GSO_SIZE.unpack_from(data)[0])
    return 0


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def _probe_gso(sock: socket.socket) -> bool:
    """True when the socket accepts UDP_SEGMENT (TX offload), as wireguard-go probes."""
    try:
        sock.getsockopt(_SOL_UDP, _UDP_SEGMENT)
    except OSError:
        return False
    return True


def _enable_gro(sock: socket.socket) -> bool:
    """Turn on UDP_GRO; True when it reads back as on.  Linux >= 5.12 only."""
    if not _kernel_at_least(5, 12):
        return False
    try:
        sock.setsockopt(_SOL_UDP, _UDP_GRO, 1)
        return sock.getsockopt(_SOL_UDP, _UDP_GRO) == 1
    except OSError:
        return False


#: A classic BPF program for UDP sockets (offset 0 is the UDP header, so the
#: payload starts at 8; ``ldw`` loads big-endian): accept only datagrams whose
#: first word is a WireGuard type with zero reserved bytes and which are at
#: least that type's size (at least, not exactly: with UDP GRO the kernel
#: hands the filter coalesced trains; exact lengths are checked in Python).
#: Everything else is dropped before any Python runs.
WIREGUARD_FRAMING_FILTER: tuple[tuple[int, int, int, int], ...] = (
    (0x80, 0, 0, 0),  # 0: A = length (UDP header + payload)
    (0x02, 0, 0, 0),  # 1: M[0] = A
    (0x20, 0, 0, 8),  # 2: A = first payload word (big-endian)
    (0x15, 3, 0, 0x04000000),  # 3: transport -> 7
    (0x15, 4, 0, 0x01000000),  # 4: initiation -> 9
    (0x15, 5, 0, 0x02000000),  # 5: response -> 11
    (0x15, 6, 9, 0x03000000),  # 6: cookie reply -> 13, else drop
    (0x60, 0, 0, 0),  # 7: A = M[0]
    (0x35, 6, 7, 8 + 32),  # 8: >= header + tag -> accept
    (0x60, 0, 0, 0),  # 9
    (0x35, 4, 5, 8 + 148),  # 10
    (0x60, 0, 0, 0),  # 11
    (0x35, 2, 3, 8 + 92),  # 12
    (0x60, 0, 0, 0),  # 13
    (0x35, 0, 1, 8 + 64),  # 14
    (0x06, 0, 0, 0x7FFFFFFF),  # 15: accept the whole datagram
    (0x06, 0, 0, 0),  # 16: drop
)
_SO_ATTACH_FILTER = 26
_SO_ATTACH_REUSEPORT_CBPF = 51
#: Reuseport steering (offset 0 is the UDP payload here): transport messages
#: to socket 0 of the group, everything else to socket 1.
_REUSEPORT_STEER: tuple[tuple[int, int, int, int], ...] = (
    (0x30, 0, 0, 0),  # A = first payload byte (the type)
    (0x15, 0, 1, 4),  # transport?
    (0x06, 0, 0, 0),  # -> data socket
    (0x06, 0, 0, 1),  # -> handshake socket
)


#: Largest datagram a handshake-only socket needs: the biggest handshake
#: message is 148 bytes; anything longer there is junk (counted as truncated).
_HS_SLOT = 256
#: struct mmsghdr on 64-bit Linux: a 56-byte msghdr and the received length.
_MMSG = struct.Struct("=QI4xQQQQi4xI4x")
_MMSG_LEN_AT = 56
_MMSG_FLAGS_AT = 48
_MMSG_NAMELEN_AT = 8
_MMSG_CONTROLLEN_AT = 40
_SOCKADDR_SPACE = 28  # sockaddr_in6, the larger of the two
_U32 = struct.Struct("=I")
_MSG_DONTWAIT = 0x40


class _MmsgReader:
    """recvmmsg(2) through ctypes for one socket: up to ``slots`` datagrams of
    at most :data:`_HS_SLOT` bytes per system call into preallocated buffers,
    each with its source address and packet-info cmsg as raw bytes.  Used for
    handshake-only sockets, where a flood of junk must cost as little as
    possible: nothing is copied or parsed before the caller's screen accepts
    the datagram.  Linux on 64-bit only (:meth:`available`)."""

    _call: Any = None

    def __init__(self, fd: int, slots: int) -> None:
        import ctypes

        self._fd = fd
        self.slots = slots
        self.data = bytearray(_HS_SLOT * slots)
        self.names = bytearray(_SOCKADDR_SPACE * slots)
        self.controls = bytearray(_ANC_SIZE * slots)
        self._iovs = bytearray(16 * slots)
        self.headers = bytearray(_MMSG.size * slots)
        self._keep = [
            (ctypes.c_char * len(b)).from_buffer(b)
            for b in (self.data, self.names, self.controls, self._iovs, self.headers)
        ]
        data, names, controls, iovs, headers = (ctypes.addressof(k) for k in self._keep)
        self._headers_at = headers
        for i in range(slots):
            struct.pack_into("=QQ", self._iovs, 16 * i, data + _HS_SLOT * i, _HS_SLOT)
            _MMSG.pack_into(
                self.headers,
                _MMSG.size * i,
                names + _SOCKADDR_SPACE * i,
                _SOCKADDR_SPACE,
                iovs + 16 * i,
                1,
                controls + _ANC_SIZE * i,
                _ANC_SIZE,
                0,
                0,
            )
        self._template = bytes(self.headers)
        self.view = memoryview(self.data)
        self.headers_view = memoryview(self.headers)

    @classmethod
    def available(cls) -> bool:
        """Whether recvmmsg can be called here."""
        if not _LINUX or struct.calcsize("P") != 8:
            return False
        if cls._call is None:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fn = libc.recvmmsg
            fn.argtypes = [
                ctypes.c_int,
                ctypes.c_void_p,
                ctypes.c_uint,
                ctypes.c_int,
                ctypes.c_void_p,
            ]
            fn.restype = ctypes.c_int
            cls._call = fn
        return True

    def receive(self, limit: int) -> int:
        """Receive up to ``limit`` datagrams now; how many arrived (0: none)."""
        import ctypes

        self.headers[:] = self._template  # the kernel overwrote the lengths
        n = int(self._call(self._fd, self._headers_at, min(limit, self.slots), _MSG_DONTWAIT, None))
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, os.strerror(err))
        return n

    def source(self, i: int) -> tuple[bytes, bytes]:
        """(raw sockaddr, raw control data) of datagram ``i``."""
        base = _MMSG.size * i
        namelen = _U32.unpack_from(self.headers, base + _MMSG_NAMELEN_AT)[0]
        ctrllen = struct.unpack_from("=Q", self.headers, base + _MMSG_CONTROLLEN_AT)[0]
        name = bytes(self.names[_SOCKADDR_SPACE * i : _SOCKADDR_SPACE * i + namelen])
        ctrl = bytes(self.controls[_ANC_SIZE * i : _ANC_SIZE * i + ctrllen])
        return name, ctrl


def _parse_sockaddr(raw: bytes) -> tuple[object, ...]:
    """A raw sockaddr_in/sockaddr_in6 as the socket module's address tuple."""
    family = struct.unpack_from("=H", raw)[0]
    port = struct.unpack_from("!H", raw, 2)[0]
    if family == _AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8]), port
    flow, scope = struct.unpack_from("=I", raw, 4)[0], struct.unpack_from("=I", raw, 24)[0]
    return socket.inet_ntop(socket.AF_INET6, raw[8:24]), port, flow, scope


def _parse_cmsgs(raw: bytes) -> list[tuple[int, int, bytes]]:
    """Raw control data as the socket module's ancillary data list."""
    out = []
    at = 0
    while at + 16 <= len(raw):
        length, level, kind = struct.unpack_from("=Qii", raw, at)
        if length < 16:
            break
        out.append((level, kind, raw[at + 16 : at + length]))
        at += (length + 7) & ~7
    return out


def _attach_cbpf(
    sock: socket.socket, option: int, program: tuple[tuple[int, int, int, int], ...]
) -> None:
    """Hand a classic BPF ``program`` to the kernel as a ``struct sock_fprog``
    through SOL_SOCKET ``option`` (the kernel copies it during the call)."""
    import ctypes

    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, option, fprog)


def _attach_wireguard_filter(sock: socket.socket) -> None:
    """Attach :data:`WIREGUARD_FRAMING_FILTER` (Linux; silently skipped elsewhere)."""
    if _LINUX:
        _attach_cbpf(sock, _SO_ATTACH_FILTER, WIREGUARD_FRAMING_FILTER)


class UdpBind:
    """The pair of UDP sockets behind a WireGuard listen port.

    ``port=0`` picks a random port free for both families (a few attempts).
    A fixed port that is taken raises OSError with ``errno.EADDRINUSE``.
    If IPv6 cannot be used in this namespace the bind continues with IPv4
    alone (logged).  Sends never raise for network-side failures: they are
    counted in :attr:`stats` by reason (``send_enetunreach``,
    ``source_fallback``, ``no_socket_ipv6``, ...).

    With ``gso`` (Linux) :meth:`send_batch` merges runs of datagrams to one
    endpoint into UDP_SEGMENT sends; with ``gro`` the sockets receive
    coalesced datagrams, which :meth:`recv_batch` splits again.  Each is
    used only where the kernel supports it (see :meth:`gso_enabled`,
    :meth:`gro_enabled`).  :attr:`offload_stats` counts ``gso_sends`` and
    ``gso_datagrams`` (datagrams in them), ``gro_reads`` and
    ``gro_datagrams`` (receives holding more than one datagram).
    """

    port: int
    fwmark: int
    sticky: bool
    stats: dict[str, int]
    offload_stats: dict[str, int]

    def __init__(
        self,
        port: int = 0,
        *,
        ipv4: bool = True,
        ipv6: bool = True,
        buffer_size: int = UDP_SOCKET_BUFFER_SIZE,
        fwmark: int = 0,
        sticky: bool = True,
        gso: bool = True,
        gro: bool = True,
        wireguard_filter: bool = False,
        split_handshakes: bool = False,
    ) -> None:
        """Open and bind the sockets (in the calling thread's namespace).

        ``wireguard_filter`` attaches a classic BPF socket filter that drops,
        inside the kernel, datagrams that cannot be WireGuard messages (see
        :data:`WIREGUARD_FRAMING_FILTER`), so garbage floods cost no Python.

        ``split_handshakes`` (Linux) opens a second socket per family on the
        same port (SO_REUSEPORT) and steers every non-transport message to it
        with a reuseport BPF program: a handshake flood then fills only that
        socket's queue and can no longer crowd data out of the other one.
        :attr:`handshake_fds` names those sockets, so the caller can read
        them on a budget.
        """
        self._wg_filter = wireguard_filter
        self._split = split_handshakes and _LINUX
        self._hs: dict[int, socket.socket] = {}
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
        if not (ipv4 or ipv6):
            raise ValueError("at least one of ipv4/ipv6 is required")
        self.stats = {}
        self.fwmark = 0
        self.sticky = sticky and _LINUX
        self._buffer_size = buffer_size
        self._closed = False
        self._v4: socket.socket | None = None
        self._v6: socket.socket | None = None
        self._bind(port, ipv4, ipv6)
        socks = self._sockets()
        #: Descriptors that receive only handshake messages (with split_handshakes).
        self.handshake_fds = frozenset(s.fileno() for s in self._hs.values())
        self._by_fd = {s.fileno(): s for s in socks}
        self._bufs = {s.fileno(): memoryview(bytearray(_RECV_BUFFER_SIZE)) for s in socks}
        self._ep_cache: dict[object, Endpoint] = {}
        self._src_cache: dict[tuple[str, int], list[tuple[int, int, bytes]]] = {}
        self.offload_stats = {}
        # Per socket: UDP_SEGMENT usable (cleared on EIO), UDP_GRO on.
        self._gso = {s.fileno(): gso and _LINUX and _probe_gso(s) for s in socks}
        # Handshake messages are small and from many sources: no GRO there,
        # and a recvmmsg reader so junk costs no Python before it is screened.
        self._gro = {
            s.fileno(): gro and _LINUX and s not in self._hs.values() and _enable_gro(s)
            for s in socks
        }
        self._mmsg: dict[int, _MmsgReader] = {}
        if self.sticky and _MmsgReader.available():
            for hs in self._hs.values():
                self._mmsg[hs.fileno()] = _MmsgReader(hs.fileno(), IO_BATCH_SIZE)
        self._pending: dict[int, list[tuple[bytes, Endpoint]]] = {}
        self._peek_buf = bytearray(1)
        #: Datagrams the last :meth:`recv_batch` took from the kernel (screened or not).
        self.last_read = 0
        if fwmark:
            try:
                self.set_fwmark(fwmark)
            except BaseException:
                self.close()
                raise

    # -- setup -------------------------------------------------------------------

    def _bind(self, port: int, ipv4: bool, ipv6: bool) -> None:
        attempts = UDP_BIND_PORT_ATTEMPTS if port == 0 and ipv4 and ipv6 else 1
        for attempt in range(attempts):
            v4 = v6 = None
            try:
                bound = port
                if ipv4:
                    v4 = self._open(socket.AF_INET, bound)
                    bound = v4.getsockname()[1]
                if ipv6:
                    v6 = self._open_v6(bound)
                    if v6 is not None:
                        bound = v6.getsockname()[1]
                    elif v4 is None:
                        raise OSError(errno.EAFNOSUPPORT, "IPv6 unavailable and IPv4 disabled")
            except OSError as exc:
                for s in (v4, v6):
                    if s is not None:
                        s.close()
                # port 0: IPv4 got a random port IPv6 could not have; try another.
                if exc.errno == errno.EADDRINUSE and attempt + 1 < attempts:
                    continue
                raise
            self._v4, self._v6, self.port = v4, v6, bound
            if self._split:
                try:
                    for data_sock in (v4, v6):
                        if data_sock is not None:
                            self._open_handshake_socket(data_sock, bound)
                except OSError:
                    for sock in (v4, v6, *self._hs.values()):
                        if sock is not None:
                            sock.close()
                    self._hs.clear()
                    raise
            return

    def _open_handshake_socket(self, data_sock: socket.socket, port: int) -> None:
        """Join a second socket to ``data_sock``'s port and steer handshakes to it."""
        hs = self._open(data_sock.family, port, join=True)
        try:
            # Index 0 of the reuseport group is the data socket (bound first).
            _attach_cbpf(data_sock, _SO_ATTACH_REUSEPORT_CBPF, _REUSEPORT_STEER)
        except BaseException:
            hs.close()
            raise
        self._hs[data_sock.family] = hs

    def _open_v6(self, port: int) -> socket.socket | None:
        try:
            return self._open(socket.AF_INET6, port)
        except OSError as exc:
            if exc.errno not in _NO_FAMILY:
                raise
            log.warning("IPv6 unavailable (%s); listening on IPv4 only", exc.strerror)
            return None

    def _open(self, family: int, port: int, *, join: bool = False) -> socket.socket:
        """A bound socket of ``family`` on ``port``; ``join``: the handshake
        socket joining this bind's own data socket on the port."""
        if self._split and not join:
            # The split needs SO_REUSEPORT, which would also let another socket
            # of this user share the port unnoticed (wgpy with wgpy): bind it
            # plainly first, so a port anyone holds fails with EADDRINUSE and
            # port 0 becomes the port to share.  Whoever binds the port after
            # us without SO_REUSEPORT gets EADDRINUSE as usual.
            port = self._claim(family, port)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(_IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            self._set_buffers(sock)
            if self.sticky:
                if family == socket.AF_INET:
                    sock.setsockopt(_IPPROTO_IP, _IP_PKTINFO, 1)
                else:
                    sock.setsockopt(_IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            if self._wg_filter:
                _attach_wireguard_filter(sock)
            if self._split:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind(("0.0.0.0", port) if family == socket.AF_INET else ("::", port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _claim(family: int, port: int) -> int:
        """Bind a plain socket of ``family`` to ``port`` and let it go again:
        the port (a random one for 0), or OSError EADDRINUSE if it is taken."""
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            if family == socket.AF_INET6:
                probe.setsockopt(_IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(("0.0.0.0", port) if family == socket.AF_INET else ("::", port))
            return int(probe.getsockname()[1])

    def _set_buffers(self, sock: socket.socket) -> None:
        # Up to net.core.[rw]mem_max first, then beyond it if CAP_NET_ADMIN allows.
        size = self._buffer_size
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF, _SO_RCVBUFFORCE, _SO_SNDBUFFORCE):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, size)

    # -- queries ------------------------------------------------------------------

    def _sockets(self) -> list[socket.socket]:
        return [s for s in (self._v4, self._v6, *self._hs.values()) if s is not None]

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def families(self) -> list[int]:
        """The address families with an open socket."""
        return [s.family for s in self._sockets()]

    def filenos(self) -> list[int]:
        """Descriptors to wait on (IPv4 first); empty once closed."""
        if self._closed:
            return []
        return list(self._by_fd)

    def gso_enabled(self, family: int) -> bool:
        """True while sends on the ``family`` socket use UDP_SEGMENT."""
        sock = self._v4 if family == _AF_INET else self._v6
        return sock is not None and self._gso.get(sock.fileno(), False)

    def gro_enabled(self, family: int) -> bool:
        """True when the ``family`` socket receives UDP_GRO-coalesced datagrams."""
        sock = self._v4 if family == _AF_INET else self._v6
        return sock is not None and self._gro.get(sock.fileno(), False)

    def _count(self, reason: str, n: int = 1) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + n

    # -- receive --------------------------------------------------------------------

    def recv_batch(
        self,
        fd: int,
        max_datagrams: int = IO_BATCH_SIZE,
        screen: Callable[[memoryview], bool] | None = None,
    ) -> list[tuple[bytes, Endpoint]]:
        """Drain up to ``max_datagrams`` datagrams from socket ``fd`` without blocking.

        ``screen`` (handshake-only sockets) sees each datagram's bytes before
        anything is copied or its source parsed; what it refuses is left out
        (the screen counts it).  ``max_datagrams`` then bounds the datagrams
        read, not the ones returned.

        With ``sticky`` each Endpoint carries ``local`` (the address the
        datagram was sent to) and ``local_ifindex`` (where it arrived).
        With GRO one receive can hold up to 64 datagrams.  A coalesced
        receive that would overflow the batch is left queued in the kernel
        when a peek shows it in time (the socket stays readable); otherwise
        its surplus is kept and returned first by the next call, so at most
        ``max_datagrams`` come back either way.
        Returns ``[]`` when nothing is queued or after :meth:`close`.
        """
        sock = self._by_fd.get(fd)
        self.last_read = 0
        reader: _MmsgReader | None = None
        if sock is None or self._closed:
            if self._closed:
                return []
            raise ValueError(f"fd {fd} is not one of this bind's sockets")
        out: list[tuple[bytes, Endpoint]] = []
        view = self._bufs[fd]
        try:
            reader = self._mmsg.get(fd)
            if reader is not None:
                self._recv_mmsg(reader, out, max_datagrams, screen)
            elif self._gro[fd]:
                self._recv_gro(sock, view, out, max_datagrams)
            elif self.sticky:
                self._recv_sticky(sock, view, out, max_datagrams)
            else:
                self._recv_plain(sock, view, out, max_datagrams)
        except OSError as exc:
            self._count(f"recv_{_errname(exc.errno)}")
        self.last_read = len(out) if reader is None else self.last_read
        if screen is not None and reader is None:
            out = [item for item in out if screen(memoryview(item[0]))]
        return out

    def _recv_mmsg(
        self,
        reader: _MmsgReader,
        out: list[tuple[bytes, Endpoint]],
        limit: int,
        screen: Callable[[memoryview], bool] | None,
    ) -> None:
        # The per-datagram hot path of a junk flood: one unpack of the header
        # array, a slice and the screen; nothing else before it says yes.
        n = self.last_read = reader.receive(limit)
        if not n:
            return
        view = reader.view
        cache = self._ep_cache
        at = -_HS_SLOT
        for i, fields in enumerate(_MMSG.iter_unpack(reader.headers_view[: n * _MMSG.size])):
            at += _HS_SLOT
            if fields[6] & _MSG_TRUNC:
                self._count("recv_truncated")
                continue
            data = view[at : at + fields[7]]
            if screen is not None and not screen(data):
                continue
            key = reader.source(i)
            ep = cache.get(key)
            if ep is None:
                fresh = self._endpoint(_parse_sockaddr(key[0]), _parse_cmsgs(key[1]))
                ep = self._remember(key, fresh)
            out.append((bytes(data), ep))

    def _recv_plain(
        self, sock: socket.socket, view: memoryview, out: list[tuple[bytes, Endpoint]], limit: int
    ) -> None:
        recvfrom_into = sock.recvfrom_into
        cache = self._ep_cache
        while len(out) < limit:
            try:
                n, addr = recvfrom_into(view)
            except BlockingIOError:
                return
            if n == len(view):
                self._count("recv_truncated")
                continue
            ep = cache.get(addr)
            if ep is None:
                ep = self._remember(addr, Endpoint.from_sockaddr(addr))
            out.append((bytes(view[:n]), ep))

    def _recv_sticky(
        self, sock: socket.socket, view: memoryview, out: list[tuple[bytes, Endpoint]], limit: int
    ) -> None:
        recvmsg_into = sock.recvmsg_into
        bufs = [view]
        cache = self._ep_cache
        while len(out) < limit:
            try:
                n, anc, flags, addr = recvmsg_into(bufs, _ANC_SIZE)
            except BlockingIOError:
                return
            if flags & _MSG_TRUNC:
                self._count("recv_truncated")
                continue
            raw = anc[0][2] if anc else b""
            key = (addr, raw)
            ep = cache.get(key)
            if ep is None:
                ep = self._remember(key, self._endpoint(addr, anc))
            out.append((bytes(view[:n]), ep))

    def _recv_gro(
        self, sock: socket.socket, view: memoryview, out: list[tuple[bytes, Endpoint]], limit: int
    ) -> None:
        fd = sock.fileno()
        pending = self._pending.pop(fd, None)
        if pending:
            # Datagrams of an earlier super-datagram that did not fit that batch.
            out.extend(pending[:limit])
            if len(pending) > limit:
                self._pending[fd] = pending[limit:]
                return
        recvmsg_into = sock.recvmsg_into
        bufs = [view]
        cache = self._ep_cache
        sticky = self.sticky
        anc_size = _GRO_ANC_SIZE + (_ANC_SIZE if sticky else 0)
        stats = self.offload_stats
        coalesced = False
        while len(out) < limit:
            room = limit - len(out)
            if coalesced and room < _GRO_MAX_SEGMENTS and self._peek_count(sock, anc_size) > room:
                return  # leave it queued: the socket stays readable for the next batch
            try:
                n, anc, flags, addr = recvmsg_into(bufs, anc_size)
            except BlockingIOError:
                return
            if flags & _MSG_TRUNC:
                self._count("recv_truncated")
                continue
            size = _gro_size(anc)
            raw = b""
            if sticky:
                for level, _, data in anc:
                    if level != _SOL_UDP:
                        raw = data
            key = (addr, raw) if sticky else addr
            ep = cache.get(key)
            if ep is None:
                fresh = self._endpoint(addr, anc) if sticky else Endpoint.from_sockaddr(addr)
                ep = self._remember(key, fresh)
            coalesced = 0 < size < n
            if not coalesced:
                out.append((bytes(view[:n]), ep))
                continue
            # A GRO super-datagram: same-sized datagrams back to back, the last maybe shorter.
            parts = [(bytes(view[i : min(i + size, n)]), ep) for i in range(0, n, size)]
            stats["gro_reads"] = stats.get("gro_reads", 0) + 1
            stats["gro_datagrams"] = stats.get("gro_datagrams", 0) + len(parts)
            if len(parts) > room:
                self._pending[fd] = parts[room:]
                del parts[room:]
            out.extend(parts)

    def _peek_count(self, sock: socket.socket, anc_size: int) -> int:
        """How many datagrams the next receive holds (0 if none), without taking it."""
        try:
            n, anc, _, _ = sock.recvmsg_into([self._peek_buf], anc_size, _MSG_PEEK | _MSG_TRUNC)
        except BlockingIOError:
            return 0
        size = _gro_size(anc)
        return (n + size - 1) // size if 0 < size < n else 1

    def _remember(self, key: object, ep: Endpoint) -> Endpoint:
        # Endpoint() parses text; cache by the raw address so that is done once.
        if len(self._ep_cache) >= _CACHE_MAX:
            self._ep_cache.clear()
        self._ep_cache[key] = ep
        return ep

    @staticmethod
    def _endpoint(addr: tuple[object, ...], anc: list[tuple[int, int, bytes]]) -> Endpoint:
        local: str | None = None
        ifindex = 0
        for level, kind, data in anc:
            if level == _IPPROTO_IP and kind == _IP_PKTINFO and len(data) >= _IN_PKTINFO.size:
                ifindex, spec_dst, _ = _IN_PKTINFO.unpack_from(data)
                local = socket.inet_ntop(socket.AF_INET, spec_dst)
            elif (
                level == _IPPROTO_IPV6 and kind == _IPV6_PKTINFO and len(data) >= _IN6_PKTINFO.size
            ):
                dst, ifindex = _IN6_PKTINFO.unpack_from(data)
                local = socket.inet_ntop(socket.AF_INET6, dst)
        return Endpoint.from_sockaddr(addr, local, ifindex)

    # -- send -----------------------------------------------------------------------

    def _source_cmsg(self, ep: Endpoint) -> list[tuple[int, int, bytes]]:
        key = (ep.local or "", ep.local_ifindex)
        cmsg = self._src_cache.get(key)
        if cmsg is None:
            local = key[0]
            if ep.family == _AF_INET:
                # ifindex 0: the route decides the interface, only the source is pinned.
                data = _IN_PKTINFO.pack(0, socket.inet_aton(local), bytes(4))
                cmsg = [(_IPPROTO_IP, _IP_PKTINFO, data)]
            else:
                packed = socket.inet_pton(socket.AF_INET6, local.partition("%")[0])
                # A link-local source is only meaningful with its interface.
                link_local = packed[0] == 0xFE and packed[1] & 0xC0 == 0x80
                data = _IN6_PKTINFO.pack(packed, ep.local_ifindex if link_local else 0)
                cmsg = [(_IPPROTO_IPV6, _IPV6_PKTINFO, data)]
            if len(self._src_cache) >= _CACHE_MAX:
                self._src_cache.clear()
            self._src_cache[key] = cmsg
        return cmsg

    def send(self, datagram: bytes | memoryview, endpoint: Endpoint) -> None:
        """Send one datagram to ``endpoint``; never raises for network errors.

        With ``endpoint.local`` set (and ``sticky``) the datagram leaves from
        that address.  If the kernel refuses that source (the address is
        gone: ENETUNREACH for IPv4, EINVAL for IPv6; also EADDRNOTAVAIL,
        ENODEV) it is resent without one and ``source_fallback`` is counted;
        the endpoint itself is not changed (the engine decides).
        """
        sock = self._v4 if endpoint.family == _AF_INET else self._v6
        if sock is None or self._closed:
            self._count("closed" if self._closed else f"no_socket_{_family(endpoint.family)}")
            return
        try:
            # Inside the try: a zone naming a vanished interface raises here.
            addr = endpoint.sockaddr()
            if endpoint.local and self.sticky:
                try:
                    sock.sendmsg([datagram], self._source_cmsg(endpoint), 0, addr)
                    return
                except OSError as exc:
                    if exc.errno not in _SOURCE_REFUSED:
                        raise
                    self._count("source_fallback")
            sock.sendto(datagram, addr)
        except OSError as exc:
            # EAGAIN (buffer full), ENETUNREACH, EPERM (filtered), EMSGSIZE, ...
            self._count(f"send_{_errname(exc.errno)}")

    def send_batch(self, items: Sequence[tuple[bytes | memoryview, Endpoint]]) -> None:
        """Send each ``(datagram, endpoint)`` in order, as :meth:`send` does
        (the order :meth:`recv_batch` returns and the Device takes and gives).

        With GSO, runs of consecutive datagrams to the same endpoint (and
        source) with equal sizes, the last possibly shorter, at most 64 and
        65507 (IPv6: 65527) bytes together, leave in one UDP_SEGMENT send.
        """
        send = self.send
        count = len(items)
        gso = self._gso
        v4, v6 = self._v4, self._v6
        i = 0
        while i < count:
            datagram, endpoint = items[i]
            size = len(datagram)
            j = i + 1
            sock = v4 if endpoint.family == _AF_INET else v6
            if j < count and size and sock is not None and gso.get(sock.fileno()):
                limit = _MAX_PAYLOAD[endpoint.family]
                total = size
                local = endpoint.local
                while j < count and j - i < UDP_GSO_MAX_SEGMENTS:
                    d2, ep2 = items[j]
                    if ep2 is not endpoint and not (
                        ep2 == endpoint
                        and ep2.local == local
                        and ep2.local_ifindex == endpoint.local_ifindex
                    ):
                        break
                    n2 = len(d2)
                    if not n2 or n2 > size or total + n2 > limit:
                        break
                    total += n2
                    j += 1
                    if n2 < size:
                        break  # a shorter datagram ends the run
            if j - i == 1:
                send(datagram, endpoint)
            else:
                assert sock is not None
                self._send_gso(sock, items, i, j, size)
            i = j

    def _send_gso(
        self,
        sock: socket.socket,
        items: Sequence[tuple[bytes | memoryview, Endpoint]],
        start: int,
        end: int,
        size: int,
    ) -> None:
        """One UDP_SEGMENT sendmsg for ``items[start:end]``; on refusal, one by one."""
        endpoint = items[start][1]
        if self._closed:
            self._count("closed", end - start)
            return
        cmsgs = [(_SOL_UDP, _UDP_SEGMENT, _GSO_SIZE.pack(size))]
        if endpoint.local and self.sticky:
            cmsgs = self._source_cmsg(endpoint) + cmsgs
        try:
            sock.sendmsg([d for d, _ in items[start:end]], cmsgs, 0, endpoint.sockaddr())
        except OSError as exc:
            err = exc.errno
            if err == errno.EIO:
                # UDP_SEGMENT needs checksum offload on the egress device.
                self._gso[sock.fileno()] = False
                self._count("gso_disabled")
                log.info("UDP GSO refused (EIO); sending datagrams one by one")
            elif err not in _GSO_RETRY:
                self._count(f"send_{_errname(err)}", end - start)
                return
            # EINVAL: a segment too big for the path MTU, or the source; EMSGSIZE.
            send = self.send
            for datagram, ep in items[start:end]:
                send(datagram, ep)
            return
        stats = self.offload_stats
        stats["gso_sends"] = stats.get("gso_sends", 0) + 1
        stats["gso_datagrams"] = stats.get("gso_datagrams", 0) + end - start

    # -- control ----------------------------------------------------------------------

    def set_fwmark(self, mark: int) -> None:
        """Set SO_MARK on both sockets (0 clears it); needs CAP_NET_ADMIN."""
        if not 0 <= mark <= 0xFFFFFFFF:
            raise ValueError(f"fwmark out of range: {mark}")
        value = struct.pack("=I", mark)
        for sock in self._sockets():
            sock.setsockopt(socket.SOL_SOCKET, _SO_MARK, value)
        self.fwmark = mark

    def close(self) -> None:
        """Close both sockets; idempotent."""
        if self._closed:
            return
        self._closed = True
        for sock in self._sockets():
            sock.close()
        self._ep_cache.clear()
        self._pending.clear()

    def __enter__(self) -> UdpBind:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        fams = "+".join(_family(f) for f in self.families)
        return f"<UdpBind port={self.port} {fams}{' closed' if self._closed else ''}>"


def _family(family: int) -> str:
    return "ipv4" if family == socket.AF_INET else "ipv6"
