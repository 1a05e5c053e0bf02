"""Deliberately broken wgpy targets, one per conformance scenario.

Each mutation breaks exactly the rule its scenario checks, by patching the
engine (wgpy.device and what it calls) in a target process of its own, so the
runner in the test process is untouched.  tests/test_conformance_mutants.py
runs each scenario against its mutant (it must FAIL) and the whole default
set against the unpatched target (it must PASS).

Run as a target: ``python tests/mutants.py NAME PORT CIDR MUTATION|none``
creates a userspace wireguard.h adapter NAME (no TUN, no root needed) with
address CIDR, listening on UDP PORT, prints ``ready UAPI-SOCKET-PATH`` and
serves until its stdin closes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from wgpy import device as dev_mod
from wgpy.device import Device
from wgpy.noise import handshake as hs_mod
from wgpy.noise import primitives
from wgpy.noise.cookie import CookieChecker
from wgpy.noise.messages import message_type
from wgpy.replay import ReplayWindow
from wgpy.timers import PeerTimers

Mutation = Callable[[], None]


def _patch(owner: Any, name: str, value: Any) -> None:
    setattr(owner, name, value)


def _corrupt_responses() -> None:
    real = dev_mod.create_response

    def create_response(hs: Any, index: int, ephemeral: bytes) -> bytes | None:
        body = real(hs, index, ephemeral)
        return None if body is None else body[:44] + bytes([body[44] ^ 1]) + body[45:]

    _patch(dev_mod, "create_response", create_response)


def _no_key_confirmation() -> None:
    real = Device._consume_response

    def consume(self: Device, *args: Any) -> Any:
        self._send_keepalive = lambda *a: None  # type: ignore[method-assign]
        try:
            return real(self, *args)
        finally:
            del self._send_keepalive

    _patch(Device, "_consume_response", consume)


def _ignore_psk() -> None:
    real_add = Device.add_peer

    def add_peer(self: Device, *args: Any, **kw: Any) -> Any:
        kw.pop("preshared_key", None)
        return real_add(self, *args, **kw)

    _patch(Device, "add_peer", add_peer)
    _patch(Device, "set_preshared_key", lambda self, peer, psk: None)


def _drop_data_out() -> None:
    real = Device._send_staged

    def send_staged(
        self: Device, peer: Any, now: float, wall_ns: int, out: Any, fresh: Any = None
    ) -> None:
        if fresh:
            fresh = [p for p in fresh if not p]  # data vanishes, keepalives stay
        real(self, peer, now, wall_ns, out, fresh)

    _patch(Device, "_send_staged", send_staged)


def _no_padding() -> None:
    real = Device._send_staged

    def send_staged(self: Device, *args: Any, **kw: Any) -> None:
        mtu, self.mtu = self.mtu, 0  # seal_batch never pads past the MTU
        try:
            real(self, *args, **kw)
        finally:
            self.mtu = mtu

    _patch(Device, "_send_staged", send_staged)


def _no_replay_window() -> None:
    _patch(ReplayWindow, "validate", lambda self, counter: True)


def _forget_on_initiation(attr: str, value: Any) -> None:
    """Before each initiation is judged, reset one field of the peer's
    handshake record (what a target that keeps no such memory does)."""
    real = dev_mod.consume_initiation

    def consume(static: Any, rh: Any, msg: Any, find: Any, now: float) -> Any:
        def lookup(pk: bytes) -> Any:
            hs = find(pk)
            if hs is not None:
                setattr(hs, attr, value)
            return hs

        return real(static, rh, msg, lookup, now)

    _patch(dev_mod, "consume_initiation", consume)


def _forget_timestamps() -> None:
    _forget_on_initiation("latest_timestamp", bytes(12))


def _no_flood_limit() -> None:
    _forget_on_initiation("last_initiation_consumed", None)


def _no_framing_filter() -> None:
    """The socket's BPF framing filter drops malformed datagrams before the
    engine; a mutant whose engine mishandles them must not have it."""
    from wgpy.net import udp

    _patch(udp, "_attach_wireguard_filter", lambda sock: None)


def _answer_garbage() -> None:
    _no_framing_filter()
    real = Device._receive_other

    def receive_other(
        self: Device, data: bytes, source: Any, now: float, wall_ns: int, out: Any
    ) -> Any:
        if message_type(data) == 0 and len(data) >= 4 and data[0] not in (1, 2, 3, 4):
            out.datagrams.append((bytes(data), source))  # echoes unknown types
        return real(self, data, source, now, wall_ns, out)

    _patch(Device, "_receive_other", receive_other)


def _zero_reserved(data: bytes | memoryview) -> bytes:
    return bytes(data[:1]) + bytes(3) + bytes(data[4:]) if len(data) >= 4 else bytes(data)


def _ignore_reserved_bytes() -> None:
    """Reads only the type byte, as if the reserved bytes were always zero
    (mac1 is still checked over the bytes as they came)."""
    _no_framing_filter()
    from wgpy.noise import messages

    real_parse = messages.MessageInitiation.parse.__func__  # type: ignore[attr-defined]
    _patch(dev_mod, "message_type", lambda data: message_type(_zero_reserved(data)))
    _patch(
        messages.MessageInitiation,
        "parse",
        classmethod(lambda cls, data: real_parse(cls, _zero_reserved(data))),
    )


def _accept_any_mac1() -> None:
    _patch(CookieChecker, "check_mac1", lambda self, msg, offset: True)


def _accept_zero_dh() -> None:
    raw = primitives._sodium.crypto_scalarmult

    def dh(private: bytes, public: bytes) -> bytes:
        try:
            return bytes(raw(bytes(private), bytes(public)))
        except Exception:
            return bytes(32)

    def static_dh(self: Any, public: bytes) -> bytes:
        return dh(bytes(self.private), public)

    _patch(hs_mod, "dh", dh)
    _patch(primitives.StaticKey, "dh", static_dh)


def _roam_before_auth() -> None:
    real = Device.receive

    def receive(self: Device, datagrams: Any, now: float, wall_ns: int, out: Any = None) -> Any:
        # One datagram at a time, in order, as mitmproxy_rs handles them.
        for data, source in datagrams:
            if len(data) >= 16 and data[0] == 4:
                entry = self._index.get(int.from_bytes(data[4:8], "little"))
                if entry is not None:
                    entry[0].endpoint = source  # before decrypting
            out = real(self, [(data, source)], now, wall_ns, out)
        return out if out is not None else real(self, [], now, wall_ns)

    _patch(Device, "receive", receive)


def _no_passive_keepalive() -> None:
    _patch(PeerTimers, "data_received", lambda self, now: None)


def _no_persistent_keepalive() -> None:
    real = Device.set_persistent_keepalive

    def set_keepalive(self: Device, peer: Any, interval: int, now: float, wall_ns: int = 0) -> Any:
        return real(self, peer, 0, now, wall_ns)

    _patch(Device, "set_persistent_keepalive", set_keepalive)


def _junk_counts_toward_load() -> None:
    real = CookieChecker.check_mac1
    devices: list[Device] = []
    real_init = Device.__init__

    def init(self: Device, *args: Any, **kw: Any) -> None:
        real_init(self, *args, **kw)
        devices.append(self)

    def check_mac1(self: CookieChecker, msg: Any, offset: int) -> bool:
        for d in devices:  # the old bug: every handshake-shaped datagram counts
            if d._cookie_checker is self:
                d._handshake_budget(dev_mod_time())
        return real(self, msg, offset)

    _patch(Device, "__init__", init)
    _patch(CookieChecker, "check_mac1", check_mac1)


def dev_mod_time() -> float:
    """The runtime's clock (the Interface passes time.monotonic())."""
    import time

    return time.monotonic()


def _never_under_load() -> None:
    _patch(Device, "under_load", lambda self, now: False)


def _ignore_cookie_replies() -> None:
    _patch(Device, "_receive_cookie_reply", lambda self, data, now: None)


def _no_jitter() -> None:
    _patch(Device, "_jitter", lambda self: 0.0)


def _no_message_limit() -> None:
    _patch(dev_mod, "REJECT_AFTER_MESSAGES", 1 << 65)
    _patch(ReplayWindow, "validate", lambda self, counter, limit=0: True)


def _responder_sends_unconfirmed() -> None:
    real = Device._send_response

    def send_response(self: Device, peer: Any, *args: Any) -> None:
        real(self, peer, *args)
        kp = peer.keypairs.next
        if kp is not None:  # treats the new session as confirmed at once
            for old in peer.keypairs.confirm(kp):
                self._drop_keypair(old)

    _patch(Device, "_send_response", send_response)


def _monotonic_handshake_time() -> None:
    import time

    real = Device._handshake_complete

    def complete(self: Device, peer: Any, now: float, wall_ns: int, out: Any) -> None:
        real(self, peer, now, wall_ns, out)
        peer.last_handshake_ns = time.monotonic_ns()  # not Unix time

    _patch(Device, "_handshake_complete", complete)


def _crossing_initiations_deadlock() -> None:
    real = Device._consume_initiation

    def consume(self: Device, *args: Any) -> Any:
        pending = [
            p for p in self.peers if p.handshake.state == hs_mod.HandshakeState.CREATED_INITIATION
        ]
        if pending:  # drops the crossing initiation and forgets its own
            for p in pending:
                p.handshake.clear()
            return None
        return real(self, *args)

    _patch(Device, "_consume_initiation", consume)


def _never_rekeys() -> None:
    _patch(dev_mod, "REKEY_AFTER_TIME", 1e9)


def _never_give_up() -> None:
    from wgpy import timers

    _patch(timers, "MAX_TIMER_HANDSHAKES", 1 << 30)


def _keypairs_never_expire() -> None:
    from wgpy.noise.keypair import Keypair

    _patch(Keypair, "expired", lambda self, now: self._send_aead is None)


#: scenario -> (what the mutant gets wrong, the patch).
MUTANTS: dict[str, tuple[str, Mutation]] = {
    "handshake-initiator": ("its responses do not authenticate", _corrupt_responses),
    "handshake-responder": ("as initiator, it never confirms the session", _no_key_confirmation),
    "handshake-psk": ("it ignores the configured PSK", _ignore_psk),
    "transport": ("it sends no data", _drop_data_out),
    "padding-mtu": ("it never pads", _no_padding),
    "replay-transport": ("it has no replay window", _no_replay_window),
    "replay-initiation": ("it forgets the last timestamp", _forget_timestamps),
    "stale-timestamp": ("it forgets the last timestamp", _forget_timestamps),
    "initiation-rate": ("it has no 20 ms initiation limit", _no_flood_limit),
    "garbage": ("it echoes datagrams of unknown type", _answer_garbage),
    "reserved-bytes": ("it ignores reserved bytes", _ignore_reserved_bytes),
    "mac1-wrong": ("it accepts any mac1", _accept_any_mac1),
    "low-order": ("it accepts an all-zero DH", _accept_zero_dh),
    "roaming": ("it roams before authenticating", _roam_before_auth),
    "keepalive-passive": ("it sends no passive keepalive", _no_passive_keepalive),
    "keepalive-persistent": ("it ignores persistent keepalive", _no_persistent_keepalive),
    "junk-flood": ("bad-mac1 junk counts toward load", _junk_counts_toward_load),
    "cookie-under-load": ("it never comes under load", _never_under_load),
    "cookie-initiator": ("it ignores cookie replies", _ignore_cookie_replies),
    "retransmit-jitter": ("it retransmits without jitter", _no_jitter),
    "message-limit": ("it has no receive-side message limit", _no_message_limit),
    "simultaneous-initiation": ("crossing initiations deadlock it", _crossing_initiations_deadlock),
    "key-confirmation": ("as responder it sends before confirmation", _responder_sends_unconfirmed),
    "uapi": ("it reports last_handshake_time on the monotonic clock", _monotonic_handshake_time),
    # The long scenarios (run by hand: they take 2-3 minutes each).
    "give-up": ("it never gives up a handshake", _never_give_up),
    "rekey": ("it never rekeys", _never_rekeys),
    "reject-after-time": ("its keypairs never expire", _keypairs_never_expire),
}


def main(argv: list[str]) -> None:
    name, port, cidr, mutation = argv
    if mutation != "none":
        MUTANTS[mutation][1]()
    os.environ["WGPY_ADAPTER"] = "userspace"
    from wgpy import paths
    from wgpy.nt.abi import InterfaceConfig, InterfaceFlag
    from wgpy.nt.adapter import Adapter

    adapter = Adapter.create(name, inner="userspace", addresses=cidr)
    try:
        adapter.set_config(
            InterfaceConfig(
                flags=InterfaceFlag.HAS_PRIVATE_KEY | InterfaceFlag.HAS_LISTEN_PORT,
                listen_port=int(port),
                private_key=primitives.clamp(os.urandom(32)),
            )
        )
        adapter.up()
        print("ready", paths.find_uapi_socket(name), flush=True)
        sys.stdin.read()  # until the test closes our stdin
    finally:
        adapter.close()


if __name__ == "__main__":
    main(sys.argv[1:])
