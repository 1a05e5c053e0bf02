"""The four WireGuard messages as frozen values with exact parse/pack
(whitepaper 5.4).

The first four bytes are one little-endian u32: the type byte then three
reserved bytes that must be zero.  Handshake messages have exact lengths
(148, 92, 64); transport messages are at least 32 bytes.  Anything else is
rejected with :class:`MessageError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from wgpy.constants import (
    AEAD_TAG_LEN,
    COOKIE_NONCE_LEN,
    COOKIE_REPLY_SIZE,
    INITIATION_SIZE,
    KEY_LEN,
    MAC_LEN,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    RESPONSE_SIZE,
    TIMESTAMP_LEN,
    TRANSPORT_HEADER_SIZE,
    TRANSPORT_MIN_SIZE,
)

__all__ = [
    "INITIATION",
    "MAC1_OFFSET_INITIATION",
    "MAC1_OFFSET_RESPONSE",
    "TRANSPORT_HEADER",
    "Message",
    "MessageCookieReply",
    "MessageError",
    "MessageInitiation",
    "MessageResponse",
    "MessageTransport",
    "message_type",
    "parse_message",
]


class MessageError(ValueError):
    """Bytes that are not a well-formed WireGuard message."""


ENC_STATIC_LEN: Final = KEY_LEN + AEAD_TAG_LEN
ENC_TIMESTAMP_LEN: Final = TIMESTAMP_LEN + AEAD_TAG_LEN
ENC_COOKIE_LEN: Final = MAC_LEN + AEAD_TAG_LEN

#: type, sender, ephemeral, encrypted static, encrypted timestamp, mac1, mac2
INITIATION: Final = struct.Struct(f"<II{KEY_LEN}s{ENC_STATIC_LEN}s{ENC_TIMESTAMP_LEN}s16s16s")
#: type, sender, receiver, ephemeral, encrypted nothing, mac1, mac2
RESPONSE: Final = struct.Struct(f"<III{KEY_LEN}s{AEAD_TAG_LEN}s16s16s")
#: type, receiver, nonce, encrypted cookie
COOKIE_REPLY: Final = struct.Struct(f"<II{COOKIE_NONCE_LEN}s{ENC_COOKIE_LEN}s")
#: type, receiver, counter
TRANSPORT_HEADER: Final = struct.Struct("<IIQ")

#: mac1 covers the message up to here; mac2 covers up to mac1's end.
MAC1_OFFSET_INITIATION: Final = INITIATION_SIZE - 2 * MAC_LEN
MAC1_OFFSET_RESPONSE: Final = RESPONSE_SIZE - 2 * MAC_LEN

assert INITIATION.size == INITIATION_SIZE
assert RESPONSE.size == RESPONSE_SIZE
assert COOKIE_REPLY.size == COOKIE_REPLY_SIZE
assert TRANSPORT_HEADER.size == TRANSPORT_HEADER_SIZE

_U32: Final = struct.Struct("<I")


def message_type(data: bytes | memoryview) -> int:
    """The message type if the framing (type word, length) is valid, else 0.

    Reserved bytes must be zero: the type is read as a whole u32, as the
    kernel and wireguard-go do, so a non-zero reserved byte is an unknown type.
    """
    n = len(data)
    if n < 4:
        return 0
    kind: int = _U32.unpack_from(data)[0]
    if kind == MESSAGE_TRANSPORT:
        return kind if n >= TRANSPORT_MIN_SIZE else 0
    if kind == MESSAGE_INITIATION:
        return kind if n == INITIATION_SIZE else 0
    if kind == MESSAGE_RESPONSE:
        return kind if n == RESPONSE_SIZE else 0
    if kind == MESSAGE_COOKIE_REPLY:
        return kind if n == COOKIE_REPLY_SIZE else 0
    return 0


def _check_u32(name: str, value: int) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise MessageError(f"{name} must fit in 32 bits")


class _HandshakeMessage:
    """What the three fixed-size messages share: their type, their struct
    layout (the type word first) and each field's rule, in field order:
    ``_U32_FIELD`` for a u32, else the exact length in bytes."""

    __slots__ = ()
    _TYPE: ClassVar[int]
    _LAYOUT: ClassVar[struct.Struct]
    _RULES: ClassVar[tuple[tuple[str, int], ...]]
    _WHAT: ClassVar[str]

    def __post_init__(self) -> None:
        for name, rule in self._RULES:
            value = getattr(self, name)
            if rule == _U32_FIELD:
                _check_u32(name, value)
            elif len(value) != rule:
                raise MessageError(f"{name} must be {rule} bytes, got {len(value)}")

    def pack(self) -> bytes:
        """The message's wire bytes."""
        return self._LAYOUT.pack(self._TYPE, *(getattr(self, name) for name, _ in self._RULES))

    @classmethod
    def parse(cls, data: bytes | memoryview) -> Self:
        """Parse exactly the message's size, of its type, with zero reserved bytes."""
        if message_type(data) != cls._TYPE:
            raise MessageError(f"not a {cls._WHAT}")
        return cls(*cls._LAYOUT.unpack(data)[1:])


_U32_FIELD: Final = 0


@dataclass(frozen=True, slots=True)
class MessageInitiation(_HandshakeMessage):
    """Handshake initiation (type 1, 148 bytes)."""

    sender: int
    ephemeral: bytes
    encrypted_static: bytes
    encrypted_timestamp: bytes
    mac1: bytes = bytes(MAC_LEN)
    mac2: bytes = bytes(MAC_LEN)

    _TYPE: ClassVar[int] = MESSAGE_INITIATION
    _LAYOUT: ClassVar[struct.Struct] = INITIATION
    _WHAT: ClassVar[str] = "handshake initiation"
    _RULES: ClassVar[tuple[tuple[str, int], ...]] = (
        ("sender", _U32_FIELD),
        ("ephemeral", KEY_LEN),
        ("encrypted_static", ENC_STATIC_LEN),
        ("encrypted_timestamp", ENC_TIMESTAMP_LEN),
        ("mac1", MAC_LEN),
        ("mac2", MAC_LEN),
    )


@dataclass(frozen=True, slots=True)
class MessageResponse(_HandshakeMessage):
    """Handshake response (type 2, 92 bytes)."""

    sender: int
    receiver: int
    ephemeral: bytes
    encrypted_nothing: bytes
    mac1: bytes = bytes(MAC_LEN)
    mac2: bytes = bytes(MAC_LEN)

    _TYPE: ClassVar[int] = MESSAGE_RESPONSE
    _LAYOUT: ClassVar[struct.Struct] = RESPONSE
    _WHAT: ClassVar[str] = "handshake response"
    _RULES: ClassVar[tuple[tuple[str, int], ...]] = (
        ("sender", _U32_FIELD),
        ("receiver", _U32_FIELD),
        ("ephemeral", KEY_LEN),
        ("encrypted_nothing", AEAD_TAG_LEN),
        ("mac1", MAC_LEN),
        ("mac2", MAC_LEN),
    )


@dataclass(frozen=True, slots=True)
class MessageCookieReply(_HandshakeMessage):
    """Cookie reply (type 3, 64 bytes)."""

    receiver: int
    nonce: bytes
    encrypted_cookie: bytes

    _TYPE: ClassVar[int] = MESSAGE_COOKIE_REPLY
    _LAYOUT: ClassVar[struct.Struct] = COOKIE_REPLY
    _WHAT: ClassVar[str] = "cookie reply"
    _RULES: ClassVar[tuple[tuple[str, int], ...]] = (
        ("receiver", _U32_FIELD),
        ("nonce", COOKIE_NONCE_LEN),
        ("encrypted_cookie", ENC_COOKIE_LEN),
    )


@dataclass(frozen=True, slots=True)
class MessageTransport:
    """Transport data (type 4, 16-byte header plus at least a 16-byte tag)."""

    receiver: int
    counter: int
    encrypted: bytes

    def __post_init__(self) -> None:
        _check_u32("receiver", self.receiver)
        if not 0 <= self.counter < 1 << 64:
            raise MessageError("counter must fit in 64 bits")
        if len(self.encrypted) < AEAD_TAG_LEN:
            raise MessageError("transport payload shorter than the AEAD tag")

    def pack(self) -> bytes:
        """Header followed by the encrypted packet."""
        return (
            TRANSPORT_HEADER.pack(MESSAGE_TRANSPORT, self.receiver, self.counter) + self.encrypted
        )

    @classmethod
    def parse(cls, data: bytes | memoryview) -> MessageTransport:
        """Parse a transport message of at least 32 bytes."""
        if message_type(data) != MESSAGE_TRANSPORT:
            raise MessageError("not a transport message")
        _, receiver, counter = TRANSPORT_HEADER.unpack_from(data)
        return cls(receiver, counter, bytes(data[TRANSPORT_HEADER_SIZE:]))


Message = MessageInitiation | MessageResponse | MessageCookieReply | MessageTransport


def parse_message(data: bytes | memoryview) -> Message:
    """Parse any of the four messages; :class:`MessageError` if malformed."""
    kind = message_type(data)
    if kind == MESSAGE_INITIATION:
        return MessageInitiation.parse(data)
    if kind == MESSAGE_RESPONSE:
        return MessageResponse.parse(data)
    if kind == MESSAGE_COOKIE_REPLY:
        return MessageCookieReply.parse(data)
    if kind == MESSAGE_TRANSPORT:
        return MessageTransport.parse(data)
    raise MessageError("unknown type, non-zero reserved bytes, or wrong length")
