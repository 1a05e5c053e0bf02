"""The UAPI text protocol: parsing and formatting of values, the ``errno``
line, and the parsed form of a ``get`` answer (what a client reads).

No sockets and no Device here; see :mod:`wgpy.uapi` for the protocol's rules."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Final

from wgpy.constants import (
    KEY_LEN,
)
from wgpy.endpoint import Endpoint

__all__ = ["UapiConfig", "UapiError", "UapiPeer", "parse_get_response"]

_ZERO_KEY_HEX: Final = "00" * KEY_LEN
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFFFFFF
#: Longest operation line worth reading: "get=1"/"set=1" are all there is.
_OP_LINE_MAX: Final = 64


def _parse_key(value: str) -> bytes | None:
    """Exactly 64 hex digits (either case), as Go's hex decoding wants."""
    if len(value) != 2 * KEY_LEN or not _HEX_DIGITS.issuperset(value):
        return None
    return bytes.fromhex(value)


def _parse_uint(value: str, maximum: int) -> int | None:
    """Decimal digits only (leading zeros fine, no sign), like strconv.ParseUint."""
    if not value or not value.isascii() or not value.isdigit():
        return None
    if len(value.lstrip("0")) > 20:  # also keeps int() away from huge strings
        return None
    n = int(value)
    return n if n <= maximum else None


def _parse_prefix(value: str) -> tuple[bytes, int] | None:
    """``ADDR/BITS`` as netip.ParsePrefix accepts it: the slash is required,
    no zone, BITS without sign or leading zeros.  Host bits are kept (the
    table masks them)."""
    addr, slash, bits = value.rpartition("/")
    if not slash or not bits or len(bits) > 3 or not bits.isascii() or not bits.isdigit():
        return None
    if len(bits) > 1 and bits[0] == "0":
        return None
    six = ":" in addr
    try:
        packed = socket.inet_pton(socket.AF_INET6 if six else socket.AF_INET, addr)
    except (OSError, ValueError):  # ValueError: NUL or unencodable text
        return None
    cidr = int(bits)
    if cidr > (128 if six else 32):
        return None
    return packed, cidr


def _parse_endpoint(value: str) -> Endpoint | None:
    """``a.b.c.d:port`` or ``[v6(%zone)]:port``, numeric only, as
    netip.ParseAddrPort accepts it (brackets exactly for IPv6, a non-empty
    zone only on IPv6), and a zone that resolves (see :func:`_zone_ok`)."""
    host, colon, port_text = value.rpartition(":")
    if not colon or not host or not port_text:
        return None
    bracketed = host[0] == "["
    if bracketed:
        if len(host) < 2 or host[-1] != "]":
            return None
        host = host[1:-1]
    port = _parse_uint(port_text, _U16_MAX)
    if port is None:
        return None
    addr, pct, zone = host.partition("%")
    six = ":" in addr
    if six != bracketed or (pct and (not zone or not six)):
        return None
    if zone and not _zone_ok(zone):
        return None
    try:
        socket.inet_pton(socket.AF_INET6 if six else socket.AF_INET, addr)
        return Endpoint(host, port)
    except (OSError, ValueError):
        return None


def _zone_ok(zone: str) -> bool:
    """A scope must be a u32 index or an existing interface's name (as
    wireguard-go's Linux bind required), so sending to it cannot fail later
    for a name nobody can resolve."""
    if zone.isascii() and zone.isdigit():
        return len(zone) <= 10 and int(zone) <= _U32_MAX
    try:
        socket.if_nametoindex(zone)
    except (OSError, ValueError):
        return False
    return True


def _format_addr(addr: bytes) -> str:
    """Address text as Go's netip prints it (RFC 5952 for IPv6)."""
    if len(addr) == 4:
        return socket.inet_ntop(socket.AF_INET, addr)
    text = socket.inet_ntop(socket.AF_INET6, addr)
    if "." in text and not text.startswith("::ffff:"):
        # glibc prints ::a.b.c.d for IPv4-compatible addresses; Go prints
        # dotted form only for IPv4-mapped ones.
        import ipaddress

        text = str(ipaddress.IPv6Address(addr))
    return text


def _errno_line(err: int) -> bytes:
    return f"errno={-err}\n\n".encode()


class UapiError(OSError):
    """A UAPI operation failed; ``errno`` is the positive error number."""

    def __init__(self, code: int, detail: str | None = None) -> None:
        super().__init__(code, detail or os.strerror(code))


@dataclass
class UapiPeer:
    """One peer as ``get`` reports it."""

    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: str | None = None
    last_handshake_ns: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    persistent_keepalive: int = 0
    protocol_version: int = 1
    allowed_ips: list[str] = field(default_factory=list)


@dataclass
class UapiConfig:
    """The answer to ``get``: interface values and peers, in order."""

    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: list[UapiPeer] = field(default_factory=list)

    def peer(self, public_key: bytes) -> UapiPeer | None:
        """The peer with this public key, if listed."""
        for p in self.peers:
            if p.public_key == public_key:
                return p
        return None


def parse_get_response(text: str) -> UapiConfig:
    """Parse a get answer (``errno=0`` line and the blank line optional).

    Raises :class:`UapiError` for a non-zero errno, ``ValueError`` for a
    malformed line.  Unknown keys are ignored, as ``wg`` does.
    """
    cfg = UapiConfig()
    peer: UapiPeer | None = None
    for line in text.split("\n"):
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise ValueError(f"malformed UAPI line {line!r}")
        if key == "errno":
            code = int(value)
            if code:
                raise UapiError(abs(code))
            continue
        if key == "public_key":
            peer = UapiPeer(bytes.fromhex(value))
            cfg.peers.append(peer)
        elif peer is None:
            if key == "private_key":
                cfg.private_key = bytes.fromhex(value)
            elif key == "listen_port":
                cfg.listen_port = int(value)
            elif key == "fwmark":
                cfg.fwmark = int(value)
        elif key == "preshared_key":
            psk = bytes.fromhex(value)
            peer.preshared_key = None if psk == bytes(KEY_LEN) else psk
        elif key == "endpoint":
            peer.endpoint = value
        elif key == "last_handshake_time_sec":
            peer.last_handshake_ns += int(value) * 1_000_000_000
        elif key == "last_handshake_time_nsec":
            peer.last_handshake_ns += int(value)
        elif key == "tx_bytes":
            peer.tx_bytes = int(value)
        elif key == "rx_bytes":
            peer.rx_bytes = int(value)
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = int(value)
        elif key == "protocol_version":
            peer.protocol_version = int(value)
        elif key == "allowed_ip":
            peer.allowed_ips.append(value)
    return cfg
