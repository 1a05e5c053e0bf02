"""mac1, mac2 and cookie replies: WireGuard's DoS defence (whitepaper 5.4.4, 5.4.7).

* mac1 = MAC(HASH("mac1----" || receiver's static public key), msg[:mac1]).
  The receiver checks it before any DH, so only senders that know our public
  key make us spend CPU.
* Under load the receiver also requires mac2 = MAC(cookie, msg[:mac2]) where
  cookie = MAC(secret, source address || source port) and the secret is
  replaced every 120 s.  Without a valid mac2 it answers with a cookie reply:
  the cookie sealed with XChaCha20-Poly1305 under HASH("cookie--" || its
  public key), with the triggering message's mac1 as associated data, so the
  initiator accepts only a reply bound to a message it really sent.

:class:`CookieChecker` is the responder side (one per device);
:class:`CookieGenerator` is the sender side (one per peer).
"""

from __future__ import annotations

import hashlib
import hmac as _hmac
from typing import Any, Final

from wgpy.constants import (
    COOKIE_NONCE_LEN,
    COOKIE_SECRET_LATENCY,
    COOKIE_SECRET_MAX_AGE,
    HASH_LEN,
    LABEL_COOKIE,
    LABEL_MAC1,
    MAC_LEN,
)
from wgpy.endpoint import Endpoint
from wgpy.noise.messages import MessageCookieReply
from wgpy.noise.primitives import CryptoError, mac, noise_hash, xaead_decrypt, xaead_encrypt
from wgpy.rng import Rng

__all__ = ["CookieChecker", "CookieGenerator", "cookie_key", "mac1_key"]

_ZERO_MAC: Final = bytes(MAC_LEN)


def mac1_key(public: bytes) -> bytes:
    """The mac1 key of messages sent to the holder of ``public``."""
    return noise_hash(LABEL_MAC1 + public)


def cookie_key(public: bytes) -> bytes:
    """The key sealing cookie replies sent by the holder of ``public``."""
    return noise_hash(LABEL_COOKIE + public)


class CookieChecker:
    """Responder side: verifies mac1/mac2 and makes cookie replies."""

    __slots__ = ("_cookie_key", "_mac1", "_mac1_key", "_rng", "_secret", "_secret_birth")

    def __init__(self, rng: Rng) -> None:
        self._rng = rng
        self._mac1_key: bytes | None = None
        self._mac1: Any = None  # a BLAKE2s state keyed for mac1, copied per check
        self._cookie_key: bytes | None = None
        self._secret = bytearray(HASH_LEN)
        self._secret_birth: float | None = None

    def set_public_key(self, public: bytes | None) -> None:
        """Derive the keys from our own static public key (None: no identity)."""
        if public is None:
            self._mac1_key = self._cookie_key = self._mac1 = None
        else:
            self._mac1_key = mac1_key(public)
            self._cookie_key = cookie_key(public)
            self._mac1 = hashlib.blake2s(key=self._mac1_key, digest_size=MAC_LEN)

    def check_mac1(self, msg: bytes | memoryview, mac1_offset: int) -> bool:
        """True if mac1 (at ``mac1_offset``) is valid for our public key.
        Costs one keyed BLAKE2s and no copy of the message: this is the
        check a flood of junk pays, so it stays as cheap as it can."""
        state = self._mac1
        if state is None:
            return False
        h = state.copy()
        h.update(msg[:mac1_offset])
        return _hmac.compare_digest(h.digest(), msg[mac1_offset : mac1_offset + MAC_LEN])

    def _cookie(self, source: Endpoint, now: float) -> bytes:
        # The secret is regenerated lazily once it is older than 120 s.
        if self._secret_birth is None or not (
            0 <= now - self._secret_birth < COOKIE_SECRET_MAX_AGE
        ):
            self._secret[:] = self._rng.random_bytes(HASH_LEN)
            self._secret_birth = now
        return mac(bytes(self._secret), source.cookie_bytes())

    def check_mac2(
        self, msg: bytes | memoryview, mac1_offset: int, source: Endpoint, now: float
    ) -> bool:
        """True if mac2 is valid for the cookie of ``source``."""
        mac2_offset = mac1_offset + MAC_LEN
        got = bytes(msg[mac2_offset : mac2_offset + MAC_LEN])
        if got == _ZERO_MAC:
            return False
        want = mac(self._cookie(source, now), bytes(msg[:mac2_offset]))
        return _hmac.compare_digest(want, got)

    def create_reply(
        self, msg: bytes | memoryview, mac1_offset: int, sender: int, source: Endpoint, now: float
    ) -> bytes:
        """A 64-byte cookie reply to ``source`` for a message from ``sender``."""
        if self._cookie_key is None:
            raise ValueError("no static identity")
        nonce = self._rng.random_bytes(COOKIE_NONCE_LEN)
        ad = bytes(msg[mac1_offset : mac1_offset + MAC_LEN])
        sealed = xaead_encrypt(self._cookie_key, nonce, self._cookie(source, now), ad)
        return MessageCookieReply(sender, nonce, sealed).pack()

    def zero(self) -> None:
        """Forget the cookie secret."""
        self._secret[:] = bytes(HASH_LEN)
        self._secret_birth = None


class CookieGenerator:
    """Sender side, per peer: adds mac1/mac2 and accepts cookie replies.

    A cookie reply is accepted only if it decrypts with the mac1 of the last
    handshake message we sent, and only once per such message (the kernel's
    rule; wireguard-go accepts repeats).
    """

    __slots__ = ("_cookie", "_cookie_birth", "_cookie_key", "_last_mac1", "_mac1_key")

    def __init__(self, peer_public: bytes) -> None:
        self._mac1_key = mac1_key(peer_public)
        self._cookie_key = cookie_key(peer_public)
        self._last_mac1: bytes | None = None
        self._cookie = bytearray(MAC_LEN)
        self._cookie_birth: float | None = None

    def add_macs(self, msg_without_macs: bytes, now: float) -> bytes:
        """Append mac1 and (with a fresh cookie) mac2 to a handshake message."""
        mac1 = mac(self._mac1_key, msg_without_macs)
        self._last_mac1 = mac1
        with_mac1 = msg_without_macs + mac1
        birth = self._cookie_birth
        if birth is not None and 0 <= now - birth < COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY:
            return with_mac1 + mac(bytes(self._cookie), with_mac1)
        return with_mac1 + _ZERO_MAC

    def consume_reply(self, reply: MessageCookieReply, now: float) -> bool:
        """Store the cookie from ``reply``; False if it is not bound to our last mac1."""
        if self._last_mac1 is None:
            return False
        try:
            cookie = xaead_decrypt(
                self._cookie_key, reply.nonce, reply.encrypted_cookie, self._last_mac1
            )
        except CryptoError:
            return False
        self._cookie[:] = cookie
        self._cookie_birth = now
        self._last_mac1 = None  # one reply per message sent
        return True

    def zero(self) -> None:
        """Forget the cookie and the last mac1."""
        self._cookie[:] = bytes(MAC_LEN)
        self._cookie_birth = None
        self._last_mac1 = None
