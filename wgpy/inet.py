"""IPv4 and IPv6 packets, for every place that builds or reads one.

The engine itself only looks at inner addresses; the pieces that make and
parse whole packets are here, in one place: the Internet checksum (RFC 1071)
and the pseudo-header residue, IP headers, UDP datagrams (checksums computed
and verified) and ICMP/ICMPv6 echo.  Users: the TUN offload code
(:mod:`wgpy.tun.offload`), the in-memory simulation (:mod:`wgpy.sim`), the
conformance runner's probes, and the small IP host behind a userspace adapter
(:mod:`wgpy.tun.userspace`).  Pure functions on bytes; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ICMP4_ECHO_REPLY",
    "ICMP4_ECHO_REQUEST",
    "ICMP6_ECHO_REPLY",
    "ICMP6_ECHO_REQUEST",
    "IP4_HEADER_LEN",
    "IP6_HEADER_LEN",
    "PROTO_ICMP",
    "PROTO_ICMP6",
    "PROTO_TCP",
    "PROTO_UDP",
    "UDP_HEADER_LEN",
    "Echo",
    "IpHeader",
    "Udp",
    "checksum",
    "echo_checksum_ok",
    "echo_overhead",
    "echo_packet",
    "echo_reply_for",
    "inner_length",
    "ip_packet",
    "ipv4_packet",
    "ipv6_packet",
    "ones_sum",
    "parse_echo",
    "parse_ip",
    "parse_udp",
    "pseudo_sum",
    "udp_packet",
]

ICMP4_ECHO_REQUEST: Final = 8
ICMP4_ECHO_REPLY: Final = 0
ICMP6_ECHO_REQUEST: Final = 128
ICMP6_ECHO_REPLY: Final = 129
IP4_HEADER_LEN: Final = 20
IP6_HEADER_LEN: Final = 40
UDP_HEADER_LEN: Final = 8
PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMP6: Final = 58
_ICMP_HEADER_LEN: Final = 8
_IP4: Final = struct.Struct("!BBHHHBBH4s4s")
_IP6: Final = struct.Struct("!IHBB16s16s")
_ICMP: Final = struct.Struct("!BBHHH")
_UDP: Final = struct.Struct("!HHHH")
_U16: Final = struct.Struct("!H")


# -- the Internet checksum ---------------------------------------------------------


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """Ones' complement sum of ``data`` as big-endian 16-bit words, modulo 0xFFFF.

    An odd trailing byte is padded with zero (RFC 1071).  Residues add: the
    sum of two pieces is ``(ones_sum(a) + ones_sum(b)) % 0xFFFF`` provided
    ``a`` has even length.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The Internet checksum field value for ``data`` plus ``initial`` (a residue).

    Never returns 0: a zero result is sent as 0xFFFF, which every receiver
    treats the same (ones' complement -0) and which UDP requires.
    """
    return 0xFFFF - (ones_sum(data) + initial) % 0xFFFF


def pseudo_sum(src: bytes | memoryview, dst: bytes | memoryview, proto: int, length: int) -> int:
    """Residue of the IPv4/IPv6 pseudo-header (addresses, protocol, L4 length)."""
    return (int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length) % 0xFFFF


def _verifies(data: bytes | bytearray | memoryview, initial: int = 0) -> bool:
    """True when a segment whose checksum field is filled in sums to -0."""
    return (ones_sum(data) + initial) % 0xFFFF == 0


# -- IP headers --------------------------------------------------------------------------


def ipv4_packet(
    src: str | bytes,
    dst: str | bytes,
    payload: bytes = b"",
    proto: int = PROTO_UDP,
    *,
    ttl: int = 64,
    ident: int = 0,
) -> bytes:
    """An IPv4 packet (DF set, valid header checksum) around ``payload``."""
    s = src if isinstance(src, bytes) else ipaddress.IPv4Address(src).packed
    d = dst if isinstance(dst, bytes) else ipaddress.IPv4Address(dst).packed
    header = _IP4.pack(0x45, 0, IP4_HEADER_LEN + len(payload), ident, 0x4000, ttl, proto, 0, s, d)
    return header[:10] + _U16.pack(checksum(header)) + header[12:] + payload


def ipv6_packet(
    src: str | bytes,
    dst: str | bytes,
    payload: bytes = b"",
    next_header: int = PROTO_UDP,
    *,
    hop_limit: int = 64,
) -> bytes:
    """An IPv6 packet around ``payload``."""
    s = src if isinstance(src, bytes) else ipaddress.IPv6Address(src).packed
    d = dst if isinstance(dst, bytes) else ipaddress.IPv6Address(dst).packed
    return _IP6.pack(6 << 28, len(payload), next_header, hop_limit, s, d) + payload


def ip_packet(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    """An IPv4 or IPv6 packet, by the length of the packed addresses."""
    if len(src) == 4:
        return ipv4_packet(src, dst, payload, proto)
    return ipv6_packet(src, dst, payload, proto)


def inner_length(packet: bytes | bytearray | memoryview) -> int | None:
    """The length an IP header claims (IPv4 total length, IPv6 payload + 40),
    or None if ``packet`` does not start with a plausible IP header."""
    if len(packet) >= IP4_HEADER_LEN and packet[0] >> 4 == 4:
        length = (packet[2] << 8) | packet[3]
        return length if length >= IP4_HEADER_LEN else None
    if len(packet) >= IP6_HEADER_LEN and packet[0] >> 4 == 6:
        return IP6_HEADER_LEN + ((packet[4] << 8) | packet[5])
    return None


@dataclass(frozen=True, slots=True)
class IpHeader:
    """What :func:`parse_ip` found: packed addresses, the transport protocol
    (IPv6: the first next header) and where the payload lies."""

    version: int
    src: bytes
    dst: bytes
    proto: int
    header_len: int
    length: int  # the IP packet's own length, without trailing padding
    fragment: bool  # IPv4: a fragment (MF set or an offset)


def parse_ip(packet: bytes | bytearray | memoryview) -> IpHeader | None:
    """The IP header of ``packet`` (trailing padding allowed), or None if it
    is not a well-formed IPv4/IPv6 packet (IPv4: header checksum verified)."""
    length = inner_length(packet)
    if length is None or length > len(packet):
        return None
    if packet[0] >> 4 == 4:
        ihl = (packet[0] & 0x0F) * 4
        if ihl < IP4_HEADER_LEN or ihl > length or not _verifies(packet[:ihl]):
            return None
        frag = ((packet[6] << 8) | packet[7]) & 0x3FFF
        return IpHeader(
            4, bytes(packet[12:16]), bytes(packet[16:20]), packet[9], ihl, length, frag != 0
        )
    return IpHeader(
        6, bytes(packet[8:24]), bytes(packet[24:40]), packet[6], IP6_HEADER_LEN, length, False
    )


# -- UDP ---------------------------------------------------------------------------------


def udp_packet(src: bytes, sport: int, dst: bytes, dport: int, payload: bytes) -> bytes:
    """A complete IPv4/IPv6 UDP datagram (by the address length) with its
    checksum computed over the pseudo-header."""
    length = UDP_HEADER_LEN + len(payload)
    segment = _UDP.pack(sport, dport, length, 0) + payload
    value = checksum(segment, pseudo_sum(src, dst, PROTO_UDP, length))
    return ip_packet(src, dst, PROTO_UDP, segment[:6] + _U16.pack(value) + segment[8:])


@dataclass(frozen=True, slots=True)
class Udp:
    """A parsed UDP datagram (packed addresses)."""

    src: bytes
    sport: int
    dst: bytes
    dport: int
    payload: bytes


def parse_udp(packet: bytes | bytearray | memoryview, ip: IpHeader | None = None) -> Udp | None:
    """The UDP datagram in ``packet``, or None if it is not one, is a fragment,
    or its checksum does not verify (an IPv4 checksum of zero means "none", as
    RFC 768 allows; IPv6 requires one)."""
    ip = ip or parse_ip(packet)
    if ip is None or ip.proto != PROTO_UDP or ip.fragment:
        return None
    segment = packet[ip.header_len : ip.length]
    if len(segment) < UDP_HEADER_LEN:
        return None
    sport, dport, length, field = _UDP.unpack_from(segment)
    if length < UDP_HEADER_LEN or length > len(segment):
        return None
    segment = segment[:length]
    checked = field or ip.version == 6
    if checked and not _verifies(segment, pseudo_sum(ip.src, ip.dst, PROTO_UDP, length)):
        return None
    return Udp(ip.src, sport, ip.dst, dport, bytes(segment[UDP_HEADER_LEN:]))


# -- ICMP echo -----------------------------------------------------------------------------


def echo_overhead(version: int) -> int:
    """Bytes of IP and ICMP header around an echo payload."""
    return (IP4_HEADER_LEN if version == 4 else IP6_HEADER_LEN) + _ICMP_HEADER_LEN


def _icmp(src: bytes, dst: bytes, kind: int, ident: int, seq: int, payload: bytes) -> bytes:
    body = _ICMP.pack(kind, 0, 0, ident, seq) + payload
    # ICMPv6 covers a pseudo-header (RFC 8200 8.1); ICMP for IPv4 does not.
    initial = pseudo_sum(src, dst, PROTO_ICMP6, len(body)) if len(src) == 16 else 0
    return body[:2] + _U16.pack(checksum(body, initial)) + body[4:]


def echo_packet(
    src: str,
    dst: str,
    ident: int,
    seq: int,
    payload: bytes,
    *,
    reply: bool = False,
    ttl: int = 64,
) -> bytes:
    """An IPv4 or IPv6 ICMP echo request (or, with ``reply``, an echo reply).

    IPv4 packets have DF set, so a router would never fragment them: an echo
    exactly at the tunnel MTU must arrive whole.
    """
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    if s.version != d.version:
        raise ValueError("source and destination must be the same IP version")
    if s.version == 4:
        kind = ICMP4_ECHO_REPLY if reply else ICMP4_ECHO_REQUEST
        body = _icmp(s.packed, d.packed, kind, ident, seq, payload)
        return ipv4_packet(s.packed, d.packed, body, PROTO_ICMP, ttl=ttl, ident=ident)
    kind = ICMP6_ECHO_REPLY if reply else ICMP6_ECHO_REQUEST
    body = _icmp(s.packed, d.packed, kind, ident, seq, payload)
    return ipv6_packet(s.packed, d.packed, body, PROTO_ICMP6, hop_limit=ttl)


@dataclass(frozen=True)
class Echo:
    """A parsed ICMP echo packet."""

    src: str
    dst: str
    reply: bool
    ident: int
    seq: int
    payload: bytes
    length: int  # the IP packet's own length, without tunnel padding


def parse_echo(packet: bytes | bytearray | memoryview, ip: IpHeader | None = None) -> Echo | None:
    """Parse an ICMP/ICMPv6 echo request or reply (trailing padding allowed;
    the ICMP checksum is not checked); None for anything else."""
    ip = ip or parse_ip(packet)
    if ip is None or ip.fragment:
        return None
    body = packet[ip.header_len : ip.length]
    if len(body) < _ICMP_HEADER_LEN:
        return None
    if ip.version == 4:
        if ip.proto != PROTO_ICMP:
            return None
        kinds = {ICMP4_ECHO_REQUEST: False, ICMP4_ECHO_REPLY: True}
    else:
        if ip.proto != PROTO_ICMP6:
            return None
        kinds = {ICMP6_ECHO_REQUEST: False, ICMP6_ECHO_REPLY: True}
    kind, code, _, ident, seq = _ICMP.unpack_from(body)
    if kind not in kinds or code != 0:
        return None
    return Echo(
        str(ipaddress.ip_address(ip.src)),
        str(ipaddress.ip_address(ip.dst)),
        kinds[kind],
        ident,
        seq,
        bytes(body[_ICMP_HEADER_LEN:]),
        ip.length,
    )


def echo_checksum_ok(packet: bytes | bytearray | memoryview, ip: IpHeader) -> bool:
    """Whether the ICMP/ICMPv6 checksum of an echo packet verifies."""
    body = packet[ip.header_len : ip.length]
    initial = pseudo_sum(ip.src, ip.dst, PROTO_ICMP6, len(body)) if ip.version == 6 else 0
    return _verifies(body, initial)


def echo_reply_for(packet: bytes | bytearray | memoryview, ip: IpHeader) -> bytes:
    """The echo reply to the echo request ``packet`` (addresses swapped, same
    identifier, sequence and data)."""
    body = packet[ip.header_len : ip.length]
    _, _, _, ident, seq = _ICMP.unpack_from(body)
    kind = ICMP4_ECHO_REPLY if ip.version == 4 else ICMP6_ECHO_REPLY
    reply = _icmp(ip.dst, ip.src, kind, ident, seq, bytes(body[_ICMP_HEADER_LEN:]))
    proto = PROTO_ICMP if ip.version == 4 else PROTO_ICMP6
    return ip_packet(ip.dst, ip.src, proto, reply)
