"""The real ``wg`` tool against wgpy's UAPI server.

``wg`` only looks in /var/run/wireguard, so each test serves a unique name
there (``wgpyu`` + random hex) and always removes it.  The backend is a real
Device with a fake UDP port (no sockets, no TUN).  Where useful the same
configuration is given to wireguard-go, run in a network namespace the test
creates, and ``wg showconf`` of both is compared.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import ipaddress
import os
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wgpy.constants import UAPI_SOCKET_DIRECTORY
from wgpy.device import Device, Output
from wgpy.noise.primitives import clamp, public_key
from wgpy.uapi import UapiClient, UapiServer

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (UAPI sockets in /var/run/wireguard)"),
    pytest.mark.skipif(shutil.which("wg") is None, reason="needs the wg tool (wireguard-tools)"),
]


class Backend:
    """A real Device; listen port and fwmark are only remembered."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.device = Device()
        self.port = 0
        self.mark = 0
        self.busy_ports: set[int] = set()
        self.submitted: list[Output] = []

    def clock(self) -> tuple[float, int]:
        return time.monotonic(), time.time_ns()

    def get_listen_port(self) -> int:
        return self.port

    def set_listen_port(self, port: int) -> None:
        if port in self.busy_ports:
            raise OSError(errno.EADDRINUSE, "busy")
        self.port = port or 40000

    def get_fwmark(self) -> int:
        return self.mark

    def set_fwmark(self, mark: int) -> None:
        self.mark = mark

    def submit(self, out: Output) -> None:
        self.submitted.append(out)


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def new_key() -> bytes:
    return clamp(secrets.token_bytes(32))


def wg(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["wg", *args], capture_output=True, text=True, timeout=300)
    if check and done.returncode != 0:
        raise AssertionError(f"wg {' '.join(args)} failed: {done.stderr.strip()}")
    return done


@pytest.fixture
def served() -> Iterator[tuple[str, Backend]]:
    name = "wgpyu" + secrets.token_hex(3)
    backend = Backend()
    server = UapiServer(name, backend)
    server.start()
    try:
        yield name, backend
    finally:
        server.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(server.path)  # even if close() failed half way


@pytest.fixture
def keyfile(tmp_path: Path) -> Callable[[bytes], str]:
    def make(key: bytes) -> str:
        path = tmp_path / f"k{secrets.token_hex(4)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(b64(key) + "\n")
        return str(path)

    return make


def dump(name: str) -> tuple[list[str], dict[str, list[str]]]:
    """``wg show NAME dump``: the interface fields and peers by public key."""
    lines = wg("show", name, "dump").stdout.splitlines()
    iface = lines[0].split("\t")
    peers = {}
    for line in lines[1:]:
        fields = line.split("\t")
        peers[fields[0]] = fields
    return iface, peers


def showconf(name: str) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """``wg showconf NAME`` as (interface keys, peers by public key); peers
    are keyed so that wireguard-go's random peer order does not matter."""
    iface: dict[str, str] = {}
    peers: dict[str, dict[str, str]] = {}
    section: dict[str, str] = iface
    for line in wg("showconf", name).stdout.splitlines():
        if line == "[Interface]":
            section = iface
        elif line == "[Peer]":
            section = {}
        elif " = " in line:
            k, _, v = line.partition(" = ")
            section[k] = v
            if k == "PublicKey":
                peers[v] = section
    return iface, peers


# -- wg set / show ----------------------------------------------------------------


def test_wg_set_show_dump_showconf(
    served: tuple[str, Backend], keyfile: Callable[..., str]
) -> None:
    name, backend = served
    priv, psk = new_key(), secrets.token_bytes(32)
    p1, p2 = public_key(new_key()), public_key(new_key())
    wg(
        "set", name,
        "private-key", keyfile(priv), "listen-port", "51820", "fwmark", "0x10",
        "peer", b64(p1), "preshared-key", keyfile(psk), "endpoint", "192.0.2.1:51820",
        "allowed-ips", "10.0.0.0/8,fd00::/64", "persistent-keepalive", "25",
        "peer", b64(p2), "endpoint", "[2001:db8::1]:1", "allowed-ips", "10.1.0.0/16",
    )  # fmt: skip
    dev = backend.device
    assert dev.private_key == priv and backend.port == 51820 and backend.mark == 0x10
    assert [p.public_key for p in dev.peers] == [p1, p2]

    iface, peers = dump(name)
    assert iface == [b64(priv), b64(public_key(priv)), "51820", "0x10"]
    f1 = peers[b64(p1)]
    assert f1[1:5] == [b64(psk), "192.0.2.1:51820", "10.0.0.0/8,fd00::/64", "0"]
    assert f1[7] == "25"
    f2 = peers[b64(p2)]
    assert f2[1:5] == ["(none)", "[2001:db8::1]:1", "10.1.0.0/16", "0"]
    assert f2[7] == "off"

    assert wg("show", name, "public-key").stdout.strip() == b64(public_key(priv))
    text = wg("show", name).stdout
    for expected in (
        f"interface: {name}",
        f"public key: {b64(public_key(priv))}",
        "listening port: 51820",
        "fwmark: 0x10",
        f"peer: {b64(p1)}",
        "preshared key: (hidden)",
        "allowed ips: 10.0.0.0/8, fd00::/64",
        "persistent keepalive: every 25 seconds",
    ):
        assert expected in text
    conf_iface, conf_peers = showconf(name)
    assert conf_iface == {"ListenPort": "51820", "FwMark": "0x10", "PrivateKey": b64(priv)}
    assert conf_peers[b64(p1)] == {
        "PublicKey": b64(p1),
        "PresharedKey": b64(psk),
        "AllowedIPs": "10.0.0.0/8, fd00::/64",
        "Endpoint": "192.0.2.1:51820",
        "PersistentKeepalive": "25",
    }

    # Replace the allowed IPs, remove a peer, ignore our own key.
    wg("set", name, "peer", b64(p2), "allowed-ips", "10.2.0.0/16,10.3.0.0/16")
    wg("set", name, "peer", b64(p1), "remove")
    wg("set", name, "peer", b64(public_key(priv)), "allowed-ips", "10.9.0.0/16")
    _, peers = dump(name)
    assert list(peers) == [b64(p2)]
    assert peers[b64(p2)][3] == "10.2.0.0/16,10.3.0.0/16"
    wg("set", name, "peer", b64(p2), "allowed-ips", "")
    assert dump(name)[1][b64(p2)][3] == "(none)"
    assert name in wg("show", "interfaces").stdout.split()


def test_wg_set_errors(served: tuple[str, Backend]) -> None:
    name, backend = served
    backend.busy_ports.add(5000)
    done = wg("set", name, "listen-port", "5000", check=False)
    assert done.returncode != 0 and "Address already in use" in done.stderr
    wg("set", name, "listen-port", "5001")
    assert backend.port == 5001


def test_wg_show_of_a_missing_interface_fails() -> None:
    missing = "wgpyn" + secrets.token_hex(3)
    assert not os.path.exists(os.path.join(UAPI_SOCKET_DIRECTORY, missing + ".sock"))
    done = wg("show", missing, check=False)
    assert done.returncode != 0 and done.stderr


def test_single_allowed_ip_removal_shows_in_wg(served: tuple[str, Backend]) -> None:
    name, _ = served
    peer = b64(public_key(new_key()))
    wg("set", name, "peer", peer, "allowed-ips", "10.0.0.0/8,11.0.0.0/8")
    # What wg (2025+) sends for "allowed-ips +12.0.0.0/8,-10.0.0.0/8".
    hexpeer = base64.b64decode(peer).hex()
    UapiClient(name).set(
        [f"public_key={hexpeer}", "allowed_ip=12.0.0.0/8", "allowed_ip=-10.0.0.0/8"]
    )
    assert dump(name)[1][peer][3] == "11.0.0.0/8,12.0.0.0/8"


def test_wg_plus_minus_allowed_ips(served: tuple[str, Backend]) -> None:
    name, _ = served
    peer = b64(public_key(new_key()))
    wg("set", name, "peer", peer, "allowed-ips", "10.0.0.0/8,11.0.0.0/8")
    done = wg("set", name, "peer", peer, "allowed-ips", "+12.0.0.0/8,-10.0.0.0/8", check=False)
    if done.returncode != 0 and "+12.0.0.0" in done.stderr:
        version = wg("--version").stdout.split(" - ")[0]
        pytest.skip(f"{version} has no +/- allowed-ips syntax (needs wireguard-tools 2025+)")
    assert done.returncode == 0, done.stderr
    assert dump(name)[1][peer][3] == "11.0.0.0/8,12.0.0.0/8"


# -- configuration files ----------------------------------------------------------


def conf_text(
    priv: bytes,
    peers: list[tuple[bytes, list[str]]],
    *,
    port: int = 51820,
    psk: bytes | None = None,
    endpoint: str | None = None,
) -> str:
    out = [f"[Interface]\nPrivateKey = {b64(priv)}\nListenPort = {port}\nFwMark = 0x2a\n"]
    for pub, ips in peers:
        out.append(f"\n[Peer]\nPublicKey = {b64(pub)}\n")
        if psk is not None:
            out.append(f"PresharedKey = {b64(psk)}\n")
        if endpoint is not None:
            out.append(f"Endpoint = {endpoint}\n")
        out.append(f"AllowedIPs = {', '.join(ips)}\n")
    return "".join(out)


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / f"c{secrets.token_hex(4)}.conf"
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_setconf_addconf_syncconf(served: tuple[str, Backend], tmp_path: Path) -> None:
    name, backend = served
    priv = new_key()
    a, b, c = (public_key(new_key()) for _ in range(3))
    psk = secrets.token_bytes(32)
    wg(
        "setconf",
        name,
        write(tmp_path, conf_text(priv, [(a, ["10.0.0.0/24"]), (b, ["10.0.1.0/24"])])),
    )
    assert [p.public_key for p in backend.device.peers] == [a, b]
    assert backend.mark == 0x2A

    # addconf: new peer c; a's AllowedIPs are replaced (wg sends
    # replace_allowed_ips for every AllowedIPs line of a file).
    wg(
        "addconf",
        name,
        write(tmp_path, conf_text(priv, [(c, ["10.0.2.0/24"]), (a, ["10.9.0.0/16"])])),
    )
    _, peers = showconf(name)
    assert set(peers) == {b64(a), b64(b), b64(c)}
    assert peers[b64(a)]["AllowedIPs"] == "10.9.0.0/16"
    assert peers[b64(b)]["AllowedIPs"] == "10.0.1.0/24"

    # syncconf: b goes, a gets 10.0.0.0/24 back and a PSK, c stays as it was.
    wg(
        "syncconf", name,
        write(tmp_path, conf_text(priv, [(a, ["10.0.0.0/24"]), (c, ["10.0.2.0/24"])], psk=psk)),
    )  # fmt: skip
    _, peers = showconf(name)
    assert set(peers) == {b64(a), b64(c)}
    assert peers[b64(a)]["AllowedIPs"] == "10.0.0.0/24"
    assert peers[b64(a)]["PresharedKey"] == b64(psk)

    # setconf replaces everything.
    wg("setconf", name, write(tmp_path, conf_text(priv, [(b, ["::/0"])], port=51821)))
    iface, peers = showconf(name)
    assert iface["ListenPort"] == "51821"
    assert list(peers) == [b64(b)] and peers[b64(b)]["AllowedIPs"] == "::/0"


def big_prefixes() -> list[str]:
    out = []
    for i in range(255):
        for j in range(256):
            out.append(f"10.{i}.{j}.0/24")
            out.append(str(ipaddress.IPv6Network(f"fd{i:02x}:{j:x}00::/40")))
    return out


def test_setconf_130560_prefixes(served: tuple[str, Backend], tmp_path: Path) -> None:
    name, backend = served
    prefixes = big_prefixes()
    assert len(prefixes) == 130560
    peer = public_key(new_key())
    wg("setconf", name, write(tmp_path, conf_text(new_key(), [(peer, prefixes)])))
    assert len(backend.device.allowed_ips) == 130560

    out = wg("show", name, "allowed-ips").stdout.split()
    assert out[0] == b64(peer)
    assert out[1:] == prefixes  # insertion order survives
    _, peers = showconf(name)
    assert peers[b64(peer)]["AllowedIPs"].split(", ") == prefixes


def test_40_peers_with_52_prefixes(served: tuple[str, Backend], tmp_path: Path) -> None:
    name, backend = served
    peers = [
        (public_key(new_key()), [f"10.{p}.{i}.0/24" for i in range(26)]
         + [str(ipaddress.IPv6Network(f"fd00:{p:x}:{i:x}::/48")) for i in range(26)])
        for p in range(40)
    ]  # fmt: skip
    wg("setconf", name, write(tmp_path, conf_text(new_key(), peers, endpoint="192.0.2.7:9")))
    _, shown = showconf(name)
    assert list(shown) == [b64(pub) for pub, _ in peers]  # insertion order
    for pub, ips in peers:
        assert shown[b64(pub)]["AllowedIPs"].split(", ") == ips
        assert shown[b64(pub)]["Endpoint"] == "192.0.2.7:9"
    assert len(backend.device.allowed_ips) == 40 * 52


# -- the same configuration on wireguard-go -------------------------------------------


@pytest.fixture
def wireguard_go() -> Iterator[str]:
    """A wireguard-go interface in its own namespace; yields its name."""
    if shutil.which("wireguard-go") is None:
        pytest.skip("needs wireguard-go")
    import netns

    missing = netns.have_netns_support()
    if missing:
        pytest.skip(f"needs {missing}")
    name = "wgpyg" + secrets.token_hex(3)
    path = os.path.join(UAPI_SOCKET_DIRECTORY, name + ".sock")
    with (
        netns.netns("wgpyug") as ns,
        netns.popen_in_ns(
            ns,
            ["wireguard-go", "-f", name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as proc,
    ):
        for _ in range(500):
            if os.path.exists(path) or proc.poll() is not None:
                break
            time.sleep(0.02)
        if not os.path.exists(path):
            pytest.skip("wireguard-go did not start (no TUN support here?)")
        yield name
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def test_same_config_as_wireguard_go(
    served: tuple[str, Backend], wireguard_go: str, tmp_path: Path
) -> None:
    name, _ = served
    priv = new_key()
    peers = [
        (public_key(new_key()), [f"10.{p}.0.0/16", f"fd00:{p:x}::/32", f"192.168.{p}.1/32"])
        for p in range(6)
    ]
    text = conf_text(priv, peers, psk=secrets.token_bytes(32), endpoint="[2001:db8::5]:7")
    conf = write(tmp_path, text)
    extra = write(
        tmp_path,
        "[Peer]\n"
        f"PublicKey = {b64(peers[0][0])}\nAllowedIPs = 10.1.0.0/16, 172.16.0.1/12\n"
        "PersistentKeepalive = 15\nEndpoint = 192.0.2.9:4\n",
    )
    for iface in (name, wireguard_go):
        wg("setconf", iface, conf)
        wg("addconf", iface, extra)
        wg("set", iface, "peer", b64(peers[2][0]), "remove")
    ours, theirs = showconf(name), showconf(wireguard_go)
    assert ours == theirs
    # The moved prefix and the masked host bits: the same answer from both.
    assert ours[1][b64(peers[0][0])]["AllowedIPs"] == "10.1.0.0/16, 172.16.0.0/12"
    assert ours[1][b64(peers[1][0])]["AllowedIPs"] == "fd00:1::/32, 192.168.1.1/32"
    assert b64(peers[2][0]) not in ours[1]


# Requests whose answers the installed wireguard-go (0.0.20220316) and the
# current one agree on; "-prefix" removal and prefix lengths with a sign or
# leading zeros are left out (old go refuses the first, accepts the others).
PEER_LINES = [
    "allowed_ip=10.0.0.0/8",
    "allowed_ip=10.0.0.1",
    "allowed_ip=fe80::1%lo/64",
    "allowed_ip=::ffff:1.2.3.4/96",
    "allowed_ip=01.0.0.0/8",
    "allowed_ip=1.2.3.4/255.0.0.0",
    "allowed_ip=10.0.0.0/33",
    "endpoint=1.2.3.4:5",
    "endpoint=[1.2.3.4]:5",
    "endpoint=[::1]:5",
    "endpoint=[fe80::1%]:5",
    "endpoint=[fe80::1%nosuchif0]:5",
    "endpoint=1.2.3.4:0005",
    "endpoint=1.2.3.4:+5",
    "endpoint=1.2.3.4:65536",
    "endpoint=localhost:5",
    "endpoint=::1:5",
    "persistent_keepalive_interval=00025",
    "persistent_keepalive_interval=+25",
    "persistent_keepalive_interval=65536",
    "preshared_key=" + "AB" * 32,
    "preshared_key=abc",
    "update_only=true",
    "update_only=false",
    "remove=yes",
    "remove=true",
    "protocol_version=1",
    "protocol_version=01",
    "replace_allowed_ips=True",
    "listen_port=1",
    "bogus",
    "bogus=1",
    "=",
]
DEVICE_LINES = [
    "private_key=0000",
    "private_key=" + "0" * 64,
    "listen_port=+5",
    "listen_port=65536",
    "fwmark=0x1",
    "fwmark=4294967296",
    "replace_peers=1",
    "replace_peers=true",
    "allowed_ip=10.0.0.0/8",
    "=",
    "nokey",
]
RAW = [
    b"get=1\nx",
    b"get=1\r\n\n",
    b"GET=1\n\n",
    b"set=1\n\r\n",
    b"set=1\nlisten_port\r\n\n",
    b"foo\n",
    b"set=1\nbogus=1\nget=1\n\n",
    b"set=1\nbogus\nset=1\n\n",
]


def raw_exchange(path: str, payload: bytes) -> bytes:
    """Send, half-close, and read everything until the server closes."""
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_same_errno_answers_as_wireguard_go(served: tuple[str, Backend], wireguard_go: str) -> None:
    name, _ = served
    ours = os.path.join(UAPI_SOCKET_DIRECTORY, name + ".sock")
    theirs = os.path.join(UAPI_SOCKET_DIRECTORY, wireguard_go + ".sock")
    peer = public_key(new_key()).hex()
    requests = [f"set=1\npublic_key={peer}\n{line}\n\n".encode() for line in PEER_LINES]
    requests += [f"set=1\n{line}\n\n".encode() for line in DEVICE_LINES]
    requests += RAW
    mismatches = []
    for request in requests:
        a, b = raw_exchange(ours, request), raw_exchange(theirs, request)
        if a != b:
            mismatches.append((request, a, b))
    assert mismatches == []
