"""Cryptographic primitives of WireGuard (whitepaper section 5.4).

DH is X25519; HASH is BLAKE2s-256; MAC is keyed BLAKE2s-128; HMAC is HMAC over
BLAKE2s; KDF1..3 are the HKDF extract-then-expand steps built on HMAC; AEAD is
ChaCha20-Poly1305 with a 64-bit little-endian counter nonce; XAEAD is
XChaCha20-Poly1305 (cookie replies only).

Residual limit on secret erasure: key bytes passed to ``cryptography`` or
PyNaCl are copied into objects (and OpenSSL contexts) that wgpy cannot wipe.
wgpy keeps its own copies in ``bytearray``s and zeroes those; the library
copies die with the objects that hold them.
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from nacl import bindings as _sodium
from nacl.exceptions import CryptoError as _NaclCryptoError

from wgpy.constants import KEY_LEN, MAC_LEN

__all__ = [
    "AEAD_NONCE",
    "CryptoError",
    "aead_decrypt",
    "aead_encrypt",
    "clamp",
    "dh",
    "hmac",
    "kdf1",
    "kdf2",
    "kdf3",
    "mac",
    "noise_hash",
    "public_key",
    "xaead_decrypt",
    "xaead_encrypt",
]


class CryptoError(Exception):
    """Authentication failed, or a DH produced the all-zero (low-order) result."""


#: Packs the 96-bit ChaCha20-Poly1305 nonce: 4 zero bytes, then le64(counter).
AEAD_NONCE: Final = struct.Struct("<4xQ")

_BLOCK: Final = 64  # BLAKE2s block size, the HMAC pad length
_IPAD: Final = bytes(x ^ 0x36 for x in range(256))
_OPAD: Final = bytes(x ^ 0x5C for x in range(256))
_ZERO_PAD: Final = bytes(_BLOCK)
_blake2s = hashlib.blake2s


def noise_hash(data: bytes) -> bytes:
    """HASH(input): BLAKE2s-256."""
    return _blake2s(data).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """MAC(key, input): keyed BLAKE2s with a 16-byte output."""
    return _blake2s(data, digest_size=MAC_LEN, key=key).digest()


def _hmac_pads(key: bytes | bytearray) -> tuple[Any, Any]:
    """BLAKE2s states after absorbing the HMAC inner and outer key pads."""
    if len(key) > _BLOCK:
        key = _blake2s(key).digest()
    key = bytes(key) + _ZERO_PAD[len(key) :]
    return _blake2s(key.translate(_IPAD)), _blake2s(key.translate(_OPAD))


def _hmac_finish(pads: tuple[Any, Any], data: bytes) -> bytes:
    inner = pads[0].copy()
    inner.update(data)
    outer = pads[1].copy()
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def hmac(key: bytes | bytearray, data: bytes | bytearray) -> bytes:
    """HMAC(key, input) over BLAKE2s-256 (RFC 2104).

    Written out by hand: it is about twice as fast as ``hmac.new`` here, and
    the handshake computes it 42 times.
    """
    inner, outer = _hmac_pads(key)
    inner.update(data)
    outer.update(inner.digest())
    digest: bytes = outer.digest()
    return digest


def kdf1(key: bytes | bytearray, ikm: bytes | bytearray) -> bytes:
    """KDF1(key, input): one 32-byte output."""
    return hmac(hmac(key, ikm), b"\x01")


def kdf2(key: bytes | bytearray, ikm: bytes | bytearray) -> tuple[bytes, bytes]:
    """KDF2(key, input): two 32-byte outputs."""
    # The pads of the pseudo-random key are absorbed once and copied per output.
    pads = _hmac_pads(hmac(key, ikm))
    t1 = _hmac_finish(pads, b"\x01")
    return t1, _hmac_finish(pads, t1 + b"\x02")


def kdf3(key: bytes | bytearray, ikm: bytes | bytearray) -> tuple[bytes, bytes, bytes]:
    """KDF3(key, input): three 32-byte outputs."""
    pads = _hmac_pads(hmac(key, ikm))
    t1 = _hmac_finish(pads, b"\x01")
    t2 = _hmac_finish(pads, t1 + b"\x02")
    return t1, t2, _hmac_finish(pads, t2 + b"\x03")


def aead_encrypt(key: bytes, counter: int, plaintext: bytes, ad: bytes) -> bytes:
    """AEAD(key, counter, plain, auth): ChaCha20-Poly1305, ciphertext || tag."""
    return ChaCha20Poly1305(bytes(key)).encrypt(AEAD_NONCE.pack(counter), plaintext, ad)


def aead_decrypt(key: bytes, counter: int, ciphertext: bytes, ad: bytes) -> bytes:
    """Inverse of :func:`aead_encrypt`; raises :class:`CryptoError` on a bad tag."""
    try:
        return ChaCha20Poly1305(bytes(key)).decrypt(AEAD_NONCE.pack(counter), ciphertext, ad)
    except InvalidTag:
        raise CryptoError("AEAD authentication failed") from None


def xaead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    """XAEAD(key, nonce, plain, auth): XChaCha20-Poly1305 with a 24-byte nonce."""
    out: bytes = _sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plaintext, ad, nonce, bytes(key)
    )
    return out


def xaead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    """Inverse of :func:`xaead_encrypt`; raises :class:`CryptoError` on a bad tag."""
    try:
        out: bytes = _sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, ad, nonce, bytes(key)
        )
    except _NaclCryptoError:
        raise CryptoError("XAEAD authentication failed") from None
    return out


def clamp(private: bytes) -> bytes:
    """Curve25519 clamping, as ``wg`` shows a private key after it is set."""
    if len(private) != KEY_LEN:
        raise ValueError("a private key is 32 bytes")
    b = bytearray(private)
    b[0] &= 248
    b[31] = (b[31] & 127) | 64
    return bytes(b)


def public_key(private: bytes) -> bytes:
    """DH-Pubkey(private): the X25519 public key of a 32-byte private key."""
    if len(private) != KEY_LEN:
        raise ValueError("a private key is 32 bytes")
    # libsodium's scalarmult_base clamps internally and is faster than
    # building a cryptography key object just to read its public half.
    out: bytes = _sodium.crypto_scalarmult_base(bytes(private))
    return out


def dh(private: bytes, public: bytes) -> bytes:
    """DH(private, public): X25519; the all-zero result of a low-order public
    key raises :class:`CryptoError` (whitepaper 5.4, kernel noise.c)."""
    if len(private) != KEY_LEN or len(public) != KEY_LEN:
        raise CryptoError("X25519 keys are 32 bytes")
    try:
        out: bytes = _sodium.crypto_scalarmult(bytes(private), bytes(public))
    except (_NaclCryptoError, RuntimeError):
        raise CryptoError("X25519 produced the all-zero shared secret") from None
    if out == bytes(KEY_LEN):
        raise CryptoError("X25519 produced the all-zero shared secret")
    return out


class StaticKey:
    """A static private key with a cached ``cryptography`` object for fast DH.

    Building the X25519 key object costs as much as a DH, so the device keeps
    one per configured private key.  ``private`` is a ``bytearray`` that
    :meth:`zero` wipes.
    """

    __slots__ = ("_obj", "private", "public")

    def __init__(self, private: bytes) -> None:
        if len(private) != KEY_LEN:
            raise ValueError("a private key is 32 bytes")
        self.private = bytearray(clamp(private))
        self._obj: X25519PrivateKey | None = X25519PrivateKey.from_private_bytes(
            bytes(self.private)
        )
        self.public = public_key(bytes(self.private))

    def dh(self, public: bytes) -> bytes:
        """DH(static private, public), rejecting the all-zero result."""
        if self._obj is None:
            raise CryptoError("static key was erased")
        if len(public) != KEY_LEN:
            raise CryptoError("X25519 keys are 32 bytes")
        try:
            out = self._obj.exchange(X25519PublicKey.from_public_bytes(bytes(public)))
        except ValueError:
            raise CryptoError("X25519 produced the all-zero shared secret") from None
        if out == bytes(KEY_LEN):
            raise CryptoError("X25519 produced the all-zero shared secret")
        return out

    def zero(self) -> None:
        """Wipe wgpy's copy of the key and drop the library object."""
        self.private[:] = bytes(KEY_LEN)
        self._obj = None
