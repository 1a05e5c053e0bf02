"""wgpy.tun.offload: vnet header, TSO/USO segmentation, checksums, GRO coalescing.

Every checksum is checked with the reference below, written from RFC 1071
(sum of 16-bit words with end-around carry), independently of the module's
modulo-0xFFFF arithmetic.  Each test that touches bulk sums runs twice: with
numpy and with the pure-Python fallback.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgpy import inet
from wgpy.tun import offload as off

MODES = [pytest.param(True, id="numpy"), pytest.param(False, id="pure")]


@contextlib.contextmanager
def numpy_mode(enabled: bool) -> Iterator[None]:
    if enabled and not off.set_numpy(True) and not off.numpy_enabled():
        pytest.skip("needs numpy for the accelerated path")
    old = off.set_numpy(enabled)
    try:
        yield
    finally:
        off.set_numpy(old)


# -- reference checksums (RFC 1071) -------------------------------------------------------


def ref_sum(data: bytes) -> int:
    """Ones' complement sum of 16-bit big-endian words, folded to 16 bits."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ref_checksum(data: bytes) -> int:
    return ~ref_sum(data) & 0xFFFF


def pseudo(packet: bytes, l4_len: int) -> bytes:
    if packet[0] >> 4 == 4:
        return packet[12:20] + struct.pack("!BBH", 0, packet[9], l4_len)
    return packet[8:40] + struct.pack("!I3xB", l4_len, packet[6])


def l4_offset(packet: bytes) -> int:
    return (packet[0] & 0xF) * 4 if packet[0] >> 4 == 4 else 40


def l4_checksum_ok(packet: bytes) -> bool:
    """Transport checksum verifies (sum over pseudo-header + segment is 0xFFFF)."""
    off4 = l4_offset(packet)
    body = packet[off4:]
    return ref_sum(pseudo(packet, len(body)) + body) == 0xFFFF


def ip_checksum_ok(packet: bytes) -> bool:
    return packet[0] >> 4 == 6 or ref_sum(packet[: l4_offset(packet)]) == 0xFFFF


# -- packet builders --------------------------------------------------------------------

SRC4, DST4 = socket.inet_aton("10.1.2.3"), socket.inet_aton("10.9.8.7")
SRC6 = socket.inet_pton(socket.AF_INET6, "fd00:1::3")
DST6 = socket.inet_pton(socket.AF_INET6, "fd00:9::7")
TS_OPTS = b"\x01\x01\x08\x0a" + bytes(range(8))  # NOP NOP timestamps


def ip_header(
    version: int,
    proto: int,
    l4_len: int,
    *,
    tos: int = 0,
    ttl: int = 64,
    ip_id: int = 0x1000,
    frag: int = 0x4000,
    ip_options: bytes = b"",
    flow: int = 0x12345,
) -> bytes:
    if version == 4:
        ihl = 20 + len(ip_options)
        hdr = struct.pack(
            "!BBHHHBBH4s4s", 0x40 | ihl // 4, tos, ihl + l4_len, ip_id, frag, ttl, proto, 0,
            SRC4, DST4,
        ) + ip_options  # fmt: skip
        return hdr[:10] + struct.pack("!H", ref_checksum(hdr)) + hdr[12:]
    first = (6 << 28) | (tos << 20) | flow
    return struct.pack("!IHBB16s16s", first, l4_len, proto, ttl, SRC6, DST6)


def finish_l4(ip: bytes, l4: bytes, csum_at: int, mode: str) -> bytes:
    """Fill the transport checksum: 'valid', 'partial' (pseudo-header sum) or 'bad'."""
    packet = ip + l4
    at = len(ip) + csum_at
    if mode == "partial":
        value = ref_sum(pseudo(packet, len(l4)))
    else:
        value = ref_checksum(pseudo(packet, len(l4)) + l4) or 0xFFFF
        if mode == "bad":
            value ^= 0x0101
    return packet[:at] + struct.pack("!H", value) + packet[at + 2 :]


def tcp(
    version: int = 4,
    payload: bytes = b"x" * 100,
    *,
    seq: int = 1000,
    ack: int = 5000,
    flags: int = 0x10,
    window: int = 502,
    options: bytes = TS_OPTS,
    sport: int = 40000,
    dport: int = 443,
    csum: str = "valid",
    **ip_kw: int | bytes,
) -> bytes:
    thl = 20 + len(options)
    seq &= 0xFFFFFFFF
    l4 = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, (thl // 4) << 4, flags, window, 0, 0)
    l4 += options + payload
    return finish_l4(ip_header(version, 6, len(l4), **ip_kw), l4, 16, csum)  # type: ignore[arg-type]


def udp(
    version: int = 4,
    payload: bytes = b"u" * 100,
    *,
    sport: int = 5353,
    dport: int = 51820,
    csum: str = "valid",
    **ip_kw: int | bytes,
) -> bytes:
    l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    if csum == "zero":
        return ip_header(version, 17, len(l4), **ip_kw) + l4  # type: ignore[arg-type]
    return finish_l4(ip_header(version, 17, len(l4), **ip_kw), l4, 6, csum)  # type: ignore[arg-type]


def super_read(packet: bytes, gso_size: int, *, hdr_len: int | None = None) -> bytes:
    """A TUN read as the kernel makes it: vnet header + packet with a partial checksum."""
    version = packet[0] >> 4
    l4 = l4_offset(packet)
    if packet[9 if version == 4 else 6] == 6:
        gso_type = off.GSO_TCPV4 if version == 4 else off.GSO_TCPV6
        csum_off = 16
        hl = l4 + (packet[l4 + 12] >> 4) * 4
    else:
        gso_type, csum_off, hl = off.GSO_UDP_L4, 6, l4 + 8
    # Turn the full checksum into the partial one the kernel leaves.
    at = l4 + csum_off
    partial = ref_sum(pseudo(packet, len(packet) - l4))
    packet = packet[:at] + struct.pack("!H", partial) + packet[at + 2 :]
    hdr = off.pack_vnet_hdr(
        off.VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hl if hdr_len is None else hdr_len,
        gso_size,
        l4,
        csum_off,
    )
    return hdr + packet


def tcp_fields(packet: bytes) -> tuple[int, int, int, int, bytes]:
    """(seq, ack, flags, window, options) of a TCP packet."""
    l4 = l4_offset(packet)
    seq, ack, doff, flags, window = struct.unpack_from("!IIBBH", packet, l4 + 4)
    return seq, ack, flags, window, packet[l4 + 20 : l4 + (doff >> 4) * 4]


def payload_of(packet: bytes) -> bytes:
    l4 = l4_offset(packet)
    if packet[9 if packet[0] >> 4 == 4 else 6] == 6:
        return packet[l4 + (packet[l4 + 12] >> 4) * 4 :]
    return packet[l4 + 8 :]


# -- checksum primitives -----------------------------------------------------------------


@pytest.mark.parametrize("use_numpy", MODES)
@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(max_size=3000), max_size=12))
def test_sums_match_reference(use_numpy: bool, chunks: list[bytes]) -> None:
    with numpy_mode(use_numpy):
        sums = off.ones_sums(chunks)
        assert len(sums) == len(chunks)
        for chunk, got in zip(chunks, sums, strict=True):
            # Residue arithmetic: 0 and 0xFFFF are the same ones' complement value.
            assert got % 0xFFFF == ref_sum(chunk) % 0xFFFF
            assert inet.ones_sum(chunk) == got
            value = inet.checksum(chunk)
            assert value != 0
            padded = chunk + b"\0" * (len(chunk) % 2)
            assert ref_sum(padded + struct.pack("!H", value)) == 0xFFFF


def test_checksum_known_values() -> None:
    # RFC 1071 section 3 example: words 0001 f203 f4f5 f6f7 sum to 0xddf2.
    data = bytes.fromhex("0001f203f4f5f6f7")
    assert inet.ones_sum(data) == 0xDDF2
    assert inet.checksum(data) == 0x220D
    # An IPv4 header from the wild (checksum b861).
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert inet.checksum(hdr) == 0xB861
    # A zero result is sent as 0xFFFF (UDP forbids 0, TCP accepts either).
    assert inet.checksum(bytes.fromhex("ffff")) == 0xFFFF


def test_vnet_header_roundtrip_and_short() -> None:
    raw = off.pack_vnet_hdr(1, off.GSO_TCPV6, 74, 1348, 40, 16)
    assert len(raw) == off.VNET_HDR_LEN == 10
    assert off.parse_vnet_hdr(raw + b"rest") == off.VirtioNetHdr(1, 4, 74, 1348, 40, 16)
    with pytest.raises(off.OffloadError) as info:
        off.parse_vnet_hdr(raw[:9])
    assert info.value.reason == "short_vnet_hdr"


# -- segmentation -------------------------------------------------------------------------

SEGMENT_CASES = [
    pytest.param(4, "tcp", 1368, TS_OPTS, id="tcp4-ts"),
    pytest.param(6, "tcp", 1348, TS_OPTS, id="tcp6-ts"),
    pytest.param(4, "tcp", 1001, b"", id="tcp4-odd-mss-no-options"),
    pytest.param(6, "tcp", 997, b"\x02\x04\x05\xb4", id="tcp6-odd-mss"),
    pytest.param(4, "udp", 1392, b"", id="udp4"),
    pytest.param(6, "udp", 1371, b"", id="udp6-odd"),
]


@pytest.mark.parametrize("use_numpy", MODES)
@pytest.mark.parametrize(("version", "proto", "gso", "options"), SEGMENT_CASES)
def test_segment_super_packet(
    use_numpy: bool, version: int, proto: str, gso: int, options: bytes
) -> None:
    payload = os.urandom(gso * 9 + 123)  # nine full segments and a short tail
    if proto == "tcp":
        # FIN|PSH|ACK|CWR on the super-packet; seq wraps past 2**32 mid-way.
        original = tcp(
            version, payload, seq=0xFFFFF000, flags=0x80 | 0x19, options=options, ip_id=0xFFFE
        )
    else:
        original = udp(version, payload, ip_id=0xFFFE)
    # hdr_len lies (as on the kernel's forwarding path); it must be ignored.
    with numpy_mode(use_numpy):
        segments = off.split_read(super_read(original, gso, hdr_len=len(original)))
    assert len(segments) == 10
    l4 = l4_offset(original)
    hl = len(original) - len(payload)
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        assert len(seg) == hl + (123 if last else gso)
        assert ip_checksum_ok(seg), f"segment {i}: IPv4 header checksum"
        assert l4_checksum_ok(seg), f"segment {i}: transport checksum"
        if version == 4:
            total, ip_id = struct.unpack_from("!HH", seg, 2)
            assert (total, ip_id) == (len(seg), (0xFFFE + i) & 0xFFFF)
            # everything else in the IP header is copied
            assert (
                seg[:2] + seg[6:10] + seg[12:20] == original[:2] + original[6:10] + original[12:20]
            )
        else:
            assert struct.unpack_from("!H", seg, 4)[0] == len(seg) - 40
            assert seg[:4] + seg[6:40] == original[:4] + original[6:40]
        if proto == "tcp":
            seq, ack, flags, window, opts = tcp_fields(seg)
            assert seq == (0xFFFFF000 + i * gso) & 0xFFFFFFFF
            assert (ack, window, opts) == (5000, 502, options)
            assert bool(flags & 0x01) == last and bool(flags & 0x08) == last  # FIN, PSH
            assert bool(flags & 0x80) == (i == 0)  # CWR only on the first
            assert flags & 0x10
        else:
            assert struct.unpack_from("!H", seg, l4 + 4)[0] == len(seg) - l4
            assert seg[l4 : l4 + 4] == original[l4 : l4 + 4]
            assert struct.unpack_from("!H", seg, l4 + 6)[0] != 0
    assert b"".join(payload_of(s) for s in segments) == payload


@pytest.mark.parametrize("use_numpy", MODES)
def test_single_segment_keeps_fin_and_psh(use_numpy: bool) -> None:
    original = tcp(4, b"z" * 500, flags=0x19)
    with numpy_mode(use_numpy):
        (seg,) = off.split_read(super_read(original, 1400))
    assert seg == original  # same bytes, checksum recomputed to the same value


@pytest.mark.parametrize("use_numpy", MODES)
@pytest.mark.parametrize("make", [tcp, udp], ids=["tcp", "udp"])
@pytest.mark.parametrize("version", [4, 6])
def test_partial_checksum_completed(use_numpy: bool, make: object, version: int) -> None:
    full = make(version, os.urandom(777))  # type: ignore[operator]
    partial = make(version, full[-777:], csum="partial")  # type: ignore[operator]
    assert not l4_checksum_ok(partial)
    l4 = l4_offset(partial)
    csum_off = 16 if partial[9 if version == 4 else 6] == 6 else 6
    hdr = off.pack_vnet_hdr(off.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, l4, csum_off)
    with numpy_mode(use_numpy):
        (done,) = off.split_read(hdr + partial)
    assert l4_checksum_ok(done)
    assert done == full


def test_plain_packet_passes_unchanged() -> None:
    packet = tcp(4, b"a" * 50, csum="bad")  # no NEEDS_CSUM: not ours to judge
    assert off.split_read(off.ZERO_VNET_HDR + packet) == [packet]
    valid = off.pack_vnet_hdr(off.VIRTIO_NET_HDR_F_DATA_VALID)
    assert off.split_read(valid + packet) == [packet]


def _vnet(gso_type: int, gso: int = 1000, start: int = 20, offset: int = 16) -> bytes:
    return off.pack_vnet_hdr(off.VIRTIO_NET_HDR_F_NEEDS_CSUM, gso_type, 0, gso, start, offset)


MALFORMED = [
    pytest.param(b"\x01\x04", "short_vnet_hdr", id="short-header"),
    pytest.param(off.ZERO_VNET_HDR, "empty", id="empty"),
    pytest.param(_vnet(off.GSO_UDP, 1000, 20, 6) + udp(4, b"q" * 3000), "bad_gso_type", id="ufo"),
    pytest.param(_vnet(9) + tcp(4, b"q" * 3000), "bad_gso_type", id="unknown-type"),
    pytest.param(_vnet(off.GSO_TCPV6) + tcp(4, b"q" * 3000), "bad_gso_type", id="v6-type-v4"),
    pytest.param(
        _vnet(off.GSO_TCPV4, 1000, 40) + tcp(6, b"q" * 3000), "bad_gso_type", id="v4-type-v6"
    ),
    pytest.param(_vnet(off.GSO_TCPV4, 0) + tcp(4, b"q" * 3000), "bad_gso_size", id="gso-size-0"),
    pytest.param(
        _vnet(off.GSO_TCPV4, 1000, 24) + tcp(4, b"q" * 3000), "bad_csum_start", id="csum-start"
    ),
    pytest.param(
        _vnet(off.GSO_TCPV6, 1000, 30) + tcp(6, b"q" * 3000), "bad_csum_start", id="csum-start6"
    ),
    pytest.param(_vnet(off.GSO_TCPV4) + udp(4, b"q" * 3000), "bad_ip_header", id="tcp-type-udp"),
    pytest.param(_vnet(off.GSO_TCPV4) + tcp(4, b"", options=b""), "no_payload", id="no-payload"),
    pytest.param(_vnet(off.GSO_TCPV4) + tcp(4, b"q" * 10)[:30], "short_l4", id="short-l4"),
    pytest.param(_vnet(off.GSO_TCPV4) + tcp(4)[:12], "short_ip", id="short-ip"),
    pytest.param(_vnet(0, 0, 20, 500) + udp(4), "bad_csum_offset", id="csum-offset"),
    pytest.param(_vnet(0, 0, 2, 6) + udp(4), "bad_csum_offset", id="csum-start-in-ip"),
]


@pytest.mark.parametrize(("data", "reason"), MALFORMED)
def test_malformed_reads_raise_offload_error(data: bytes, reason: str) -> None:
    with pytest.raises(off.OffloadError) as info:
        off.split_read(data)
    assert info.value.reason == reason


def test_bad_tcp_data_offset() -> None:
    packet = bytearray(tcp(4, b"q" * 3000))
    packet[32] = 0x30  # data offset 3 words: shorter than a TCP header
    with pytest.raises(off.OffloadError, match="bad_tcp_header"):
        off.split_read(_vnet(off.GSO_TCPV4) + bytes(packet))


# -- coalescing ------------------------------------------------------------------------------


def flow(
    sizes: list[int],
    version: int = 4,
    *,
    seq: int = 7000,
    tweak: dict[int, dict[str, object]] | None = None,
    gaps: dict[int, int] | None = None,
) -> list[bytes]:
    """Consecutive TCP segments of the given payload sizes; per-index overrides."""
    out = []
    for i, size in enumerate(sizes):
        seq += (gaps or {}).get(i, 0)
        kw: dict[str, object] = {"seq": seq, "ip_id": 100 + i}
        kw.update((tweak or {}).get(i, {}))
        out.append(tcp(version, bytes([i]) * size, **kw))  # type: ignore[arg-type]
        seq += size
    return out


def shape(units: list[list[bytes | memoryview]]) -> list[int]:
    """Segments per write unit (1 for a plain packet)."""
    return [len(u) - 2 if len(u) > 2 else 1 for u in units]


def check_units(units: list[list[bytes | memoryview]], packets: list[bytes]) -> None:
    """Every unit is well formed and splits back into exactly the packets it holds."""
    rebuilt: list[bytes] = []
    for unit in units:
        blob = b"".join(unit)
        hdr = off.parse_vnet_hdr(blob)
        packet = blob[off.VNET_HDR_LEN :]
        if len(unit) == 2:
            assert hdr == off.VirtioNetHdr(0, 0, 0, 0, 0, 0)
            rebuilt.append(packet)
            continue
        version = packet[0] >> 4
        l4 = l4_offset(packet)
        is_tcp = packet[9 if version == 4 else 6] == 6
        assert hdr.flags == off.VIRTIO_NET_HDR_F_NEEDS_CSUM
        tcp_type = off.GSO_TCPV4 if version == 4 else off.GSO_TCPV6
        assert hdr.gso_type == (tcp_type if is_tcp else off.GSO_UDP_L4)
        assert hdr.csum_start == l4
        assert hdr.csum_offset == (16 if is_tcp else 6)
        hl = l4 + ((packet[l4 + 12] >> 4) * 4 if is_tcp else 8)
        assert hdr.hdr_len == hl
        assert len(packet) <= 0xFFFF
        assert len(packet) - hl > hdr.gso_size  # at least two segments
        if version == 4:
            assert struct.unpack_from("!H", packet, 2)[0] == len(packet)
            assert ip_checksum_ok(packet)
        else:
            assert struct.unpack_from("!H", packet, 4)[0] == len(packet) - 40
        # CHECKSUM_PARTIAL: the field holds the pseudo-header sum, not inverted.
        field = struct.unpack_from("!H", packet, l4 + hdr.csum_offset)[0]
        assert field % 0xFFFF == ref_sum(pseudo(packet, len(packet) - l4)) % 0xFFFF
        rebuilt.extend(off.split_read(blob))
    # IPv4 ids are renumbered from the head's on the way back (as the kernel's GSO does).
    assert sorted(map(without_ip_id, rebuilt)) == sorted(map(without_ip_id, packets))


def without_ip_id(packet: bytes) -> bytes:
    if packet[0] >> 4 != 4:
        return packet
    return packet[:4] + b"\0\0" + packet[6:10] + b"\0\0" + packet[12:]


BASE = [1000, 1000, 1000, 1000]

# (id, packets, expected segments per write unit)
RULES: list[tuple[str, list[bytes], list[int]]] = [
    ("in-order", flow(BASE), [4]),
    ("ipv6", flow(BASE, 6), [4]),
    ("no-options", flow(BASE, tweak={i: {"options": b""} for i in range(4)}), [4]),
    ("smaller-tail", flow([1000, 1000, 1000, 600]), [4]),
    ("psh-on-last", flow(BASE, tweak={3: {"flags": 0x18}}), [4]),
    ("out-of-order-prepend", [flow(BASE)[i] for i in (1, 0, 2, 3)], [4]),
    ("seq-wraps", flow(BASE, seq=0xFFFFFC00), [4]),
    ("psh-in-middle", flow(BASE, tweak={1: {"flags": 0x18}}), [2, 2]),
    ("smaller-in-middle", flow([1000, 600, 1000, 1000]), [2, 2]),
    ("larger-after", flow([1000, 1000, 1200, 1000]), [2, 2]),
    ("seq-gap", flow(BASE, gaps={2: 1}), [2, 2]),
    ("tos", flow(BASE, tweak={2: {"tos": 0x10}}), [2, 1, 1]),
    ("ttl", flow(BASE, tweak={2: {"ttl": 63}}), [2, 1, 1]),
    ("df", flow(BASE, tweak={2: {"frag": 0}}), [2, 1, 1]),
    ("ports", flow(BASE, tweak={2: {"sport": 40001}}), [2, 1, 1]),
    ("ack", flow(BASE, tweak={2: {"ack": 5001}}), [2, 1, 1]),
    ("window", flow(BASE, tweak={2: {"window": 503}}), [2, 1, 1]),
    ("options", flow(BASE, tweak={2: {"options": TS_OPTS[:-1] + b"\x99"}}), [2, 1, 1]),
    ("syn", flow(BASE, tweak={2: {"flags": 0x12}}), [2, 1, 1]),
    ("fin", flow(BASE, tweak={2: {"flags": 0x11}}), [2, 1, 1]),
    ("rst", flow(BASE, tweak={2: {"flags": 0x14}}), [2, 1, 1]),
    ("urg", flow(BASE, tweak={2: {"flags": 0x30}}), [2, 1, 1]),
    ("ece", flow(BASE, tweak={2: {"flags": 0x50}}), [2, 1, 1]),
    ("cwr", flow(BASE, tweak={2: {"flags": 0x90}}), [2, 1, 1]),
    ("fragment", flow(BASE, tweak={2: {"frag": 0x2000}}), [2, 1, 1]),
    ("ipv6-flow-label", flow(BASE, 6, tweak={2: {"flow": 7}}), [2, 1, 1]),
    ("ipv6-traffic-class", flow(BASE, 6, tweak={2: {"tos": 4}}), [2, 1, 1]),
    ("ip-options", flow(BASE, tweak={i: {"ip_options": b"\x01" * 4} for i in range(4)}), [1] * 4),
    ("bad-checksum", flow(BASE, tweak={2: {"csum": "bad"}}), [2, 1, 1]),
    ("bad-checksum-head", flow(BASE, tweak={0: {"csum": "bad"}}), [1, 3]),
    ("pure-ack-between", [*flow([1000, 1000]), *flow([0, 1000], seq=9000)], [3, 1]),
    ("other-flow-between", [*flow([1000, 1000]), tcp(sport=1), *flow([1000], seq=9000)], [3, 1]),
]


@pytest.mark.parametrize("use_numpy", MODES)
@pytest.mark.parametrize(("packets", "expected"), [pytest.param(p, e, id=n) for n, p, e in RULES])
def test_tcp_coalescing_rules(use_numpy: bool, packets: list[bytes], expected: list[int]) -> None:
    with numpy_mode(use_numpy):
        units = off.coalesce(packets)
    assert shape(units) == expected
    check_units(units, packets)


def test_psh_moves_to_the_merged_header() -> None:
    units = off.coalesce(flow(BASE, tweak={3: {"flags": 0x18}}))
    header = bytes(units[0][1])
    assert header[20 + 13] == 0x18
    plain = off.coalesce(flow(BASE))
    assert bytes(plain[0][1])[20 + 13] == 0x10


def test_prepend_takes_the_earlier_headers() -> None:
    packets = flow(BASE)
    units = off.coalesce([packets[1], packets[0], *packets[2:]])
    blob = b"".join(units[0])[off.VNET_HDR_LEN :]
    assert tcp_fields(blob)[0] == 7000  # the sequence number of packets[0]
    assert blob[4:6] == packets[0][4:6]  # and its IP id


def test_bad_checksum_merges_only_without_verify() -> None:
    packets = flow(BASE, tweak={2: {"csum": "bad"}})
    assert shape(off.coalesce(packets, verify=False)) == [4]
    assert shape(off.coalesce(packets, verify=True)) == [2, 1, 1]


def test_size_limit_splits_runs() -> None:
    packets = flow([1400] * 60)
    units = off.coalesce(packets)
    assert sum(shape(units)) == 60
    assert len(units) > 1
    for unit in units:
        assert sum(len(b) for b in unit) - off.VNET_HDR_LEN <= 0xFFFF
    check_units(units, packets)


def udp_flow(n: int, size: int = 1200, version: int = 4, **kw: object) -> list[bytes]:
    return [udp(version, bytes([i]) * size, ip_id=i, **kw) for i in range(n)]  # type: ignore[arg-type]


UDP_RULES: list[tuple[str, list[bytes], list[int]]] = [
    ("in-order", udp_flow(4), [4]),
    ("ipv6", udp_flow(4, version=6), [4]),
    ("smaller-tail", [*udp_flow(3), udp(4, b"t" * 100)], [4]),
    ("smaller-in-middle", [*udp_flow(2), udp(4, b"t" * 100), *udp_flow(2)], [3, 2]),
    ("larger-after", [*udp_flow(2), udp(4, b"t" * 1300), *udp_flow(1)], [2, 2]),
    ("other-flow-between", [*udp_flow(2), udp(4, sport=1), *udp_flow(2)], [4, 1]),
    ("ttl-between", [*udp_flow(2), udp(4, ttl=1), *udp_flow(2)], [2, 1, 2]),
    ("zero-checksum", udp_flow(4, csum="zero"), [1, 1, 1, 1]),
    ("bad-checksum", [*udp_flow(2), udp(4, csum="bad"), *udp_flow(2)], [2, 1, 2]),
    ("tcp-and-udp", [*udp_flow(2), *flow([1000, 1000])], [2, 2]),
]


@pytest.mark.parametrize("use_numpy", MODES)
@pytest.mark.parametrize(
    ("packets", "expected"), [pytest.param(p, e, id=n) for n, p, e in UDP_RULES]
)
def test_udp_coalescing_rules(use_numpy: bool, packets: list[bytes], expected: list[int]) -> None:
    with numpy_mode(use_numpy):
        units = off.coalesce(packets, udp=True)
    assert shape(units) == expected
    check_units(units, packets)


def test_udp_not_merged_without_uso() -> None:
    packets = udp_flow(4)
    assert shape(off.coalesce(packets, udp=False)) == [1, 1, 1, 1]


def test_order_of_units_follows_first_packet() -> None:
    a = flow([1000, 1000])
    other = udp(4, b"o" * 10)
    units = off.coalesce([a[0], other, a[1]])
    assert shape(units) == [2, 1]
    assert bytes(units[1][1]) == other


def test_memoryview_and_bytearray_inputs() -> None:
    packets = flow(BASE)
    mixed = [memoryview(packets[0]), bytearray(packets[1]), packets[2], memoryview(packets[3])]
    units = off.coalesce(mixed)  # type: ignore[arg-type]
    assert shape(units) == [4]
    check_units(units, packets)


# -- round trip: coalesce(segment(x)) == x ----------------------------------------------------


@pytest.mark.parametrize("use_numpy", MODES)
@settings(max_examples=60, deadline=None)
@given(
    version=st.sampled_from([4, 6]),
    is_tcp=st.booleans(),
    gso=st.integers(min_value=200, max_value=1500),
    length=st.integers(min_value=1, max_value=40000),
    seq=st.integers(min_value=0, max_value=0xFFFFFFFF),
    psh=st.booleans(),
)
def test_roundtrip_segment_then_coalesce(
    use_numpy: bool, version: int, is_tcp: bool, gso: int, length: int, seq: int, psh: bool
) -> None:
    payload = os.urandom(length)
    if is_tcp:
        original = tcp(version, payload, seq=seq, flags=0x18 if psh else 0x10)
    else:
        original = udp(version, payload)
    with numpy_mode(use_numpy):
        segments = off.split_read(super_read(original, gso))
        assert all(l4_checksum_ok(s) and ip_checksum_ok(s) for s in segments)
        units = off.coalesce(segments, udp=True)
    assert len(units) == 1
    blob = b"".join(units[0])[off.VNET_HDR_LEN :]
    assert payload_of(blob) == payload
    if len(segments) > 1:
        # Same headers as the original except for the partial checksum field.
        l4 = l4_offset(original)
        at = l4 + (16 if is_tcp else 6)
        assert (
            blob[:at] == original[:at]
            and blob[at + 2 : len(original) - length] == original[at + 2 : len(original) - length]
        )
        assert off.parse_vnet_hdr(units[0][0]).gso_size == gso
    else:
        assert blob == original
    assert off.split_read(b"".join(units[0])) == segments


# -- fuzzing: garbage is dropped, never raised as anything else --------------------------------

vnet_headers = st.builds(
    off.pack_vnet_hdr,
    st.integers(0, 255),
    st.sampled_from([0, 1, 3, 4, 5, 0x81, 0x84, 0x85, 2, 255]),
    st.integers(0, 0xFFFF),
    st.integers(0, 3000),
    st.integers(0, 120),
    st.integers(0, 40),
)


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        if out:
            out[pos % len(out)] = value
    return bytes(out)


plausible_packets = st.builds(
    mutate,
    st.one_of(
        st.builds(lambda v, n: tcp(v, b"p" * n), st.sampled_from([4, 6]), st.integers(0, 5000)),
        st.builds(lambda v, n: udp(v, b"p" * n), st.sampled_from([4, 6]), st.integers(0, 5000)),
        st.binary(max_size=200),
    ),
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 255)), max_size=4),
)


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=400))
def test_fuzz_raw_reads(data: bytes) -> None:
    try:
        out = off.split_read(data)
    except off.OffloadError:
        return
    assert all(isinstance(p, bytes) for p in out)


@pytest.mark.parametrize("use_numpy", MODES)
@settings(max_examples=400, deadline=None)
@given(hdr=vnet_headers, packet=plausible_packets)
def test_fuzz_structured_reads(use_numpy: bool, hdr: bytes, packet: bytes) -> None:
    with numpy_mode(use_numpy):
        try:
            out = off.split_read(hdr + packet)
        except off.OffloadError:
            return
    assert out and all(isinstance(p, bytes) and len(p) <= 0xFFFF for p in out)


@pytest.mark.parametrize("use_numpy", MODES)
@settings(max_examples=300, deadline=None)
@given(packets=st.lists(plausible_packets, max_size=12), udp_on=st.booleans(), ver=st.booleans())
def test_fuzz_coalesce(use_numpy: bool, packets: list[bytes], udp_on: bool, ver: bool) -> None:
    with numpy_mode(use_numpy):
        units = off.coalesce(packets, udp=udp_on, verify=ver)
    assert sum(shape(units)) == len(packets)
    for unit in units:
        if len(unit) == 2:
            assert bytes(unit[1]) in packets
        else:
            # A merged unit always splits back into checksum-valid packets.
            assert all(l4_checksum_ok(p) for p in off.split_read(b"".join(unit)))
