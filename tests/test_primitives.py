"""Primitives: KDF vectors, HMAC against the stdlib, DH low-order rejection, TAI64N."""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import itertools
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgpy.constants import TAI64_BASE
from wgpy.noise import primitives as P
from wgpy.noise.tai64n import Tai64nStamper, is_after, tai64n

VECTORS = Path(__file__).resolve().parent.parent / "vectors"

# The seven low-order Curve25519 points tests/netns.sh configures as peers
# (from the kernel's tools/testing/selftests/wireguard/netns.sh), as raw bytes.
LOW_ORDER_POINTS = [
    bytes(32),
    bytes([1]) + bytes(31),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]


def test_kdf_vectors_from_wireguard_go() -> None:
    data = json.loads((VECTORS / "kdf" / "wireguard-go-kdf.json").read_text())
    for case in data["cases"]:
        key, ikm = bytes.fromhex(case["key"]), bytes.fromhex(case["input"])
        t0, t1, t2 = (bytes.fromhex(case[k]) for k in ("t0", "t1", "t2"))
        assert P.kdf3(key, ikm) == (t0, t1, t2)
        assert P.kdf2(key, ikm) == (t0, t1)
        assert P.kdf1(key, ikm) == t0


@given(st.binary(max_size=200), st.binary(max_size=300))
def test_hand_rolled_hmac_matches_stdlib(key: bytes, msg: bytes) -> None:
    assert P.hmac(key, msg) == std_hmac.new(key, msg, hashlib.blake2s).digest()


def test_mac_is_keyed_blake2s_128() -> None:
    assert (
        P.mac(b"k" * 32, b"msg") == hashlib.blake2s(b"msg", key=b"k" * 32, digest_size=16).digest()
    )


def test_dh_agrees_and_static_key_matches() -> None:
    a, b = os.urandom(32), os.urandom(32)
    shared = P.dh(a, P.public_key(b))
    assert shared == P.dh(b, P.public_key(a))
    assert P.StaticKey(a).dh(P.public_key(b)) == shared


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_low_order_points_rejected(point: bytes) -> None:
    priv = os.urandom(32)
    with pytest.raises(P.CryptoError):
        P.dh(priv, point)
    with pytest.raises(P.CryptoError):
        P.StaticKey(priv).dh(point)


def test_static_key_is_clamped_and_zeroed() -> None:
    raw = bytes([0xFF] * 32)
    key = P.StaticKey(raw)
    assert bytes(key.private) == P.clamp(raw)
    assert key.private[0] & 7 == 0 and key.private[31] & 0x80 == 0 and key.private[31] & 0x40
    key.zero()
    assert bytes(key.private) == bytes(32)
    with pytest.raises(P.CryptoError):
        key.dh(P.public_key(os.urandom(32)))


def test_aead_roundtrip_and_tamper() -> None:
    key = os.urandom(32)
    ct = P.aead_encrypt(key, 7, b"payload", b"ad")
    assert P.aead_decrypt(key, 7, ct, b"ad") == b"payload"
    for bad in (
        lambda: P.aead_decrypt(key, 8, ct, b"ad"),
        lambda: P.aead_decrypt(key, 7, ct, b"AD"),
        lambda: P.aead_decrypt(key, 7, bytes([ct[0] ^ 1]) + ct[1:], b"ad"),
    ):
        with pytest.raises(P.CryptoError):
            bad()


def test_aead_nonce_layout() -> None:
    # 4 zero bytes then the little-endian 64-bit counter.
    assert P.AEAD_NONCE.pack(0x0102030405060708) == bytes(4) + bytes.fromhex("0807060504030201")


def test_xaead_roundtrip_and_tamper() -> None:
    key, nonce = os.urandom(32), os.urandom(24)
    ct = P.xaead_encrypt(key, nonce, b"cookie-16-bytes!", b"mac1")
    assert P.xaead_decrypt(key, nonce, ct, b"mac1") == b"cookie-16-bytes!"
    with pytest.raises(P.CryptoError):
        P.xaead_decrypt(key, nonce, ct, b"mac2")


# -- TAI64N (whitening table as wireguard-go's tai64n_test.go) ----------------


def test_tai64n_layout() -> None:
    ts = tai64n(1_000_000_000 * 5 + 123_456_789)
    assert int.from_bytes(ts[:8], "big") == TAI64_BASE + 5
    assert int.from_bytes(ts[8:], "big") == 123_456_789 & ~((1 << 24) - 1)


@pytest.mark.parametrize(
    ("delta_ns", "later"),
    [(10, False), (10_000, False), (1_000_000, False), (10_000_000, False), (20_000_000, True)],
)
def test_whitening(delta_ns: int, later: bool) -> None:
    base = 1_767_225_600 * 10**9  # a whole second: the nanosecond field starts at 0
    assert is_after(tai64n(base + delta_ns), tai64n(base)) is later


GRANULE = 1 << 24


def _label(stamp: bytes) -> int:
    return int.from_bytes(stamp, "big")


def test_stamper_moves_a_repeat_up_one_granule_and_no_further() -> None:
    s = Tai64nStamper()
    base = 2_000_000_000 * 10**9
    first = s.stamp(base)
    assert first == tai64n(base)
    second = s.stamp(base + 1)  # same whitening granule: one granule up
    assert is_after(second, first)
    assert _label(second) - _label(first) == GRANULE
    # A third in the same granule would run two granules ahead of the clock:
    # it follows the clock instead (the peer drops it, as with the kernel).
    third = s.stamp(base + 2)
    assert third == tai64n(base)
    later = s.stamp(base + 100 * 10**9)  # the clock moved on: the clock's value
    assert later == tai64n(base + 100 * 10**9)


def test_stamper_follows_a_clock_stepped_back() -> None:
    s = Tai64nStamper()
    s.stamp(2_000_000_000 * 10**9)
    back = s.stamp(1_000_000_000 * 10**9)
    # Never more than one granule ahead of the wall clock, even if that means
    # not increasing: a lead would outlive a restart of the process.
    assert back == tai64n(1_000_000_000 * 10**9)
    # Once the clock passes the last stamp, stamps increase again.
    assert is_after(s.stamp(2_000_000_001 * 10**9), tai64n(2_000_000_000 * 10**9))


def test_unbounded_stamper_is_strictly_increasing() -> None:
    s = Tai64nStamper(max_ahead=None)
    stamps = [s.stamp(3_000_000_000 * 10**9) for _ in range(100)]
    assert all(is_after(b, a) for a, b in itertools.pairwise(stamps))
    assert s.stamp(1_000_000_000 * 10**9) > stamps[-1]


def test_stamper_bump_carries_into_the_seconds() -> None:
    edge = Tai64nStamper()
    top = edge.stamp(5 * 10**9 + 999_999_999)
    nxt = edge.stamp(5 * 10**9 + 999_999_999)
    assert is_after(nxt, top) and int.from_bytes(nxt[8:], "big") == 0
    assert int.from_bytes(nxt[:8], "big") == TAI64_BASE + 6
