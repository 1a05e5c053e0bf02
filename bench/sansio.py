"""wgpy-only, in-process figures: complete handshakes per second through two
sans-IO :class:`wgpy.device.Device` objects on one core, and allowed-IPs
lookups per second in wgpy's trie."""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Iterator

from wgpy.allowedips import AllowedIPs
from wgpy.constants import REJECT_AFTER_TIME
from wgpy.device import Device
from wgpy.endpoint import Endpoint
from wgpy.noise.primitives import clamp

__all__ = ["HandshakeLoop", "handshakes_per_second", "lookups_per_second", "pinned"]

_EP_A = Endpoint("192.0.2.1", 51820)
_EP_B = Endpoint("192.0.2.2", 51820)
# A minimal IPv4 packet from A's tunnel address to B's: only its destination
# matters to routing, and it travels in the initiator's confirming message.
_PACKET = bytes.fromhex("4500001c00000000400100000a0000010a000002") + bytes(8)


@contextlib.contextmanager
def pinned(cpu: int | None = None) -> Iterator[int | None]:
    """Run the body on one CPU (the last allowed one by default); restore after."""
    try:
        before = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        yield None
        return
    target = max(before) if cpu is None else cpu
    try:
        os.sched_setaffinity(0, {target})
    except OSError:
        yield None
        return
    try:
        yield target
    finally:
        os.sched_setaffinity(0, before)


class HandshakeLoop:
    """Two devices that perform one complete handshake per :meth:`once`.

    A complete handshake here is what a real session start costs both ends:
    A's initiation (mac1, TAI64N), B consuming it and answering, A consuming
    the response and sending its first transport message (key confirmation),
    and B installing the confirmed session on receipt.  The clock jumps past
    REJECT_AFTER_TIME between handshakes, so each packet A sends needs a new
    session (and no flood or under-load limit applies).
    """

    def __init__(self) -> None:
        ka, kb = clamp(os.urandom(32)), clamp(os.urandom(32))
        self.a = Device(ka)
        self.b = Device(kb)
        pa, pb = self.a.public_key, self.b.public_key
        assert pa is not None and pb is not None
        self.a.add_peer(pb, endpoint=_EP_B, allowed_ips=["10.0.0.2/32"])
        self.b.add_peer(pa, endpoint=_EP_A, allowed_ips=["10.0.0.1/32"])
        self.now = 1000.0
        self.wall = time.time_ns()
        self.completed = 0

    def once(self) -> None:
        """One complete handshake; raises if any step did not happen."""
        self.now += REJECT_AFTER_TIME + 1
        self.wall += 1_000_000_000
        now, wall = self.now, self.wall
        init = self.a.send([_PACKET], now, wall).datagrams
        if len(init) != 1:
            raise RuntimeError(f"A sent {len(init)} datagrams instead of one initiation")
        resp = self.b.receive([(init[0][0], _EP_A)], now, wall).datagrams
        if len(resp) != 1:
            raise RuntimeError("B did not answer the initiation")
        confirm = self.a.receive([(resp[0][0], _EP_B)], now, wall)
        if not confirm.datagrams or not any(e.kind == "handshake_complete" for e in confirm.events):
            raise RuntimeError("A did not complete the handshake")
        done = self.b.receive([(confirm.datagrams[0][0], _EP_A)], now, wall)
        if done.packets != [_PACKET]:
            raise RuntimeError("B did not receive the confirming packet")
        self.completed += 1


def handshakes_per_second(seconds: float) -> tuple[float, int]:
    """Complete handshakes per second over about ``seconds`` of one loop."""
    loop = HandshakeLoop()
    loop.once()  # warm-up
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(16):
            loop.once()
        n += 16
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start), n


def _random_prefixes(count: int, bits: int, rng: random.Random) -> list[tuple[bytes, int]]:
    """``count`` distinct random prefixes, lengths uniform in /8-/32 (IPv4) or
    /16-/128 (IPv6)."""
    nbytes = bits // 8
    lo = 8 if bits == 32 else 16
    seen: set[tuple[int, int]] = set()
    out: list[tuple[bytes, int]] = []
    while len(out) < count:
        cidr = rng.randint(lo, bits)
        addr = rng.getrandbits(bits) >> (bits - cidr) << (bits - cidr)
        if (addr, cidr) in seen:
            continue
        seen.add((addr, cidr))
        out.append((addr.to_bytes(nbytes, "big"), cidr))
    return out


class LookupTable:
    """An allowed-IPs trie filled with ``count`` random prefixes of one family
    (lengths uniform in /8-/32 or /16-/128), owned by 1,000 owners."""

    def __init__(self, count: int, bits: int, seed: int = 4) -> None:
        rng = random.Random(seed)
        self.bits = bits
        self.table: AllowedIPs[int] = AllowedIPs()
        for i, (addr, cidr) in enumerate(_random_prefixes(count, bits, rng)):
            self.table.insert(addr, cidr, i % 1000)
        self.queries = [rng.getrandbits(bits).to_bytes(bits // 8, "big") for _ in range(50_000)]
        self.size = len(self.table)

    def run(self, seconds: float) -> tuple[float, int]:
        """Lookups per second of random addresses for about ``seconds``."""
        lookup = self.table.lookup
        queries = self.queries
        n = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            for q in queries:
                lookup(q)
            n += len(queries)
            now = time.perf_counter()
            if now >= deadline:
                return n / (now - start), n


def lookups_per_second(count: int, bits: int, seconds: float) -> tuple[float, int, int]:
    """(lookups/s, lookups done, prefixes in the table) for one fresh table."""
    t = LookupTable(count, bits)
    rate, n = t.run(seconds)
    return rate, n, t.size
