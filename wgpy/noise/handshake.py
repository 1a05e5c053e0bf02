"""The Noise_IKpsk2 handshake as WireGuard uses it (whitepaper 5.4.2-5.4.5).

Pattern (responder's static key known in advance)::

    <- s
    ...
    -> e, es, s, ss          (initiation: payload = TAI64N timestamp)
    <- e, ee, se, psk        (response: empty payload)

The per-peer :class:`Handshake` record holds what survives between messages.
The four functions create and consume the two messages; consumers check
everything first and change the record only when the whole message
authenticated, so forged or replayed messages leave a pending handshake
intact.  mac1/mac2 are handled by :mod:`wgpy.noise.cookie` before these run.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import Final, NamedTuple

from wgpy.constants import (
    CONSTRUCTION,
    IDENTIFIER,
    KEY_LEN,
    MIN_INITIATION_INTERVAL,
    TIMESTAMP_LEN,
)
from wgpy.noise.messages import MessageInitiation, MessageResponse
from wgpy.noise.primitives import CryptoError, StaticKey, dh, noise_hash, public_key
from wgpy.noise.symmetric import SymmetricState
from wgpy.noise.tai64n import is_after

__all__ = [
    "Handshake",
    "HandshakeState",
    "consume_initiation",
    "consume_response",
    "create_initiation",
    "create_response",
    "derive_transport_keys",
    "initial_hash",
]

#: Ci := HASH(Construction)
INITIAL_CHAINING_KEY: Final = noise_hash(CONSTRUCTION)
#: Hi := HASH(Ci || Identifier)
_INITIAL_HASH: Final = noise_hash(INITIAL_CHAINING_KEY + IDENTIFIER)
_EMPTY_PSK: Final = bytes(KEY_LEN)


def initial_hash(responder_public: bytes) -> bytes:
    """Hi := HASH(HASH(Ci || Identifier) || Spub_r): the pre-message ``<- s``."""
    return noise_hash(_INITIAL_HASH + responder_public)


class HandshakeState(IntEnum):
    """Where a peer's handshake stands (wireguard-go's handshakeState)."""

    ZEROED = 0
    CREATED_INITIATION = 1
    CONSUMED_INITIATION = 2
    CREATED_RESPONSE = 3
    CONSUMED_RESPONSE = 4


class Handshake:
    """Handshake state with one peer.

    ``precomputed_ss`` is DH(our static, their static), computed once per key
    configuration; it is None when that DH is all-zero (a low-order peer key),
    and then no handshake with the peer can start or complete.
    """

    __slots__ = (
        "ephemeral_private",
        "initiator_hash",
        "last_initiation_consumed",
        "latest_timestamp",
        "local_index",
        "precomputed_ss",
        "preshared_key",
        "remote_ephemeral",
        "remote_index",
        "remote_static",
        "state",
        "symmetric",
    )

    def __init__(self, remote_static: bytes, preshared_key: bytes | None = None) -> None:
        if len(remote_static) != KEY_LEN:
            raise ValueError("a public key is 32 bytes")
        self.remote_static = bytes(remote_static)
        self.preshared_key = bytearray(preshared_key or _EMPTY_PSK)
        self.precomputed_ss: bytearray | None = None
        self.initiator_hash = initial_hash(self.remote_static)
        self.state = HandshakeState.ZEROED
        self.symmetric: SymmetricState | None = None
        self.ephemeral_private = bytearray(KEY_LEN)
        self.remote_ephemeral = bytes(KEY_LEN)
        self.local_index = 0
        self.remote_index = 0
        self.latest_timestamp = bytes(TIMESTAMP_LEN)
        self.last_initiation_consumed: float | None = None

    def precompute(self, static: StaticKey | None) -> None:
        """Recompute DH(s, S_remote) after our private key changed."""
        if self.precomputed_ss is not None:
            self.precomputed_ss[:] = bytes(KEY_LEN)
        self.precomputed_ss = None
        if static is not None:
            try:
                self.precomputed_ss = bytearray(static.dh(self.remote_static))
            except CryptoError:
                self.precomputed_ss = None

    def clear(self) -> None:
        """Zero the ephemeral secrets and transcript (not the peer's identity,
        PSK, precomputation or replay-protection state)."""
        self.ephemeral_private[:] = bytes(KEY_LEN)
        if self.symmetric is not None:
            self.symmetric.zero()
        self.symmetric = None
        self.remote_ephemeral = bytes(KEY_LEN)
        self.state = HandshakeState.ZEROED
        self.local_index = 0
        self.remote_index = 0

    def zero_all(self) -> None:
        """Peer removal: :meth:`clear`, then also wipe the preshared key and
        the precomputed DH (the record is unusable afterwards)."""
        self.clear()
        self.preshared_key[:] = _EMPTY_PSK
        if self.precomputed_ss is not None:
            self.precomputed_ss[:] = bytes(KEY_LEN)
        self.precomputed_ss = None


def create_initiation(
    static: StaticKey,
    hs: Handshake,
    sender_index: int,
    ephemeral_private: bytes,
    timestamp: bytes,
) -> bytes | None:
    """Build an initiation without its macs (116 bytes), or None if the peer's
    key is low-order.  Moves ``hs`` to CREATED_INITIATION."""
    if hs.precomputed_ss is None:
        return None
    st = SymmetricState.from_state(INITIAL_CHAINING_KEY, hs.initiator_hash)
    e_pub = public_key(ephemeral_private)
    # e: Hi := HASH(Hi || Epub_i); Ci := KDF1(Ci, Epub_i)
    st.mix_hash(e_pub)
    st.mix_chain(e_pub)
    try:
        # es: (Ci, k) := KDF2(Ci, DH(Epriv_i, Spub_r))
        st.mix_key(dh(ephemeral_private, hs.remote_static))
    except CryptoError:
        return None
    # s: encrypted static public key
    enc_static = st.encrypt_and_hash(static.public)
    # ss: (Ci, k) := KDF2(Ci, DH(Spriv_i, Spub_r)), precomputed
    st.mix_key(bytes(hs.precomputed_ss))
    enc_timestamp = st.encrypt_and_hash(timestamp)

    hs.clear()
    hs.symmetric = st
    hs.ephemeral_private[:] = ephemeral_private
    hs.local_index = sender_index
    hs.state = HandshakeState.CREATED_INITIATION
    msg = MessageInitiation(sender_index, e_pub, enc_static, enc_timestamp)
    return msg.pack()[:-32]


def consume_initiation(
    static: StaticKey,
    responder_hash: bytes,
    msg: MessageInitiation,
    find_peer: Callable[[bytes], Handshake | None],
    now: float,
) -> Handshake | None:
    """Authenticate an initiation (mac1 already checked).

    ``responder_hash`` is :func:`initial_hash` of our own public key;
    ``find_peer`` maps the decrypted initiator static key to its handshake.
    Returns the peer's handshake, now CONSUMED_INITIATION, or None (nothing
    changed) if decryption fails, the peer is unknown or low-order, the
    timestamp is not newer than the last accepted, or the peer sent another
    initiation less than 20 ms ago.
    """
    st = SymmetricState.from_state(INITIAL_CHAINING_KEY, responder_hash)
    e = msg.ephemeral
    st.mix_hash(e)
    st.mix_chain(e)
    try:
        st.mix_key(static.dh(e))  # es
        remote_static = st.decrypt_and_hash(msg.encrypted_static)
    except CryptoError:
        return None
    hs = find_peer(remote_static)
    if hs is None or hs.precomputed_ss is None:
        return None
    st.mix_key(bytes(hs.precomputed_ss))  # ss
    try:
        timestamp = st.decrypt_and_hash(msg.encrypted_timestamp)
    except CryptoError:
        return None
    # Replay: the timestamp must be strictly newer than the last accepted one.
    if not is_after(timestamp, hs.latest_timestamp):
        return None
    # Flood: at most one initiation per peer every 1/INITIATIONS_PER_SECOND.
    last = hs.last_initiation_consumed
    if last is not None and 0 <= now - last < MIN_INITIATION_INTERVAL:
        return None

    hs.clear()
    hs.symmetric = st
    hs.remote_ephemeral = bytes(e)
    hs.remote_index = msg.sender
    hs.latest_timestamp = timestamp
    if last is None or now > last:  # the stored time never moves backwards
        hs.last_initiation_consumed = now
    hs.state = HandshakeState.CONSUMED_INITIATION
    return hs


def create_response(hs: Handshake, sender_index: int, ephemeral_private: bytes) -> bytes | None:
    """Build a response without its macs (60 bytes) to the initiation held in
    ``hs``; moves it to CREATED_RESPONSE.  None if the DH results are zero."""
    if hs.state != HandshakeState.CONSUMED_INITIATION or hs.symmetric is None:
        return None
    st = hs.symmetric.copy()
    e_pub = public_key(ephemeral_private)
    st.mix_hash(e_pub)  # e
    st.mix_chain(e_pub)
    try:
        st.mix_chain(dh(ephemeral_private, hs.remote_ephemeral))  # ee
        st.mix_chain(dh(ephemeral_private, hs.remote_static))  # se
    except CryptoError:
        return None
    st.mix_key_and_hash(bytes(hs.preshared_key))  # psk
    enc_nothing = st.encrypt_and_hash(b"")

    remote_index = hs.remote_index
    hs.symmetric.zero()
    hs.symmetric = st
    hs.ephemeral_private[:] = ephemeral_private
    hs.local_index = sender_index
    hs.remote_index = remote_index
    hs.state = HandshakeState.CREATED_RESPONSE
    msg = MessageResponse(sender_index, remote_index, e_pub, enc_nothing)
    return msg.pack()[:-32]


def consume_response(static: StaticKey, hs: Handshake, msg: MessageResponse) -> bool:
    """Authenticate a response to our pending initiation (mac1 already
    checked, ``hs`` found by the receiver index).  On success ``hs`` is
    CONSUMED_RESPONSE; on any failure it is left exactly as it was."""
    if hs.state != HandshakeState.CREATED_INITIATION or hs.symmetric is None:
        return False
    st = hs.symmetric.copy()
    e = msg.ephemeral
    st.mix_hash(e)  # e
    st.mix_chain(e)
    try:
        st.mix_chain(dh(bytes(hs.ephemeral_private), e))  # ee
        st.mix_chain(static.dh(e))  # se
        st.mix_key_and_hash(bytes(hs.preshared_key))  # psk
        if st.decrypt_and_hash(msg.encrypted_nothing) != b"":
            return False
    except CryptoError:
        st.zero()
        return False
    hs.symmetric.zero()
    hs.symmetric = st
    hs.remote_ephemeral = bytes(e)
    hs.remote_index = msg.sender
    hs.state = HandshakeState.CONSUMED_RESPONSE
    return True


class SessionKeys(NamedTuple):
    """What a finished handshake yields for a new keypair."""

    send_key: bytes
    recv_key: bytes
    initiator: bool
    local_index: int
    remote_index: int


def derive_transport_keys(hs: Handshake) -> SessionKeys | None:
    """The transport keys and indices of a finished handshake, after
    which ``hs`` is cleared (whitepaper 5.4.5: ck and the ephemerals are
    erased as soon as the session keys exist)."""
    if hs.symmetric is None:
        return None
    if hs.state == HandshakeState.CONSUMED_RESPONSE:
        initiator = True
    elif hs.state == HandshakeState.CREATED_RESPONSE:
        initiator = False
    else:
        return None
    # (Tsend_i = Trecv_r, Trecv_i = Tsend_r) := KDF2(C, empty)
    k1, k2 = hs.symmetric.split()
    send, recv = (k1, k2) if initiator else (k2, k1)
    keys = SessionKeys(send, recv, initiator, hs.local_index, hs.remote_index)
    hs.clear()
    return keys
