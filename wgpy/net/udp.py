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
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import struct
import sys
from collections.abc import Sequence

from ..constants import IO_BATCH_SIZE, UDP_BIND_PORT_ATTEMPTS, UDP_SOCKET_BUFFER_SIZE
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
# Plain ints: the socket module's enum members make hot-path arithmetic slow.
_IPPROTO_IP = int(socket.IPPROTO_IP)
_IPPROTO_IPV6 = int(socket.IPPROTO_IPV6)
_AF_INET = int(socket.AF_INET)
_MSG_TRUNC = int(socket.MSG_TRUNC)

_IN_PKTINFO = struct.Struct("=i4s4s")  # ifindex, spec_dst (local), addr (header dst)
_IN6_PKTINFO = struct.Struct("=16sI")  # addr, ifindex
_ANC_SIZE = socket.CMSG_SPACE(max(_IN_PKTINFO.size, _IN6_PKTINFO.size))
_RECV_BUFFER_SIZE = 65536  # largest UDP payload plus one: MSG_TRUNC never hides data
_CACHE_MAX = 4096

#: Errors a send with a pinned source gets when that source is unusable.
#: ENETUNREACH is ambiguous (also "no route"); the retry without a source
#: then fails the same way and is counted as such.
_SOURCE_REFUSED = frozenset({errno.EINVAL, errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.ENODEV})
#: Errors meaning IPv6 is absent from this kernel or namespace.
_NO_FAMILY = frozenset({errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT})


def _errname(err: int | None) -> str:
    return errno.errorcode.get(err or 0, str(err)).lower()


class UdpBind:
    """The pair of UDP sockets behind a WireGuard listen port.

    ``port=0`` picks a random port free for both families (a few attempts).
    A fixed port that is taken raises OSError with ``errno.EADDRINUSE``.
    If IPv6 cannot be used in this namespace the bind continues with IPv4
    alone (logged).  Sends never raise for network-side failures: they are
    counted in :attr:`stats` by reason (``send_enetunreach``,
    ``source_fallback``, ``no_socket_ipv6``, ...).
    """

    port: int
    fwmark: int
    sticky: bool
    stats: dict[str, int]

    def __init__(
        self,
        port: int = 0,
        *,
        ipv4: bool = True,
        ipv6: bool = True,
        buffer_size: int = UDP_SOCKET_BUFFER_SIZE,
        fwmark: int = 0,
        sticky: bool = True,
    ) -> None:
        """Open and bind the sockets (in the calling thread's namespace)."""
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
        self._by_fd = {s.fileno(): s for s in socks}
        self._bufs = {s.fileno(): memoryview(bytearray(_RECV_BUFFER_SIZE)) for s in socks}
        self._ep_cache: dict[object, Endpoint] = {}
        self._src_cache: dict[tuple[str, int], list[tuple[int, int, bytes]]] = {}
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
            return

    def _open_v6(self, port: int) -> socket.socket | None:
        try:
            return self._open(socket.AF_INET6, port)
        except OSError as exc:
            if exc.errno not in _NO_FAMILY:
                raise
            log.warning("IPv6 unavailable (%s); listening on IPv4 only", exc.strerror)
            return None

    def _open(self, family: int, port: int) -> socket.socket:
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
            sock.bind(("0.0.0.0", port) if family == socket.AF_INET else ("::", port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _set_buffers(self, sock: socket.socket) -> None:
        # Up to net.core.[rw]mem_max first, then beyond it if CAP_NET_ADMIN allows.
        size = self._buffer_size
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF, _SO_RCVBUFFORCE, _SO_SNDBUFFORCE):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, size)

    # -- queries ------------------------------------------------------------------

    def _sockets(self) -> list[socket.socket]:
        return [s for s in (self._v4, self._v6) if s is not None]

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

    def _count(self, reason: str) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + 1

    # -- receive --------------------------------------------------------------------

    def recv_batch(
        self, fd: int, max_datagrams: int = IO_BATCH_SIZE
    ) -> list[tuple[bytes, Endpoint]]:
        """Drain up to ``max_datagrams`` datagrams from socket ``fd`` without blocking.

        With ``sticky`` each Endpoint carries ``local`` (the address the
        datagram was sent to) and ``local_ifindex`` (where it arrived).
        Returns ``[]`` when nothing is queued or after :meth:`close`.
        """
        sock = self._by_fd.get(fd)
        if sock is None or self._closed:
            if self._closed:
                return []
            raise ValueError(f"fd {fd} is not one of this bind's sockets")
        out: list[tuple[bytes, Endpoint]] = []
        view = self._bufs[fd]
        try:
            if self.sticky:
                self._recv_sticky(sock, view, out, max_datagrams)
            else:
                self._recv_plain(sock, view, out, max_datagrams)
        except OSError as exc:
            self._count(f"recv_{_errname(exc.errno)}")
        return out

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
        host = str(addr[0])
        port = int(addr[1])  # type: ignore[call-overload]
        return Endpoint(host, port, local, ifindex)

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
        addr = endpoint.sockaddr()
        try:
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

    def send_batch(self, items: Sequence[tuple[Endpoint, bytes | memoryview]]) -> None:
        """Send each ``(endpoint, datagram)`` in order, as :meth:`send` does."""
        send = self.send
        for endpoint, datagram in items:
            send(datagram, endpoint)

    # -- control ----------------------------------------------------------------------

    def set_fwmark(self, mark: int) -> None:
        """Set SO_MARK on both sockets (0 clears it); needs CAP_NET_ADMIN."""
        if not 0 <= mark <= 0xFFFFFFFF:
            raise ValueError(f"fwmark out of range: {mark}")
        value = struct.pack("=I", mark)
        for sock in (self._v4, self._v6):
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, _SO_MARK, value)
        self.fwmark = mark

    def close(self) -> None:
        """Close both sockets; idempotent."""
        if self._closed:
            return
        self._closed = True
        for sock in (self._v4, self._v6):
            if sock is not None:
                sock.close()
        self._ep_cache.clear()

    def __enter__(self) -> UdpBind:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        fams = "+".join(_family(f) for f in self.families)
        return f"<UdpBind port={self.port} {fams}{' closed' if self._closed else ''}>"


def _family(family: int) -> str:
    return "ipv4" if family == socket.AF_INET else "ipv6"
