"""Keypair sealing/padding and the previous/current/next rotation rules."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy.constants import REJECT_AFTER_MESSAGES
from wgpy.noise.keypair import Keypair, Keypairs, padding_for


def kp(initiator: bool, index: int = 1) -> Keypair:
    return Keypair(os.urandom(32), os.urandom(32), initiator, index, index + 100, 0.0)


@settings(max_examples=300)
@given(st.integers(0, 3000), st.sampled_from([0, 576, 1280, 1300, 1420, 1500, 9000]))
def test_seal_batch_padding_matches_padding_for(n: int, mtu: int) -> None:
    k = kp(True)
    (msg,) = k.seal_batch([bytes(n)], mtu)
    pad = padding_for(n, mtu)
    assert len(msg) == 32 + n + pad
    if mtu > 0 and n <= mtu:
        assert n + pad <= mtu
        assert (n + pad) % 16 == 0 or n + pad == mtu


def test_seal_open_roundtrip_and_counter() -> None:
    a = Keypair(b"k" * 32, b"r" * 32, True, 1, 2, 0.0)
    b = Keypair(b"r" * 32, b"k" * 32, False, 2, 1, 0.0)
    msgs = a.seal_batch([b"one", b"two"], 1420)
    assert [int.from_bytes(m[8:16], "little") for m in msgs] == [0, 1]
    assert b.open(1, msgs[1][16:]) == b"two" + bytes(13)
    assert b.open(0, msgs[1][16:]) is None  # wrong counter: authentication fails


def test_seal_batch_stops_at_reject_after_messages() -> None:
    a = kp(True)
    a.send_counter = REJECT_AFTER_MESSAGES - 1
    assert len(a.seal_batch([b"a", b"b", b"c"], 1420)) == 1
    assert a.send_counter == REJECT_AFTER_MESSAGES and not a.can_send(0.0)


def test_initiator_rotation() -> None:
    slots = Keypairs()
    first, second, third = kp(True, 1), kp(True, 2), kp(True, 3)
    assert slots.install(first) == []
    assert slots.install(second) == [] and slots.previous is first and slots.current is second
    assert slots.install(third) == [first]
    assert (slots.previous, slots.current, slots.next) == (second, third, None)


def test_responder_parks_next_until_confirmed() -> None:
    slots = Keypairs()
    cur, nxt = kp(False, 1), kp(False, 2)
    slots.install(cur)
    slots.confirm(cur)
    assert slots.current is cur
    assert slots.install(nxt) == [] and slots.next is nxt and slots.current is cur
    assert slots.confirm(cur) == []  # a packet on current changes nothing
    assert slots.confirm(nxt) == [] and slots.current is nxt and slots.previous is cur
    newer = kp(False, 3)
    assert slots.install(newer) == [cur]  # previous dropped when a new next arrives
    assert slots.previous is None and slots.next is newer


def test_initiator_with_pending_next_moves_it_to_previous() -> None:
    slots = Keypairs()
    cur, nxt, new = kp(True, 1), kp(False, 2), kp(True, 3)
    slots.install(cur)
    slots.install(nxt)
    dropped = slots.install(new)
    assert dropped == [cur]
    assert (slots.previous, slots.current, slots.next) == (nxt, new, None)


def test_zero_erases() -> None:
    a = kp(True)
    a.zero()
    assert a.erased and a.send_key == bytearray(32) and a.recv_key == bytearray(32)
    assert a.open(0, bytes(32)) is None and a.expired(0.0)
