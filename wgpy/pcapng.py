"""Minimal pcapng writing: one raw-IP interface, packets, and a Decryption
Secrets Block holding a WireGuard key log (so Wireshark decrypts the
capture without ``wg.keylog_file``).

Block layouts are those of the pcapng specification (draft-ietf-opsawg-
pcapng): Section Header, Interface Description (LINKTYPE_RAW, microsecond
timestamps), Decryption Secrets (secrets type 0x57474B4C, "WGKL"),
Enhanced Packet.  Little-endian throughout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import BinaryIO, Final

__all__ = ["LINKTYPE_RAW", "SECRETS_WIREGUARD_KEYLOG", "write_pcapng"]

LINKTYPE_RAW: Final = 101  # each packet starts with its IPv4 or IPv6 header
SECRETS_WIREGUARD_KEYLOG: Final = 0x57474B4C

_SHB, _IDB, _EPB, _DSB = 0x0A0D0D0A, 0x00000001, 0x00000006, 0x0000000A


def _block(kind: int, body: bytes) -> bytes:
    body += bytes(-len(body) % 4)
    total = 12 + len(body)
    return struct.pack("<II", kind, total) + body + struct.pack("<I", total)


def write_pcapng(
    fh: BinaryIO,
    packets: Iterable[tuple[int, bytes]],
    keylog: str = "",
) -> int:
    """Write a pcapng file: ``packets`` are (Unix microseconds, IP packet);
    ``keylog`` (Wireshark WireGuard key-log lines) goes into a Decryption
    Secrets Block before them.  Returns the number of packets written."""
    fh.write(_block(_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
    fh.write(_block(_IDB, struct.pack("<HHI", LINKTYPE_RAW, 0, 0)))
    if keylog:
        secret = keylog.encode()
        fh.write(_block(_DSB, struct.pack("<II", SECRETS_WIREGUARD_KEYLOG, len(secret)) + secret))
    n = 0
    for micros, data in packets:
        head = struct.pack("<IIIII", 0, micros >> 32, micros & 0xFFFFFFFF, len(data), len(data))
        fh.write(_block(_EPB, head + data))
        n += 1
    return n
