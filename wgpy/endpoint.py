"""Network endpoints: the UDP address of a peer, as the engine sees it."""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["Endpoint", "host_port_text"]


def host_port_text(host: str, port: int) -> str:
    """``a.b.c.d:port`` or ``[v6(%zone)]:port``: the one text form of an
    endpoint (UAPI's, wg's and the conformance reports')."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Endpoint:
    """An immutable UDP endpoint (address and port) of a remote peer.

    ``ip`` is the canonical text form (IPv6 may carry a ``%zone``).  ``local``
    optionally records the local address a datagram from this endpoint arrived
    on, so replies leave from the address the peer used ("sticky source"); it
    takes no part in equality, because roaming is decided by the remote side.
    """

    __slots__ = ("_hash", "family", "ip", "local", "local_ifindex", "port")

    ip: str
    port: int
    family: int
    local: str | None
    local_ifindex: int
    _hash: int

    def __init__(
        self, ip: str, port: int, local: str | None = None, local_ifindex: int = 0
    ) -> None:
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port out of range: {port}")
        addr, _, zone = ip.partition("%")
        parsed = ipaddress.ip_address(addr)
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
            parsed = parsed.ipv4_mapped  # one canonical form for v4 peers
            zone = ""
        text = str(parsed) + (f"%{zone}" if zone else "")
        object.__setattr__(self, "ip", text)
        object.__setattr__(self, "port", port)
        object.__setattr__(
            self, "family", socket.AF_INET if parsed.version == 4 else socket.AF_INET6
        )
        object.__setattr__(self, "local", local)
        object.__setattr__(self, "local_ifindex", local_ifindex)
        object.__setattr__(self, "_hash", hash((text, port)))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Endpoint is immutable")

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ``a.b.c.d:port`` or ``[v6(%zone)]:port`` (numeric only, as UAPI)."""
        if text.startswith("["):
            host, sep, port = text[1:].partition("]:")
            if not sep:
                raise ValueError(f"invalid endpoint: {text!r}")
        else:
            host, sep, port = text.rpartition(":")
            if not sep or ":" in host:
                raise ValueError(f"invalid endpoint: {text!r}")
        if not port.isdigit():
            raise ValueError(f"invalid endpoint port: {text!r}")
        try:
            return cls(host, int(port))
        except ValueError as exc:
            raise ValueError(f"invalid endpoint: {text!r}") from exc

    @classmethod
    def from_sockaddr(
        cls, addr: tuple[object, ...], local: str | None = None, local_ifindex: int = 0
    ) -> Endpoint:
        """Build from a socket address tuple as returned by ``recvfrom``.

        The kernel's text form is already canonical, so this skips parsing
        (it runs for every new source, also under a spoofed flood).  An IPv6
        link-local source keeps its scope as a numeric zone.
        """
        host = str(addr[0])
        port = int(addr[1])  # type: ignore[call-overload]
        if len(addr) == 4:
            family = socket.AF_INET6
            scope = int(addr[3])  # type: ignore[call-overload]
            if scope and "%" not in host:
                host = f"{host}%{scope}"
            if host.startswith("::ffff:") and "." in host:
                return cls(host, port, local, local_ifindex)  # v4-mapped: canonicalise
        else:
            family = socket.AF_INET
        self = object.__new__(cls)
        setattr_ = object.__setattr__
        setattr_(self, "ip", host)
        setattr_(self, "port", port)
        setattr_(self, "family", family)
        setattr_(self, "local", local)
        setattr_(self, "local_ifindex", local_ifindex)
        setattr_(self, "_hash", hash((host, port)))
        return self

    def with_local(self, local: str | None, ifindex: int = 0) -> Endpoint:
        """The same remote endpoint, remembering a different local source."""
        return Endpoint(self.ip, self.port, local, ifindex)

    def sockaddr(self) -> tuple[str, int] | tuple[str, int, int, int]:
        """The address tuple for ``sendto`` on a socket of ``self.family``."""
        if self.family == socket.AF_INET:
            return (self.ip, self.port)
        host, _, zone = self.ip.partition("%")
        scope = 0
        if zone:
            scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        return (host, self.port, 0, scope)

    def ip_bytes(self) -> bytes:
        """The packed address (4 or 16 bytes), without zone."""
        return socket.inet_pton(self.family, self.ip.partition("%")[0])

    def cookie_bytes(self) -> bytes:
        """Address bytes followed by the big-endian port: the input of a cookie."""
        return self.ip_bytes() + self.port.to_bytes(2, "big")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Endpoint):
            return NotImplemented
        return self.port == other.port and self.ip == other.ip

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return host_port_text(self.ip, self.port)

    def __repr__(self) -> str:
        return f"Endpoint({str(self)!r})"
