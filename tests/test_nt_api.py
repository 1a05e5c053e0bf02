"""wgpy.nt.api: the twelve wireguard.h functions over real TUN adapters.

Every adapter lives in a network namespace made for the test and is closed (which
removes it) at teardown; the adapter registry is a temporary directory
($WGPY_NT_RUN_DIR), so nothing outside the test sees these adapters except through
their UAPI sockets, whose names are random.

Facts checked here come from shared/reference/wireguard-h-abi.md sections 1-3.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from netns import call_in_ns, ip, python_in_ns, veth_pair

from wgpy.noise.primitives import clamp, public_key
from wgpy.nt import api
from wgpy.nt.abi import (
    AF_INET,
    AF_INET6,
    ALLOWED_IP_SIZE,
    FILETIME_UNIX_EPOCH,
    INTERFACE_SIZE,
    PEER_SIZE,
    AdapterLogState,
    AdapterState,
    AllowedIPConfig,
    AllowedIPFlag,
    ErrorCode,
    InterfaceConfig,
    InterfaceFlag,
    LoggerLevel,
    PeerConfig,
    PeerFlag,
    net_luid_fields,
    pack_configuration,
    parse_configuration,
)
from wgpy.nt.adapter import Adapter
from wgpy.nt.api import AdapterHandle
from wgpy.nt.errors import WireGuardError
from wgpy.nt.registry import AdapterRecord, Registry

E = ErrorCode
PK = InterfaceFlag.HAS_PRIVATE_KEY
HAS_KEY = PeerFlag.HAS_PUBLIC_KEY
REPO = Path(__file__).resolve().parent.parent


def tag() -> str:
    return secrets.token_hex(3)


def new_key() -> bytes:
    return clamp(secrets.token_bytes(32))


def pub() -> bytes:
    return public_key(new_key())


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private adapter registry for this test."""
    path = tmp_path / "run"
    monkeypatch.setenv("WGPY_NT_RUN_DIR", str(path))
    return path


@pytest.fixture
def nt(run_dir: Path, netns_factory: Callable[..., str]) -> Iterator[Callable[..., AdapterHandle]]:
    """``make(name=None, ns=None)`` creates an adapter in a namespace (a fresh one
    by default); every handle made is closed at teardown."""
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")
    handles: list[AdapterHandle] = []
    default_ns: list[str] = []

    def make(
        name: str | None = None, ns: str | None = None, tunnel_type: str = "Test"
    ) -> AdapterHandle:
        if ns is None:
            if not default_ns:
                default_ns.append(netns_factory("wgnt"))
            ns = default_ns[0]
        handle = call_in_ns(ns, api.WireGuardCreateAdapter, name or f"wgnt{tag()}", tunnel_type)
        assert handle is not None, f"create failed: {api.GetLastError()}"
        handles.append(handle)
        return handle

    make.namespace = lambda: (default_ns or [None])[0]  # type: ignore[attr-defined]
    try:
        yield make
    finally:
        api.WireGuardSetLogger(None)
        for handle in reversed(handles):
            api.WireGuardCloseAdapter(handle)


def ns_of(make: Callable[..., AdapterHandle]) -> str:
    ns = make.namespace()  # type: ignore[attr-defined]
    assert ns is not None
    return str(ns)


def links(ns: str) -> dict[str, dict[str, object]]:
    out = ip(ns, "-j", "link", "show").stdout
    return {entry["ifname"]: entry for entry in json.loads(out)}


def set_config(handle: AdapterHandle, config: InterfaceConfig) -> None:
    buf = pack_configuration(config)
    assert api.WireGuardSetConfiguration(handle, buf, len(buf)), api.GetLastError()


def get_config(handle: AdapterHandle) -> InterfaceConfig:
    ok, needed = api.WireGuardGetConfiguration(handle, None, 0)
    assert not ok and api.GetLastError() == E.ERROR_MORE_DATA
    buf = bytearray(needed)
    ok, written = api.WireGuardGetConfiguration(handle, buf, needed)
    assert ok, api.GetLastError()
    assert written == needed
    return parse_configuration(buf, written)


def peer_keys(config: InterfaceConfig) -> list[bytes]:
    return [p.public_key for p in config.peers]


def allowed(config: InterfaceConfig, key: bytes) -> list[tuple[str, int]]:
    for p in config.peers:
        if p.public_key == key:
            return [(a.address, a.cidr) for a in p.allowed_ips]
    raise AssertionError("peer not found")


def peer(key: bytes, *ips: str, flags: PeerFlag = HAS_KEY, **kw: object) -> PeerConfig:
    nets = []
    for text in ips:
        remove = text.startswith("-")
        address, _, cidr = text.lstrip("-").partition("/")
        nets.append(
            AllowedIPConfig(
                address, int(cidr), AllowedIPFlag.REMOVE if remove else AllowedIPFlag(0)
            )
        )
    return PeerConfig(flags=flags, public_key=key, allowed_ips=tuple(nets), **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Create, open, close, names
# ---------------------------------------------------------------------------


def test_create_gives_a_tun_with_luid_from_its_index(nt: Callable[..., AdapterHandle]) -> None:
    name = f"wgnt{tag()}"
    handle = nt(name)
    ns = ns_of(nt)
    link = links(ns)[name]  # a valid ifname is used as it is
    luid = api.WireGuardGetAdapterLUID(handle)
    index, if_type = net_luid_fields(luid.Value)
    assert if_type == 53
    assert index == link["ifindex"]
    assert luid.Value == (53 << 48) | (int(link["ifindex"]) << 24)  # type: ignore[call-overload]
    ok, state = api.WireGuardGetAdapterState(handle)
    assert ok and state == AdapterState.DOWN
    # wg sees it through its UAPI socket.
    shown = subprocess.run(["wg", "show", name], capture_output=True, text=True, check=False)
    assert shown.returncode == 0 and f"interface: {name}" in shown.stdout


def test_closing_the_creating_handle_removes_the_adapter(nt: Callable[..., AdapterHandle]) -> None:
    name = f"wgnt{tag()}"
    handle = nt(name)
    ns = ns_of(nt)
    opened = api.WireGuardOpenAdapter(name.upper())
    assert opened is not None
    api.WireGuardCloseAdapter(opened)  # an opened handle leaves the adapter alone
    assert name in links(ns)
    api.WireGuardCloseAdapter(handle)
    assert name not in links(ns)
    assert not os.path.exists(f"/var/run/wireguard/{name}.sock")
    assert api.WireGuardOpenAdapter(name) is None
    assert api.GetLastError() == E.ERROR_NOT_FOUND
    api.WireGuardCloseAdapter(handle)  # twice is harmless
    api.WireGuardCloseAdapter(None)
    assert not api.WireGuardSetAdapterState(handle, AdapterState.UP)
    assert api.GetLastError() == E.ERROR_INVALID_HANDLE


def test_open_ignores_ascii_case(nt: Callable[..., AdapterHandle]) -> None:
    name = f"Case{tag()}"
    handle = nt(name)
    for variant in (name.lower(), name.upper(), name.swapcase()):
        opened = api.WireGuardOpenAdapter(variant)
        assert opened is not None
        assert opened.backend.ifname == handle.backend.ifname
        api.WireGuardCloseAdapter(opened)
    assert api.WireGuardOpenAdapter(name + "x") is None
    assert api.GetLastError() == E.ERROR_NOT_FOUND


def test_long_and_odd_names_map_to_valid_ifnames(nt: Callable[..., AdapterHandle]) -> None:
    t = tag()
    odd = f"My Tunnel: {t} ünïcode/with-slash"
    handle = nt(odd)
    ifname = handle.backend.ifname
    assert len(ifname.encode()) <= 15 and ifname in links(ns_of(nt))
    assert ifname.startswith("MyTunnel")
    longest = "N" * 121 + t  # exactly 127 UTF-16 units
    handle2 = nt(longest)
    assert len(handle2.backend.ifname) <= 15
    opened = api.WireGuardOpenAdapter(longest.lower())
    assert opened is not None and opened.backend.ifname == handle2.backend.ifname
    api.WireGuardCloseAdapter(opened)
    # Only ASCII letters fold (as _wcsicmp in the C locale): "ü" stays as it is.
    opened = api.WireGuardOpenAdapter(odd.replace("My Tunnel", "mY tUNNEL"))
    assert opened is not None and opened.backend.ifname == ifname
    api.WireGuardCloseAdapter(opened)


def create_in(ns: str, name: str, tunnel_type: str = "Test") -> tuple[AdapterHandle | None, int]:
    """Create in ``ns``; the result and the last error of that (helper) thread."""
    return call_in_ns(
        ns, lambda: (api.WireGuardCreateAdapter(name, tunnel_type), api.GetLastError())
    )


def test_name_and_tunnel_type_limits(nt: Callable[..., AdapterHandle], fresh_netns: str) -> None:
    ns = fresh_netns
    assert create_in(ns, "x" * 128) == (None, E.ERROR_BUFFER_OVERFLOW)
    # A character outside the BMP counts as two UTF-16 units.
    assert create_in(ns, "x" * 126 + "\U0001f600") == (None, E.ERROR_BUFFER_OVERFLOW)
    # "<type> Tunnel" must fit in 127 units as well.
    assert create_in(ns, "ok" + tag(), "t" * 121) == (None, E.ERROR_BUFFER_OVERFLOW)
    assert create_in(ns, "") == (None, E.ERROR_INVALID_PARAMETER)
    assert links(ns).keys() == {"lo"}
    # The last error belongs to the thread that failed.
    api.SetLastError(0)
    assert api.GetLastError() == 0
    handle = nt("ok" + tag(), ns, "t" * 120)
    assert handle is not None


def test_duplicate_name_is_taken_by_the_new_adapter(nt: Callable[..., AdapterHandle]) -> None:
    name = f"Dup{tag()}"
    first = nt(name)
    second = nt(name.lower())
    assert first.backend.ifname != second.backend.ifname
    # The old holder was renamed "<name> 1"; the new adapter has the exact name.
    opened = api.WireGuardOpenAdapter(name)
    assert opened is not None and opened.backend.ifname == second.backend.ifname
    api.WireGuardCloseAdapter(opened)
    opened = api.WireGuardOpenAdapter(f"{name.upper()} 1")
    assert opened is not None and opened.backend.ifname == first.backend.ifname
    assert opened.backend.display_name() == f"{name.lower()} 1"
    api.WireGuardCloseAdapter(opened)
    third = nt(name)
    opened = api.WireGuardOpenAdapter(f"{name} 2")
    assert opened is not None and opened.backend.ifname == second.backend.ifname
    api.WireGuardCloseAdapter(opened)
    assert third.backend.display_name() == name


def test_stale_registry_entries_are_dropped(run_dir: Path) -> None:
    registry = Registry(str(run_dir))
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead = int(proc.stdout)
    record = AdapterRecord("Ghost", "ghost0", 99, "T", "", dead, 12345, "", "/nonexistent.sock")
    with registry.locked():
        registry.write(record)
    assert (run_dir / "ghost0.json").exists()
    assert api.WireGuardOpenAdapter("ghost") is None
    assert api.GetLastError() == E.ERROR_NOT_FOUND
    assert not (run_dir / "ghost0.json").exists()


def test_driver_version_and_delete_driver(nt: Callable[..., AdapterHandle]) -> None:
    from importlib import metadata

    major, minor = (int(x) for x in metadata.version("wgpy").split(".")[:2])
    assert api.WireGuardGetRunningDriverVersion() == (major << 16) | minor
    handle = nt()
    assert not api.WireGuardDeleteDriver()
    assert api.GetLastError() == E.ERROR_INF_IN_USE_BY_DEVICES
    api.WireGuardCloseAdapter(handle)
    assert api.WireGuardDeleteDriver()


# ---------------------------------------------------------------------------
# Configuration semantics (reference section 3.1-3.3)
# ---------------------------------------------------------------------------


def test_set_and_get_round_trip(nt: Callable[..., AdapterHandle]) -> None:
    handle = nt()
    private = new_key()
    a, b = pub(), pub()
    psk = secrets.token_bytes(32)
    config = InterfaceConfig(
        flags=PK | InterfaceFlag.HAS_LISTEN_PORT,
        listen_port=0,  # random
        private_key=private,
        public_key=bytes(32),  # ignored on set
        peers=(
            peer(
                a,
                "10.1.0.7/24",  # host bits are masked on read-back
                "fd00::1:2/64",
                flags=HAS_KEY
                | PeerFlag.HAS_PRESHARED_KEY
                | PeerFlag.HAS_ENDPOINT
                | PeerFlag.HAS_PERSISTENT_KEEPALIVE,
                preshared_key=psk,
                endpoint=("192.0.2.1", 51820),
                persistent_keepalive=25,
            ),
            peer(
                b, "10.2.0.0/16", flags=HAS_KEY | PeerFlag.HAS_ENDPOINT, endpoint=("fe80::1%1", 7)
            ),
        ),
    )
    set_config(handle, config)
    got = get_config(handle)
    assert got.flags == InterfaceFlag.HAS_PUBLIC_KEY | PK | InterfaceFlag.HAS_LISTEN_PORT
    assert got.private_key == private and got.public_key == public_key(private)
    assert 0 < got.listen_port < 65536
    assert peer_keys(got) == [a, b]
    pa, pb = got.peers
    assert pa.flags == (
        HAS_KEY
        | PeerFlag.HAS_PERSISTENT_KEEPALIVE
        | PeerFlag.HAS_PRESHARED_KEY
        | PeerFlag.HAS_ENDPOINT
    )
    assert pa.reserved == 1  # the protocol version
    assert pa.preshared_key == psk and pa.persistent_keepalive == 25
    assert pa.endpoint == ("192.0.2.1", 51820)
    assert allowed(got, a) == [("10.1.0.0", 24), ("fd00::", 64)]
    assert pb.flags == HAS_KEY | PeerFlag.HAS_PERSISTENT_KEEPALIVE | PeerFlag.HAS_ENDPOINT
    assert pb.endpoint == ("fe80::1%1", 7)
    assert pb.last_handshake == 0 and pb.tx_bytes == 0
    # The raw buffer: families are the Windows values, Flags of each allowed IP 0.
    buf = pack_configuration(got)
    first_ip = INTERFACE_SIZE + PEER_SIZE
    assert int.from_bytes(buf[first_ip + 16 : first_ip + 18], "little") == AF_INET
    second_ip = first_ip + ALLOWED_IP_SIZE
    assert int.from_bytes(buf[second_ip + 16 : second_ip + 18], "little") == AF_INET6


def test_listen_port_is_reported_only_when_set(nt: Callable[..., AdapterHandle]) -> None:
    handle = nt()
    got = get_config(handle)
    # wgpy binds at creation (documented deviation), so a random port is reported.
    assert got.flags & InterfaceFlag.HAS_LISTEN_PORT and got.listen_port > 0
    assert not got.flags & InterfaceFlag.HAS_PRIVATE_KEY
    assert got.private_key == bytes(32)


def test_flags_replace_remove_update_only(nt: Callable[..., AdapterHandle]) -> None:
    handle = nt()
    a, b, c, d = pub(), pub(), pub(), pub()
    set_config(
        handle,
        InterfaceConfig(
            flags=PK, private_key=new_key(), peers=(peer(a, "10.0.1.0/24"), peer(b, "10.0.2.0/24"))
        ),
    )
    # UPDATE_ONLY never creates; it updates an existing peer.
    set_config(
        handle,
        InterfaceConfig(
            peers=(
                peer(c, "10.0.3.0/24", flags=HAS_KEY | PeerFlag.UPDATE_ONLY),
                peer(a, "10.0.9.0/24", flags=HAS_KEY | PeerFlag.UPDATE_ONLY),
            )
        ),
    )
    got = get_config(handle)
    assert peer_keys(got) == [a, b]
    assert allowed(got, a) == [("10.0.1.0", 24), ("10.0.9.0", 24)]
    # REPLACE_ALLOWED_IPS clears the peer's list first.
    set_config(
        handle,
        InterfaceConfig(
            peers=(peer(a, "10.0.5.0/24", flags=HAS_KEY | PeerFlag.REPLACE_ALLOWED_IPS),)
        ),
    )
    assert allowed(get_config(handle), a) == [("10.0.5.0", 24)]
    # Per-prefix REMOVE: only this peer's exact prefix; other prefixes are no-ops.
    set_config(
        handle, InterfaceConfig(peers=(peer(a, "-10.0.5.0/24", "-10.0.2.0/24", "-10.0.6.0/24"),))
    )
    got = get_config(handle)
    assert allowed(got, a) == []
    assert allowed(got, b) == [("10.0.2.0", 24)]
    # A prefix owned by another peer moves, and goes to the end of the list.
    set_config(handle, InterfaceConfig(peers=(peer(a, "10.0.2.0/24", "10.0.7.0/24"),)))
    got = get_config(handle)
    assert allowed(got, a) == [("10.0.2.0", 24), ("10.0.7.0", 24)]
    assert allowed(got, b) == []
    # REMOVE removes a peer (its allowed IPs are ignored); an unknown one is a no-op.
    set_config(
        handle,
        InterfaceConfig(
            peers=(
                peer(b, "10.9.9.0/24", flags=HAS_KEY | PeerFlag.REMOVE),
                peer(d, flags=HAS_KEY | PeerFlag.REMOVE),
            )
        ),
    )
    assert peer_keys(get_config(handle)) == [a]
    # REPLACE_PEERS removes every peer, then adds the ones in the buffer.
    set_config(
        handle, InterfaceConfig(flags=InterfaceFlag.REPLACE_PEERS, peers=(peer(c, "10.0.3.0/24"),))
    )
    got = get_config(handle)
    assert peer_keys(got) == [c]
    assert got.flags & PK  # the private key was not touched


def test_listen_port_in_use_fails_and_changes_nothing(nt: Callable[..., AdapterHandle]) -> None:
    first = nt()
    second = nt()  # same namespace
    port = get_config(first).listen_port
    set_config(second, InterfaceConfig(peers=(peer(pub(), "10.0.1.0/24"),)))
    before = get_config(second)
    buf = pack_configuration(
        InterfaceConfig(
            flags=InterfaceFlag.HAS_LISTEN_PORT | InterfaceFlag.REPLACE_PEERS | PK,
            listen_port=port,
            private_key=new_key(),
        )
    )
    assert not api.WireGuardSetConfiguration(second, buf, len(buf))
    assert api.GetLastError() == E.ERROR_ADDRESS_ALREADY_ASSOCIATED
    assert get_config(second) == before


def test_new_private_key_removes_the_peer_with_that_public_key(
    nt: Callable[..., AdapterHandle],
) -> None:
    handle = nt()
    private = new_key()
    other = pub()
    set_config(handle, InterfaceConfig(peers=(peer(public_key(private)), peer(other))))
    assert peer_keys(get_config(handle)) == [public_key(private), other]
    set_config(handle, InterfaceConfig(flags=PK, private_key=private))
    assert peer_keys(get_config(handle)) == [other]
    # A peer with our own public key is skipped silently.
    set_config(handle, InterfaceConfig(peers=(peer(public_key(private)),)))
    assert peer_keys(get_config(handle)) == [other]


def _valid(config_peers: tuple[PeerConfig, ...] = ()) -> bytearray:
    return bytearray(
        pack_configuration(InterfaceConfig(flags=InterfaceFlag.REPLACE_PEERS, peers=config_peers))
    )


BAD_BUFFERS: list[tuple[str, Callable[[bytes], tuple[bytes, int]], int]] = []


def bad(
    name: str, code: int = E.ERROR_INVALID_PARAMETER
) -> Callable[[Callable[[bytes], tuple[bytes, int]]], Callable[[bytes], tuple[bytes, int]]]:
    def register(fn: Callable[[bytes], tuple[bytes, int]]) -> Callable[[bytes], tuple[bytes, int]]:
        BAD_BUFFERS.append((name, fn, code))
        return fn

    return register


@bad("empty")
def _b_empty(k: bytes) -> tuple[bytes, int]:
    return b"", 0


@bad("shorter than the interface record")
def _b_short(k: bytes) -> tuple[bytes, int]:
    buf = _valid()
    return bytes(buf), INTERFACE_SIZE - 1


@bad("peer count overruns")
def _b_peers(k: bytes) -> tuple[bytes, int]:
    buf = _valid((peer(k, "10.5.0.0/16"),))
    buf[72:76] = (2).to_bytes(4, "little")
    return bytes(buf), len(buf)


@bad("allowed-IP count overruns")
def _b_allowed(k: bytes) -> tuple[bytes, int]:
    buf = _valid((peer(k, "10.5.0.0/16"),))
    buf[INTERFACE_SIZE + 128 : INTERFACE_SIZE + 132] = (2).to_bytes(4, "little")
    return bytes(buf), len(buf)


@bad("allowed-IP count overflows 32 bits")
def _b_overflow(k: bytes) -> tuple[bytes, int]:
    buf = _valid((peer(k),))
    buf[INTERFACE_SIZE + 128 : INTERFACE_SIZE + 132] = (0xFFFFFFFF).to_bytes(4, "little")
    return bytes(buf), len(buf)


@bad("bad family")
def _b_family(k: bytes) -> tuple[bytes, int]:
    buf = _valid((peer(k, "10.5.0.0/16"),))
    at = INTERFACE_SIZE + PEER_SIZE + 16
    buf[at : at + 2] = (10).to_bytes(2, "little")  # Linux AF_INET6 is not the ABI's
    return bytes(buf), len(buf)


@bad("IPv4 cidr 33")
def _b_cidr4(k: bytes) -> tuple[bytes, int]:
    buf = _valid((peer(k, "10.5.0.0/16"),))
    buf[INTERFACE_SIZE + PEER_SIZE + 18] = 33
    return bytes(buf), len(buf)


@bad("IPv6 cidr 129")
def _b_cidr6(k: bytes) -> tuple[bytes, int]:
    buf = _valid((peer(k, "fd00::/16"),))
    buf[INTERFACE_SIZE + PEER_SIZE + 18] = 129
    return bytes(buf), len(buf)


@bad("missing public key in the second peer")
def _b_nokey(k: bytes) -> tuple[bytes, int]:
    buf = _valid(
        (peer(k, "10.5.0.0/16"), peer(pub(), flags=PeerFlag.HAS_ENDPOINT, endpoint=("1.2.3.4", 5)))
    )
    return bytes(buf), len(buf)


@bad("protocol version 2", E.ERROR_INVALID_FUNCTION)
def _b_version(k: bytes) -> tuple[bytes, int]:
    buf = _valid((peer(k, flags=HAS_KEY | PeerFlag.HAS_PROTOCOL_VERSION, reserved=2),))
    return bytes(buf), len(buf)


@bad("byte count beyond the buffer", E.ERROR_NOACCESS)
def _b_beyond(k: bytes) -> tuple[bytes, int]:
    buf = _valid((peer(k),))
    return bytes(buf), len(buf) + 8


@pytest.mark.parametrize(("name", "build", "code"), BAD_BUFFERS, ids=[b[0] for b in BAD_BUFFERS])
def test_bad_buffers_fail_and_change_nothing(
    nt: Callable[..., AdapterHandle],
    name: str,
    build: Callable[[bytes], tuple[bytes, int]],
    code: int,
) -> None:
    handle = nt()
    private = new_key()
    keep = pub()
    set_config(
        handle,
        InterfaceConfig(
            flags=PK | InterfaceFlag.HAS_LISTEN_PORT,
            listen_port=0,
            private_key=private,
            peers=(peer(keep, "10.7.0.0/16", "fd07::/64"),),
        ),
    )
    before = get_config(handle)
    buf, size = build(pub())
    logs: list[tuple[int, int, str]] = []
    api.WireGuardSetLogger(lambda lvl, ts, msg: logs.append((lvl, ts, msg)))
    assert not api.WireGuardSetConfiguration(handle, buf, size)
    assert api.GetLastError() == code
    assert logs and logs[-1][0] == LoggerLevel.ERR
    assert logs[-1][2].startswith("WireGuardSetConfiguration: ")
    assert logs[-1][2].endswith(f"(Code 0x{code:08X})")
    after = get_config(handle)
    assert after == before  # REPLACE_PEERS in the bad buffer removed nothing


def test_get_configuration_more_data(nt: Callable[..., AdapterHandle]) -> None:
    handle = nt()
    a, b = pub(), pub()
    set_config(
        handle,
        InterfaceConfig(
            flags=PK,
            private_key=new_key(),
            peers=(peer(a, "10.0.1.0/24"), peer(b, "10.0.2.0/24", "10.0.3.0/24")),
        ),
    )
    needed = INTERFACE_SIZE + 2 * PEER_SIZE + 3 * ALLOWED_IP_SIZE
    ok, size = api.WireGuardGetConfiguration(handle, None, 0)
    assert not ok and size == needed and api.GetLastError() == E.ERROR_MORE_DATA
    # Whole records that fit are written; PeersCount says how many.
    buf = bytearray(b"\xaa" * (needed - 1))
    ok, size = api.WireGuardGetConfiguration(handle, buf, len(buf))
    assert not ok and size == needed and api.GetLastError() == E.ERROR_MORE_DATA
    partial = parse_configuration(buf, INTERFACE_SIZE + PEER_SIZE + ALLOWED_IP_SIZE)
    assert peer_keys(partial) == [a]
    assert buf[INTERFACE_SIZE + PEER_SIZE + ALLOWED_IP_SIZE] == 0xAA  # nothing more
    # A buffer exactly large enough succeeds; a larger one reports the bytes written.
    buf = bytearray(needed + 100)
    ok, size = api.WireGuardGetConfiguration(handle, buf, len(buf))
    assert ok and size == needed
    # A byte count larger than the buffer is a bad pointer.
    ok, size = api.WireGuardGetConfiguration(handle, bytearray(10), 20)
    assert not ok and api.GetLastError() == E.ERROR_NOACCESS


# ---------------------------------------------------------------------------
# State, logging
# ---------------------------------------------------------------------------


def test_adapter_state(nt: Callable[..., AdapterHandle]) -> None:
    handle = nt()
    ns = ns_of(nt)
    ifname = handle.backend.ifname
    a = pub()
    set_config(
        handle, InterfaceConfig(flags=PK, private_key=new_key(), peers=(peer(a, "10.0.1.0/24"),))
    )
    for bad_state in (2, -1, 100):
        assert not api.WireGuardSetAdapterState(handle, bad_state)
        assert api.GetLastError() == E.ERROR_INVALID_PARAMETER
    assert api.WireGuardSetAdapterState(handle, AdapterState.UP)
    assert api.WireGuardSetAdapterState(handle, AdapterState.UP)  # already up: success
    assert api.WireGuardGetAdapterState(handle) == (True, AdapterState.UP)
    assert "UP" in links(ns)[ifname]["flags"]  # type: ignore[operator]
    assert api.WireGuardSetAdapterState(handle, AdapterState.DOWN)
    assert api.WireGuardGetAdapterState(handle) == (True, AdapterState.DOWN)
    assert "UP" not in links(ns)[ifname]["flags"]  # type: ignore[operator]
    assert peer_keys(get_config(handle)) == [a]  # down keeps peers and keys
    # The state is the link state: ip link set is seen too.
    ip(ns, "link", "set", ifname, "up")
    assert api.WireGuardGetAdapterState(handle) == (True, AdapterState.UP)


def test_logging_prefix_backlog_and_timestamps(nt: Callable[..., AdapterHandle]) -> None:
    logs: list[tuple[int, int, str]] = []
    api.WireGuardSetLogger(lambda lvl, ts, msg: logs.append((lvl, ts, msg)))
    before = time.time_ns() // 100 + FILETIME_UNIX_EPOCH
    handle = nt()
    index = api.WireGuardGetAdapterLUID(handle).Info.NetLuidIndex
    set_config(handle, InterfaceConfig(peers=(peer(pub()),)))
    assert logs == []  # adapter logging is off: lines are kept
    assert api.WireGuardSetAdapterLogging(handle, AdapterLogState.ON_WITH_PREFIX)
    after = time.time_ns() // 100 + FILETIME_UNIX_EPOCH
    messages = [m for _, _, m in logs]
    assert messages[:2] == [
        f"{index}: Interface created",
        f"{index}: Peer {messages[1].split()[2]} created",
    ]
    assert all(before <= ts <= after and lvl == LoggerLevel.INFO for lvl, ts, _ in logs)
    assert api.WireGuardSetAdapterLogging(handle, AdapterLogState.ON)
    assert api.WireGuardSetAdapterState(handle, AdapterState.UP)
    assert logs[-1][2] == "Interface up"
    assert api.WireGuardSetAdapterLogging(handle, AdapterLogState.OFF)
    count = len(logs)
    assert api.WireGuardSetAdapterState(handle, AdapterState.DOWN)
    assert len(logs) == count
    # Failures log an ERR line whatever the adapter logging state.
    assert api.WireGuardOpenAdapter("no such adapter " + tag()) is None
    assert logs[-1][0] == LoggerLevel.ERR
    assert logs[-1][2] == "WireGuardOpenAdapter: Element not found. (Code 0x00000490)"
    api.WireGuardSetLogger(None)
    assert api.WireGuardOpenAdapter("no such adapter " + tag()) is None
    assert logs[-1][2].startswith("WireGuardOpenAdapter")
    assert len(logs) == count + 1


def test_interface_deleted_under_the_adapter(
    nt: Callable[..., AdapterHandle], run_dir: Path
) -> None:
    handle = nt()
    ifname = handle.backend.ifname
    ip(ns_of(nt), "link", "del", ifname)
    deadline = time.monotonic() + 10
    while (run_dir / f"{ifname}.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not (run_dir / f"{ifname}.json").exists()
    ok, _ = api.WireGuardGetConfiguration(handle, None, 0)
    assert not ok and api.GetLastError() == E.ERROR_FILE_NOT_FOUND


# ---------------------------------------------------------------------------
# Traffic: tx/rx and last handshake read back
# ---------------------------------------------------------------------------


def test_two_adapters_ping_and_read_back_counters(
    run_dir: Path, netns_factory: Callable[..., str]
) -> None:
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")
    ns_a, ns_b = netns_factory("wgnta"), netns_factory("wgntb")
    veth_pair(ns_a, ns_b, addrs_a=["192.168.77.1/24"], addrs_b=["192.168.77.2/24"])
    ka, kb = new_key(), new_key()
    with (
        call_in_ns(ns_a, Adapter.create, f"A{tag()}", "Test") as a,
        call_in_ns(ns_b, Adapter.create, f"B{tag()}", "Test") as b,
    ):
        a.set_config(
            InterfaceConfig(
                flags=PK | InterfaceFlag.HAS_LISTEN_PORT,
                listen_port=51001,
                private_key=ka,
                peers=(
                    peer(
                        public_key(kb),
                        "10.99.0.2/32",
                        flags=HAS_KEY | PeerFlag.HAS_ENDPOINT,
                        endpoint=("192.168.77.2", 51002),
                    ),
                ),
            )
        )
        b.set_config(
            InterfaceConfig(
                flags=PK | InterfaceFlag.HAS_LISTEN_PORT,
                listen_port=51002,
                private_key=kb,
                peers=(peer(public_key(ka), "10.99.0.1/32"),),
            )
        )
        ifa = a.handle.backend.ifname
        ifb = b.handle.backend.ifname
        ip(ns_a, "addr", "add", "10.99.0.1/24", "dev", ifa)
        ip(ns_b, "addr", "add", "10.99.0.2/24", "dev", ifb)
        a.up()
        b.up()
        before = time.time_ns() // 100 + FILETIME_UNIX_EPOCH
        ping = subprocess.run(
            ["ip", "netns", "exec", ns_a, "ping", "-c", "3", "-i", "0.2", "-W", "5", "10.99.0.2"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert ping.returncode == 0, ping.stdout + ping.stderr
        after = time.time_ns() // 100 + FILETIME_UNIX_EPOCH
        (pa,) = a.get_config().peers
        (pb,) = b.get_config().peers
        assert pa.tx_bytes > 0 and pa.rx_bytes > 0
        assert pb.tx_bytes > 0 and pb.rx_bytes > 0
        assert before - 10_000_000 <= pa.last_handshake <= after
        assert pb.endpoint == ("192.168.77.1", 51001)  # learnt from the handshake


# ---------------------------------------------------------------------------
# A second process
# ---------------------------------------------------------------------------

CHILD = r"""
import json, sys
from wgpy.nt import api
from wgpy.nt.abi import *
name, new_peer = sys.argv[1], bytes.fromhex(sys.argv[2])
h = api.WireGuardOpenAdapter(name.upper())
assert h is not None, api.GetLastError()
out = {}
ok, size = api.WireGuardGetConfiguration(h, None, 0)
buf = bytearray(size)
ok, size = api.WireGuardGetConfiguration(h, buf, size)
cfg = parse_configuration(buf, size)
out["ok"] = ok
out["peers"] = [p.public_key.hex() for p in cfg.peers]
out["port"] = cfg.listen_port
nets = (AllowedIPConfig("10.44.0.0", 16),)
one = PeerConfig(public_key=new_peer, allowed_ips=nets)
add = pack_configuration(InterfaceConfig(peers=(one,)))
out["set"] = api.WireGuardSetConfiguration(h, add, len(add))
bad = bytearray(add); bad[72:76] = (5).to_bytes(4, "little")
out["bad"] = [api.WireGuardSetConfiguration(h, bytes(bad), len(bad)), api.GetLastError()]
out["up"] = api.WireGuardSetAdapterState(h, 1)
out["luid"] = api.WireGuardGetAdapterLUID(h).Value
out["bogus_state"] = [api.WireGuardSetAdapterState(h, 7), api.GetLastError()]
api.WireGuardCloseAdapter(h)
print(json.dumps(out))
"""


def test_second_process_opens_configures_and_raises_state(
    nt: Callable[..., AdapterHandle], netns_factory: Callable[..., str]
) -> None:
    name = f"Shared{tag()}"
    handle = nt(name)
    first = pub()
    set_config(
        handle,
        InterfaceConfig(
            flags=PK | InterfaceFlag.HAS_LISTEN_PORT,
            listen_port=0,
            private_key=new_key(),
            peers=(peer(first, "10.0.1.0/24"),),
        ),
    )
    port = get_config(handle).listen_port
    second = pub()
    # The other process runs in yet another namespace: UAPI and the registry are
    # files, and the link state is reached through the owner's namespace.
    other_ns = netns_factory("wgntc")
    done = python_in_ns(other_ns, CHILD, name, second.hex(), timeout=60)
    out = json.loads(done.stdout)
    assert out["ok"] and out["peers"] == [first.hex()] and out["port"] == port
    assert out["set"] is True
    assert out["bad"] == [False, E.ERROR_INVALID_PARAMETER]
    assert out["up"] is True
    assert out["bogus_state"] == [False, E.ERROR_INVALID_PARAMETER]
    assert out["luid"] == api.WireGuardGetAdapterLUID(handle).Value
    got = get_config(handle)
    assert peer_keys(got) == [first, second]
    assert allowed(got, second) == [("10.44.0.0", 16)]
    assert api.WireGuardGetAdapterState(handle) == (True, AdapterState.UP)
    # The child's close did not remove the adapter.
    assert handle.backend.ifname in links(ns_of(nt))


def test_pythonic_adapter_raises(nt: Callable[..., AdapterHandle]) -> None:
    handle = nt()
    name = handle.backend.display_name()
    with Adapter.open(name) as adapter:
        assert adapter.state == AdapterState.DOWN
        adapter.up()
        assert adapter.state == AdapterState.UP
        with pytest.raises(WireGuardError) as info:
            adapter.set_state(5)
        assert info.value.code == E.ERROR_INVALID_PARAMETER
        adapter.set_config(InterfaceConfig(peers=(peer(pub(), "10.1.2.0/24"),)))
        assert len(adapter.get_config().peers) == 1
        assert adapter.ifindex == api.WireGuardGetAdapterLUID(handle).Info.NetLuidIndex
    with pytest.raises(WireGuardError) as info:
        Adapter.open("missing " + tag())
    assert info.value.code == E.ERROR_NOT_FOUND
    assert isinstance(info.value, OSError)
