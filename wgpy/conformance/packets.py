"""Inner IP packets the conformance runner sends through the tunnel.

The runner has no TUN: it builds IPv4/IPv6 ICMP echo packets itself, so it
knows every byte the target's IP stack receives, and parses what comes back.
Only what the scenarios need is here: echo request/reply with correct
checksums, and a parser that recognises an echo reply.
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
    "Echo",
    "echo_overhead",
    "echo_packet",
    "inner_length",
    "parse_echo",
]

ICMP4_ECHO_REQUEST: Final = 8
ICMP4_ECHO_REPLY: Final = 0
ICMP6_ECHO_REQUEST: Final = 128
ICMP6_ECHO_REPLY: Final = 129
IP4_HEADER_LEN: Final = 20
IP6_HEADER_LEN: Final = 40
_ICMP_HEADER_LEN: Final = 8
_PROTO_ICMP: Final = 1
_PROTO_ICMP6: Final = 58
_IP4: Final = struct.Struct("!BBHHHBBH4s4s")
_IP6: Final = struct.Struct("!IHBB16s16s")
_ICMP: Final = struct.Struct("!BBHHH")


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_overhead(version: int) -> int:
    """Bytes of IP and ICMP header around an echo payload."""
    return (IP4_HEADER_LEN if version == 4 else IP6_HEADER_LEN) + _ICMP_HEADER_LEN


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
        icmp = _ICMP.pack(kind, 0, 0, ident, seq) + payload
        icmp = icmp[:2] + struct.pack("!H", _checksum(icmp)) + icmp[4:]
        total = IP4_HEADER_LEN + len(icmp)
        hdr = _IP4.pack(0x45, 0, total, ident, 0x4000, ttl, _PROTO_ICMP, 0, s.packed, d.packed)
        hdr = hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:]
        return hdr + icmp
    kind = ICMP6_ECHO_REPLY if reply else ICMP6_ECHO_REQUEST
    icmp = _ICMP.pack(kind, 0, 0, ident, seq) + payload
    # ICMPv6 checksum covers a pseudo-header (RFC 8200 8.1).
    pseudo = s.packed + d.packed + struct.pack("!I3xB", len(icmp), _PROTO_ICMP6)
    icmp = icmp[:2] + struct.pack("!H", _checksum(pseudo + icmp)) + icmp[4:]
    hdr = _IP6.pack(6 << 28, len(icmp), _PROTO_ICMP6, ttl, s.packed, d.packed)
    return hdr + icmp


def inner_length(packet: bytes) -> int | None:
    """The length an IP header claims (IPv4 total length, IPv6 payload + 40),
    or None if ``packet`` does not start with a plausible IP header."""
    if len(packet) >= IP4_HEADER_LEN and packet[0] >> 4 == 4:
        length = int.from_bytes(packet[2:4], "big")
        return length if length >= IP4_HEADER_LEN else None
    if len(packet) >= IP6_HEADER_LEN and packet[0] >> 4 == 6:
        return IP6_HEADER_LEN + int.from_bytes(packet[4:6], "big")
    return None


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


def parse_echo(packet: bytes) -> Echo | None:
    """Parse an ICMP/ICMPv6 echo request or reply (trailing padding allowed);
    None for anything else."""
    length = inner_length(packet)
    if length is None or length > len(packet):
        return None
    pkt = packet[:length]
    if pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0x0F) * 4
        if pkt[9] != _PROTO_ICMP or ihl < IP4_HEADER_LEN or len(pkt) < ihl + _ICMP_HEADER_LEN:
            return None
        src, dst = pkt[12:16], pkt[16:20]
        body = pkt[ihl:]
        kinds = {ICMP4_ECHO_REQUEST: False, ICMP4_ECHO_REPLY: True}
    else:
        if pkt[6] != _PROTO_ICMP6 or len(pkt) < IP6_HEADER_LEN + _ICMP_HEADER_LEN:
            return None
        src, dst = pkt[8:24], pkt[24:40]
        body = pkt[IP6_HEADER_LEN:]
        kinds = {ICMP6_ECHO_REQUEST: False, ICMP6_ECHO_REPLY: True}
    kind, code, _, ident, seq = _ICMP.unpack_from(body)
    if kind not in kinds or code != 0:
        return None
    return Echo(
        str(ipaddress.ip_address(src)),
        str(ipaddress.ip_address(dst)),
        kinds[kind],
        ident,
        seq,
        bytes(body[_ICMP_HEADER_LEN:]),
        length,
    )
