"""Message framing: exact lengths, zero reserved bytes, parse/pack round trips."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgpy.constants import COOKIE_REPLY_SIZE, INITIATION_SIZE, RESPONSE_SIZE, TRANSPORT_MIN_SIZE
from wgpy.noise.messages import (
    MessageCookieReply,
    MessageError,
    MessageInitiation,
    MessageResponse,
    MessageTransport,
    message_type,
    parse_message,
)


def _initiation() -> MessageInitiation:
    return MessageInitiation(
        0x11223344, os.urandom(32), os.urandom(48), os.urandom(28), os.urandom(16), os.urandom(16)
    )


def _response() -> MessageResponse:
    return MessageResponse(1, 2, os.urandom(32), os.urandom(16), os.urandom(16), os.urandom(16))


def test_sizes_and_roundtrip() -> None:
    for msg, size in (
        (_initiation(), INITIATION_SIZE),
        (_response(), RESPONSE_SIZE),
        (MessageCookieReply(9, os.urandom(24), os.urandom(32)), COOKIE_REPLY_SIZE),
        (MessageTransport(5, 2**64 - 1, os.urandom(16)), TRANSPORT_MIN_SIZE),
    ):
        wire = msg.pack()
        assert len(wire) == size
        assert wire[1:4] == b"\0\0\0"
        assert parse_message(wire) == msg


def test_little_endian_fields() -> None:
    wire = MessageTransport(0x01020304, 0x0102030405060708, bytes(16)).pack()
    assert wire[:4] == b"\x04\0\0\0"
    assert wire[4:8] == bytes([4, 3, 2, 1])
    assert wire[8:16] == bytes([8, 7, 6, 5, 4, 3, 2, 1])


@pytest.mark.parametrize(
    ("kind", "size"), [(1, INITIATION_SIZE), (2, RESPONSE_SIZE), (3, COOKIE_REPLY_SIZE)]
)
def test_handshake_lengths_are_exact(kind: int, size: int) -> None:
    for n in (size - 1, size + 1, 0, 4, 2 * size):
        assert message_type(bytes([kind]) + bytes(max(n - 1, 0))) == 0
        with pytest.raises(MessageError):
            parse_message(bytes([kind]) + bytes(max(n - 1, 0)))
    assert message_type(bytes([kind]) + bytes(size - 1)) == kind


def test_transport_minimum() -> None:
    assert message_type(b"\x04" + bytes(TRANSPORT_MIN_SIZE - 2)) == 0
    assert message_type(b"\x04" + bytes(TRANSPORT_MIN_SIZE - 1)) == 4
    assert message_type(b"\x04" + bytes(1500)) == 4


@pytest.mark.parametrize("position", [1, 2, 3])
def test_nonzero_reserved_bytes_rejected(position: int) -> None:
    for wire in (
        _initiation().pack(),
        _response().pack(),
        MessageTransport(1, 1, bytes(20)).pack(),
    ):
        bad = bytearray(wire)
        bad[position] = 1
        assert message_type(bytes(bad)) == 0
        with pytest.raises(MessageError):
            parse_message(bytes(bad))


def test_unknown_types() -> None:
    for t in (0, 5, 255):
        assert message_type(bytes([t]) + bytes(147)) == 0


def test_constructor_validates_lengths() -> None:
    with pytest.raises(MessageError):
        MessageInitiation(1, bytes(31), bytes(48), bytes(28))
    with pytest.raises(MessageError):
        MessageResponse(1, 2**32, bytes(32), bytes(16))
    with pytest.raises(MessageError):
        MessageTransport(1, 2**64, bytes(16))


@given(st.binary(max_size=300))
def test_parse_never_raises_anything_but_message_error(data: bytes) -> None:
    try:
        msg = parse_message(data)
    except MessageError:
        assert message_type(data) == 0
    else:
        assert msg.pack() == data
