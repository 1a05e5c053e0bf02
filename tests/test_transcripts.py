"""Seeded wgpy transcripts (vectors/transcripts/) replay byte for byte.

Each transcript is replayed three ways: the whole exchange regenerated from
its keys, seeds and clocks; the responder alone fed the recorded initiation;
and independent checks that do not use wgpy's handshake code (mac1 with
hashlib, transport packets opened with the recorded keys through
``cryptography`` directly).
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "vectors"))

import make_transcripts  # noqa: E402

from wgpy.device import Device  # noqa: E402
from wgpy.endpoint import Endpoint  # noqa: E402
from wgpy.rng import SeededRng  # noqa: E402

FILES = sorted((ROOT / "vectors" / "transcripts").glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_regenerated_exchange_is_identical(path: Path) -> None:
    recorded = load(path)
    spec = {k: recorded[k] for k in make_transcripts.SPECS[0] if k in recorded}
    for k in ("psk", "under_load"):
        if k in recorded:
            spec[k] = recorded[k]
    assert make_transcripts.run(spec) == recorded


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_responder_answers_recorded_initiation_exactly(path: Path) -> None:
    t = load(path)
    b = Device(bytes.fromhex(t["private_b"]), rng=SeededRng(t["seed_b"].encode()))
    psk = bytes.fromhex(t["psk"]) if t.get("psk") else None
    b.add_peer(bytes.fromhex(t["public_a"]), preshared_key=psk, allowed_ips=["10.0.0.1/32"])
    b.force_under_load = bool(t.get("under_load"))
    msgs = [bytes.fromhex(m["hex"]) for m in t["messages"]]
    src = Endpoint.parse(t["endpoint_a"])
    now, wall = t["now"], t["wall_ns"]
    if t.get("under_load"):
        out = b.receive([(msgs[0], src)], now, wall)
        assert [d for d, _ in out.datagrams] == [msgs[1]]
        msgs = msgs[2:]
        now += 5.4
        wall += 5_400_000_000
    out = b.receive([(msgs[0], src)], now, wall)
    assert [d for d, _ in out.datagrams] == [msgs[1]]
    out = b.receive([(msgs[2], src)], now, wall)
    assert out.packets == [bytes.fromhex(t["inner_a_to_b"])]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_independent_checks(path: Path) -> None:
    t = load(path)
    msgs = [bytes.fromhex(m["hex"]) for m in t["messages"]]
    mac1_to_b = hashlib.blake2s(b"mac1----" + bytes.fromhex(t["public_b"])).digest()
    mac1_to_a = hashlib.blake2s(b"mac1----" + bytes.fromhex(t["public_a"])).digest()
    for m in msgs:
        kind = m[0]
        assert m[1:4] == b"\0\0\0"
        if kind in (1, 2):
            key = mac1_to_b if kind == 1 else mac1_to_a
            off = len(m) - 32
            assert hashlib.blake2s(m[:off], key=key, digest_size=16).digest() == m[off : off + 16]
    transport = [m for m in msgs if m[0] == 4]
    keys = t["keys"]
    assert keys["a_send"] == keys["b_recv"] and keys["a_recv"] == keys["b_send"]
    for m, key, inner in (
        (transport[0], keys["a_send"], t["inner_a_to_b"]),
        (transport[1], keys["b_send"], t["inner_b_to_a"]),
    ):
        _, _, counter = struct.unpack_from("<IIQ", m)
        assert counter == 0
        nonce = bytes(4) + counter.to_bytes(8, "little")
        plain = ChaCha20Poly1305(bytes.fromhex(key)).decrypt(nonce, m[16:], None)
        inner_b = bytes.fromhex(inner)
        assert plain[: len(inner_b)] == inner_b and set(plain[len(inner_b) :]) <= {0}
        assert len(plain) % 16 == 0
    # Receiver indices tie the messages together.
    init, resp = [m for m in msgs if m[0] == 1][-1], next(m for m in msgs if m[0] == 2)
    assert resp[8:12] == init[4:8]
    assert transport[0][4:8] == resp[4:8]
    assert transport[1][4:8] == init[4:8]
