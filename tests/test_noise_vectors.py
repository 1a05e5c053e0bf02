"""Public Noise test vectors for Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s, replayed
against wgpy's own Noise layer (``wgpy.noise.primitives`` and ``SymmetricState``).

The vectors live in ``vectors/noise/ikpsk2_25519_chachapoly_blake2s.json``; their
sources are named in ``vectors/README.md``.  Two vector formats are kept as
published: cacophony's JSON (``protocol_name``, ``messages`` list) and flynn/noise's
flat ``key=value`` records (``handshake``, ``msg_N_payload``/``msg_N_ciphertext``).

The handshake is driven token by token from the Noise spec:
  pre-message   <- s
  message 0     -> e, es, s, ss
  message 1     <- e, ee, se, psk
With a psk modifier the "e" token also does MixKey(e.public_key).  Every message
after the handshake is a transport message; in a two-way pattern they alternate
initiator->responder, responder->initiator, with one counter per direction.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from wgpy.noise.primitives import CryptoError, aead_decrypt, aead_encrypt, dh, public_key
from wgpy.noise.symmetric import SymmetricState

PROTOCOL_NAME = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"
VECTOR_FILE = (
    Path(__file__).resolve().parent.parent
    / "vectors"
    / "noise"
    / "ikpsk2_25519_chachapoly_blake2s.json"
)
DH_LEN = 32
TAG_LEN = 16
HANDSHAKE_MESSAGES = 2  # IK has two handshake messages

# Fields each published format may carry; anything else fails the load so that a
# field this replay does not understand is never silently ignored.
_CACOPHONY_FIELDS = {
    "protocol_name",
    "init_prologue",
    "init_psks",
    "init_static",
    "init_ephemeral",
    "init_remote_static",
    "resp_prologue",
    "resp_psks",
    "resp_static",
    "resp_ephemeral",
    "handshake_hash",
    "messages",
    "source",
}
_FLYNN_FIELDS = {
    "handshake",
    "init_static",
    "resp_static",
    "gen_init_ephemeral",
    "gen_resp_ephemeral",
    "prologue",
    "preshared_key",
    "source",
}
_FLYNN_MSG = re.compile(r"msg_(\d+)_(payload|ciphertext)")


@dataclass(frozen=True)
class Vector:
    """One vector, normalised from either published format."""

    ident: str
    protocol_name: str
    prologue: bytes
    psk: bytes
    init_static: bytes
    resp_static: bytes
    init_ephemeral: bytes
    resp_ephemeral: bytes
    # The responder's static public key as the vector states it (cacophony only).
    init_remote_static: bytes | None
    messages: tuple[tuple[bytes, bytes], ...]  # (payload, ciphertext)
    handshake_hash: bytes | None
    one_way: bool


def _one_way(protocol_name: str) -> bool:
    """One-way patterns (N, K, X) have a single-letter base pattern name."""
    pattern = protocol_name.split("_")[1]
    base = re.sub(r"psk\d+", "", pattern).replace("+", "")
    return len(base) == 1


def _from_cacophony(ident: str, raw: dict[str, Any]) -> Vector:
    unknown = set(raw) - _CACOPHONY_FIELDS
    assert not unknown, f"{ident}: fields this replay does not handle: {unknown}"
    # Both sides must be configured alike for a replay of a successful handshake.
    assert raw["init_prologue"] == raw["resp_prologue"]
    assert raw["init_psks"] == raw["resp_psks"]
    assert len(raw["init_psks"]) == 1, "IKpsk2 uses exactly one psk"
    hh = raw.get("handshake_hash")
    return Vector(
        ident=ident,
        protocol_name=raw["protocol_name"],
        prologue=bytes.fromhex(raw["init_prologue"]),
        psk=bytes.fromhex(raw["init_psks"][0]),
        init_static=bytes.fromhex(raw["init_static"]),
        resp_static=bytes.fromhex(raw["resp_static"]),
        init_ephemeral=bytes.fromhex(raw["init_ephemeral"]),
        resp_ephemeral=bytes.fromhex(raw["resp_ephemeral"]),
        init_remote_static=bytes.fromhex(raw["init_remote_static"]),
        messages=tuple(
            (bytes.fromhex(m["payload"]), bytes.fromhex(m["ciphertext"])) for m in raw["messages"]
        ),
        handshake_hash=bytes.fromhex(hh) if hh is not None else None,
        one_way=_one_way(raw["protocol_name"]),
    )


def _from_flynn(ident: str, raw: dict[str, Any]) -> Vector:
    msgs: dict[int, dict[str, str]] = {}
    for key, value in raw.items():
        m = _FLYNN_MSG.fullmatch(key)
        if m:
            msgs.setdefault(int(m.group(1)), {})[m.group(2)] = value
        else:
            assert key in _FLYNN_FIELDS, f"{ident}: field this replay does not handle: {key}"
    assert sorted(msgs) == list(range(len(msgs))), f"{ident}: message numbers have gaps"
    # flynn/noise's generator reads each 32-byte ephemeral from its "random"
    # stream, so gen_*_ephemeral is the private key itself.
    return Vector(
        ident=ident,
        protocol_name=raw["handshake"],
        prologue=bytes.fromhex(raw.get("prologue", "")),
        psk=bytes.fromhex(raw["preshared_key"]),
        init_static=bytes.fromhex(raw["init_static"]),
        resp_static=bytes.fromhex(raw["resp_static"]),
        init_ephemeral=bytes.fromhex(raw["gen_init_ephemeral"]),
        resp_ephemeral=bytes.fromhex(raw["gen_resp_ephemeral"]),
        init_remote_static=None,
        messages=tuple(
            (bytes.fromhex(msgs[i]["payload"]), bytes.fromhex(msgs[i]["ciphertext"]))
            for i in range(len(msgs))
        ),
        handshake_hash=None,
        one_way=_one_way(raw["handshake"]),
    )


def _load_raw() -> list[dict[str, Any]]:
    with VECTOR_FILE.open(encoding="utf-8") as f:
        entries: list[dict[str, Any]] = json.load(f)["vectors"]
    return entries


def _load() -> list[Vector]:
    out: list[Vector] = []
    counts: dict[str, int] = {}
    for raw in _load_raw():
        origin = raw["source"]["repo"].split("/")[-1]
        n = counts.get(origin, 0)
        counts[origin] = n + 1
        ident = f"{origin}-{n}"
        if "protocol_name" in raw:
            out.append(_from_cacophony(ident, raw))
        elif "handshake" in raw:
            out.append(_from_flynn(ident, raw))
        else:
            raise AssertionError(f"{ident}: unknown vector format")
    return out


VECTORS = _load()
WITH_HASH = [v for v in VECTORS if v.handshake_hash is not None]


def _ids(v: Vector) -> str:
    return v.ident


# --- the IKpsk2 handshake, driven through SymmetricState -----------------------

# How the "e" token mixes the ephemeral into the chaining key in psk mode:
# the Noise spec's MixKey, or wgpy's mix_chain (ck := KDF1(ck, e)), which
# WireGuard uses because es replaces the cipher key right afterwards.
EMixer = Callable[[SymmetricState, bytes], None]


def _mix_key_e(ss: SymmetricState, e_pub: bytes) -> None:
    ss.mix_key(e_pub)


def _mix_chain_e(ss: SymmetricState, e_pub: bytes) -> None:
    ss.mix_chain(e_pub)


E_MIXERS = [pytest.param(_mix_key_e, id="e-mix_key"), pytest.param(_mix_chain_e, id="e-mix_chain")]


def _start(prologue: bytes, responder_static_pub: bytes) -> SymmetricState:
    """InitializeSymmetric, MixHash(prologue), then the pre-message "<- s"."""
    ss = SymmetricState(PROTOCOL_NAME.encode("ascii"))
    ss.mix_hash(prologue)
    ss.mix_hash(responder_static_pub)
    return ss


def _token_e(ss: SymmetricState, e_pub: bytes, mix_e: EMixer) -> None:
    """Token "e" with a psk modifier: MixHash(e.pub), then MixKey(e.pub)."""
    ss.mix_hash(e_pub)
    mix_e(ss, e_pub)


@dataclass
class Initiator:
    """The initiator's side of one IKpsk2 handshake."""

    ss: SymmetricState
    s: bytes
    e: bytes
    rs: bytes
    psk: bytes
    mix_e: EMixer = _mix_key_e
    re: bytes = b""

    @classmethod
    def create(cls, v: Vector, mix_e: EMixer = _mix_key_e, **override: bytes) -> Initiator:
        rs = override.get("rs", public_key(v.resp_static))
        return cls(
            ss=_start(override.get("prologue", v.prologue), rs),
            s=v.init_static,
            e=v.init_ephemeral,
            rs=rs,
            psk=override.get("psk", v.psk),
            mix_e=mix_e,
        )

    def write_0(self, payload: bytes) -> bytes:
        """-> e, es, s, ss"""
        e_pub = public_key(self.e)
        _token_e(self.ss, e_pub, self.mix_e)
        self.ss.mix_key(dh(self.e, self.rs))  # es
        enc_s = self.ss.encrypt_and_hash(public_key(self.s))  # s
        self.ss.mix_key(dh(self.s, self.rs))  # ss
        return e_pub + enc_s + self.ss.encrypt_and_hash(payload)

    def read_1(self, msg: bytes) -> bytes:
        """<- e, ee, se, psk"""
        self.re = msg[:DH_LEN]
        _token_e(self.ss, self.re, self.mix_e)
        self.ss.mix_key(dh(self.e, self.re))  # ee
        self.ss.mix_key(dh(self.s, self.re))  # se (initiator: DH(s, re))
        self.ss.mix_key_and_hash(self.psk)  # psk
        return self.ss.decrypt_and_hash(msg[DH_LEN:])


@dataclass
class Responder:
    """The responder's side of one IKpsk2 handshake."""

    ss: SymmetricState
    s: bytes
    e: bytes
    psk: bytes
    mix_e: EMixer = _mix_key_e
    re: bytes = b""
    rs: bytes = b""

    @classmethod
    def create(cls, v: Vector, mix_e: EMixer = _mix_key_e, **override: bytes) -> Responder:
        s = override.get("s", v.resp_static)
        return cls(
            ss=_start(override.get("prologue", v.prologue), public_key(s)),
            s=s,
            e=v.resp_ephemeral,
            psk=override.get("psk", v.psk),
            mix_e=mix_e,
        )

    def read_0_static(self, msg: bytes) -> bytes:
        """-> e, es, s: everything of message 0 up to the static key."""
        self.re = msg[:DH_LEN]
        _token_e(self.ss, self.re, self.mix_e)
        self.ss.mix_key(dh(self.s, self.re))  # es (responder: DH(s, re))
        self.rs = self.ss.decrypt_and_hash(msg[DH_LEN : 2 * DH_LEN + TAG_LEN])  # s
        return self.rs

    def read_0(self, msg: bytes) -> bytes:
        """-> e, es, s, ss"""
        self.read_0_static(msg)
        self.ss.mix_key(dh(self.s, self.rs))  # ss
        return self.ss.decrypt_and_hash(msg[2 * DH_LEN + TAG_LEN :])

    def write_1(self, payload: bytes) -> bytes:
        """<- e, ee, se, psk"""
        e_pub = public_key(self.e)
        _token_e(self.ss, e_pub, self.mix_e)
        self.ss.mix_key(dh(self.e, self.re))  # ee
        self.ss.mix_key(dh(self.e, self.rs))  # se (responder: DH(e, rs))
        self.ss.mix_key_and_hash(self.psk)  # psk
        return e_pub + self.ss.encrypt_and_hash(payload)


def _handshake(v: Vector, mix_e: EMixer = _mix_key_e) -> tuple[Initiator, Responder]:
    """Both sides run the handshake; each reads the vector's bytes, not the peer's."""
    (p0, c0), (p1, c1) = v.messages[:HANDSHAKE_MESSAGES]
    ini = Initiator.create(v, mix_e)
    rsp = Responder.create(v, mix_e)
    assert ini.write_0(p0) == c0
    assert rsp.read_0(c0) == p0
    assert rsp.write_1(p1) == c1
    assert ini.read_1(c1) == p1
    return ini, rsp


def _transport_plan(v: Vector) -> list[tuple[bool, int, bytes, bytes]]:
    """(from_initiator, counter, payload, ciphertext) for each transport message."""
    counters = {True: 0, False: 0}
    plan = []
    for j, (payload, ct) in enumerate(v.messages[HANDSHAKE_MESSAGES:]):
        from_initiator = v.one_way or j % 2 == 0
        plan.append((from_initiator, counters[from_initiator], payload, ct))
        counters[from_initiator] += 1
    return plan


def _flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


def _sample_bits(length: int) -> list[int]:
    """Every bit of the first and the last byte, plus one bit in the middle."""
    last = (length - 1) * 8
    return sorted({*range(8), *range(last, last + 8), (length // 2) * 8 + 3})


# --- the vector file itself -----------------------------------------------------


def test_vector_file_has_only_ikpsk2_entries_with_sources() -> None:
    raw = _load_raw()
    assert len(raw) == len(VECTORS) >= 2
    for entry, v in zip(raw, VECTORS, strict=True):
        assert v.protocol_name == PROTOCOL_NAME
        src = entry["source"]
        assert set(src) == {"repo", "path", "commit"}
        assert re.fullmatch(r"[0-9a-f]{40}", src["commit"])
        assert not v.one_way
        assert len(v.messages) > HANDSHAKE_MESSAGES
    assert len({e["source"]["repo"] for e in raw}) >= 2, "vectors from independent generators"


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_keys_match_vector(v: Vector) -> None:
    for key in (v.init_static, v.resp_static, v.init_ephemeral, v.resp_ephemeral, v.psk):
        assert len(key) == 32
    if v.init_remote_static is not None:
        assert public_key(v.resp_static) == v.init_remote_static
    # Message 0 starts with the initiator's ephemeral public key, message 1 with
    # the responder's (both in clear).
    assert v.messages[0][1][:DH_LEN] == public_key(v.init_ephemeral)
    assert v.messages[1][1][:DH_LEN] == public_key(v.resp_ephemeral)


# --- handshake messages, both roles ----------------------------------------------


@pytest.mark.parametrize("mix_e", E_MIXERS)
@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_handshake_messages(v: Vector, mix_e: EMixer) -> None:
    (p0, c0), (p1, c1) = v.messages[:HANDSHAKE_MESSAGES]
    assert len(c0) == DH_LEN + (DH_LEN + TAG_LEN) + (len(p0) + TAG_LEN)
    assert len(c1) == DH_LEN + (len(p1) + TAG_LEN)

    ini, rsp = _handshake(v, mix_e)
    # The responder learned the initiator's static key from message 0.
    assert rsp.rs == public_key(v.init_static)
    assert rsp.re == public_key(v.init_ephemeral)
    assert ini.re == public_key(v.resp_ephemeral)
    # Both sides end on the same transcript hash and the same key pair.
    assert ini.ss.handshake_hash == rsp.ss.handshake_hash
    assert ini.ss.split() == rsp.ss.split()


@pytest.mark.parametrize("v", WITH_HASH, ids=_ids)
def test_handshake_hash(v: Vector) -> None:
    ini, rsp = _handshake(v)
    assert ini.ss.handshake_hash == v.handshake_hash
    assert rsp.ss.handshake_hash == v.handshake_hash


# --- transport messages after Split() ---------------------------------------------


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_transport_messages(v: Vector) -> None:
    ini, rsp = _handshake(v)
    i_send, i_recv = ini.ss.split()  # initiator: k1 sends, k2 receives
    r_recv, r_send = rsp.ss.split()  # responder: k1 receives, k2 sends
    assert i_send != i_recv
    plan = _transport_plan(v)
    assert plan, "vector has no transport messages"
    for from_initiator, n, payload, ct in plan:
        send, recv = (i_send, r_recv) if from_initiator else (r_send, i_recv)
        assert aead_encrypt(send, n, payload, b"") == ct
        assert aead_decrypt(recv, n, ct, b"") == payload
    # Counters really are per direction: the same message under the other
    # direction's counter does not authenticate.
    from_initiator, n, _, ct = plan[-1]
    recv = r_recv if from_initiator else i_recv
    with pytest.raises(CryptoError):
        aead_decrypt(recv, n + 1, ct, b"")


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_transport_flipped_bit_rejected(v: Vector) -> None:
    _, rsp = _handshake(v)
    r_recv, _ = rsp.ss.split()
    from_initiator, n, _, ct = _transport_plan(v)[0]
    assert from_initiator
    for bit in _sample_bits(len(ct)):
        with pytest.raises(CryptoError):
            aead_decrypt(r_recv, n, _flip(ct, bit), b"")


# --- tampering and misconfiguration make decrypt_and_hash fail ----------------------


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_flipped_bit_in_encrypted_static_rejected(v: Vector) -> None:
    c0 = v.messages[0][1]
    start, end = DH_LEN, 2 * DH_LEN + TAG_LEN
    for bit in _sample_bits(end - start):
        rsp = Responder.create(v)
        with pytest.raises(CryptoError):
            rsp.read_0_static(_flip(c0, start * 8 + bit))


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_flipped_bit_in_message0_payload_rejected(v: Vector) -> None:
    c0 = v.messages[0][1]
    start = 2 * DH_LEN + TAG_LEN
    for bit in _sample_bits(len(c0) - start):
        rsp = Responder.create(v)
        with pytest.raises(CryptoError):
            rsp.read_0(_flip(c0, start * 8 + bit))


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_flipped_bit_in_message1_payload_rejected(v: Vector) -> None:
    (p0, c0), (_, c1) = v.messages[:HANDSHAKE_MESSAGES]
    for bit in _sample_bits(len(c1) - DH_LEN):
        ini = Initiator.create(v)
        assert ini.write_0(p0) == c0
        with pytest.raises(CryptoError):
            ini.read_1(_flip(c1, DH_LEN * 8 + bit))


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_wrong_psk_rejected(v: Vector) -> None:
    (p0, c0), (_, c1) = v.messages[:HANDSHAKE_MESSAGES]
    ini = Initiator.create(v, psk=_flip(v.psk, 0))
    assert ini.write_0(p0) == c0  # the psk is mixed in only at the end of message 1
    with pytest.raises(CryptoError):
        ini.read_1(c1)


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_wrong_prologue_rejected(v: Vector) -> None:
    rsp = Responder.create(v, prologue=v.prologue + b"\x00")
    with pytest.raises(CryptoError):
        rsp.read_0_static(v.messages[0][1])


@pytest.mark.parametrize("v", VECTORS, ids=_ids)
def test_wrong_responder_static_rejected(v: Vector) -> None:
    rsp = Responder.create(v, s=_flip(v.resp_static, 8))
    with pytest.raises(CryptoError):
        rsp.read_0_static(v.messages[0][1])


# --- independent oracle: the noiseprotocol package ----------------------------------

try:
    from noise.connection import (  # type: ignore[import-untyped,import-not-found,unused-ignore]
        Keypair,
        NoiseConnection,
    )

    HAVE_NOISEPROTOCOL = True
except ImportError:
    HAVE_NOISEPROTOCOL = False


def _oracle_pair(
    prologue: bytes, psk: bytes, keys: dict[str, bytes]
) -> tuple[NoiseConnection, NoiseConnection]:
    ini = NoiseConnection.from_name(PROTOCOL_NAME.encode("ascii"))
    rsp = NoiseConnection.from_name(PROTOCOL_NAME.encode("ascii"))
    ini.set_as_initiator()
    rsp.set_as_responder()
    for conn in (ini, rsp):
        conn.set_prologue(prologue)
        conn.set_psks(psk=psk)
    ini.set_keypair_from_private_bytes(Keypair.STATIC, keys["is"])
    ini.set_keypair_from_private_bytes(Keypair.EPHEMERAL, keys["ie"])
    ini.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, public_key(keys["rs"]))
    rsp.set_keypair_from_private_bytes(Keypair.STATIC, keys["rs"])
    rsp.set_keypair_from_private_bytes(Keypair.EPHEMERAL, keys["re"])
    ini.start_handshake()
    rsp.start_handshake()
    return ini, rsp


@pytest.mark.skipif(not HAVE_NOISEPROTOCOL, reason="noiseprotocol not installed")
# noiseprotocol warns when handed fixed ephemerals, which is what a replay needs.
@pytest.mark.filterwarnings("ignore:One of ephemeral keypairs is already set")
@pytest.mark.parametrize("seed", range(12))
def test_against_noiseprotocol(seed: int) -> None:
    """Random keys, prologue and payloads: wgpy's bytes equal noiseprotocol's."""
    rng = random.Random(seed)
    sizes = [0, 1, 15, 16, 17, 64, 1000]
    keys = {k: rng.randbytes(32) for k in ("is", "ie", "rs", "re")}
    prologue = rng.randbytes(rng.choice([0, 1, 33, 70]))
    psk = rng.randbytes(32)
    payloads = [rng.randbytes(rng.choice(sizes)) for _ in range(2)]
    # A random direction sequence, so that per-direction counters diverge.
    transport = [(rng.random() < 0.5, rng.randbytes(rng.choice(sizes))) for _ in range(10)]

    o_ini, o_rsp = _oracle_pair(prologue, psk, keys)
    m0 = bytes(o_ini.write_message(payloads[0]))
    assert bytes(o_rsp.read_message(m0)) == payloads[0]
    m1 = bytes(o_rsp.write_message(payloads[1]))
    assert bytes(o_ini.read_message(m1)) == payloads[1]

    v = Vector(
        ident=f"seed-{seed}",
        protocol_name=PROTOCOL_NAME,
        prologue=prologue,
        psk=psk,
        init_static=keys["is"],
        resp_static=keys["rs"],
        init_ephemeral=keys["ie"],
        resp_ephemeral=keys["re"],
        init_remote_static=None,
        messages=((payloads[0], m0), (payloads[1], m1)),
        handshake_hash=None,
        one_way=False,
    )
    ini, rsp = _handshake(v)  # asserts wgpy writes m0 and m1 byte for byte
    assert ini.ss.handshake_hash == bytes(o_ini.get_handshake_hash())
    assert rsp.ss.handshake_hash == bytes(o_rsp.get_handshake_hash())

    i_send, i_recv = ini.ss.split()
    r_recv, r_send = rsp.ss.split()
    counters = {True: 0, False: 0}
    for from_initiator, payload in transport:
        o_send, o_recv = (o_ini, o_rsp) if from_initiator else (o_rsp, o_ini)
        send, recv = (i_send, r_recv) if from_initiator else (r_send, i_recv)
        n = counters[from_initiator]
        counters[from_initiator] += 1
        ct = bytes(o_send.encrypt(payload))
        assert aead_encrypt(send, n, payload, b"") == ct
        assert aead_decrypt(recv, n, ct, b"") == payload
        assert bytes(o_recv.decrypt(ct)) == payload
