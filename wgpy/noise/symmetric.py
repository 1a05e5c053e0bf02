"""The Noise SymmetricState (Noise spec section 5.2) over WireGuard's primitives.

WireGuard's handshake is Noise_IKpsk2 with the prologue set to the WireGuard
identifier, so the handshake module drives this object token by token; the
Noise test vectors in ``vectors/noise/`` exercise the very same code.

The chaining key, hash and cipher key live in ``bytearray``s so that
:meth:`zero` can wipe them (key erasure, whitepaper 6.3).
"""

from __future__ import annotations

import hashlib

from wgpy.constants import HASH_LEN, KEY_LEN
from wgpy.noise.primitives import (
    aead_decrypt,
    aead_encrypt,
    kdf1,
    kdf2,
    kdf3,
    noise_hash,
)

__all__ = ["SymmetricState"]

_blake2s = hashlib.blake2s


class SymmetricState:
    """Chaining key ``ck``, handshake hash ``h`` and the current cipher key.

    Each ``mix_key`` resets the cipher nonce to zero, so in WireGuard every
    handshake AEAD uses nonce 0 with a fresh key.
    """

    __slots__ = ("_has_key", "_key", "_nonce", "chaining_key", "hash")

    def __init__(self, protocol_name: bytes | None = None) -> None:
        self.chaining_key = bytearray(HASH_LEN)
        self.hash = bytearray(HASH_LEN)
        self._key = bytearray(KEY_LEN)
        self._has_key = False
        self._nonce = 0
        if protocol_name is not None:
            # InitializeSymmetric: h = name padded, or HASH(name) if longer than 32.
            if len(protocol_name) <= HASH_LEN:
                h = protocol_name + bytes(HASH_LEN - len(protocol_name))
            else:
                h = noise_hash(protocol_name)
            self.hash[:] = h
            self.chaining_key[:] = h

    @classmethod
    def from_state(cls, chaining_key: bytes, hash_: bytes) -> SymmetricState:
        """Resume from a precomputed (ck, h), e.g. after the fixed prologue."""
        state = cls()
        state.chaining_key[:] = chaining_key
        state.hash[:] = hash_
        return state

    def copy(self) -> SymmetricState:
        """An independent copy (used to resume a precomputed prefix)."""
        other = SymmetricState()
        other.chaining_key[:] = self.chaining_key
        other.hash[:] = self.hash
        other._key[:] = self._key
        other._has_key = self._has_key
        other._nonce = self._nonce
        return other

    @property
    def handshake_hash(self) -> bytes:
        """The current handshake hash ``h``."""
        return bytes(self.hash)

    def mix_hash(self, data: bytes) -> None:
        """h := HASH(h || data)."""
        h = _blake2s(self.hash)
        h.update(data)
        self.hash[:] = h.digest()

    def mix_chain(self, ikm: bytes) -> None:
        """ck := KDF1(ck, ikm): WireGuard's form of MixKey when the cipher key
        is about to be replaced anyway (the ephemeral token in psk mode)."""
        self.chaining_key[:] = kdf1(self.chaining_key, ikm)
        self._has_key = False

    def mix_key(self, ikm: bytes) -> None:
        """(ck, k) := KDF2(ck, ikm); nonce := 0."""
        ck, k = kdf2(self.chaining_key, ikm)
        self.chaining_key[:] = ck
        self._key[:] = k
        self._has_key = True
        self._nonce = 0

    def mix_key_and_hash(self, ikm: bytes) -> None:
        """(ck, t, k) := KDF3(ck, ikm); h := HASH(h || t); nonce := 0 (psk token)."""
        ck, t, k = kdf3(self.chaining_key, ikm)
        self.chaining_key[:] = ck
        self.mix_hash(t)
        self._key[:] = k
        self._has_key = True
        self._nonce = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """c := AEAD(k, n, p, h); h := HASH(h || c).  Without a key, c = p."""
        if self._has_key:
            out = aead_encrypt(bytes(self._key), self._nonce, plaintext, bytes(self.hash))
            self._nonce += 1
        else:
            out = bytes(plaintext)
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """p := AEAD-open(k, n, c, h); h := HASH(h || c).

        Raises :class:`wgpy.noise.primitives.CryptoError` on a bad tag and then
        leaves ``h`` unchanged.
        """
        if self._has_key:
            out = aead_decrypt(bytes(self._key), self._nonce, ciphertext, bytes(self.hash))
            self._nonce += 1
        else:
            out = bytes(ciphertext)
        self.mix_hash(ciphertext)
        return out

    def split(self) -> tuple[bytes, bytes]:
        """(k1, k2) := KDF2(ck, empty): the two transport keys."""
        return kdf2(self.chaining_key, b"")

    def zero(self) -> None:
        """Wipe ck, h and k."""
        self.chaining_key[:] = bytes(HASH_LEN)
        self.hash[:] = bytes(HASH_LEN)
        self._key[:] = bytes(KEY_LEN)
        self._has_key = False
        self._nonce = 0
