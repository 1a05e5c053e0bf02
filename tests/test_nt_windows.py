"""The Windows path of wgpy.nt (wgpy/nt/windows.py) and the portable pieces it uses.

What runs where:

* everywhere (Linux and the Windows CI job): the UAPI stream framing the named-pipe
  server uses, over a socket pair; the adapter registry;
* Linux only: a whole adapter on the Wintun shim (the Linux test double of
  wintun.dll) behind :class:`EventBridgeTun`, pinging a /dev/net/tun adapter;
* Windows only: the named-pipe server itself (needs an elevated process, which the
  GitHub runners are) and loading a real wintun.dll given in $WGPY_WINTUN_DLL.
  None of these has been run by the authors (docs/nt.md).
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wgpy.device import Device, Output
from wgpy.noise.primitives import clamp, public_key
from wgpy.nt.registry import AdapterRecord, Registry, fold_name, valid_ifname
from wgpy.nt.windows import PIPE_PREFIX, pipe_path, serve_uapi_stream
from wgpy.uapi import parse_get_response, uapi_get

LINUX = sys.platform.startswith("linux")
WINDOWS = sys.platform == "win32"


class Backend:
    """A UAPI backend without I/O.  (The runtime itself does not import on Windows
    yet, so these tests avoid it.)"""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.device = Device()
        self.port = 0
        self.mark = 0

    def clock(self) -> tuple[float, int]:
        return time.monotonic(), time.time_ns()

    def get_listen_port(self) -> int:
        return self.port

    def set_listen_port(self, port: int) -> None:
        self.port = port

    def get_fwmark(self) -> int:
        return self.mark

    def set_fwmark(self, mark: int) -> None:
        self.mark = mark

    def submit(self, out: Output) -> None:
        pass


# ---------------------------------------------------------------------------
# UAPI framing over a stream (portable)
# ---------------------------------------------------------------------------


@pytest.fixture
def stream_backend() -> Iterator[tuple[socket.socket, Backend]]:
    """A client socket talking to serve_uapi_stream over an I/O-free backend."""
    iface = Backend()
    server, client = socket.socketpair()
    lock = threading.Lock()

    def send(data: bytes) -> None:
        server.sendall(data)

    def serve() -> None:
        serve_uapi_stream(server.recv, send, iface, lock)
        server.shutdown(socket.SHUT_RDWR)  # as the pipe server closes the handle

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield client, iface
    finally:
        client.close()
        thread.join(10)
        server.close()


def _answer(sock: socket.socket) -> str:
    buf = b""
    while not buf.endswith(b"\n\n"):
        chunk = sock.recv(65536)
        if not chunk:
            break
        buf += chunk
    return buf.decode()


def test_stream_get_and_set(stream_backend: tuple[socket.socket, Backend]) -> None:
    client, iface = stream_backend
    private = clamp(secrets.token_bytes(32))
    peer = public_key(clamp(secrets.token_bytes(32)))
    client.sendall(
        b"set=1\nprivate_key=" + private.hex().encode() + b"\nlisten_port=4242\n"
        b"public_key=" + peer.hex().encode() + b"\nallowed_ip=10.1.0.0/16\n\n"
    )
    assert _answer(client) == "errno=0\n\n"
    # Several operations on one connection, as wg does not but the protocol allows.
    client.sendall(b"get=1\n\n")
    text = _answer(client)
    assert text == uapi_get(iface)
    cfg = parse_get_response(text)
    assert cfg.private_key == private and cfg.listen_port == 4242
    assert [p.public_key for p in cfg.peers] == [peer]
    assert cfg.peers[0].allowed_ips == ["10.1.0.0/16"]
    client.sendall(b"set=1\nlisten_port=99999\n\n")
    assert _answer(client) == "errno=-22\n\n"
    client.sendall(b"get=1\nx")  # get must be followed by a blank line
    assert _answer(client) == "errno=-22\n\n"


def test_stream_unknown_operation_ends_the_connection(
    stream_backend: tuple[socket.socket, Backend],
) -> None:
    client, _ = stream_backend
    client.sendall(b"hello=1\n\n")
    assert client.recv(100) == b""


def test_pipe_path() -> None:
    assert PIPE_PREFIX == "\\\\.\\pipe\\ProtectedPrefix\\Administrators\\WireGuard\\"
    assert pipe_path("wg0") == r"\\.\pipe\ProtectedPrefix\Administrators\WireGuard\wg0"


# ---------------------------------------------------------------------------
# Registry (portable: flock on Linux, msvcrt.locking on Windows)
# ---------------------------------------------------------------------------


def test_registry_entries_and_names(tmp_path: Path) -> None:
    registry = Registry(str(tmp_path / "run"))
    me = os.getpid()
    record = AdapterRecord("Tunnel One", "tun1", 7, "T", "", me, 0, "", "x")
    with registry.locked():
        registry.write(record)
        assert registry.entries() == [record]
        renamed = registry.rename(record, "Tunnel One 1")
    assert registry.find("TUNNEL ONE 1") == renamed
    assert registry.find("tunnel one") is None
    assert fold_name("ÄbC") == "Äbc"  # only ASCII letters fold
    assert valid_ifname("wg0") and not valid_ifname("a b") and not valid_ifname("x" * 16)
    assert not valid_ifname("wg%d") and not valid_ifname("ü")
    with registry.locked():
        derived = registry.choose_ifname("Tunnel One", lambda n: False)
        assert valid_ifname(derived) and derived.startswith("TunnelOne-")
        assert registry.choose_ifname("tun1", lambda n: False) != "tun1"  # taken by the entry
        assert registry.choose_ifname("free0", lambda n: n == "free0") != "free0"
        registry.remove("tun1", pid=me + 1)  # someone else's entry is left alone
        assert registry.entries() == [renamed]
        registry.remove("tun1", pid=me)
        assert registry.entries() == []


# ---------------------------------------------------------------------------
# A whole adapter over the Wintun shim (Linux, test double)
# ---------------------------------------------------------------------------


def _build_double(out: Path) -> Path:
    path = Path(__file__).resolve().parent / "wintun_double" / "build.py"
    spec = importlib.util.spec_from_file_location("wintun_double_build", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built: Path = module.build_double(out)
    return built


@pytest.mark.skipif(not LINUX, reason="the Wintun test double is a Linux library")
def test_adapter_on_the_wintun_shim_pings(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    netns_factory: Callable[..., str],
) -> None:
    if shutil.which("gcc") is None:
        pytest.skip("needs gcc to build the Wintun test double")
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("needs /dev/net/tun")
    from netns import call_in_ns, ip, veth_pair

    from wgpy.nt.abi import AllowedIPConfig, InterfaceConfig, InterfaceFlag, PeerConfig, PeerFlag
    from wgpy.nt.adapter import Adapter
    from wgpy.nt.windows import EventBridgeTun

    double = _build_double(tmp_path)
    monkeypatch.setenv("WGPY_NT_RUN_DIR", str(tmp_path / "run"))
    ns_a, ns_b = netns_factory("wgwa"), netns_factory("wgwb")
    veth_pair(ns_a, ns_b, addrs_a=["192.168.93.1/24"], addrs_b=["192.168.93.2/24"])
    ka, kb = clamp(secrets.token_bytes(32)), clamp(secrets.token_bytes(32))
    t = secrets.token_hex(3)
    monkeypatch.setenv("WGPY_WINTUN_DLL", str(double))
    monkeypatch.setenv("WGPY_NT_TUN", "wintun")
    a = call_in_ns(ns_a, Adapter.create, f"wa{t}", "Test")
    monkeypatch.setenv("WGPY_NT_TUN", "linux")
    try:
        b = call_in_ns(ns_b, Adapter.create, f"wb{t}", "Test")
        with a, b:
            assert isinstance(a.handle.backend.iface.tun, EventBridgeTun)
            has_key = PeerFlag.HAS_PUBLIC_KEY
            a.set_config(
                InterfaceConfig(
                    flags=InterfaceFlag.HAS_PRIVATE_KEY | InterfaceFlag.HAS_LISTEN_PORT,
                    listen_port=51093,
                    private_key=ka,
                    peers=(
                        PeerConfig(
                            flags=has_key | PeerFlag.HAS_ENDPOINT,
                            public_key=public_key(kb),
                            endpoint=("192.168.93.2", 51094),
                            allowed_ips=(AllowedIPConfig("10.93.0.2", 32),),
                        ),
                    ),
                )
            )
            b.set_config(
                InterfaceConfig(
                    flags=InterfaceFlag.HAS_PRIVATE_KEY | InterfaceFlag.HAS_LISTEN_PORT,
                    listen_port=51094,
                    private_key=kb,
                    peers=(
                        PeerConfig(
                            public_key=public_key(ka),
                            allowed_ips=(AllowedIPConfig("10.93.0.1", 32),),
                        ),
                    ),
                )
            )
            ip(ns_a, "addr", "add", "10.93.0.1/24", "dev", f"wa{t}")
            ip(ns_b, "addr", "add", "10.93.0.2/24", "dev", f"wb{t}")
            a.up()
            b.up()
            ping = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns_a,
                    "ping",
                    "-c",
                    "3",
                    "-i",
                    "0.2",
                    "-W",
                    "5",
                    "10.93.0.2",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert ping.returncode == 0, ping.stdout + ping.stderr
            (peer,) = a.get_config().peers
            assert peer.rx_bytes > 0 and peer.tx_bytes > 0
    finally:
        a.close()


# ---------------------------------------------------------------------------
# Windows only
# ---------------------------------------------------------------------------


@pytest.mark.skipif(not WINDOWS, reason="named pipes are Windows-only")
def test_named_pipe_server_round_trip() -> None:
    from wgpy.nt.windows import NamedPipeUapiServer, PipeUapiClient

    iface = Backend()
    name = f"wgpytest{secrets.token_hex(3)}"
    server = NamedPipeUapiServer(name, iface)
    try:
        server.start()
    except OSError as exc:
        pytest.skip(f"cannot create the UAPI pipe here (needs an elevated process): {exc}")
    try:
        client = PipeUapiClient(server.path)
        peer = public_key(clamp(secrets.token_bytes(32)))
        client.set(["listen_port=4243", f"public_key={peer.hex()}"])
        cfg = client.get()
        assert cfg.listen_port == 4243
        assert [p.public_key for p in cfg.peers] == [peer]
    finally:
        server.close()


@pytest.mark.skipif(not WINDOWS, reason="wintun.dll is Windows-only")
def test_real_wintun_dll_loads() -> None:
    path = os.environ.get("WGPY_WINTUN_DLL")
    if not path:
        pytest.skip("set WGPY_WINTUN_DLL to a wintun.dll to run this")
    from wgpy.tun.wintun import WintunError, WintunLibrary

    library = WintunLibrary(path)
    try:
        version = library.running_driver_version()
    except WintunError as exc:
        assert exc.error_code == 2  # ERROR_FILE_NOT_FOUND: driver not loaded
    else:
        assert version > 0
