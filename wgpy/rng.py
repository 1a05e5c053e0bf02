"""Injected randomness.

The engine never calls the OS RNG directly: every random choice (ephemeral
keys, receiver indices, cookie secrets and nonces, timer jitter) comes from an
``Rng``.  ``SystemRng`` is the default; ``SeededRng`` gives a reproducible
stream for tests and for the transcripts in ``vectors/``.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol

__all__ = ["Rng", "SeededRng", "SystemRng"]


class Rng(Protocol):
    """Source of random bytes for the engine."""

    def random_bytes(self, n: int) -> bytes:
        """Return ``n`` random bytes."""
        ...


class SystemRng:
    """Cryptographically secure randomness from the OS (``secrets``)."""

    def random_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)


class SeededRng:
    """A deterministic stream: BLAKE2s(seed || le64(block)) for block 0, 1, 2...

    Only for tests and vectors.  The construction is stable across Python
    versions, so recorded transcripts replay byte for byte.
    """

    def __init__(self, seed: bytes) -> None:
        self._seed = bytes(seed)
        self._block = 0
        self._buffer = b""

    def random_bytes(self, n: int) -> bytes:
        while len(self._buffer) < n:
            digest = hashlib.blake2s(self._seed + self._block.to_bytes(8, "little")).digest()
            self._buffer += digest
            self._block += 1
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out


def random_u32(rng: Rng) -> int:
    """A uniformly random 32-bit integer from ``rng``."""
    return int.from_bytes(rng.random_bytes(4), "little")


def random_fraction(rng: Rng) -> float:
    """A uniformly random float in [0, 1) from ``rng``."""
    return int.from_bytes(rng.random_bytes(4), "little") / 4294967296.0
