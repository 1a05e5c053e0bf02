"""Transport keypairs and their rotation (whitepaper 5.4.6, 6.1-6.3).

A :class:`Keypair` is one session: a send key with its 64-bit counter, a
receive key with its replay window, and the two receiver indices.  Each key
direction owns one ChaCha20Poly1305 object for its whole life.

:class:`Keypairs` holds a peer's three slots.  The *initiator* of a handshake
can use the new session at once, so it becomes ``current``.  The *responder*
parks it in ``next`` and sends nothing with it until the first packet from
the initiator arrives on it (key confirmation); then ``next`` becomes
``current`` and the old ``current`` becomes ``previous``, which still
decrypts packets that were in flight during the rotation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from wgpy.constants import (
    KEY_LEN,
    MESSAGE_PADDING_MULTIPLE,
    MESSAGE_TRANSPORT,
    REJECT_AFTER_MESSAGES,
    REJECT_AFTER_TIME,
)
from wgpy.noise.messages import TRANSPORT_HEADER
from wgpy.noise.primitives import AEAD_NONCE
from wgpy.replay import ReplayWindow

if TYPE_CHECKING:
    from wgpy.noise.handshake import SessionKeys

__all__ = ["Keypair", "Keypairs", "padding_for"]

_ZEROS: Final = bytes(MESSAGE_PADDING_MULTIPLE)
_pack_header = TRANSPORT_HEADER.pack
_pack_nonce = AEAD_NONCE.pack


def padding_for(length: int, mtu: int) -> int:
    """Zero bytes to append to a plaintext of ``length``: up to a multiple of
    16, never past the MTU (the kernel's calculate_skb_padding; an oversized
    packet is padded by its remainder modulo the MTU)."""
    if mtu <= 0:
        return -length % MESSAGE_PADDING_MULTIPLE
    last_unit = length % mtu if length > mtu else length
    padded = min(mtu, (last_unit + MESSAGE_PADDING_MULTIPLE - 1) & ~(MESSAGE_PADDING_MULTIPLE - 1))
    return padded - last_unit


class Keypair:
    """One transport session."""

    __slots__ = (
        "_recv_aead",
        "_send_aead",
        "created",
        "initiator",
        "local_index",
        "recv_key",
        "remote_index",
        "replay",
        "send_counter",
        "send_key",
    )

    @classmethod
    def from_handshake(cls, keys: SessionKeys, created: float) -> Keypair:
        """The session a finished handshake yields (its keys and indices)."""
        return cls(
            keys.send_key,
            keys.recv_key,
            keys.initiator,
            keys.local_index,
            keys.remote_index,
            created,
        )

    def __init__(
        self,
        send_key: bytes,
        recv_key: bytes,
        initiator: bool,
        local_index: int,
        remote_index: int,
        created: float,
    ) -> None:
        if len(send_key) != KEY_LEN or len(recv_key) != KEY_LEN:
            raise ValueError("transport keys are 32 bytes")
        self.send_key = bytearray(send_key)
        self.recv_key = bytearray(recv_key)
        self._send_aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(bytes(send_key))
        self._recv_aead: ChaCha20Poly1305 | None = ChaCha20Poly1305(bytes(recv_key))
        self.initiator = initiator
        self.local_index = local_index
        self.remote_index = remote_index
        self.created = created
        self.send_counter = 0
        self.replay = ReplayWindow()

    def expired(self, now: float) -> bool:
        """True once REJECT_AFTER_TIME has passed (or the keys were erased)."""
        return self._send_aead is None or not (0 <= now - self.created < REJECT_AFTER_TIME)

    def can_send(self, now: float) -> bool:
        """Usable for sending: keys present, young enough, counter not exhausted."""
        return not self.expired(now) and self.send_counter < REJECT_AFTER_MESSAGES

    def seal(self, plaintext: bytes | memoryview, padding: int) -> bytes:
        """Encrypt one packet into a complete transport message.

        The caller checked :meth:`can_send`.  ``padding`` zero bytes are
        appended to the plaintext before encryption.
        """
        aead = self._send_aead
        assert aead is not None
        counter = self.send_counter
        self.send_counter = counter + 1
        if padding:
            plaintext = bytes(plaintext) + _ZEROS[:padding]
        return _pack_header(MESSAGE_TRANSPORT, self.remote_index, counter) + aead.encrypt(
            _pack_nonce(counter), plaintext, None
        )

    def seal_batch(self, packets: list[bytes], mtu: int) -> list[bytes]:
        """Encrypt packets in order, each padded for ``mtu``, into transport
        messages; stops early (returning fewer) if the counter reaches
        REJECT_AFTER_MESSAGES.  This is the per-packet hot path."""
        aead = self._send_aead
        assert aead is not None
        encrypt = aead.encrypt
        remote = self.remote_index
        counter = self.send_counter
        limit = REJECT_AFTER_MESSAGES
        kind = MESSAGE_TRANSPORT
        out: list[bytes] = []
        append = out.append
        for pkt in packets:
            if counter >= limit:
                break
            n = len(pkt)
            pad = -n & 15
            if n + pad > mtu:  # never pad past the MTU
                pad = mtu - n if n <= mtu else padding_for(n, mtu)
            if pad:
                pkt = bytes(pkt) + _ZEROS[:pad]
            append(_pack_header(kind, remote, counter) + encrypt(_pack_nonce(counter), pkt, None))
            counter += 1
        self.send_counter = counter
        return out

    def open(self, counter: int, ciphertext: bytes | memoryview) -> bytes | None:
        """Decrypt a transport payload; None if it does not authenticate.

        The replay window is *not* consulted here: the caller checks it after
        authentication so a forged counter can never move the window.
        """
        aead = self._recv_aead
        if aead is None:
            return None
        try:
            return aead.decrypt(_pack_nonce(counter), ciphertext, None)
        except InvalidTag:
            return None

    def zero(self) -> None:
        """Erase the keys (the AEAD objects' internal copies go with them)."""
        self.send_key[:] = bytes(KEY_LEN)
        self.recv_key[:] = bytes(KEY_LEN)
        self._send_aead = None
        self._recv_aead = None

    @property
    def erased(self) -> bool:
        """True once :meth:`zero` ran."""
        return self._send_aead is None


class Keypairs:
    """The previous/current/next slots of one peer."""

    __slots__ = ("current", "next", "previous")

    def __init__(self) -> None:
        self.previous: Keypair | None = None
        self.current: Keypair | None = None
        self.next: Keypair | None = None

    def install(self, new: Keypair) -> list[Keypair]:
        """Add a freshly derived keypair; returns the keypairs dropped.

        Initiator: ``new`` becomes current; if a next was pending it becomes
        previous (it was never confirmed but may have been used by the peer)
        and the old current is dropped, else current becomes previous.
        Responder: ``new`` replaces next and previous is dropped.
        """
        dropped: list[Keypair] = []
        if new.initiator:
            if self.next is not None:
                if self.previous is not None:
                    dropped.append(self.previous)
                self.previous = self.next
                self.next = None
                if self.current is not None:
                    dropped.append(self.current)
            else:
                if self.previous is not None:
                    dropped.append(self.previous)
                self.previous = self.current
            self.current = new
        else:
            if self.next is not None:
                dropped.append(self.next)
            self.next = new
            if self.previous is not None:
                dropped.append(self.previous)
            self.previous = None
        return dropped

    def confirm(self, keypair: Keypair) -> list[Keypair]:
        """A packet arrived on ``keypair``; if it is ``next``, rotate it into
        ``current`` (key confirmation).  Returns the keypairs dropped."""
        if keypair is not self.next:
            return []
        dropped = [self.previous] if self.previous is not None else []
        self.previous = self.current
        self.current = keypair
        self.next = None
        return dropped

    def clear(self) -> list[Keypair]:
        """Remove all three; returns them for index release and erasure."""
        out = [kp for kp in (self.previous, self.current, self.next) if kp is not None]
        self.previous = self.current = self.next = None
        return out

    def __iter__(self) -> Iterator[Keypair]:
        return iter([kp for kp in (self.previous, self.current, self.next) if kp is not None])
