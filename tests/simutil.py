"""Helpers for tests that drive devices over the in-memory network."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from wgpy.device import Device
from wgpy.noise import handshake as hs_mod
from wgpy.noise import primitives as prim
from wgpy.sim import SimNetwork, SimNode, ipv4_packet, ipv6_packet

A4, B4 = "10.0.0.1", "10.0.0.2"
A6, B6 = "fd00::1", "fd00::2"


def ping(net: SimNetwork, src: SimNode, payload: bytes = b"ping", v6: bool = False) -> None:
    """Send one packet from ``src`` to the other node and deliver everything."""
    if v6:
        s, d = (A6, B6) if src.name == "A" else (B6, A6)
        pkt = ipv6_packet(s, d, payload)
    else:
        s, d = (A4, B4) if src.name == "A" else (B4, A4)
        pkt = ipv4_packet(s, d, payload)
    net.send_packets(src, [pkt])
    net.run()


def kinds(sent: list[tuple[Any, bytes]]) -> list[int]:
    """Message type of each datagram."""
    return [d[0] for _, d in sent]


def snapshot(dev: Device) -> tuple[object, ...]:
    """Everything about a device that network input must not change silently."""
    peers = []
    for p in dev.peers:
        kps = tuple(
            id(k) if k else None for k in (p.keypairs.previous, p.keypairs.current, p.keypairs.next)
        )
        t = p.timers
        peers.append(
            (
                p.public_key,
                p.endpoint,
                str(p.endpoint) if p.endpoint else None,
                p.handshake.state,
                p.handshake.latest_timestamp,
                p.handshake.last_initiation_consumed,
                kps,
                tuple(
                    (k.replay.greatest, k.send_counter)
                    for k in (p.keypairs.previous, p.keypairs.current, p.keypairs.next)
                    if k
                ),
                p.rx_bytes,
                p.tx_bytes,
                p.staged_count,
                p.last_handshake_ns,
                (t.retransmit_handshake, t.send_keepalive, t.new_handshake, t.zero_key_material),
            )
        )
    return (tuple(sorted(dev._index)), tuple(peers), len(dev))


@contextmanager
def count_dh(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Count every X25519 operation made by the handshake code."""
    calls: list[int] = []
    orig_dh = hs_mod.dh
    orig_static = prim.StaticKey.dh
    orig_pub = hs_mod.public_key

    def spy_dh(a: bytes, b: bytes) -> bytes:
        calls.append(1)
        return orig_dh(a, b)

    def spy_static(self: prim.StaticKey, b: bytes) -> bytes:
        calls.append(1)
        return orig_static(self, b)

    def spy_pub(a: bytes) -> bytes:
        calls.append(1)
        return orig_pub(a)

    monkeypatch.setattr(hs_mod, "dh", spy_dh)
    monkeypatch.setattr(hs_mod, "public_key", spy_pub)
    monkeypatch.setattr(prim.StaticKey, "dh", spy_static)
    yield calls
