"""Two userspace wireguard.h adapters peered over loopback: no driver, no
root, no namespace, so it runs anywhere (the Windows workflow runs it too:
the user-level named pipe and the session's event handle are exercised
there).  Also: the C example compiles for Windows with mingw-w64."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from wgpy import inet, paths
from wgpy.noise.primitives import clamp, public_key
from wgpy.nt import api
from wgpy.nt.abi import (
    AllowedIPConfig,
    ErrorCode,
    InterfaceConfig,
    InterfaceFlag,
    PeerConfig,
    PeerFlag,
)
from wgpy.nt.adapter import Adapter

REPO = Path(__file__).resolve().parent.parent
INCLUDE = REPO / "wgpy" / "nt" / "include"


def _config(
    private: bytes, port: int, peer: bytes, peer_port: int, peer_ip: str
) -> InterfaceConfig:
    return InterfaceConfig(
        flags=InterfaceFlag.HAS_PRIVATE_KEY | InterfaceFlag.HAS_LISTEN_PORT,
        listen_port=port,
        private_key=private,
        peers=(
            PeerConfig(
                flags=PeerFlag.HAS_PUBLIC_KEY | PeerFlag.HAS_ENDPOINT,
                public_key=peer,
                endpoint=("127.0.0.1", peer_port),
                allowed_ips=(AllowedIPConfig(peer_ip, 32),),
            ),
        ),
    )


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Adapter, Adapter]]:
    monkeypatch.setenv("WGPY_NT_RUN_DIR", tempfile.mkdtemp(prefix="wgpy-nt-"))
    monkeypatch.setenv("WGPY_ADAPTER", "userspace")  # as an unmodified program would
    monkeypatch.setenv("WGPY_ADAPTER_ADDRESSES", "ulocal-a=10.95.0.1/24;ulocal-b=10.95.0.2/24")
    ka, kb = clamp(os.urandom(32)), clamp(os.urandom(32))
    a = Adapter.create("ulocal-a")
    b = Adapter.create("ulocal-b")
    try:
        ports = []
        for _ in range(2):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                probe.bind(("127.0.0.1", 0))
                ports.append(probe.getsockname()[1])
        a.set_config(_config(ka, ports[0], public_key(kb), ports[1], "10.95.0.2"))
        b.set_config(_config(kb, ports[1], public_key(ka), ports[0], "10.95.0.1"))
        a.up()
        b.up()
        yield a, b
    finally:
        a.close()
        b.close()


def test_two_userspace_adapters_carry_udp_and_raw_packets(pair: tuple[Adapter, Adapter]) -> None:
    a, b = pair
    assert a.addresses == ["10.95.0.1/24"] and b.addresses == ["10.95.0.2/24"]
    server = b.udp_socket(socket.AF_INET)
    server.bind(("", 5353))
    client = a.udp_socket(socket.AF_INET)
    for sock in (server, client):
        sock.settimeout(15)
    client.sendto(b"through the tunnel", ("10.95.0.2", 5353))
    data, source = server.recvfrom()
    assert data == b"through the tunnel" and source[0] == "10.95.0.1"
    server.sendto(b"and back", source)
    assert client.recvfrom() == (b"and back", ("10.95.0.2", 5353))
    # Raw packets through A's session; B's built-in host answers the echo.
    session = api.WgpyStartSession(a.handle, 64, api.TAKE_OVER)
    assert session is not None
    try:
        assert api.WgpyGetReadWaitEvent(session) not in (-1, 0)
        assert api.WgpyReceivePacket(session) is None
        assert api.GetLastError() == ErrorCode.ERROR_NO_MORE_ITEMS
        assert api.WgpySendPacket(session, inet.echo_packet("10.95.0.1", "10.95.0.2", 7, 1, b"?"))
        assert session.wait(15)
        reply = inet.parse_echo(api.WgpyReceivePacket(session) or b"")
        assert reply is not None and reply.reply and reply.src == "10.95.0.2"
        assert not api.WgpySendPacket(session, b"\x00 not ip")
        assert api.GetLastError() == ErrorCode.ERROR_INVALID_PARAMETER
    finally:
        api.WgpyEndSession(session)
    # Another handle, opened by name, sees the same adapter and its counters.
    other = Adapter.open("ULOCAL-A")
    try:
        (peer,) = other.get_config().peers
        assert peer.rx_bytes > 0 and peer.tx_bytes > 0 and peer.last_handshake > 0
    finally:
        other.close()
    server.close()
    client.close()


def test_extensions_refuse_what_they_do_not_apply_to(pair: tuple[Adapter, Adapter]) -> None:
    a, _ = pair
    assert not api.WgpySetAdapterAddresses(a.handle, "10.0.0.1/33")
    assert api.GetLastError() == ErrorCode.ERROR_INVALID_PARAMETER
    assert a.addresses == ["10.95.0.1/24"]  # unchanged
    first = api.WgpyStartSession(a.handle)
    assert api.WgpyStartSession(a.handle) is None
    assert api.GetLastError() == ErrorCode.ERROR_ALREADY_INITIALIZED
    api.WgpyEndSession(first)
    assert api.WgpyStartSession(a.handle, 0) is None
    assert api.GetLastError() == ErrorCode.ERROR_INVALID_PARAMETER
    # A handle opened by name in the owning process reaches the same adapter.
    opened = api.WireGuardOpenAdapter("ulocal-a")
    assert opened is not None
    try:
        assert api.WgpySetAdapterAddresses(opened, "10.95.0.1/24,fd95::1/64")
        assert a.addresses == ["10.95.0.1/24", "fd95::1/64"]
    finally:
        api.WireGuardCloseAdapter(opened)
    # A closed handle is refused as with every other call.
    assert not api.WgpySetAdapterAddresses(opened, "10.95.0.1/24")
    assert api.GetLastError() == ErrorCode.ERROR_INVALID_HANDLE


def test_closing_leaves_no_socket_or_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGPY_NT_RUN_DIR", tempfile.mkdtemp(prefix="wgpy-nt-"))
    adapter = Adapter.create("ulocal-c", inner="userspace", addresses="10.96.0.1/24")
    record = Path(os.environ["WGPY_NT_RUN_DIR"]) / "ulocal-c.json"
    assert record.exists()
    if sys.platform != "win32":
        sock = paths.find_uapi_socket("ulocal-c")
        assert sock is not None and os.path.exists(sock)
    adapter.close()
    assert not record.exists()
    if sys.platform != "win32":
        assert paths.find_uapi_socket("ulocal-c") is None


@pytest.mark.parametrize("fails", ["record", "uapi-server"])
def test_a_failed_creation_undoes_everything(monkeypatch: pytest.MonkeyPatch, fails: str) -> None:
    # Whatever step of creating an adapter fails, the caller gets the error
    # and nothing is left: no descriptor, no thread, no socket, no record.
    import threading

    from wgpy.nt import backend

    run_dir = Path(tempfile.mkdtemp(prefix="wgpy-nt-"))
    monkeypatch.setenv("WGPY_NT_RUN_DIR", str(run_dir))

    def broken(*_args: object, **_kw: object) -> None:
        raise OSError(28, "No space left on device")

    if fails == "record":  # the last step, with interface and server running
        monkeypatch.setattr(backend, "_steal_name", broken)
    else:
        real = backend._user_uapi_server

        def server(ifname: str, iface: object) -> object:
            made = real(ifname, iface)  # type: ignore[arg-type]
            monkeypatch.setattr(made, "start", broken)
            return made

        monkeypatch.setattr(backend, "_user_uapi_server", server)
    fds = set(os.listdir("/proc/self/fd")) if sys.platform != "win32" else set()
    threads = set(threading.enumerate())
    with pytest.raises(OSError, match="WireGuardCreateAdapter"):
        Adapter.create("ulocal-f", inner="userspace", addresses="10.96.1.1/24")
    assert set(threading.enumerate()) <= threads
    if sys.platform != "win32":
        assert set(os.listdir("/proc/self/fd")) == fds
        assert paths.find_uapi_socket("ulocal-f") is None
    assert list(run_dir.glob("*.json")) == []


@pytest.mark.skipif(sys.platform == "win32", reason="cross-compiles from Linux")
def test_the_c_example_compiles_for_windows_with_mingw(tmp_path: Path) -> None:
    cc = shutil.which("x86_64-w64-mingw32-gcc")
    assert cc is not None, "CI installs gcc-mingw-w64-x86-64 (.ci/run)"
    out = tmp_path / "example.exe"
    done = subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}",
         str(REPO / "examples" / "nt" / "example.c"), "-lbcrypt", "-liphlpapi", "-o", str(out)],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:2] == b"MZ"
    # The structure checks are compile-time asserts: a wrong layout must fail.
    broken = tmp_path / "broken.c"
    broken.write_text(
        '#include "wireguard.h"\n'
        '_Static_assert(sizeof(WIREGUARD_PEER) == 137, "layout");\n'
        "int main(void) { return 0; }\n"
    )
    done = subprocess.run(
        [cc, "-std=c11", f"-I{INCLUDE}", str(broken), "-o", str(tmp_path / "b.exe")],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "layout" in done.stderr
