"""The runtime loop with in-memory TUNs and real UDP sockets in a namespace:
traffic flows, shutdown leaves no thread or descriptor, logs carry no keys."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from netns import call_in_ns

from wgpy.constants import UNDER_LOAD_BACKLOG
from wgpy.endpoint import Endpoint
from wgpy.noise.cookie import mac1_key
from wgpy.noise.primitives import clamp, mac, public_key
from wgpy.runtime.interface import Interface, monotonic
from wgpy.sim import ipv4_packet
from wgpy.tun.memory import MemoryTun


def _fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _wait(pred: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


@dataclass
class RunningPair:
    """Two in-memory-TUN interfaces peered over UDP in one namespace: A
    (10.0.0.1) knows B's endpoint, B (10.0.0.2) learns A's."""

    a: Interface
    b: Interface
    tun_a: MemoryTun
    tun_b: MemoryTun
    priv_a: bytes
    priv_b: bytes
    runners: list[threading.Thread]


@contextlib.contextmanager
def running_pair(ns: str, tun_names: tuple[str, str]) -> Iterator[RunningPair]:
    """Start a :class:`RunningPair` with each loop on its own thread; stop,
    join and close both on exit."""
    priv_a, priv_b = clamp(os.urandom(32)), clamp(os.urandom(32))
    tun_a, tun_b = MemoryTun(tun_names[0]), MemoryTun(tun_names[1])
    a = Interface(tun_a, listen_port=0, private_key=priv_a)
    b = Interface(tun_b, listen_port=0, private_key=priv_b)
    call_in_ns(ns, a.start)
    call_in_ns(ns, b.start)
    a.device.add_peer(
        public_key(priv_b),
        endpoint=Endpoint("127.0.0.1", b.get_listen_port()),
        allowed_ips=["10.0.0.2/32"],
    )
    b.device.add_peer(public_key(priv_a), allowed_ips=["10.0.0.1/32"])
    runners = [threading.Thread(target=i.run, daemon=True) for i in (a, b)]
    for t in runners:
        t.start()
    try:
        yield RunningPair(a, b, tun_a, tun_b, priv_a, priv_b, runners)
    finally:
        for i in (a, b):
            i.stop()
        for t in runners:
            t.join(10)
        for i in (a, b):
            i.close()


def test_two_interfaces_exchange_traffic_and_shut_down_cleanly(
    fresh_netns: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wgpy")
    fds_before = _fds()
    threads_before = set(threading.enumerate())
    with running_pair(fresh_netns, ("memA", "memB")) as pair:
        a, b, tun_a, tun_b = pair.a, pair.b, pair.tun_a, pair.tun_b
        tun_a.inject(ipv4_packet("10.0.0.1", "10.0.0.2", b"through the runtime"))
        assert _wait(lambda: len(tun_b.written) == 1)
        assert bytes(tun_b.written[0]) == ipv4_packet(
            "10.0.0.1", "10.0.0.2", b"through the runtime"
        )
        tun_b.inject(ipv4_packet("10.0.0.2", "10.0.0.1", b"and back"))
        assert _wait(lambda: len(tun_a.written) == 1)
        peer_b = b.device.peers[0]
        assert peer_b.endpoint is not None and peer_b.endpoint.port == a.get_listen_port()
        # Rebinding the listen port at run time keeps the tunnel working.
        # (Sockets open in the calling thread's namespace: rebind from inside.)
        call_in_ns(fresh_netns, a.set_listen_port, 0)
        tun_a.inject(ipv4_packet("10.0.0.1", "10.0.0.2", b"after rebind"))
        assert _wait(lambda: len(tun_b.written) == 2)
        assert b.device.peers[0].endpoint.port == a.get_listen_port()  # type: ignore[union-attr]
    assert not any(t.is_alive() for t in pair.runners)
    assert set(threading.enumerate()) <= threads_before
    assert _fds() == fds_before
    # Debug logs name peers by public key but never contain a private key.
    text = caplog.text
    assert "handshake_complete" in text
    for priv in (pair.priv_a, pair.priv_b):
        for form in (
            base64.b64encode(priv).decode(),
            priv.hex(),
            base64.b64encode(priv).decode()[:8],
        ):
            assert form not in text


def test_interface_removed_ends_the_loop(fresh_netns: str) -> None:
    tun = MemoryTun("memC")
    iface = Interface(tun, private_key=clamp(os.urandom(32)))
    call_in_ns(fresh_netns, iface.start)
    reasons: list[str] = []
    runner = threading.Thread(target=lambda: reasons.append(iface.run()))
    runner.start()
    tun.remove()
    runner.join(10)
    iface.close()
    assert reasons == ["interface removed"]


def _flood_port(port: int, datagrams: list[bytes]) -> None:
    """Send ``datagrams`` to 127.0.0.1:``port`` (run inside the namespace)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for d in datagrams:
            s.sendto(d, ("127.0.0.1", port))


@pytest.mark.parametrize(
    ("valid", "junk", "under_load"),
    [(UNDER_LOAD_BACKLOG + 64, 0, True), (UNDER_LOAD_BACKLOG - 8, 0, False), (0, 600, False)],
    ids=["backlog", "short-queue", "keyless-junk"],
)
def test_a_backed_up_handshake_socket_puts_the_engine_under_load(
    fresh_netns: str, valid: int, junk: int, under_load: bool
) -> None:
    # One wakeup reads the handshake socket's share; if valid-mac1 messages
    # are still queued after it, the engine hears of the backlog.  A short
    # queue, or any amount of keyless junk, must not put it under load.
    iface = Interface(MemoryTun("memHs"), listen_port=0, private_key=clamp(os.urandom(32)))
    call_in_ns(fresh_netns, iface.start)
    try:
        pub = iface.device.public_key
        assert pub is not None and iface.udp is not None
        key = mac1_key(pub)
        msgs = []
        for _ in range(valid):
            body = b"\x01\0\0\0" + os.urandom(112)
            msgs.append(body + mac(key, body) + bytes(16))
        msgs += [b"\x01\0\0\0" + os.urandom(144) for _ in range(junk)]
        call_in_ns(fresh_netns, _flood_port, iface.get_listen_port(), msgs)
        now = monotonic()
        for fd in iface.udp.handshake_fds:  # one per family; the v4 one holds the flood
            iface._on_udp_handshakes(fd)
        assert iface.device.under_load(now + 0.5) is under_load
        stats = iface.device.stats
        assert stats.get("rx_dropped_mac1", 0) == min(junk, 128)
    finally:
        iface.close()
