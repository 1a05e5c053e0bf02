"""WireGuard keys as text: generation, public-key derivation and the base64
form that ``wg genkey``/``wg pubkey``/``wg genpsk`` and configuration files use.

A key on the command line or in a ``.conf`` file is exactly 44 characters:
the standard base64 of 32 bytes, with the single ``=`` of padding.  ``wg``
rejects anything else (wrong length, a missing ``=``, non-zero unused bits in
the last character), and so does :func:`decode_key`.
"""

from __future__ import annotations

import base64
import binascii
import secrets

from wgpy.constants import KEY_LEN
from wgpy.noise.primitives import clamp, public_key

__all__ = [
    "KEY_BASE64_LEN",
    "decode_key",
    "encode_key",
    "generate_private_key",
    "generate_psk",
    "public_key_of",
]

#: Length of a key in base64: ceil(32 / 3) * 4.
KEY_BASE64_LEN = 44


def generate_private_key() -> bytes:
    """32 random bytes, clamped for X25519 exactly as ``wg genkey`` does."""
    return clamp(secrets.token_bytes(KEY_LEN))


def generate_psk() -> bytes:
    """32 random bytes for a preshared key (``wg genpsk``: no clamping)."""
    return secrets.token_bytes(KEY_LEN)


def public_key_of(private: bytes) -> bytes:
    """The X25519 public key of ``private`` (``wg pubkey``).

    The private key is clamped first, as X25519 requires, so an unclamped
    key gives the same public key as its clamped form (also as ``wg`` does).
    """
    if len(private) != KEY_LEN:
        raise ValueError(f"a private key is {KEY_LEN} bytes, got {len(private)}")
    return public_key(clamp(private))


def encode_key(key: bytes) -> str:
    """Base64 of a 32-byte key: 44 characters ending in ``=``."""
    if len(key) != KEY_LEN:
        raise ValueError(f"a key is {KEY_LEN} bytes, got {len(key)}")
    return base64.b64encode(bytes(key)).decode("ascii")


def decode_key(text: str) -> bytes:
    """Parse a base64 key strictly, as ``wg`` does.

    Raises ValueError unless ``text`` is exactly 44 characters of standard
    base64 (``A-Z a-z 0-9 + /``) ending in ``=`` and encoding 32 bytes, with
    the unused low bits of the 43rd character zero (the canonical form).
    """
    if len(text) != KEY_BASE64_LEN:
        raise ValueError(
            f"a key must be {KEY_BASE64_LEN} characters of base64, got {len(text)} characters"
        )
    if not text.isascii() or not text.endswith("=") or text.endswith("=="):
        raise ValueError("a key must be base64 of 32 bytes ending in a single '='")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a key must be base64 (A-Z, a-z, 0-9, '+', '/')") from None
    # b64decode ignores non-zero padding bits; wg does not, so neither do we.
    if len(raw) != KEY_LEN or base64.b64encode(raw).decode("ascii") != text:
        raise ValueError("a key must be the canonical base64 of exactly 32 bytes")
    return raw
