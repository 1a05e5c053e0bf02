"""TUN offloads: virtio_net_hdr, TSO/USO segmentation, checksums, GRO coalescing.

Pure functions over byte buffers, used by :class:`wgpy.tun.linux.LinuxTun`
when it is opened with ``IFF_VNET_HDR``.  Every read from such a TUN starts
with a 10-byte ``struct virtio_net_hdr`` (host byte order) and may carry a
TCP or UDP "super-packet" of up to 64 KiB that the kernel left for us to cut
into MTU-sized packets (:func:`split_read`).  In the other direction,
same-flow packets of one write batch are merged back into super-packets
(:func:`coalesce`) so the kernel's stack handles 64 KiB per write.

Checksums are Internet (RFC 1071) ones' complement sums.  Internally a sum is
kept as its residue modulo 0xFFFF (2**16 == 1 mod 0xFFFF, so the sum of
16-bit big-endian words is the big integer modulo 0xFFFF).  Bulk sums use
numpy when it is importable (one vectorised call per super-packet or batch);
a pure-Python path (``int.from_bytes(...) % 0xFFFF``) gives the same results.
Neither trusts the input: malformed data raises :class:`OffloadError` and
nothing else.

Checksums and coalescing: a merged super-packet is handed over as
CHECKSUM_PARTIAL, so the kernel never checks it again.  :func:`coalesce` can
verify each packet's TCP/UDP checksum first (``verify=True``, its default as
a library function); a packet that fails is then written alone and the
kernel judges it.  wgpy's TUN does not ask for it
(:data:`wgpy.constants.TUN_GRO_VERIFY_CHECKSUMS` is False): every packet it
writes was authenticated end to end by Poly1305, and the kernel's WireGuard
marks decrypted packets CHECKSUM_UNNECESSARY for the same reason, so a bad
checksum could only come from the authenticated peer itself (or a host
behind it, whose packets the peer forwarded as they were).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any, Final, NamedTuple

from wgpy.inet import PROTO_TCP, PROTO_UDP, checksum, ones_sum

_numpy: Any
try:  # Optional accelerator: numpy is not a dependency of wgpy.
    import numpy as _numpy
except ImportError:  # pragma: no cover - exercised via set_numpy(False)
    _numpy = None

__all__ = [
    "GSO_NONE",
    "GSO_TCPV4",
    "GSO_TCPV6",
    "GSO_UDP_L4",
    "VIRTIO_NET_HDR_F_DATA_VALID",
    "VIRTIO_NET_HDR_F_NEEDS_CSUM",
    "VNET_HDR_LEN",
    "ZERO_VNET_HDR",
    "OffloadError",
    "VirtioNetHdr",
    "coalesce",
    "numpy_enabled",
    "ones_sums",
    "pack_vnet_hdr",
    "parse_vnet_hdr",
    "segment",
    "set_numpy",
    "split_read",
]

# <linux/virtio_net.h>
VIRTIO_NET_HDR_F_NEEDS_CSUM: Final = 1
VIRTIO_NET_HDR_F_DATA_VALID: Final = 2
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3  # UFO, long deprecated; refused
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80

_VNET = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
#: csum_start and csum_offset, at byte 6 of the header.
VNET_CSUM: Final = struct.Struct("=HH")
VNET_HDR_LEN: Final = _VNET.size
#: Header for a packet that needs nothing from the kernel.
ZERO_VNET_HDR: Final = bytes(VNET_HDR_LEN)

_TCP: Final = PROTO_TCP
_UDP: Final = PROTO_UDP
_FIN: Final = 0x01
_PSH: Final = 0x08
_ACK: Final = 0x10
_CWR: Final = 0x80
_TCP_CSUM_OFFSET: Final = 16
_UDP_CSUM_OFFSET: Final = 6
#: Largest IP packet a coalesced or segmented packet may become.
_MAX_PACKET: Final = 0xFFFF
#: Below this many bytes in one bulk call, pure Python beats numpy's call overhead.
_NUMPY_MIN_BYTES: Final = 4096

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
# IPv4 bytes 2..11: total length, id, flags+fragment offset, ttl, protocol, checksum.
_IP4_MID = struct.Struct("!HHHBBH")
# TCP bytes 4..17: seq, ack, data offset byte, flags, window, checksum.
_TCP_MID = struct.Struct("!IIBBHH")
# UDP bytes 4..7: length, checksum.
_UDP_LC = struct.Struct("!HH")

_np: Any = _numpy


class OffloadError(ValueError):
    """A TUN read (vnet header + packet) that cannot be processed; drop it.

    ``reason`` is a short token suitable for a drop counter.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class VirtioNetHdr(NamedTuple):
    """``struct virtio_net_hdr`` (the legacy 10-byte layout, host byte order)."""

    flags: int
    gso_type: int
    hdr_len: int
    gso_size: int
    csum_start: int
    csum_offset: int


def parse_vnet_hdr(buf: bytes | bytearray | memoryview) -> VirtioNetHdr:
    """Decode the first 10 bytes of ``buf``; OffloadError if it is shorter."""
    if len(buf) < VNET_HDR_LEN:
        raise OffloadError("short_vnet_hdr", f"{len(buf)} bytes")
    return VirtioNetHdr(*_VNET.unpack_from(buf))


def pack_vnet_hdr(
    flags: int = 0,
    gso_type: int = GSO_NONE,
    hdr_len: int = 0,
    gso_size: int = 0,
    csum_start: int = 0,
    csum_offset: int = 0,
) -> bytes:
    """Encode a virtio_net_hdr."""
    return _VNET.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


# -- checksums ------------------------------------------------------------------------


def numpy_enabled() -> bool:
    """True when bulk checksums use numpy."""
    return _np is not None


def set_numpy(enabled: bool) -> bool:
    """Use numpy for bulk sums (if importable) or force pure Python; returns the old state."""
    global _np
    old = _np is not None
    _np = _numpy if enabled else None
    return old


def _le_to_be(residue: int) -> int:
    # Summing little-endian words gives the byte-swapped sum: times 256 mod 0xFFFF.
    return (residue * 256) % 0xFFFF


def ones_sums(chunks: Sequence[bytes | bytearray | memoryview]) -> list[int]:
    """:func:`ones_sum` of every chunk, with one numpy call when it pays."""
    np = _np
    if np is None or len(chunks) < 2:
        return [ones_sum(c) for c in chunks]
    parts: list[bytes | bytearray | memoryview] = []
    starts: list[int] = []
    pos = 0
    for chunk in chunks:
        size = len(chunk)
        starts.append(pos >> 1)
        parts.append(chunk)
        if size & 1:
            parts.append(b"\0")
            size += 1
        pos += size
    if pos < _NUMPY_MIN_BYTES:
        return [ones_sum(c) for c in chunks]
    parts.append(b"\0\0")  # reduceat needs every start index inside the array
    words = np.frombuffer(b"".join(parts), dtype="<u2")
    sums = np.add.reduceat(words, starts, dtype=np.uint64)
    out = [_le_to_be(int(s) % 0xFFFF) for s in sums.tolist()]
    # reduceat yields words[i] (not 0) for an empty chunk.
    for i, chunk in enumerate(chunks):
        if not chunk:
            out[i] = 0
    return out


def _chunk_sums(buf: memoryview, start: int, end: int, size: int) -> list[int]:
    """Residues of ``buf[start:end]`` cut into ``size``-byte chunks (last may be short)."""
    total = end - start
    full = total // size
    np = _np
    out: list[int]
    if np is not None and full >= 2 and total >= _NUMPY_MIN_BYTES:
        if size & 1 == 0:
            words = np.frombuffer(buf, dtype="<u2", count=full * size // 2, offset=start)
            sums = words.reshape(full, size // 2).sum(axis=1, dtype=np.uint64)
            out = [_le_to_be(int(s) % 0xFFFF) for s in sums.tolist()]
        else:
            # Odd size: chunks alternate alignment; sum high and low bytes apart.
            octets = np.frombuffer(buf, dtype=np.uint8, count=full * size, offset=start)
            rows = octets.reshape(full, size)
            high = rows[:, 0::2].sum(axis=1, dtype=np.uint64)
            low = rows[:, 1::2].sum(axis=1, dtype=np.uint64)
            out = [int(s) % 0xFFFF for s in (high * 256 + low).tolist()]
        pos = start + full * size
        if pos < end:
            out.append(ones_sum(buf[pos:end]))
        return out
    from_bytes = int.from_bytes
    out = []
    for pos in range(start, end, size):
        stop = min(pos + size, end)
        value = from_bytes(buf[pos:stop], "big")
        if (stop - pos) & 1:
            value <<= 8
        out.append(value % 0xFFFF)
    return out


# -- read path: split super-packets ---------------------------------------------------


def split_read(buf: bytes | bytearray | memoryview) -> list[bytes]:
    """Turn one TUN read (vnet header + packet) into checksum-complete IP packets.

    A GSO super-packet is cut by ``gso_size``; a plain packet flagged
    NEEDS_CSUM gets its transport checksum filled in.  Raises
    :class:`OffloadError` for anything malformed.
    """
    view = memoryview(buf)
    hdr = parse_vnet_hdr(view)
    packet = view[VNET_HDR_LEN:]
    if hdr.gso_type == GSO_NONE:
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            return [complete_checksum(packet, hdr.csum_start, hdr.csum_offset)]
        if not packet:
            raise OffloadError("empty")
        return [bytes(packet)]
    return segment(packet, hdr)


def complete_checksum(packet: memoryview, csum_start: int, csum_offset: int) -> bytes:
    """Finish a CHECKSUM_PARTIAL packet: the field holds the pseudo-header sum.

    Summing from ``csum_start`` to the end with the field in place adds that
    pseudo-header sum exactly once, so no separate initial value is needed.
    """
    at = csum_start + csum_offset
    if csum_start < 20 or at + 2 > len(packet):
        raise OffloadError("bad_csum_offset", f"start {csum_start} offset {csum_offset}")
    value = checksum(packet[csum_start:])
    return b"".join((packet[:at], _U16.pack(value), packet[at + 2 :]))


def _l4_offset(packet: memoryview, hdr: VirtioNetHdr, version: int, proto: int) -> int:
    """The transport header offset, cross-checked against the IP header."""
    n = len(packet)
    if version == 4:
        if n < 20:
            raise OffloadError("short_ip")
        ihl = (packet[0] & 0x0F) * 4
        if ihl < 20 or packet[9] != proto:
            raise OffloadError("bad_ip_header")
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM and hdr.csum_start != ihl:
            raise OffloadError("bad_csum_start")
        return ihl
    if n < 40:
        raise OffloadError("short_ip")
    if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
        l4 = hdr.csum_start  # may be past extension headers
        if l4 < 40 or (l4 == 40 and packet[6] != proto):
            raise OffloadError("bad_csum_start")
        return l4
    if packet[6] != proto:
        raise OffloadError("bad_ip_header")
    return 40


def segment(packet: memoryview, hdr: VirtioNetHdr) -> list[bytes]:
    """Cut a TSO/USO super-packet into IP packets of at most ``gso_size`` payload.

    Headers are copied; IPv4 total length, id (+1 per segment) and header
    checksum, IPv6 payload length, TCP sequence numbers (FIN/PSH only on the
    last segment, CWR only on the first) and UDP lengths are set and every
    transport checksum is computed from scratch.  ``hdr_len`` is ignored (the
    kernel can report the whole first packet there on the forwarding path).
    """
    gso_type = hdr.gso_type & ~GSO_ECN
    n = len(packet)
    if n < 1:
        raise OffloadError("empty")
    version = packet[0] >> 4
    if (gso_type, version) in ((GSO_TCPV4, 4), (GSO_TCPV6, 6)):
        proto = _TCP
    elif gso_type == GSO_UDP_L4 and version in (4, 6):
        proto = _UDP
    else:
        raise OffloadError("bad_gso_type", f"type {hdr.gso_type} for IPv{version}")
    l4 = _l4_offset(packet, hdr, version, proto)
    if proto == _TCP:
        if n < l4 + 20:
            raise OffloadError("short_l4")
        thl = (packet[l4 + 12] >> 4) * 4
        if thl < 20:
            raise OffloadError("bad_tcp_header")
    else:
        thl = 8
    hl = l4 + thl
    size = hdr.gso_size
    if n <= hl:
        raise OffloadError("no_payload")
    if size < 1:
        raise OffloadError("bad_gso_size")
    if hl + min(size, n - hl) > _MAX_PACKET:
        raise OffloadError("segment_too_large")

    sums = _chunk_sums(packet, hl, n, size)
    count = len(sums)
    last = count - 1
    tail = n - hl - last * size
    addrs = ones_sum(packet[12:20] if version == 4 else packet[8:40])
    tmpl = bytearray(packet[:hl])
    out: list[bytes] = []
    append = out.append
    join = b"".join

    v4 = version == 4
    if v4:
        _, ip_id, frag, ttl, _, _ = _IP4_MID.unpack_from(tmpl, 2)
        _IP4_MID.pack_into(tmpl, 2, 0, 0, frag, ttl, proto, 0)
        ip_base = ones_sum(tmpl[:l4]) + l4  # + l4: the IP header's share of total length
    else:
        ip_id = frag = ttl = ip_base = 0
    pack_ip = _IP4_MID.pack_into
    pack_len = _U16.pack_into
    tcp = proto == _TCP
    if tcp:
        seq, ack, doff, flags, window, _ = _TCP_MID.unpack_from(tmpl, l4 + 4)
        _TCP_MID.pack_into(tmpl, l4 + 4, 0, ack, doff, 0, window, 0)
        l4_base = (ones_sum(tmpl[l4:hl]) + addrs + _TCP) % 0xFFFF
        pack_l4 = _TCP_MID.pack_into
        # FIN/PSH only on the last segment, CWR only on the first (as the kernel's GSO).
        first_flags = flags & ~(_FIN | _PSH) if last else flags
        mid_flags = flags & ~(_FIN | _PSH | _CWR)
        last_flags = flags & ~_CWR if last else flags
    else:
        seq = ack = doff = flags = window = first_flags = mid_flags = last_flags = 0
        # The UDP length counts twice: pseudo-header and UDP header.
        l4_base = (ones_sum(tmpl[l4 : l4 + 4]) + addrs + _UDP) % 0xFFFF
        pack_l4 = _UDP_LC.pack_into
    seg_len = size
    f = first_flags
    pos = hl
    for i in range(count):
        if i == last:
            seg_len = tail
            f = last_flags
        elif i == 1:
            f = mid_flags
        l4_len = thl + seg_len
        if tcp:
            s = (seq + i * size) & 0xFFFFFFFF
            csum = 0xFFFF - (l4_base + l4_len + f + (s >> 16) + (s & 0xFFFF) + sums[i]) % 0xFFFF
            pack_l4(tmpl, l4 + 4, s, ack, doff, f, window, csum)
        else:
            csum = 0xFFFF - (l4_base + 2 * l4_len + sums[i]) % 0xFFFF
            pack_l4(tmpl, l4 + 4, l4_len, csum)
        if v4:
            ident = (ip_id + i) & 0xFFFF
            ip_csum = 0xFFFF - (ip_base + l4_len + ident) % 0xFFFF
            pack_ip(tmpl, 2, l4 + l4_len, ident, frag, ttl, proto, ip_csum)
        else:
            pack_len(tmpl, 4, l4 + l4_len - 40)
        append(join((tmpl, packet[pos : pos + seg_len])))
        pos += size
    return out


# -- write path: coalesce same-flow packets -------------------------------------------


class _Group:
    """A run of same-flow packets that will be written as one super-packet."""

    __slots__ = (
        "closed",
        "first_seq",
        "gso",
        "head",
        "hl",
        "ihl",
        "index",
        "length",
        "next_seq",
        "parts",
        "proto",
        "psh",
        "sig",
        "verified",
    )

    def __init__(
        self, head: bytes, index: int, ihl: int, hl: int, proto: int, seq: int, paylen: int
    ) -> None:
        self.head = head  # the packet whose headers the super-packet keeps
        self.index = index  # its position in the batch
        self.ihl = ihl
        self.hl = hl
        self.proto = proto
        self.first_seq = seq
        self.next_seq = (seq + paylen) & 0xFFFFFFFF
        self.gso = paylen  # segment size; only a last, shorter segment may differ
        self.psh = False
        self.closed = False  # a shorter segment (or a bad checksum) ended the run
        self.parts: list[bytes | memoryview] = [head]
        self.length = len(head)
        self.verified = False
        self.sig = b""  # UDP: IP fields that must match (TOS, DF, TTL, ...)


#: Per candidate shape (see _candidate): the mask that keeps, of the TCP
#: packet's headers read as one big-endian integer, what must be equal for
#: segments to merge.
_TCP_KEY_MASKS: dict[int, int] = {}


def _tcp_key_mask(shape: int) -> int:
    """The GRO key mask for a TCP candidate of this shape.

    Masked out are the fields that differ per segment: IPv4 total length, id
    and header checksum, IPv6 payload length, TCP sequence number, flags and
    checksum.  What remains is the kernel's GRO rule: same addresses, ports,
    ack, window, urgent pointer, options, IPv4 TOS/DF/TTL, IPv6 traffic
    class/flow label/hop limit.  The leading version byte is kept, so keys of
    different header lengths never collide.
    """
    mask = _TCP_KEY_MASKS.get(shape)
    if mask is None:
        ihl, hl = (shape >> 8) & 0xFF, shape >> 16
        keep = bytearray(b"\xff" * hl)
        ip_fields = [(2, 6), (10, 12)] if ihl == 20 else [(4, 6)]
        for start, end in [
            *ip_fields,
            (ihl + 4, ihl + 8),
            (ihl + 13, ihl + 14),
            (ihl + 16, ihl + 18),
        ]:
            keep[start:end] = bytes(end - start)
        mask = _TCP_KEY_MASKS[shape] = int.from_bytes(keep, "big")
    return mask


def _bulk_valid(pkts: list[bytes], np: Any) -> list[int]:
    """Checksum validity (1/0) of TCP/UDP packets without IP options, in one numpy call.

    The addresses sit right before the transport header (IPv4 12..20, IPv6
    8..40), so one sum from there to the end covers the pseudo-header's
    addresses and the segment; protocol and length are added per packet.
    """
    parts: list[bytes] = []
    bounds: list[int] = []
    extra: list[int] = []
    pos = 0
    for p in pkts:
        n = len(p)
        if p[0] >> 4 == 4:
            bounds.append((pos + 12) >> 1)
            extra.append(p[9] + n - 20)
        else:
            bounds.append((pos + 8) >> 1)
            extra.append(p[6] + n - 40)
        parts.append(p)
        if n & 1:
            parts.append(b"\0")
            n += 1
        pos += n
        bounds.append(pos >> 1)
    parts.append(b"\0\0")  # every index must lie inside the array
    words = np.frombuffer(b"".join(parts), dtype="<u2")
    sums = np.add.reduceat(words, bounds, dtype=np.uint64)[0::2].tolist()
    # Little-endian word sums are the byte-swapped sum: scale the rest by 256 to match.
    return [int((s + e * 256) % 0xFFFF == 0) for s, e in zip(sums, extra, strict=True)]


def _valid(p: bytes, ihl: int) -> bool:
    """True when the packet's TCP/UDP checksum verifies (pseudo-header included)."""
    if ihl == 20:
        pseudo = int.from_bytes(p[12:20], "big") + p[9]
    else:
        pseudo = int.from_bytes(p[8:40], "big") + p[6]
    rest = memoryview(p)[ihl:]
    return (pseudo + len(rest) + ones_sum(rest)) % 0xFFFF == 0


def _candidate(p: bytes, udp: bool) -> int:
    """How a packet may coalesce: ``protocol | ip_header_len << 8 |
    headers_len << 16``, or 0 when it must be written alone (see coalesce)."""
    n = len(p)
    if n < 29:
        return 0
    b0 = p[0]
    if b0 == 0x45:
        if (p[2] << 8 | p[3]) != n or p[6] & 0x3F or p[7]:
            return 0  # bad length, or a fragment
        ihl = 20
        proto = p[9]
    elif b0 >> 4 == 6:
        if n < 49 or (p[4] << 8 | p[5]) != n - 40:
            return 0
        ihl = 40
        proto = p[6]
    else:
        return 0  # not IP, or IPv4 with options
    if proto == _TCP:
        if n < ihl + 21:
            return 0
        hl = ihl + (p[ihl + 12] >> 4) * 4
        if hl < ihl + 20 or n <= hl or p[ihl + 13] not in (_ACK, _ACK | _PSH):
            return 0
    elif proto == _UDP and udp:
        hl = ihl + 8
        if (p[ihl + 4] << 8 | p[ihl + 5]) != n - ihl or not (p[ihl + 6] or p[ihl + 7]):
            return 0  # bad length, or no checksum (IPv4) / invalid (IPv6)
    else:
        return 0
    return proto | ihl << 8 | hl << 16


def coalesce(
    packets: Sequence[bytes | bytearray | memoryview],
    *,
    udp: bool = False,
    verify: bool = True,
) -> list[list[bytes | memoryview]]:
    """Merge same-flow TCP (and, with ``udp``, UDP) packets into GSO super-packets.

    Returns write units in batch order; each is a list of buffers for one
    ``writev``, starting with a virtio_net_hdr.  A unit of more than two
    buffers is a super-packet of ``len(unit) - 2`` segments; others are
    ``[ZERO_VNET_HDR, packet]``.  A super-packet takes the place of its
    first packet in the batch.

    TCP rules (the kernel's GRO rules, as in wireguard-go): IPv4 without
    options and not fragmented, or IPv6 without extension headers; equal
    addresses, ports, ack, window, TCP options and IP TOS/TTL/DF (IPv6:
    traffic class, flow label, hop limit); flags exactly ACK or ACK|PSH;
    adjacent sequence numbers (appending, or prepending a packet that came
    out of order); equal payload sizes with at most one smaller tail; PSH
    only on the last segment; at most 65535 bytes.  UDP: only onto the
    flow's latest run (no reordering), equal sizes with a smaller tail,
    non-zero checksum.  With ``verify`` every merged packet's transport
    checksum must be correct (see the module docstring).
    """
    count = len(packets)
    pkts = [p if type(p) is bytes else bytes(p) for p in packets]
    # Pass 1: find candidates (protocol, IP header and headers length).
    shapes = [_candidate(p, udp) for p in pkts]
    # Checksum validity per packet: 1 good, 0 bad, -1 not computed yet.
    valid = [-1] * count
    if verify and _np is not None:
        todo = [i for i in range(count) if shapes[i]]
        if len(todo) > 1:
            for i, ok in zip(todo, _bulk_valid([pkts[i] for i in todo], _np), strict=True):
                valid[i] = ok

    def check(i: int) -> bool:
        if not verify:
            return True
        ok = valid[i]
        if ok < 0:
            ok = valid[i] = _valid(pkts[i], (shapes[i] >> 8) & 0xFF)
        return ok > 0

    # Pass 2: merge.
    masks = _TCP_KEY_MASKS
    slots: list[_Group | bytes] = []
    tcp_runs: dict[int, list[_Group]] = {}
    udp_last: dict[bytes, _Group] = {}
    for i, p in enumerate(pkts):
        shape = shapes[i]
        if not shape:
            slots.append(p)
            continue
        kind = shape & 0xFF
        ihl = (shape >> 8) & 0xFF
        hl = shape >> 16
        paylen = len(p) - hl
        if kind == _TCP:
            headers = int.from_bytes(p[:hl], "big")
            mask = masks.get(shape)  # the cache hit inlined; a miss fills it
            key = headers & (mask if mask is not None else _tcp_key_mask(shape))
            seq = (headers >> ((hl - ihl - 8) << 3)) & 0xFFFFFFFF
            psh = p[ihl + 13] == _ACK | _PSH
            runs = tcp_runs.get(key)
            if runs is None:
                runs = tcp_runs[key] = []
            else:
                # Fast path: in-order data appends to the flow's newest run.
                g = runs[-1]
                if (
                    seq == g.next_seq
                    and not (g.closed or g.psh)
                    and paylen <= g.gso
                    and g.length + paylen <= _MAX_PACKET
                    and (not verify or (check(i) and (g.verified or check(g.index))))
                ):
                    g.verified = True
                    g.parts.append(memoryview(p)[hl:])
                    g.length += paylen
                    g.next_seq = (seq + paylen) & 0xFFFFFFFF
                    g.psh = psh
                    g.closed = paylen < g.gso
                    continue
                if _tcp_merge(runs, p, i, hl, seq, paylen, psh, check):
                    continue
            g = _Group(p, i, ihl, hl, _TCP, seq, paylen)
            g.psh = psh
            runs.append(g)
        else:
            if ihl == 20:
                flow = p[12:24]
                sig = p[0:2] + p[6:9]
            else:
                flow = p[8:44]
                sig = p[0:4] + p[7:8]
            last = udp_last.get(flow)
            if (
                last is not None
                and not last.closed
                and last.sig == sig
                and paylen <= last.gso
                and last.length + paylen <= _MAX_PACKET
                and check(i)
                and (last.verified or check(last.index))
            ):
                last.verified = True
                last.parts.append(memoryview(p)[hl:])
                last.length += paylen
                last.closed = paylen < last.gso
                continue
            g = _Group(p, i, ihl, hl, _UDP, 0, paylen)
            g.sig = sig
            udp_last[flow] = g  # later packets may only join this newest run
        slots.append(g)
    out: list[list[bytes | memoryview]] = []
    for slot in slots:
        if type(slot) is bytes:
            out.append([ZERO_VNET_HDR, slot])
        else:
            assert isinstance(slot, _Group)
            out.append(_finish(slot))
    return out


def _tcp_merge(
    runs: list[_Group],
    p: bytes,
    i: int,
    hl: int,
    seq: int,
    paylen: int,
    psh: bool,
    check: Callable[[int], bool],
) -> bool:
    """Append or prepend ``p`` to one of its flow's runs; False if none fits."""
    for g in reversed(runs):
        if g.length + paylen > _MAX_PACKET or g.closed:
            continue
        if seq == g.next_seq:
            if g.psh or paylen > g.gso:
                continue
            if not check(i):
                return False
            if not (g.verified or check(g.index)):
                g.closed = True
                continue
            g.verified = True
            g.parts.append(memoryview(p)[hl:])
            g.length += paylen
            g.next_seq = (seq + paylen) & 0xFFFFFFFF
            g.psh = psh
            g.closed = paylen < g.gso
            return True
        if (seq + paylen) & 0xFFFFFFFF == g.first_seq:
            # An earlier segment that arrived late goes in front.
            if psh or paylen < g.gso or (paylen > g.gso and len(g.parts) > 1):
                continue
            if not check(i):
                return False
            if not (g.verified or check(g.index)):
                g.closed = True
                continue
            g.verified = True
            g.parts[0] = memoryview(g.head)[hl:]
            g.parts.insert(0, p)
            g.head = p
            g.index = i
            g.first_seq = seq
            g.length += paylen
            if paylen > g.gso:
                g.closed = True  # the old single packet is now the shorter tail
                g.gso = paylen
            return True
    return False


def _finish(g: _Group) -> list[bytes | memoryview]:
    """The write unit of a run: as-is if alone, else vnet header + new headers + payloads."""
    parts = g.parts
    head = g.head
    if len(parts) == 1:
        return [ZERO_VNET_HDR, head]
    ihl = g.ihl
    hl = g.hl
    total = g.length
    header = bytearray(head[:hl])
    if ihl == 20:
        header[10] = header[11] = 0
        _U16.pack_into(header, 2, total)
        _U16.pack_into(header, 10, checksum(header[:20]))
        addrs = int.from_bytes(head[12:20], "big")
        gso_type = GSO_TCPV4 if g.proto == _TCP else GSO_UDP_L4
    else:
        _U16.pack_into(header, 4, total - 40)
        addrs = int.from_bytes(head[8:40], "big")
        gso_type = GSO_TCPV6 if g.proto == _TCP else GSO_UDP_L4
    l4_len = total - ihl
    # CHECKSUM_PARTIAL: the field holds the folded (not inverted) pseudo-header sum.
    psum = (addrs + g.proto + l4_len) % 0xFFFF or 0xFFFF
    if g.proto == _TCP:
        if g.psh:
            header[ihl + 13] |= _PSH
        _U16.pack_into(header, ihl + _TCP_CSUM_OFFSET, psum)
        csum_offset = _TCP_CSUM_OFFSET
    else:
        _UDP_LC.pack_into(header, ihl + 4, l4_len, psum)
        csum_offset = _UDP_CSUM_OFFSET
    vnet = _VNET.pack(VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, hl, g.gso, ihl, csum_offset)
    out: list[bytes | memoryview] = [vnet, bytes(header), memoryview(head)[hl:]]
    out.extend(parts[1:])
    return out
