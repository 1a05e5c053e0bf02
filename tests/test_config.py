"""wgpy.config: wg-quick files parsed, written, stripped and turned into UAPI.

The UAPI lines are compared with what the real ``wg setconf`` sends for the
same file (captured by a fake UAPI socket), and ``strip`` with the real
``wg-quick strip``.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wgpy import config as wgconf
from wgpy.config import (
    ConfigError,
    InterfaceConfig,
    PeerConfig,
    WgQuickConfig,
    dumps,
    load,
    loads,
    resolve_config_path,
    resolve_endpoint,
    routes_of,
    strip,
    to_uapi_set,
)
from wgpy.keys import encode_key

K_PRIV = bytes([0x11] * 32)
K_PEER1 = bytes([0x22] * 32)
K_PSK1 = bytes([0x33] * 32)
K_PEER2 = bytes([0x44] * 32)
K_PEER3 = bytes([0x55] * 32)

SAMPLE = f"""\
# wg-quick sample with every key
[Interface]
PrivateKey = {encode_key(K_PRIV)}
ListenPort = 51820
FwMark = 0x1234
Address = 10.0.0.1/24, fd00::1/64
address = 10.0.1.1   # no prefix: a host address
DNS = 1.1.1.1, 2606:4700:4700::1111, example.com
MTU = 1380
Table = auto
PreUp = echo pre-up %i > /dev/null
PostUp = echo post-up one
PostUp = echo post-up two
PreDown = true
PostDown = true
SaveConfig = false

[Peer]
PublicKey = {encode_key(K_PEER1)}
PresharedKey = {encode_key(K_PSK1)}
AllowedIPs = 10.0.0.2/32, 10.1.0.0/16
AllowedIPs = fd00::2/128
Endpoint = 192.0.2.1:51820
PersistentKeepalive = 25

[peer]
publickey={encode_key(K_PEER2)}
ENDPOINT = [2001:db8::1]:12345
allowedips = 0.0.0.0/0, ::/0
PersistentKeepalive = off

  [ Peer ]
PublicKey = {encode_key(K_PEER3)}
AllowedIPs = 10.9.0.0/24
"""

SAMPLE_UAPI = [
    "private_key=" + "11" * 32,
    "listen_port=51820",
    "fwmark=4660",
    "replace_peers=true",
    "public_key=" + "22" * 32,
    "preshared_key=" + "33" * 32,
    "endpoint=192.0.2.1:51820",
    "persistent_keepalive_interval=25",
    "replace_allowed_ips=true",
    "allowed_ip=10.0.0.2/32",
    "allowed_ip=10.1.0.0/16",
    "allowed_ip=fd00::2/128",
    "public_key=" + "44" * 32,
    "endpoint=[2001:db8::1]:12345",
    "persistent_keepalive_interval=0",
    "replace_allowed_ips=true",
    "allowed_ip=0.0.0.0/0",
    "allowed_ip=::/0",
    "public_key=" + "55" * 32,
    "replace_allowed_ips=true",
    "allowed_ip=10.9.0.0/24",
]


def iface(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    return ipaddress.ip_interface(text)


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def test_sample_parses_into_every_field() -> None:
    cfg = loads(SAMPLE, "wg0.conf", "wg0")
    i = cfg.interface
    assert i.private_key == K_PRIV
    assert i.listen_port == 51820
    assert i.fwmark == 0x1234
    # Repeated Address keys append, in file order; a bare address is /32.
    assert i.addresses == [iface("10.0.0.1/24"), iface("fd00::1/64"), iface("10.0.1.1/32")]
    assert i.dns == ["1.1.1.1", "2606:4700:4700::1111", "example.com"]
    assert i.dns_servers == ["1.1.1.1", "2606:4700:4700::1111"]
    assert i.dns_search == ["example.com"]
    assert i.mtu == 1380
    assert i.table == "auto"
    assert i.pre_up == ["echo pre-up %i > /dev/null"]
    assert i.post_up == ["echo post-up one", "echo post-up two"]
    assert i.pre_down == ["true"] and i.post_down == ["true"]
    assert i.save_config is False
    assert cfg.name == "wg0"
    assert len(cfg.peers) == 3
    p1, p2, p3 = cfg.peers
    assert p1.public_key == K_PEER1 and p1.preshared_key == K_PSK1
    assert p1.allowed_ips == [iface("10.0.0.2/32"), iface("10.1.0.0/16"), iface("fd00::2/128")]
    assert p1.endpoint == "192.0.2.1:51820" and p1.persistent_keepalive == 25
    assert p2.public_key == K_PEER2 and p2.preshared_key is None
    assert p2.endpoint == "[2001:db8::1]:12345"
    assert p2.persistent_keepalive == 0  # "off"
    assert p2.allowed_ips == [iface("0.0.0.0/0"), iface("::/0")]
    assert p3.endpoint is None and p3.persistent_keepalive is None
    assert p3.line == 32  # where its [Peer] header is


def test_empty_and_minimal_files() -> None:
    assert loads("") == WgQuickConfig()
    assert loads("# only a comment\n\n[Interface]\n") == WgQuickConfig()
    cfg = loads("[Peer]\nPublicKey = " + encode_key(K_PEER1) + "\nAllowedIPs =\n")
    assert cfg.peers == [PeerConfig(public_key=K_PEER1)]


def test_values_accept_wg_spellings() -> None:
    cfg = loads(
        "[Interface]\nFwMark = off\nSaveConfig = True\nListenPort = 0\n"
        "[Peer]\nPublicKey = " + encode_key(K_PEER1) + "\n"
        "AllowedIPs = 10.0.0.1/24\n"  # host bits kept, as wg sends them
        "Endpoint = host.example:51820\n"
        "PersistentKeepalive = 0\n"
    )
    assert cfg.interface.fwmark == 0
    assert cfg.interface.save_config is True
    assert cfg.interface.listen_port == 0
    assert cfg.peers[0].allowed_ips == [iface("10.0.0.1/24")]
    assert cfg.peers[0].endpoint == "host.example:51820"
    assert cfg.peers[0].persistent_keepalive == 0
    # The decimal and hex forms of FwMark agree.
    assert loads("[Interface]\nFwMark = 4660\n") == loads("[Interface]\nFwMark = 0x1234\n")


def test_comment_cuts_the_rest_of_the_line() -> None:
    cfg = loads("[Interface]\nPostUp = echo a # not part of the command\n")
    assert cfg.interface.post_up == ["echo a"]


ERRORS = [
    ("[Peer]\nPublicKey = {k1}\nAllowedIPs = 10.0.0.0/33\n", 3, "invalid AllowedIPs '10.0.0.0/33'"),
    ("[Peer]\nPublicKey = {k1}\nAllowedIPs = fd00::/129\n", 3, "invalid AllowedIPs 'fd00::/129'"),
    (
        "[Peer]\nPublicKey = {k1}\nAllowedIPs = 10.0.0.0/8,,10.1.0.0/16\n",
        3,
        "invalid AllowedIPs ''",
    ),
    ("[Peer]\nPublicKey = {k1}\nAllowedIPs = 10.0.0.256/32\n", 3, "invalid AllowedIPs"),
    ("[Peer]\nPublicKey = {k1}\nAllowedIPs = fe80::1%eth0/64\n", 3, "invalid AllowedIPs"),
    ("[Peer]\nPublicKey = {k1}\nAllowedIPs = 10.0.0.0/255.0.0.0\n", 3, "invalid AllowedIPs"),
    (
        "\n\n[Interface]\nAddress = 10.0.0.1/24, 10.0.0.300/24\n",
        4,
        "invalid Address '10.0.0.300/24'",
    ),
    ("[Interface]\nPrivateKey = abc\n", 2, "invalid PrivateKey 'abc'"),
    ("[Interface]\nPrivateKey = {bad_pad}\n", 2, "invalid PrivateKey"),
    ("[Peer]\nPublicKey = {k1}\nPresharedKey = {k1}x\n", 3, "invalid PresharedKey"),
    ("[Interface]\nListenPort = 65536\n", 2, "invalid ListenPort '65536'"),
    ("[Interface]\nListenPort = -1\n", 2, "invalid ListenPort"),
    ("[Interface]\nFwMark = 0x100000000\n", 2, "invalid FwMark '0x100000000'"),
    ("[Interface]\nFwMark = mark\n", 2, "invalid FwMark"),
    ("[Interface]\nFwMark = \u0663\n", 2, "invalid FwMark"),  # a non-ASCII digit
    ("[Interface]\nFwMark = 0x_1\n", 2, "invalid FwMark"),
    ("[Interface]\nMTU = 40\n", 2, "invalid MTU '40'"),
    ("[Interface]\nMTU = big\n", 2, "invalid MTU"),
    ("[Interface]\nDNS = 1.2.3\n", 2, "invalid DNS server '1.2.3'"),
    ("[Interface]\nSaveConfig = yes\n", 2, "invalid SaveConfig 'yes'"),
    ("[Interface]\nTable = a b\n", 2, "invalid Table"),
    ("[Peer]\nPublicKey = {k1}\nPersistentKeepalive = 65536\n", 3, "invalid PersistentKeepalive"),
    ("[Peer]\nPublicKey = {k1}\nEndpoint = 192.0.2.1\n", 3, "invalid Endpoint '192.0.2.1'"),
    ("[Peer]\nPublicKey = {k1}\nEndpoint = [2001:db8::1]51820\n", 3, "invalid Endpoint"),
    ("[Peer]\nPublicKey = {k1}\nEndpoint = [2001:db8::1:51820\n", 3, "invalid Endpoint"),
    ("[Peer]\nPublicKey = {k1}\nEndpoint = 192.0.2.1:70000\n", 3, "invalid Endpoint"),
    ("[Peer]\nPublicKey = {k1}\nEndpoint = 192.0.2.300:1\n", 3, "invalid Endpoint"),
    ("[Peer]\nPublicKey = {k1}\nEndpoint = :51820\n", 3, "invalid Endpoint"),
    ("[Peer]\nPublicKey = {k1}\nEndpoint =\n", 3, "invalid Endpoint"),
    ("[Interface]\nPublicKey = {k1}\n", 2, "PublicKey belongs in a [Peer] section"),
    ("[Peer]\nPublicKey = {k1}\nListenPort = 1\n", 3, "ListenPort belongs in the [Interface]"),
    ("[Interface]\nColour = blue\n", 2, "unknown key 'Colour' in [Interface]"),
    ("[Peer]\nPublicKey = {k1}\nPeerName = x\n", 3, "unknown key 'PeerName' in [Peer]"),
    ("ListenPort = 1\n", 1, "outside any [Interface] or [Peer] section"),
    ("[Interface]\n[Wireguard]\n", 2, "unknown section '[Wireguard]'"),
    ("[Interface]\n[Interface]\n", 2, "a second [Interface] section"),
    ("[Interface]\nListenPort 51820\n", 2, "expected 'Key = Value'"),
    ("[Interface]\n= 3\n", 2, "expected 'Key = Value'"),
    ("[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.0/8\n", 3, "[Peer] section has no PublicKey"),
]


@pytest.mark.parametrize(("text", "line", "fragment"), ERRORS)
def test_every_error_names_file_and_line(text: str, line: int, fragment: str) -> None:
    bad_pad = "a" * 43 + "="  # right length, but the last character's spare bits are set
    text = text.format(k1=encode_key(K_PEER1), bad_pad=bad_pad)
    with pytest.raises(ConfigError) as info:
        loads(text, "bad.conf")
    err = info.value
    assert err.line == line and err.filename == "bad.conf"
    assert str(err).startswith(f"bad.conf: line {line}: ")
    assert fragment in str(err)


def test_load_reports_path_name_and_bad_bytes(tmp_path: Path) -> None:
    good = tmp_path / "wgx0.conf"
    good.write_text(SAMPLE)
    assert load(good).name == "wgx0"
    assert load(good) == loads(SAMPLE)
    odd = tmp_path / "not an interface name.conf"
    odd.write_text(SAMPLE)
    assert load(odd).name is None
    broken = tmp_path / "wgx1.conf"
    broken.write_bytes(b"[Interface]\n\nPostUp = \xff\n")
    with pytest.raises(ConfigError, match=r"wgx1.conf: line 3: not valid UTF-8"):
        load(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load(tmp_path / "missing.conf")


def test_resolve_config_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wgconf, "CONFIG_DIR", tmp_path)
    (tmp_path / "wg7.conf").write_text("")
    assert resolve_config_path("wg7") == (tmp_path / "wg7.conf", "wg7")
    assert resolve_config_path(str(tmp_path / "wg7.conf")) == (tmp_path / "wg7.conf", "wg7")
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config_path("wg8")
    long_name = tmp_path / "a-name-that-is-too-long.conf"
    long_name.write_text("")
    with pytest.raises(ConfigError, match="valid interface name"):
        resolve_config_path(str(long_name))


# ---------------------------------------------------------------------------
# Writing: round trips
# ---------------------------------------------------------------------------


def test_sample_round_trips() -> None:
    cfg = loads(SAMPLE)
    text = dumps(cfg)
    assert loads(text) == cfg
    assert dumps(loads(text)) == text
    assert "FwMark = 0x1234" in text
    assert "PersistentKeepalive = off" in text


_v4 = st.builds(
    lambda a, p: ipaddress.IPv4Interface((ipaddress.IPv4Address(a), p)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
)
_v6 = st.builds(
    lambda a, p: ipaddress.IPv6Interface((ipaddress.IPv6Address(a), p)),
    st.integers(0, 2**128 - 1),
    st.integers(0, 128),
)
_prefixes = st.lists(st.one_of(_v4, _v6), max_size=4)
_keys = st.binary(min_size=32, max_size=32)
_hook = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="#"), max_size=20
).map(lambda s: s.strip(" \t\r\v\f"))
_endpoint = st.one_of(
    st.builds(
        lambda a, p: f"{ipaddress.IPv4Address(a)}:{p}",
        st.integers(0, 2**32 - 1),
        st.integers(0, 65535),
    ),
    st.builds(
        lambda a, p: f"[{ipaddress.IPv6Address(a)}]:{p}",
        st.integers(0, 2**128 - 1),
        st.integers(0, 65535),
    ),
    st.sampled_from(["localhost:1", "vpn.example.com:51820"]),
)
_peers = st.builds(
    PeerConfig,
    public_key=_keys,
    preshared_key=st.none() | _keys,
    allowed_ips=_prefixes,
    endpoint=st.none() | _endpoint,
    persistent_keepalive=st.none() | st.integers(0, 65535),
)
_interfaces = st.builds(
    InterfaceConfig,
    private_key=st.none() | _keys,
    listen_port=st.none() | st.integers(0, 65535),
    fwmark=st.none() | st.integers(0, 2**32 - 1),
    addresses=_prefixes,
    dns=st.lists(st.sampled_from(["10.0.0.53", "fd00::53", "lan", "corp.example"]), max_size=3),
    mtu=st.none() | st.integers(68, 65535),
    table=st.none() | st.sampled_from(["auto", "off", "1234", "main"]),
    pre_up=st.lists(_hook.filter(bool), max_size=2),
    post_up=st.lists(_hook.filter(bool), max_size=2),
    pre_down=st.lists(_hook.filter(bool), max_size=2),
    post_down=st.lists(_hook.filter(bool), max_size=2),
    save_config=st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.builds(WgQuickConfig, interface=_interfaces, peers=st.lists(_peers, max_size=3)))
def test_any_config_round_trips(cfg: WgQuickConfig) -> None:
    assert loads(dumps(cfg)) == cfg


@settings(max_examples=300, deadline=None)
@given(
    st.text(st.sampled_from("[]=#,./: \n\tabcdefIPLKeyPrivateNtfw0123456789x\u0663_"), max_size=80)
)
def test_garbage_raises_only_config_error(text: str) -> None:
    try:
        loads(text)
    except ConfigError as exc:
        assert exc.line is not None  # every parse error names its line


# ---------------------------------------------------------------------------
# strip, routes
# ---------------------------------------------------------------------------


def test_strip_drops_exactly_the_wg_quick_keys() -> None:
    cfg = loads(SAMPLE)
    text = strip(cfg)
    for word in (
        "Address",
        "DNS",
        "MTU",
        "Table",
        "PreUp",
        "PostUp",
        "PreDown",
        "PostDown",
        "Save",
    ):
        assert word not in text
    stripped = loads(text)
    assert stripped.peers == cfg.peers
    assert stripped.interface == InterfaceConfig(
        private_key=K_PRIV, listen_port=51820, fwmark=0x1234
    )


@pytest.mark.skipif(shutil.which("wg-quick") is None, reason="needs the wg-quick script")
@pytest.mark.skipif(os.geteuid() != 0, reason="wg-quick strip needs root")
def test_strip_matches_real_wg_quick(tmp_path: Path) -> None:
    path = tmp_path / f"wgs{secrets.token_hex(3)}.conf"
    path.write_text(SAMPLE)
    path.chmod(0o600)
    tmp_path.chmod(0o700)
    real = subprocess.run(
        ["wg-quick", "strip", str(path)], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert loads(real) == loads(strip(loads(SAMPLE)))


def test_routes_most_specific_first_and_masked() -> None:
    cfg = loads(
        "[Peer]\nPublicKey = " + encode_key(K_PEER1) + "\nAllowedIPs = 0.0.0.0/0, 10.0.0.5/24\n"
        "[Peer]\nPublicKey = " + encode_key(K_PEER2) + "\nAllowedIPs = 10.0.0.9/32, 10.0.0.0/24\n"
    )
    assert [str(n) for n in routes_of(cfg)] == ["10.0.0.9/32", "10.0.0.0/24", "0.0.0.0/0"]


# ---------------------------------------------------------------------------
# Endpoint resolution and the UAPI set lines
# ---------------------------------------------------------------------------


def test_to_uapi_set_exact_lines() -> None:
    assert to_uapi_set(loads(SAMPLE)) == SAMPLE_UAPI


def test_to_uapi_set_defaults_clear_key_port_and_mark() -> None:
    # wg setconf always sends the three interface keys, zero when absent.
    assert to_uapi_set(loads("")) == [
        "private_key=" + "00" * 32,
        "listen_port=0",
        "fwmark=0",
        "replace_peers=true",
    ]


def test_hostname_resolved_at_apply_time_original_text_kept() -> None:
    cfg = loads("[Peer]\nPublicKey = " + encode_key(K_PEER1) + "\nEndpoint = localhost:51820\n")
    assert cfg.peers[0].endpoint == "localhost:51820"
    first = socket.getaddrinfo("localhost", 51820, 0, socket.SOCK_DGRAM, socket.IPPROTO_UDP)[0]
    expected = f"[{first[4][0]}]:51820" if first[0] == socket.AF_INET6 else f"{first[4][0]}:51820"
    assert resolve_endpoint("localhost:51820") == expected
    assert expected in ("127.0.0.1:51820", "[::1]:51820")
    assert f"endpoint={expected}" in to_uapi_set(cfg)
    assert dumps(cfg).count("Endpoint = localhost:51820") == 1


def test_numeric_endpoints_normalised() -> None:
    assert resolve_endpoint("192.0.2.1:1") == "192.0.2.1:1"
    assert resolve_endpoint("[2001:DB8:0::1]:2") == "[2001:db8::1]:2"
    assert resolve_endpoint("2001:db8::1:3") == "[2001:db8::1]:3"  # unbracketed, like wg


def test_unresolvable_endpoint_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WG_ENDPOINT_RESOLUTION_RETRIES", "2")
    sleeps: list[float] = []

    def fail(*_: object, **__: object) -> object:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ConfigError, match=r"cannot resolve Endpoint 'vpn\.example:1'"):
        resolve_endpoint("vpn.example:1", sleep=sleeps.append)
    assert sleeps == [1.0, 1.2]  # transient errors are retried with wg's back-off

    def gone(*_: object, **__: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", gone)
    sleeps.clear()
    with pytest.raises(ConfigError, match="Name or service not known"):
        resolve_endpoint("vpn.example:1", sleep=sleeps.append)
    assert sleeps == []  # permanent: no retry


class FakeUapi:
    """A UAPI socket at /var/run/wireguard/NAME.sock that records requests and
    answers each with ``reply`` (the real ``wg`` is the client under test)."""

    DIR = Path("/var/run/wireguard")

    def __init__(self, name: str, reply: bytes = b"errno=0\n\n") -> None:
        self.name = name
        self.reply = reply
        self.requests: list[bytes] = []
        self.DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.path = self.DIR / f"{name}.sock"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(self.path))
        self.sock.listen(4)
        self.sock.settimeout(30)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while not data.endswith(b"\n\n") and data != b"\n":
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if not data:
                    continue  # wg probes the socket with an empty connection first
                self.requests.append(data)
                try:
                    conn.sendall(self.reply)
                except OSError:
                    continue

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def fake_uapi() -> Iterator[FakeUapi]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a socket in /var/run/wireguard")
    server = FakeUapi(f"wgpyc{secrets.token_hex(4)}")
    try:
        yield server
    finally:
        server.close()


@pytest.mark.skipif(shutil.which("wg") is None, reason="needs the wg tool")
def test_to_uapi_set_equals_what_wg_setconf_sends(fake_uapi: FakeUapi, tmp_path: Path) -> None:
    conf = tmp_path / "plain.conf"
    # wg setconf takes the stripped file; localhost exercises name resolution.
    text = strip(loads(SAMPLE)) + "\n[Peer]\nPublicKey = " + encode_key(bytes([0x66] * 32))
    text += "\nEndpoint = localhost:51821\nAllowedIPs = 10.0.0.1/24, ::ffff:1.2.3.4/128\n"
    conf.write_text(text)
    subprocess.run(
        ["wg", "setconf", fake_uapi.name, str(conf)], check=True, capture_output=True, timeout=30
    )
    assert len(fake_uapi.requests) == 1
    sent = fake_uapi.requests[0].decode().split("\n")
    assert sent == ["set=1", *to_uapi_set(loads(text)), "", ""]
    # The extra peer's host bits and mapped address are sent as wg writes them.
    assert "allowed_ip=10.0.0.1/24" in sent and "allowed_ip=::ffff:1.2.3.4/128" in sent
