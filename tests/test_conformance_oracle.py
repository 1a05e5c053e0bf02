"""The runner's own crypto, checked by an implementation that is not wgpy's.

Every verdict of ``wgpy conformance`` rests on the runner building and
reading handshake and transport messages correctly; it builds them with
wgpy.noise, so "wgpy passes" could be wgpy agreeing with itself.  Here the
``noiseprotocol`` package plays the target, in both roles: it reads the
runner's initiation and writes the response the runner completes, and it
writes an initiation the runner answers; then transport messages go both ways
through the session.  mac1 is computed with hashlib, the WireGuard framing
and constants are written out from the whitepaper, not imported from wgpy.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import warnings
from collections.abc import Iterator

import pytest

from wgpy.conformance.runner import Inbound, Runner, RunnerConfig
from wgpy.noise.primitives import clamp, public_key

noise_connection = pytest.importorskip("noise.connection")  # the [test] extra installs it

# Whitepaper 5.4: the Noise protocol name and WireGuard's prologue.
PROTOCOL = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
PROLOGUE = b"WireGuard v1 zx2c4 Jason@zx2c4.com"


def _mac1(receiver_public: bytes, msg: bytes) -> bytes:
    key = hashlib.blake2s(b"mac1----" + receiver_public).digest()
    return hashlib.blake2s(msg, key=key, digest_size=16).digest()


def _oracle(initiator: bool, static: bytes, remote: bytes | None, psk: bytes) -> object:
    conn = noise_connection.NoiseConnection.from_name(PROTOCOL)
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_prologue(PROLOGUE)
    conn.set_psks(psk=psk)
    conn.set_keypair_from_private_bytes(noise_connection.Keypair.STATIC, static)
    if remote is not None:
        conn.set_keypair_from_public_bytes(noise_connection.Keypair.REMOTE_STATIC, remote)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        conn.start_handshake()
    return conn


@pytest.fixture
def sink() -> Iterator[socket.socket]:
    """Where the runner's datagrams to the "target" go."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(5)
    yield s
    s.close()


def _runner(sink: socket.socket, target_priv: bytes, psk: bytes) -> Runner:
    port = sink.getsockname()[1]
    cfg = RunnerConfig(
        target_endpoint=f"127.0.0.1:{port}",
        target_public_key=public_key(target_priv),
        psk=psk,
        listen="127.0.0.1",
    )
    return Runner(cfg)


def _inbound(r: Runner, data: bytes) -> Inbound:
    m = r._classify(data, "main", ("127.0.0.1", 9), r.now())
    assert m.kind == data[0]
    return m


def _transport_both_ways(r: Runner, kp: object, o_send: object, o_recv: object) -> None:
    """Runner -> oracle and oracle -> runner, counters 0.. in each direction."""
    for n, payload in enumerate([b"", b"x" * 15, os.urandom(16), os.urandom(1000)]):
        msg = r.seal(kp, payload)  # type: ignore[arg-type]
        kind, receiver, counter = struct.unpack_from("<IIQ", msg)
        assert (kind, receiver, counter) == (4, kp.remote_index, n)  # type: ignore[attr-defined]
        plain = bytes(o_recv.decrypt(msg[16:]))  # type: ignore[attr-defined]
        # The runner pads data to a multiple of 16 with zeros (5.4.6).
        assert plain[: len(payload)] == payload and not any(plain[len(payload) :])
        assert len(plain) % 16 == 0
        ct = bytes(o_send.encrypt(payload))  # type: ignore[attr-defined]
        head = struct.pack("<IIQ", 4, kp.local_index, n)  # type: ignore[attr-defined]
        m = _inbound(r, head + ct)
        assert m.keypair is kp and m.plaintext == payload


@pytest.mark.parametrize("with_psk", [False, True])
def test_runner_initiates_to_noiseprotocol(sink: socket.socket, with_psk: bool) -> None:
    target_priv = clamp(os.urandom(32))
    psk = os.urandom(32) if with_psk else bytes(32)
    with _runner(sink, target_priv, psk if with_psk else None) as r:  # type: ignore[arg-type]
        body, idx, stamp = r.initiation_body()
        msg = r.add_macs(body)
        assert len(msg) == 148 and msg[:4] == b"\1\0\0\0"
        assert struct.unpack_from("<I", msg, 4)[0] == idx
        assert msg[116:132] == _mac1(public_key(target_priv), msg[:116])
        assert msg[132:148] == bytes(16)  # no cookie: mac2 is zero
        oracle = _oracle(False, target_priv, None, psk)
        assert bytes(oracle.read_message(msg[8:116])) == stamp  # type: ignore[attr-defined]
        # The oracle learnt the runner's static key from the initiation.
        rs = oracle.noise_protocol.handshake_state.rs  # type: ignore[attr-defined]
        assert bytes(rs.public_bytes) == r.our_public
        noise_resp = bytes(oracle.write_message(b""))  # type: ignore[attr-defined]
        sender = int.from_bytes(os.urandom(4), "little") | 1
        resp = struct.pack("<III", 2, sender, idx) + noise_resp
        resp += _mac1(r.our_public, resp) + bytes(16)
        kp = r.complete(_inbound(r, resp), confirm=False)
        assert (kp.local_index, kp.remote_index) == (idx, sender)
        _transport_both_ways(r, kp, oracle, oracle)


def test_runner_answers_noiseprotocol(sink: socket.socket) -> None:
    target_priv = clamp(os.urandom(32))
    psk = os.urandom(32)
    with _runner(sink, target_priv, psk) as r:
        oracle = _oracle(True, target_priv, r.our_public, psk)
        stamp = struct.pack(">QI", (1 << 62) + 1_800_000_000, 0)  # TAI64N, 12 bytes
        noise_init = bytes(oracle.write_message(stamp))  # type: ignore[attr-defined]
        sender = int.from_bytes(os.urandom(4), "little") | 1
        init = struct.pack("<II", 1, sender) + noise_init
        init += _mac1(r.our_public, init) + bytes(16)
        kp = r.accept(_inbound(r, init))
        resp, _ = sink.recvfrom(2048)
        assert len(resp) == 92 and resp[:4] == b"\2\0\0\0"
        assert struct.unpack_from("<II", resp, 4) == (kp.local_index, sender)
        assert resp[60:76] == _mac1(public_key(target_priv), resp[:60])
        assert bytes(oracle.read_message(resp[12:60])) == b""  # type: ignore[attr-defined]
        _transport_both_ways(r, kp, oracle, oracle)
