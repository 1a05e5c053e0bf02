"""Every secret wgpy owns is wiped in place when it is no longer needed:
each test keeps a reference to the very buffer and asserts it is all zero
afterwards (copies inside cryptography/PyNaCl objects cannot be reached from
Python; wgpy drops its references to them at the same moments)."""

from __future__ import annotations

from simutil import A4, B4, ping

from wgpy.device import Device
from wgpy.noise.primitives import clamp
from wgpy.rng import SeededRng
from wgpy.sim import ipv4_packet, make_pair

ZERO = bytearray(32)
PSK = bytes(range(1, 33))


def _established(psk: bytes | None = None):  # type: ignore[no-untyped-def]
    net, a, b = make_pair(psk=psk)
    ping(net, a, b"hello")
    ping(net, b, b"back")
    return net, a, b


def test_static_private_key_is_wiped_on_key_change_and_on_clearing() -> None:
    dev = Device(clamp(bytes(range(32))), rng=SeededRng(b"s"))
    assert dev._static is not None
    old = dev._static.private
    assert old != ZERO
    dev.set_private_key(clamp(bytes(range(32, 64))))
    assert old == ZERO
    assert dev._static is not None
    second = dev._static.private
    dev.set_private_key(None)
    assert second == ZERO and dev.private_key is None


def test_static_private_key_and_precomputed_dh_are_wiped_on_key_change() -> None:
    _net, a, _b = _established()
    pa = a.device.peers[0]
    ss = pa.handshake.precomputed_ss
    assert ss is not None and ss != ZERO
    a.device.set_private_key(clamp(bytes(range(64, 96))))
    assert ss == ZERO


def test_preshared_key_is_wiped_on_change_and_on_removal() -> None:
    _net, a, _b = _established(psk=PSK)
    pa = a.device.peers[0]
    buf = pa.handshake.preshared_key
    assert bytes(buf) == PSK
    a.device.set_preshared_key(pa, None)
    assert buf == ZERO
    other = bytes(range(100, 132))
    a.device.set_preshared_key(pa, other)
    assert bytes(buf) == other  # the same buffer, overwritten: the old key is gone
    a.device.remove_peer(pa.public_key)
    assert buf == ZERO


def test_handshake_state_is_wiped_when_the_session_exists_and_on_removal() -> None:
    net, a, _b = make_pair()
    pa = a.device.peers[0]
    net.fault = lambda s, d, data: []  # the initiation goes nowhere: it stays pending
    net.send_packets(a, [ipv4_packet(A4, B4, b"x")])
    eph = pa.handshake.ephemeral_private
    sym = pa.handshake.symmetric
    assert sym is not None and eph != ZERO and sym.chaining_key != ZERO
    ck, h = sym.chaining_key, sym.hash
    a.device.remove_peer(pa.public_key)
    assert eph == ZERO and ck == ZERO and h == ZERO
    # A completed handshake erases its chaining key and ephemeral at once.
    net2, a2, _b2 = make_pair(b"second")
    pa2 = a2.device.peers[0]
    net2.fault = lambda s, d, data: []
    net2.send_packets(a2, [ipv4_packet(A4, B4, b"y")])
    eph2, sym2 = pa2.handshake.ephemeral_private, pa2.handshake.symmetric
    assert sym2 is not None
    ck2 = sym2.chaining_key
    net2.fault = None
    net2.in_flight.clear()
    net2.tick(6)  # the retry completes
    assert pa2.keypairs.current is not None
    assert eph2 == ZERO and ck2 == ZERO


def test_keypairs_are_wiped_on_erasure_and_on_removal() -> None:
    net, a, b = _established()
    pa, pb = a.device.peers[0], b.device.peers[0]
    kp_a, kp_b = pa.keypairs.current, pb.keypairs.current
    assert kp_a is not None and kp_b is not None
    keys_b = (kp_b.send_key, kp_b.recv_key)
    net.tick(541)  # ZERO_KEY_MATERIAL_AFTER without a new handshake
    assert kp_a.send_key == ZERO and kp_a.recv_key == ZERO
    # Removal wipes a live session too.
    _net2, a2, _b2 = _established()
    kp = a2.device.peers[0].keypairs.current
    assert kp is not None
    a2.device.remove_peer(a2.device.peers[0].public_key)
    assert kp.send_key == ZERO and kp.recv_key == ZERO
    assert all(k == ZERO for k in keys_b)


def test_closing_wipes_every_secret_of_the_device() -> None:
    _net, a, _b = _established(psk=PSK)
    dev = a.device
    assert dev._static is not None
    static = dev._static.private
    pa = dev.peers[0]
    kp = pa.keypairs.current
    assert kp is not None
    psk, ss = pa.handshake.preshared_key, pa.handshake.precomputed_ss
    cookie_secret = dev._cookie_checker._secret
    cookie_secret[:] = bytes(range(32))  # as if a cookie had been made
    dev.erase()
    assert static == ZERO and psk == ZERO and ss == ZERO and cookie_secret == ZERO
    assert kp.send_key == ZERO and kp.recv_key == ZERO
    assert dev.private_key is None and not dev.up
