"""UAPI get/set semantics (wgpy.uapi) against a real Device and a fake
backend, plus the Unix-socket server and client in a temporary directory.

The expected behaviour is wireguard-go's (device/uapi.go, ipc/uapi_unix.go);
tests/test_uapi_wg.py drives the same server with the real ``wg`` tool.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wgpy.constants import (
    INITIATION_SIZE,
    UAPI_EADDRINUSE,
    UAPI_EINVAL,
    UAPI_EPROTO,
)
from wgpy.device import Device, Output
from wgpy.endpoint import Endpoint
from wgpy.noise.primitives import clamp, public_key
from wgpy.rng import SeededRng
from wgpy.uapi import (
    SetOperation,
    UapiClient,
    UapiError,
    UapiServer,
    parse_get_response,
    uapi_get,
    uapi_set,
)

WALL_NS = 1_700_000_000_123_456_789


class FakeBackend:
    """A real Device with a fake UDP port and fwmark."""

    def __init__(self, *, up: bool = False) -> None:
        self.lock = threading.RLock()
        self.device = Device(rng=SeededRng(b"uapi-test"))
        self.now = 1000.0
        self.wall = WALL_NS
        if not up:
            self.device.set_up(False, self.now, self.wall)
        self.port = 0
        self.mark = 0
        self.busy_ports: set[int] = set()
        self.fwmark_fails = False
        self.submitted: list[Output] = []

    def clock(self) -> tuple[float, int]:
        return self.now, self.wall

    def get_listen_port(self) -> int:
        return self.port

    def set_listen_port(self, port: int) -> None:
        if port in self.busy_ports:
            raise OSError(errno.EADDRINUSE, "busy")
        self.port = port or 43210  # "random" port

    def get_fwmark(self) -> int:
        return self.mark

    def set_fwmark(self, mark: int) -> None:
        if self.fwmark_fails:
            raise OSError(errno.EPERM, "no")
        self.mark = mark

    def submit(self, out: Output) -> None:
        self.submitted.append(out)

    def sent(self) -> list[tuple[bytes, Endpoint]]:
        return [d for out in self.submitted for d in out.datagrams]


def key(n: int) -> bytes:
    """A deterministic clamped private key."""
    return clamp(bytes([n]) * 32)


def pub(n: int) -> bytes:
    return public_key(key(n))


def hexkey(n: int) -> str:
    return pub(n).hex()


def run(backend: FakeBackend, text: str) -> int:
    return uapi_set(backend, text.strip("\n").split("\n"))


# -- the xplatform example (wireguard.com/xplatform, as reproduced in the
#    wgctrl-go and wireguard-uapi tests) -------------------------------------

PRIV = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a"
P1 = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33"
PSK1 = "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52"
P2 = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376"
P3 = "662e14fd594556f522604703340351258903b64f35553763f19426ab2a515c58"
P4 = "e818b58db5274087fcc1be5dc728cf53d3b5726b4cef6b9bab8f8f8c2452c25c"
ZERO = "0" * 64


def xplatform_set(update_only: bool) -> str:
    return f"""
private_key={PRIV}
listen_port=12912
fwmark=0
replace_peers=true
public_key={P1}
preshared_key={PSK1}
endpoint=[abcd:23::33%2]:51820
replace_allowed_ips=true
allowed_ip=192.168.4.4/32
public_key={P2}
{"update_only=true" if update_only else "protocol_version=1"}
endpoint=182.122.22.19:3233
persistent_keepalive_interval=111
replace_allowed_ips=true
allowed_ip=192.168.4.6/32
public_key={P3}
endpoint=5.152.198.39:51820
replace_allowed_ips=true
allowed_ip=192.168.4.10/32
allowed_ip=192.168.4.11/32
public_key={P4}
remove=true
"""


def peer_block(pk: str, psk: str, endpoint: str, pka: int, ips: list[str]) -> str:
    lines = [
        f"public_key={pk}",
        f"preshared_key={psk}",
        "protocol_version=1",
        f"endpoint={endpoint}",
        "last_handshake_time_sec=0",
        "last_handshake_time_nsec=0",
        "tx_bytes=0",
        "rx_bytes=0",
        f"persistent_keepalive_interval={pka}",
        *[f"allowed_ip={ip}" for ip in ips],
    ]
    return "\n".join(lines) + "\n"


def test_xplatform_example_golden() -> None:
    b = FakeBackend()
    assert run(b, xplatform_set(update_only=False)) == 0
    expected = (
        f"private_key={PRIV}\nlisten_port=12912\n"
        + peer_block(P1, PSK1, "[abcd:23::33%2]:51820", 0, ["192.168.4.4/32"])
        + peer_block(P2, ZERO, "182.122.22.19:3233", 111, ["192.168.4.6/32"])
        + peer_block(P3, ZERO, "5.152.198.39:51820", 0, ["192.168.4.10/32", "192.168.4.11/32"])
        + "errno=0\n\n"
    )
    assert uapi_get(b) == expected
    assert b.mark == 0
    assert b.submitted == []  # the device is down: no keepalive


def test_xplatform_example_with_update_only_creates_no_peer() -> None:
    b = FakeBackend()
    assert run(b, xplatform_set(update_only=True)) == 0
    cfg = parse_get_response(uapi_get(b))
    assert [p.public_key.hex() for p in cfg.peers] == [P1, P3]
    assert len(b.device.allowed_ips) == 3  # 192.168.4.6/32 went nowhere


def test_update_only_on_existing_peer_updates_it() -> None:
    b = FakeBackend()
    assert run(b, f"public_key={P2}\nallowed_ip=10.0.0.0/8") == 0
    assert run(b, f"public_key={P2}\nupdate_only=true\nallowed_ip=10.1.0.0/16") == 0
    assert parse_get_response(uapi_get(b)).peers[0].allowed_ips == ["10.0.0.0/8", "10.1.0.0/16"]


def test_get_of_an_empty_device() -> None:
    assert uapi_get(FakeBackend()) == "errno=0\n\n"


def test_get_key_order_and_optional_interface_keys() -> None:
    b = FakeBackend()
    assert run(b, f"listen_port=5\nfwmark=7\npublic_key={hexkey(1)}") == 0
    keys = [line.partition("=")[0] for line in uapi_get(b).splitlines() if line]
    assert keys == [
        "listen_port",
        "fwmark",
        "public_key",
        "preshared_key",
        "protocol_version",
        "last_handshake_time_sec",
        "last_handshake_time_nsec",
        "tx_bytes",
        "rx_bytes",
        "persistent_keepalive_interval",
        "errno",
    ]


def test_peers_in_insertion_order() -> None:
    b = FakeBackend()
    order = [9, 3, 7, 1, 5]
    assert run(b, "\n".join(f"public_key={hexkey(n)}" for n in order)) == 0
    assert [p.public_key for p in parse_get_response(uapi_get(b)).peers] == [pub(n) for n in order]


# -- errno cases ------------------------------------------------------------------

DEVICE_BAD = [
    "private_key=" + "0" * 63,
    "private_key=" + "0" * 65,
    "private_key=" + "g" * 64,
    "private_key= " + "0" * 63,
    "listen_port=65536",
    "listen_port=-1",
    "listen_port=+1",
    "listen_port=",
    "listen_port=0x10",
    "listen_port= 1",
    "listen_port=１",  # a non-ASCII digit
    "fwmark=4294967296",
    "fwmark=abc",
    "replace_peers=false",
    "replace_peers=TRUE",
    "replace_peers=",
    "remove=true",  # a peer key before any public_key
    "allowed_ip=10.0.0.0/8",
    "bogus=1",
    "=",
    "public_key=" + "0" * 62,
    "public_key=xyz",
]


@pytest.mark.parametrize("line", DEVICE_BAD)
def test_bad_device_lines_are_einval(line: str) -> None:
    assert uapi_set(FakeBackend(), [line]) == UAPI_EINVAL


PEER_BAD = [
    "private_key=" + "1" * 64,  # device keys after a peer key
    "listen_port=1",
    "fwmark=1",
    "replace_peers=true",
    "update_only=false",
    "remove=false",
    "remove=1",
    "replace_allowed_ips=false",
    "preshared_key=12",
    "protocol_version=2",
    "protocol_version=",
    "persistent_keepalive_interval=65536",
    "persistent_keepalive_interval=-1",
    "endpoint=1.2.3.4",
    "endpoint=1.2.3.4:",
    "endpoint=:80",
    "endpoint=example.com:80",
    "endpoint=[1.2.3.4]:80",
    "endpoint=::1:80",
    "endpoint=[::1]:65536",
    "endpoint=[::1]:+1",
    "endpoint=[fe80::1%]:1",
    "endpoint=[fe80::1%nosuchif0]:1",  # a scope must resolve
    "endpoint=[fe80::1%4294967296]:1",
    "endpoint=[fe80::1%a]b]:1",
    "endpoint=1.2.3.4%eth0:1",
    "endpoint=01.2.3.4:1",
    "endpoint=[::1:80",
    "endpoint=1.2.3.256:1",
    "allowed_ip=10.0.0.1",
    "allowed_ip=10.0.0.0/33",
    "allowed_ip=::/129",
    "allowed_ip=10.0.0.0/08",
    "allowed_ip=10.0.0.0/-1",
    "allowed_ip=10.0.0.0/+8",
    "allowed_ip=10.0.0.0/",
    "allowed_ip=10.0.0.0/255.0.0.0",
    "allowed_ip=fe80::1%eth0/64",
    "allowed_ip=-",
    "allowed_ip=--10.0.0.0/8",
    "allowed_ip=10.0.0/8",
    "allowed_ip=",
    "unknown=1",
]


@pytest.mark.parametrize("line", PEER_BAD)
def test_bad_peer_lines_are_einval(line: str) -> None:
    assert uapi_set(FakeBackend(), [f"public_key={hexkey(1)}", line]) == UAPI_EINVAL


@pytest.mark.parametrize("line", ["nokey", "public_key", "", "x"])
def test_line_without_equals_is_eproto(line: str) -> None:
    # An empty line ends the operation instead: only non-empty ones count.
    expected = 0 if line == "" else UAPI_EPROTO
    assert uapi_set(FakeBackend(), [f"public_key={hexkey(1)}", line]) == expected
    assert uapi_set(FakeBackend(), [line]) == expected


def test_listen_port_bind_failure_is_eaddrinuse() -> None:
    b = FakeBackend()
    b.busy_ports.add(5000)
    assert uapi_set(b, ["listen_port=5000"]) == UAPI_EADDRINUSE
    assert uapi_set(b, ["listen_port=5001"]) == 0
    assert b.port == 5001


def test_fwmark_failure_is_eaddrinuse() -> None:
    b = FakeBackend()
    b.fwmark_fails = True
    assert uapi_set(b, ["fwmark=3"]) == UAPI_EADDRINUSE


def test_too_many_peers_is_einval(monkeypatch: pytest.MonkeyPatch) -> None:
    import wgpy.device

    monkeypatch.setattr(wgpy.device, "MAX_PEERS", 2)
    b = FakeBackend()
    text = "\n".join(f"public_key={hexkey(n)}" for n in (1, 2, 3))
    assert run(b, text) == UAPI_EINVAL
    assert [p.public_key for p in b.device.peers] == [pub(1), pub(2)]


def test_good_values_accepted() -> None:
    b = FakeBackend()
    text = f"""
private_key={PRIV.upper()}
listen_port=00080
fwmark=4294967295
public_key={hexkey(1).upper()}
preshared_key={PSK1.upper()}
endpoint=[2001:db8::]:0
persistent_keepalive_interval=65535
allowed_ip=0.0.0.0/0
allowed_ip=::/0
allowed_ip=10.1.2.3/32
allowed_ip=fe80::/10
protocol_version=1
"""
    assert run(b, text) == 0
    cfg = parse_get_response(uapi_get(b))
    assert cfg.private_key == bytes.fromhex(PRIV)
    assert (cfg.listen_port, cfg.fwmark) == (80, 4294967295)
    p = cfg.peers[0]
    assert p.public_key == pub(1) and p.preshared_key == bytes.fromhex(PSK1)
    assert p.persistent_keepalive == 65535 and p.endpoint == "[2001:db8::]:0"
    assert p.allowed_ips == ["0.0.0.0/0", "::/0", "10.1.2.3/32", "fe80::/10"]


# -- order of application, no rollback ------------------------------------------


def test_not_transactional_earlier_lines_stay() -> None:
    b = FakeBackend()
    text = f"""
listen_port=1234
public_key={hexkey(1)}
allowed_ip=10.0.0.0/8
endpoint=1.2.3.4:5
allowed_ip=bogus
allowed_ip=11.0.0.0/8
public_key={hexkey(2)}
"""
    assert run(b, text) == UAPI_EINVAL
    cfg = parse_get_response(uapi_get(b))
    assert cfg.listen_port == 1234
    assert [p.public_key for p in cfg.peers] == [pub(1)]
    assert cfg.peers[0].allowed_ips == ["10.0.0.0/8"]
    assert cfg.peers[0].endpoint == "1.2.3.4:5"


def test_blank_line_ends_the_operation() -> None:
    b = FakeBackend()
    assert uapi_set(b, [f"public_key={hexkey(1)}", "", "garbage"]) == 0
    assert len(b.device.peers) == 1


def test_crlf_lines_accepted() -> None:
    b = FakeBackend()
    assert uapi_set(b, [f"public_key={hexkey(1)}\r\n", "allowed_ip=10.0.0.0/8\r", "\r"]) == 0
    assert b.device.allowed_ips.entries(b.device.peers[0]) == [(bytes([10, 0, 0, 0]), 8)]


def test_set_operation_in_batches_keeps_the_peer() -> None:
    b = FakeBackend()
    op = SetOperation(b)
    assert op.apply([f"public_key={hexkey(1)}"]) == 0
    assert op.apply(["allowed_ip=10.0.0.0/8"]) == 0
    assert not op.done
    assert op.apply(["", "public_key=ignored"]) == 0 and op.done
    op.finish()
    assert b.device.allowed_ips.entries(b.device.peers[0]) == [(bytes([10, 0, 0, 0]), 8)]


# -- peers ---------------------------------------------------------------------


def test_own_public_key_is_a_silent_dummy() -> None:
    b = FakeBackend()
    text = f"""
private_key={key(1).hex()}
public_key={hexkey(1)}
endpoint=1.2.3.4:5
allowed_ip=10.0.0.0/8
persistent_keepalive_interval=5
remove=true
public_key={hexkey(2)}
allowed_ip=11.0.0.0/8
"""
    assert run(b, text) == 0
    assert [p.public_key for p in b.device.peers] == [pub(2)]
    assert len(b.device.allowed_ips) == 1
    # The dummy's values are still checked.
    assert run(b, f"public_key={hexkey(1)}\nallowed_ip=nonsense") == UAPI_EINVAL


def test_zero_public_key_is_a_dummy_without_private_key() -> None:
    # A fresh wireguard-go device's own public key is all zero.
    b = FakeBackend()
    assert run(b, f"public_key={ZERO}\nallowed_ip=10.0.0.0/8") == 0
    assert b.device.peers == [] and len(b.device.allowed_ips) == 0


def test_remove_peer() -> None:
    b = FakeBackend()
    assert run(b, f"public_key={hexkey(1)}\nallowed_ip=10.0.0.0/8") == 0
    assert run(b, f"public_key={hexkey(1)}\nremove=true\nallowed_ip=11.0.0.0/8") == 0
    assert b.device.peers == [] and len(b.device.allowed_ips) == 0


def test_replace_peers() -> None:
    b = FakeBackend()
    assert run(b, f"public_key={hexkey(1)}\npublic_key={hexkey(2)}") == 0
    assert run(b, f"replace_peers=true\npublic_key={hexkey(3)}") == 0
    assert [p.public_key for p in b.device.peers] == [pub(3)]


def test_private_key_all_zero_clears_it() -> None:
    b = FakeBackend()
    assert run(b, f"private_key={key(1).hex()}") == 0
    assert "private_key=" in uapi_get(b)
    assert run(b, f"private_key={ZERO}") == 0
    assert b.device.private_key is None
    assert "private_key" not in uapi_get(b)


def test_private_key_is_returned_clamped() -> None:
    b = FakeBackend()
    assert run(b, "private_key=" + "ff" * 32) == 0
    assert parse_get_response(uapi_get(b)).private_key == clamp(b"\xff" * 32)


def test_new_private_key_removes_the_peer_with_that_public_key() -> None:
    b = FakeBackend()
    assert run(b, f"public_key={hexkey(1)}\npublic_key={hexkey(2)}") == 0
    assert run(b, f"private_key={key(1).hex()}") == 0
    assert [p.public_key for p in b.device.peers] == [pub(2)]


def test_preshared_key_zero_means_none() -> None:
    b = FakeBackend()
    assert run(b, f"public_key={hexkey(1)}\npreshared_key={PSK1}") == 0
    assert b.device.peers[0].preshared_key == bytes.fromhex(PSK1)
    assert run(b, f"public_key={hexkey(1)}\npreshared_key={ZERO}") == 0
    assert b.device.peers[0].preshared_key is None
    assert f"preshared_key={ZERO}" in uapi_get(b)


# -- allowed IPs -------------------------------------------------------------------


def ips(b: FakeBackend, n: int) -> list[str]:
    cfg = parse_get_response(uapi_get(b))
    peer = cfg.peer(pub(n))
    assert peer is not None
    return peer.allowed_ips


def test_allowed_ip_minus_removes_only_own_prefix() -> None:
    b = FakeBackend()
    setup = f"""
public_key={hexkey(1)}
allowed_ip=10.0.0.0/8
allowed_ip=fd00::/64
public_key={hexkey(2)}
allowed_ip=11.0.0.0/8
"""
    assert run(b, setup) == 0
    text = f"""
public_key={hexkey(1)}
allowed_ip=-11.0.0.0/8
allowed_ip=-10.0.0.0/8
allowed_ip=-12.0.0.0/8
allowed_ip=-fd00::/64
"""
    assert run(b, text) == 0
    assert ips(b, 1) == []
    assert ips(b, 2) == ["11.0.0.0/8"]  # not ours to remove


def test_replace_allowed_ips() -> None:
    b = FakeBackend()
    assert run(b, f"public_key={hexkey(1)}\nallowed_ip=10.0.0.0/8\nallowed_ip=11.0.0.0/8") == 0
    assert run(b, f"public_key={hexkey(1)}\nreplace_allowed_ips=true\nallowed_ip=12.0.0.0/8") == 0
    assert ips(b, 1) == ["12.0.0.0/8"]
    # Later lines of the same block come after the replace.
    text = f"public_key={hexkey(1)}\nallowed_ip=13.0.0.0/8\nreplace_allowed_ips=true"
    assert run(b, text) == 0
    assert ips(b, 1) == []


def test_prefix_moves_between_peers() -> None:
    b = FakeBackend()
    text = f"""
public_key={hexkey(1)}
allowed_ip=10.0.0.0/8
allowed_ip=11.0.0.0/8
public_key={hexkey(2)}
allowed_ip=12.0.0.0/8
allowed_ip=10.9.9.9/8
"""
    assert run(b, text) == 0
    assert ips(b, 1) == ["11.0.0.0/8"]
    assert ips(b, 2) == ["12.0.0.0/8", "10.0.0.0/8"]
    assert b.device.allowed_ips.lookup(bytes([10, 1, 1, 1])) is b.device.peer(pub(2))


def test_readding_a_prefix_puts_it_last() -> None:
    # wireguard-go and the kernel move an exact re-insert to the end of the
    # peer's list.
    b = FakeBackend()
    assert run(b, f"public_key={hexkey(1)}\nallowed_ip=10.0.0.0/8\nallowed_ip=11.0.0.0/8") == 0
    assert run(b, f"public_key={hexkey(1)}\nallowed_ip=10.0.0.0/8") == 0
    assert ips(b, 1) == ["11.0.0.0/8", "10.0.0.0/8"]


def test_allowed_ip_formatting() -> None:
    b = FakeBackend()
    text = f"""
public_key={hexkey(1)}
allowed_ip=10.1.2.3/8
allowed_ip=FD00:0:0:0:0:0:0:1/128
allowed_ip=2001:db8:0:0:1:0:0:1/128
allowed_ip=::ffff:1.2.3.4/128
allowed_ip=::1.2.3.4/128
allowed_ip=2001:db8::ffff/100
allowed_ip=1:0:0:1::/64
"""
    assert run(b, text) == 0
    assert ips(b, 1) == [
        "10.0.0.0/8",
        "fd00::1/128",
        "2001:db8::1:0:0:1/128",
        "::ffff:1.2.3.4/128",
        "::102:304/128",  # Go prints dotted form only for IPv4-mapped
        "2001:db8::/100",
        "1:0:0:1::/64",
    ]


# -- endpoints and counters ------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("1.2.3.4:51820", "1.2.3.4:51820"),
        ("[2001:DB8::1]:1", "[2001:db8::1]:1"),
        ("[fe80::1%2]:51820", "[fe80::1%2]:51820"),
        ("[fe80::1%lo]:7", "[fe80::1%lo]:7"),
        ("1.2.3.4:00080", "1.2.3.4:80"),
        # wgpy.endpoint keeps one form for IPv4 peers; wireguard-go would
        # print "[::ffff:1.2.3.4]:9" here.
        ("[::ffff:1.2.3.4]:9", "1.2.3.4:9"),
    ],
)
def test_endpoint_formatting(given: str, shown: str) -> None:
    b = FakeBackend()
    assert run(b, f"public_key={hexkey(1)}\nendpoint={given}") == 0
    assert parse_get_response(uapi_get(b)).peers[0].endpoint == shown


def test_last_handshake_and_counters() -> None:
    b = FakeBackend()
    assert run(b, f"public_key={hexkey(1)}") == 0
    peer = b.device.peers[0]
    peer.last_handshake_ns = 1_700_000_123_000_000_456
    peer.tx_bytes = 2**40
    peer.rx_bytes = 77
    text = uapi_get(b)
    assert "last_handshake_time_sec=1700000123\nlast_handshake_time_nsec=456\n" in text
    assert f"tx_bytes={2**40}\nrx_bytes=77\n" in text


# -- persistent keepalive: the post-config step ----------------------------------


def test_turning_keepalive_on_submits_an_initiation_to_the_final_endpoint() -> None:
    b = FakeBackend(up=True)
    text = f"""
private_key={key(9).hex()}
public_key={hexkey(1)}
persistent_keepalive_interval=25
endpoint=192.0.2.1:1000
public_key={hexkey(2)}
endpoint=192.0.2.2:2000
"""
    assert run(b, text) == 0
    sent = b.sent()
    # Only the peer whose keepalive was turned on; wireguard-go would also
    # poke peer 2 (its pkaOn flag survives into the next peer block).
    assert [(str(ep), len(d)) for d, ep in sent] == [("192.0.2.1:1000", INITIATION_SIZE)]
    assert b.device.peers[0].persistent_keepalive == 25
    # Changing a non-zero interval sends nothing new.
    assert run(b, f"public_key={hexkey(1)}\npersistent_keepalive_interval=30") == 0
    assert len(b.sent()) == 1


def test_keepalive_off_then_on_in_one_block_sends() -> None:
    b = FakeBackend(up=True)
    text = f"private_key={key(9).hex()}\npublic_key={hexkey(1)}\nendpoint=192.0.2.1:1"
    assert run(b, text) == 0
    assert run(b, f"public_key={hexkey(1)}\npersistent_keepalive_interval=25") == 0
    assert len(b.sent()) == 1
    b.now += 10  # past REKEY_TIMEOUT: a new initiation may go out
    text = (
        f"public_key={hexkey(1)}\npersistent_keepalive_interval=0\npersistent_keepalive_interval=30"
    )
    assert run(b, text) == 0
    assert b.device.peers[0].persistent_keepalive == 30
    assert len(b.sent()) == 2


def test_keepalive_for_a_removed_or_down_peer_sends_nothing() -> None:
    b = FakeBackend(up=True)
    text = f"""
private_key={key(9).hex()}
public_key={hexkey(1)}
endpoint=192.0.2.1:1
persistent_keepalive_interval=25
remove=true
"""
    assert run(b, text) == 0
    assert b.sent() == [] and b.device.peers == []
    down = FakeBackend(up=False)
    assert run(down, text.replace("remove=true", "")) == 0
    assert down.sent() == [] and down.device.peers[0].persistent_keepalive == 25


def test_keepalive_applied_even_when_a_later_line_fails() -> None:
    b = FakeBackend()
    text = f"public_key={hexkey(1)}\npersistent_keepalive_interval=25\nbogus=1"
    assert run(b, text) == UAPI_EINVAL
    assert b.device.peers[0].persistent_keepalive == 25


# -- scale ----------------------------------------------------------------------


def big_prefixes() -> list[str]:
    """255*256 IPv4 /24s and as many IPv6 /48s, in canonical text form."""
    out = []
    for i in range(255):
        for j in range(256):
            out.append(f"10.{i}.{j}.0/24")
            out.append(str(ipaddress.IPv6Network(f"fd00:{i:x}:{j:x}::/48")))
    return out


def test_130560_prefixes_round_trip() -> None:
    prefixes = big_prefixes()
    assert len(prefixes) == 255 * 256 * 2
    b = FakeBackend()
    lines = [f"public_key={hexkey(1)}", "replace_allowed_ips=true"]
    lines += [f"allowed_ip={p}" for p in prefixes]
    assert uapi_set(b, lines) == 0
    cfg = parse_get_response(uapi_get(b))
    assert cfg.peers[0].allowed_ips == prefixes
    # Setting it again (replace) gives the same list.
    assert uapi_set(b, lines) == 0
    assert len(b.device.allowed_ips) == len(prefixes)


# -- fuzz ----------------------------------------------------------------------

_KEYS = [
    "private_key",
    "listen_port",
    "fwmark",
    "replace_peers",
    "public_key",
    "update_only",
    "remove",
    "preshared_key",
    "endpoint",
    "persistent_keepalive_interval",
    "replace_allowed_ips",
    "allowed_ip",
    "protocol_version",
    "bogus",
]
_VALUES = st.one_of(
    st.sampled_from(
        [
            "true",
            "false",
            "1",
            "0",
            "65535",
            "65536",
            ZERO,
            hexkey(1),
            hexkey(2),
            hexkey(3),
            key(1).hex(),
            key(2).hex(),
            "10.0.0.0/8",
            "-10.0.0.0/8",
            "10.1.0.0/16",
            "fd00::/8",
            "-fd00::/8",
            "::/0",
            "1.2.3.4:5",
            "[fe80::1%lo]:9",
            "",
        ]
    ),
    st.text(max_size=80),
)
_LINES = st.one_of(
    st.tuples(st.sampled_from(_KEYS), _VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=40),
)


def check_consistent(dev: Device) -> None:
    peers = dev.peers
    ids = {id(p) for p in peers}
    owned = 0
    for _addr, _cidr, owner in dev.allowed_ips:
        assert id(owner) in ids
        owned += 1
    assert owned == len(dev.allowed_ips) == sum(len(dev.allowed_ips.entries(p)) for p in peers)
    own = dev.public_key
    assert own is None or dev.peer(own) is None
    assert all(not p.removed for p in peers)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_LINES, max_size=30), st.booleans())
def test_fuzz_set_returns_errno_and_keeps_device_consistent(lines: list[str], up: bool) -> None:
    b = FakeBackend(up=up)
    err = uapi_set(b, lines)
    assert err in (0, UAPI_EINVAL, UAPI_EPROTO)
    check_consistent(b.device)
    text = uapi_get(b)
    assert text.endswith("errno=0\n\n")
    cfg = parse_get_response(text)
    assert [p.public_key for p in cfg.peers] == [p.public_key for p in b.device.peers]


# -- the socket server -----------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FakeBackend, UapiServer, UapiClient]]:
    b = FakeBackend()
    server = UapiServer("wgtest0", b, directory=str(tmp_path / "run"))
    server.start()
    try:
        yield b, server, UapiClient(server.path, timeout=30)
    finally:
        server.close()


def converse(path: str, payload: bytes, shut: bool = True) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(payload)
        if shut:
            s.shutdown(socket.SHUT_WR)
        chunks: list[bytes] = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def test_server_client_round_trip(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    b, _server, client = served
    client.set(xplatform_set(update_only=False))
    cfg = client.get()
    assert cfg.private_key == bytes.fromhex(PRIV) and cfg.listen_port == 12912
    assert [p.public_key.hex() for p in cfg.peers] == [P1, P2, P3]
    assert client.get_text() == uapi_get(b)
    with pytest.raises(UapiError) as info:
        client.set([f"public_key={hexkey(1)}", "endpoint=nonsense"])
    assert info.value.errno == errno.EINVAL


def test_server_socket_and_directory_modes(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    _, server, _ = served
    st_sock = os.lstat(server.path)
    assert stat.S_ISSOCK(st_sock.st_mode)
    assert stat.S_IMODE(st_sock.st_mode) & 0o077 == 0  # made under umask 077
    assert stat.S_IMODE(os.stat(server.directory).st_mode) & 0o700 == 0o700


def test_errno_is_negated_on_the_wire(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    _, server, _ = served
    assert converse(server.path, b"set=1\nbogus=1\n\n") == b"errno=-22\n\n"
    assert converse(server.path, b"set=1\nnoequals\n\n") == b"errno=-71\n\n"


def test_several_operations_on_one_connection(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    b, server, _ = served
    payload = (
        f"set=1\npublic_key={hexkey(1)}\n\nget=1\n\nset=1\nlisten_port=7\n\nget=1\n\n".encode()
    )
    answer = converse(server.path, payload).decode()
    parts = answer.split("\n\n")
    assert parts[0] == "errno=0"
    assert parts[1].startswith(f"public_key={hexkey(1)}\n") and parts[1].endswith("errno=0")
    assert parts[2] == "errno=0"
    assert parts[3].startswith("listen_port=7\npublic_key=")
    assert parts[4:] == [""]
    assert b.port == 7


@pytest.mark.parametrize(
    "payload",
    [b"GET=1\n\n", b"get=2\n\n", b"get=1\r\n\n", b"set=1 \n\n", b"get=1", b"hello\n", b"\n"],
)
def test_invalid_operation_closes_without_answer(
    served: tuple[FakeBackend, UapiServer, UapiClient], payload: bytes
) -> None:
    _, server, _ = served
    assert converse(server.path, payload) == b""


def test_get_with_trailing_character_is_einval_then_continues(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    _, server, _ = served
    # "get=1\nx" is EINVAL; the next operation starts right after the 'x'.
    assert converse(server.path, b"get=1\nxget=1\n\n") == b"errno=-22\n\nerrno=0\n\n"


def test_after_a_failed_set_the_connection_closes(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    b, server, _ = served
    payload = f"set=1\nbogus=1\npublic_key={hexkey(1)}\n\n".encode()
    assert converse(server.path, payload) == b"errno=-22\n\n"
    assert b.device.peers == []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(server.path)
        s.sendall(b"set=1\nbogus=1\n")
        assert s.recv(100) == b"errno=-22\n\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(b"get=1\n\n")
        assert s.recv(100) == b""


def test_operations_pipelined_after_a_set_are_served(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    _, server, _ = served
    answer = converse(server.path, f"set=1\npublic_key={hexkey(1)}\n\nget=1\n\n".encode())
    assert answer.startswith(b"errno=0\n\npublic_key=")
    assert answer.endswith(b"errno=0\n\n")


def test_set_ended_by_eof_succeeds(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    b, server, _ = served
    # The last line has no newline either: it still counts (Go's scanner).
    payload = f"set=1\npublic_key={hexkey(1)}\nallowed_ip=10.0.0.0/8".encode()
    assert converse(server.path, payload) == b"errno=0\n\n"
    assert len(b.device.allowed_ips) == 1


def test_set_is_applied_while_the_client_still_sends(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    b, server, _ = served
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(server.path)
        s.sendall(f"set=1\npublic_key={hexkey(1)}\n".encode())
        # The server must not hold the backend lock while it waits for us.
        for _ in range(300):
            if b.device.peers:
                break
            time.sleep(0.05)
        assert b.lock.acquire(timeout=10)
        b.lock.release()
        assert [p.public_key for p in b.device.peers] == [pub(1)]
        s.sendall(b"allowed_ip=10.0.0.0/8\n\n")
        assert s.recv(100) == b"errno=0\n\n"
    assert len(b.device.allowed_ips) == 1


def test_huge_line_is_refused_without_buffering_it(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    b, server, client = served
    total = 100 * 1024 * 1024
    sent = 0
    answer = b""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(server.path)
        s.sendall(f"set=1\npublic_key={hexkey(1)}\nallowed_ip=".encode())
        chunk = b"1" * (1 << 20)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while sent < total:
                s.sendall(chunk)
                sent += len(chunk)
        with contextlib.suppress(ConnectionResetError):
            answer = s.recv(100)
    # The server stopped reading long before 100 MB: it answered EIO and
    # closed, and the line's beginning was applied up to the bad line.
    assert sent < total
    assert answer == b"errno=-5\n\n"  # EIO, read before the close reported
    assert [p.public_key for p in b.device.peers] == [pub(1)]
    assert client.get().peers[0].public_key == pub(1)  # still serving


def test_endless_lines_keep_the_server_alive(
    served: tuple[FakeBackend, UapiServer, UapiClient],
) -> None:
    _b, server, client = served
    # Endless valid lines are applied as they come (nothing accumulates).
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(server.path)
        s.sendall(b"set=1\n")
        line = f"public_key={hexkey(1)}\nprotocol_version=1\n".encode() * 1000
        for _ in range(100):
            s.sendall(line)
        s.sendall(b"\n")
        assert s.recv(100) == b"errno=0\n\n"
    # Endless garbage: the first bad line ends the operation, the rest is not
    # an operation and the connection closes.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(server.path)
        s.sendall(b"set=1\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(1000):
                s.sendall(b"garbage\n" * 10000)
    assert [p.public_key for p in client.get().peers] == [pub(1)]


def test_stale_socket_is_replaced_and_live_one_refused(tmp_path: Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir()
    path = directory / "wgstale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    b = FakeBackend()
    with UapiServer("wgstale", b, directory=str(directory)) as server:
        UapiClient(server.path).set([f"public_key={hexkey(1)}"])
        second = UapiServer("wgstale", FakeBackend(), directory=str(directory))
        with pytest.raises(OSError) as info:
            second.start()
        assert info.value.errno == errno.EADDRINUSE
        second.close()
        assert os.path.exists(server.path)  # the refused server left it alone
        assert len(UapiClient(server.path).get().peers) == 1
    assert not path.exists()


def wait_for(predicate: object, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_socket_removal_is_reported(tmp_path: Path) -> None:
    removed = threading.Event()
    server = UapiServer("wgrm", FakeBackend(), directory=str(tmp_path))
    server.on_socket_removed = removed.set
    server.start()
    try:
        os.unlink(server.path)
        assert removed.wait(10)
    finally:
        server.close()


def test_close_leaves_a_replacement_socket_alone(tmp_path: Path) -> None:
    server = UapiServer("wgrep", FakeBackend(), directory=str(tmp_path))
    server.start()
    os.unlink(server.path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        other.bind(server.path)
        server.close()
        assert os.path.exists(server.path)
    finally:
        other.close()
        os.unlink(server.path)


def test_close_unlinks_and_ends_connection_threads(tmp_path: Path) -> None:
    server = UapiServer("wgcl", FakeBackend(), directory=str(tmp_path))
    server.start()
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(server.path)
    idle.sendall(b"set=1\n")  # a set left open
    assert wait_for(lambda: any(t.name == "uapi-wgcl-conn" for t in threading.enumerate()))
    server.close()
    idle.close()
    assert not os.path.exists(server.path)
    assert not [t for t in threading.enumerate() if t.name.startswith("uapi-wgcl")]
    server.close()  # idempotent


def test_client_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        UapiClient(str(tmp_path / "nothing.sock")).get()
    with pytest.raises(ValueError):
        UapiClient("x").set(["a=1", "", "b=2"])
    err = UapiError(errno.EINVAL)
    assert err.errno == errno.EINVAL and "Invalid argument" in str(err)
    with pytest.raises(UapiError) as info:
        parse_get_response("errno=-98\n\n")
    assert info.value.errno == errno.EADDRINUSE


def test_server_rejects_bad_names(tmp_path: Path) -> None:
    for name in ("", "a/b", ".."):
        with pytest.raises(ValueError):
            UapiServer(name, FakeBackend(), directory=str(tmp_path))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.sampled_from([b"get=1\n", b"set=1\n", b"\n", b"=", b"\r\n", b"public_key="]),
            st.sampled_from([f"public_key={hexkey(1)}\n".encode(), b"allowed_ip=10.0.0.0/8\n"]),
        ),
        max_size=12,
    )
)
def test_fuzz_raw_bytes_never_break_the_server(
    tmp_path_factory: pytest.TempPathFactory, chunks: list[bytes]
) -> None:
    directory = tmp_path_factory.mktemp("fz")
    b = FakeBackend()
    with UapiServer("wgfz", b, directory=str(directory)) as server:
        answer = converse(server.path, b"".join(chunks))
        # Whatever came back is a sequence of complete answers.
        assert answer == b"" or answer.endswith(b"\n\n")
        for part in answer.split(b"\n\n")[:-1]:
            assert part.split(b"\n")[-1].startswith(b"errno=")
        check_consistent(b.device)
        assert UapiClient(server.path).get_text().endswith("errno=0\n\n")


def test_parallel_clients(served: tuple[FakeBackend, UapiServer, UapiClient]) -> None:
    b, server, _ = served
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            client = UapiClient(server.path)
            for i in range(20):
                client.set([f"public_key={hexkey(n)}", f"allowed_ip=10.{n}.{i}.0/24"])
                assert client.get().peer(pub(n)) is not None
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(b.device.peers) == 8 and len(b.device.allowed_ips) == 8 * 20
    check_consistent(b.device)


def test_stalled_set_is_dropped_and_does_not_block_others(
    served: tuple[FakeBackend, UapiServer, UapiClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket as _socket
    import time as _time

    import wgpy.uapi.server as uapi_module

    monkeypatch.setattr(uapi_module, "UAPI_SET_IDLE_TIMEOUT", 0.5)
    _b, server, client = served
    stalled = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    stalled.settimeout(10)
    try:
        stalled.connect(server.path)
        stalled.sendall(b"set=1\nlisten_port=1234\n")  # ...and then nothing more
        _time.sleep(0.1)
        start = _time.monotonic()
        assert client.get().listen_port == 1234  # applied lines stay, as in go
        assert _time.monotonic() - start < 5
        assert stalled.recv(100) == b"errno=-5\n\n"  # EIO for the stalled client
    finally:
        stalled.close()
