"""wireguard.h adapters without a driver or privileges (WGPY_ADAPTER=userspace).

* The C example, run by an unprivileged user (made here) for whom
  /dev/net/tun is inaccessible, in a clean environment (``env -i``) with the
  library built into an installation that user can read: it handshakes with
  a wireguard-go peer, the peer's pings to the adapter's IPv4 and IPv6
  addresses are answered, a second process of the same user opens the
  adapter by name and reads its configuration with the ERROR_MORE_DATA loop,
  the counters and the last handshake grow, ``wgpy show`` as that user finds
  the adapter, and closing it leaves nothing behind.
* The Python API in this mode: UDP both ways with the peer, a packet-session
  round trip, data through a garbage flood at the listen port, and close and
  re-create without leaking sockets, threads or files.
* Bad calls give the same LastError codes as with a TUN adapter.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns import call_in_ns

from wgpy import inet
from wgpy.lab import Lab, Node
from wgpy.noise.primitives import clamp, public_key
from wgpy.nt import api
from wgpy.nt.abi import (
    AllowedIPConfig,
    ErrorCode,
    InterfaceConfig,
    InterfaceFlag,
    PeerConfig,
    PeerFlag,
    pack_configuration,
)
from wgpy.nt.adapter import Adapter

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "nt" / "example.c"
OPEN_CONFIG = Path(__file__).resolve().parent / "nt_c" / "open_config.c"
WAIT = 30.0  # bound for "this will happen"; never a performance assertion

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, a test user)"),
    pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="needs wireguard-go"),
]


# -- an installation an unprivileged user can read ------------------------------------------


class UserInstall:
    """A user made for the test, and a Python installation with wgpy, its
    library and the two C programs, all readable by that user."""

    def __init__(self, root: Path, user: str) -> None:
        self.root = root
        self.user = user
        entry = pwd.getpwnam(user)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.python = root / "venv" / "bin" / "python"
        self.library = Path()
        self.example = root / "example"
        self.open_config = root / "open_config"
        self.no_tun = root / "no-tun"

    def as_user(self, *argv: str, env: dict[str, str] | None = None) -> list[str]:
        """argv run as the user in a clean environment (``env -i``)."""
        clean = [f"{k}={v}" for k, v in {"PATH": "/usr/bin:/bin", **(env or {})}.items()]
        return [
            *("setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"),
            *("env", "-i", *clean, *argv),
        ]

    def runtime_dir(self) -> Path:
        """The user's private wgpy directory (no XDG_RUNTIME_DIR under env -i)."""
        return Path(tempfile.gettempdir()) / f"wgpy-{self.uid}"


def _copy_dependencies(site: Path) -> None:
    """cffi, cryptography and PyNaCl of this interpreter (same CPython 3.11 ABI)."""
    here = Path(sysconfig.get_paths()["purelib"])
    wanted = ("cffi", "_cffi_backend", "pycparser", "cryptography", "nacl", "PyNaCl")
    for entry in here.iterdir():
        if entry.name.startswith(wanted):
            target = site / entry.name
            if entry.is_dir():
                shutil.copytree(entry, target)
            else:
                shutil.copy2(entry, target)


_SITE_DIR = "import site; print(site.getsitepackages()[0])"


@pytest.fixture(scope="module")
def install() -> Iterator[UserInstall]:
    for tool in ("gcc", "setpriv", "unshare", "useradd", "userdel"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    system_python = Path("/usr/bin/python3")
    if not system_python.exists():
        pytest.skip("needs the system's python3 (a base any user can read)")
    user = f"wgpyu{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
        check=True,
        capture_output=True,
    )
    root = Path(tempfile.mkdtemp(prefix="wgpy-user-", dir="/tmp"))
    try:
        root.chmod(0o755)
        subprocess.run(
            [str(system_python), "-m", "venv", "--without-pip", str(root / "venv")],
            check=True,
            capture_output=True,
        )
        site = Path(
            subprocess.run(
                [str(root / "venv" / "bin" / "python"), "-c", _SITE_DIR],
                check=True,
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
        # wgpy itself, as a normal (not editable) install, and its dependencies.
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
             "--target", str(site), str(REPO)],
            check=True,
            capture_output=True,
        )  # fmt: skip
        _copy_dependencies(site)
        inst = UserInstall(root, user)
        env = {"PATH": "/usr/bin:/bin", "WGPY_CACHE_DIR": str(root / "cache"), "HOME": str(root)}
        built = subprocess.run(
            [str(inst.python), "-m", "wgpy.nt", "--library-path"],
            env=env,
            capture_output=True,
            text=True,
            cwd=root,
        )
        assert built.returncode == 0, built.stderr
        inst.library = Path(built.stdout.strip())
        include = site / "wgpy" / "nt" / "include"
        for source, exe in ((EXAMPLE, inst.example), (OPEN_CONFIG, inst.open_config)):
            done = subprocess.run(
                ["gcc", "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{include}", str(source),
                 "-ldl", "-o", str(exe)],
                capture_output=True,
                text=True,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
        inst.no_tun.write_bytes(b"")
        inst.no_tun.chmod(0)
        subprocess.run(["chmod", "-R", "a+rX", str(root)], check=True)
        inst.no_tun.chmod(0)
        yield inst
        shutil.rmtree(inst.runtime_dir(), ignore_errors=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["userdel", user], capture_output=True, check=False)


def _peer_lab(lab: Lab, net: int) -> tuple[str, str, Node]:
    """Namespaces A (ours) and B with a wireguard-go peer at 192.168.<net>.2,
    tunnel addresses 10.<net>.0.2/24 and fd<net>::2/64."""
    ns_a, ns_b = lab.namespace("usa"), lab.namespace("usb")
    lab.veth(ns_a, ns_b, [f"192.168.{net}.1/24"], [f"192.168.{net}.2/24"])
    go = lab.start(ns_b, "wireguard-go")
    go.configure(51800 + net, address=[f"10.{net}.0.2/24", f"fd{net}::2/64"])
    return ns_a, ns_b, go


def _stats(lines: list[str]) -> list[tuple[int, int, int]]:
    out = []
    for line in lines:
        m = re.match(r"(?:stats|peer) rx_bytes=(\d+) tx_bytes=(\d+) last_handshake=(\d+)", line)
        if m:
            out.append((int(m[1]), int(m[2]), int(m[3])))
    return out


def test_c_example_as_an_unprivileged_user_without_tun(install: UserInstall) -> None:
    name = f"wgu{secrets.token_hex(3)}"  # a valid interface name: the adapter keeps it
    with Lab() as lab:
        ns_a, ns_b, go = _peer_lab(lab, 93)
        # Inside its own mount namespace the user's /dev/net/tun is a file it
        # cannot open; the adapter must not need it.
        user_env = {"WGPY_ADAPTER": "userspace"}
        example = install.as_user(
            str(install.example), str(install.library), name, "generate", go.public_b64,
            "192.168.93.2:51893", "10.93.0.1/24,fd93::1/64", "10.93.0.2/32,fd93::2/128",
            str(int(WAIT)), env=user_env,
        )  # fmt: skip
        probe = install.as_user("sh", "-c", "exec 3<>/dev/net/tun")
        script = (
            f"mount --bind {install.no_tun} /dev/net/tun && "
            f"if {shlex.join(probe)} 2>/dev/null; then echo TUN-OPEN; exit 3; fi; "
            f"exec {shlex.join(example)}"
        )
        err_path = install.root / f"{name}.stderr"
        with open(err_path, "wb") as err:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", ns_a, "unshare", "-m", "sh", "-c", script],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        watchdog = threading.Timer(3 * WAIT, proc.kill)
        watchdog.start()
        lines: list[str] = []
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline().split()
            assert first[:1] == ["public_key"], (first, err_path.read_text(errors="replace"))
            ours = base64.b64decode(first[1], validate=True)
            go.add_peer(ours, allowed_ips=["10.93.0.1/32", "fd93::1/128"])
            ready = proc.stdout.readline().split()
            assert ready[:1] == ["ready"], (ready, err_path.read_text(errors="replace"))
            assert ready[1] == "-" and int(ready[2]) >= 0x800000 and ready[3] == "v0.1"
            # The peer pings the adapter's addresses: the built-in host answers.
            for addr in ("10.93.0.1", "fd93::1"):
                done = lab.run(ns_b, "ping", "-c", "3", "-i", "0.2", "-W", "5", addr, check=False)
                assert done.returncode == 0, (addr, done.stdout, err_path.read_text())
            # A second process of the same user opens it by name and reads it.
            reads = []
            for _ in range(2):
                out = lab.run(
                    ns_a, *install.as_user(str(install.open_config), str(install.library), name)
                )
                assert "peers 1" in out.stdout, out.stdout + out.stderr
                assert int(out.stdout.split("rounds ")[1]) >= 1  # the ERROR_MORE_DATA loop ran
                reads.append(_stats(out.stdout.splitlines())[0])
                lab.run(ns_b, "ping", "-c", "2", "-i", "0.2", "10.93.0.1", check=False)
                time.sleep(1.2)
            (rx1, tx1, hs1), (rx2, tx2, hs2) = reads
            assert rx2 > rx1 > 0 and tx2 > tx1 > 0 and hs2 >= hs1 > 0
            # wgpy show, as the user, finds the socket in the user's directory.
            shown = lab.run(
                ns_a, *install.as_user(str(install.python), "-m", "wgpy.cli", "show", name)
            )
            assert go.public_b64 in shown.stdout, shown.stdout + shown.stderr
            sock = install.runtime_dir() / "wireguard" / f"{name}.sock"
            record = install.runtime_dir() / "nt" / f"{name}.json"
            assert sock.exists() and record.exists()
            lines = proc.stdout.read().splitlines()
            proc.wait(timeout=2 * WAIT)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 0, err_path.read_text(errors="replace")
        counters = _stats(lines)
        assert counters[-1][0] > counters[0][0] and counters[-1][2] > 0
        # Closing the adapter removed its socket and record.
        assert not sock.exists() and not record.exists()
        # The peer saw a real handshake from the user's adapter.
        (peer,) = go.dump()
        assert peer.latest_handshake > 0 and peer.rx_bytes > 0


# -- the Python API in this mode --------------------------------------------------------------

_ECHO_SERVER = """
import select, socket, sys
socks = []
for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, 9999))
    socks.append(s)
print("ready", flush=True)
while True:
    for s in select.select(socks, [], [])[0]:
        data, src = s.recvfrom(65535)
        s.sendto(b"echo:" + data, src)
"""

_GARBAGE = """
import os, socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pool = [os.urandom(n % 1400) for n in range(1, 512)]
pool += [bytes([1, 0, 0, 0]) + os.urandom(144) for _ in range(256)]
sent, end = 0, time.monotonic() + seconds
while time.monotonic() < end and sent < 2_000_000:
    for p in pool:
        s.sendto(p, (host, port))
    sent += len(pool)
print(sent, flush=True)
"""


def _configure(adapter: Adapter, peer: Node, port: int, net: int) -> bytes:
    """Our key, port and the peer; returns our public key."""
    private = clamp(os.urandom(32))
    adapter.set_config(
        InterfaceConfig(
            flags=InterfaceFlag.HAS_PRIVATE_KEY | InterfaceFlag.HAS_LISTEN_PORT,
            listen_port=port,
            private_key=private,
            peers=(
                PeerConfig(
                    flags=PeerFlag.HAS_PUBLIC_KEY
                    | PeerFlag.HAS_ENDPOINT
                    | PeerFlag.HAS_PERSISTENT_KEEPALIVE,
                    public_key=peer.public,
                    endpoint=(f"192.168.{net}.2", 51800 + net),
                    persistent_keepalive=25,
                    allowed_ips=(
                        AllowedIPConfig(f"10.{net}.0.2", 32),
                        AllowedIPConfig(f"fd{net}::2", 128),
                    ),
                ),
            ),
        )
    )
    return public_key(private)


def _resources() -> tuple[int, int, set[str]]:
    from wgpy import paths

    files: set[str] = set()
    for d in [*paths.uapi_directories(), *paths.registry_directories()]:
        with contextlib.suppress(OSError):
            files |= {os.path.join(d, f) for f in os.listdir(d) if f != ".lock"}
    return len(os.listdir("/proc/self/fd")), threading.active_count(), files


def _echo(sock: object, dst: str, payload: bytes, attempts: int = 5) -> bytes | None:
    from wgpy.tun.userspace import TunnelSocket

    assert isinstance(sock, TunnelSocket)
    sock.settimeout(2.0)
    for _ in range(attempts):
        sock.sendto(payload, (dst, 9999))
        try:
            data, _src = sock.recvfrom()
        except TimeoutError:
            continue
        if data == b"echo:" + payload:
            return data
    return None


def test_python_api_udp_session_flood_and_clean_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WGPY_NT_RUN_DIR", tempfile.mkdtemp(prefix="wgpy-nt-"))
    with Lab() as lab:
        ns_a, ns_b, go = _peer_lab(lab, 94)
        server = lab.popen(ns_b, sys.executable, "-c", _ECHO_SERVER)
        before = _resources()
        for cycle in range(3):
            adapter = call_in_ns(
                ns_a,
                Adapter.create,
                f"py{secrets.token_hex(2)}",
                inner="userspace",
                addresses="10.94.0.1/24,fd94::1/64",
            )
            try:
                assert adapter.addresses == ["10.94.0.1/24", "fd94::1/64"]
                port = 51700 + cycle
                pub = _configure(adapter, go, port, 94)
                go.add_peer(pub, allowed_ips=["10.94.0.1/32", "fd94::1/128"])
                adapter.up()
                v4, v6 = adapter.udp_socket(socket.AF_INET), adapter.udp_socket(socket.AF_INET6)
                assert _echo(v4, "10.94.0.2", b"hello v4") is not None
                assert _echo(v6, "fd94::2", b"hello v6") is not None
                # Packet access: our own echo request, the peer's kernel replies.
                with adapter.start_session() as session:
                    request = inet.echo_packet("10.94.0.1", "10.94.0.2", 4242, 1, b"raw")
                    session.send_packet(request)
                    deadline = time.monotonic() + WAIT
                    reply = None
                    while reply is None and time.monotonic() < deadline:
                        if session.wait(1.0):
                            packet = session.receive_packet()
                            echo = inet.parse_echo(packet) if packet else None
                            if echo is not None and echo.reply and echo.ident == 4242:
                                reply = echo
                    assert reply is not None and reply.src == "10.94.0.2"
                if cycle == 0:
                    # Garbage at the listen port while the tunnel carries data.
                    flood = lab.popen(
                        ns_b, sys.executable, "-c", _GARBAGE, "192.168.94.1", str(port), "4"
                    )
                    time.sleep(0.5)
                    answered = sum(
                        _echo(v4, "10.94.0.2", f"under flood {i}".encode(), attempts=3) is not None
                        for i in range(40)
                    )
                    flood.wait(timeout=60)
                    sent = int(lab.output(flood).split()[0])
                    assert sent > 10_000
                    assert answered == 40, f"{answered}/40 echoed during {sent} junk datagrams"
                v4.close()
                v6.close()
                go.remove_peer(pub)
            finally:
                adapter.close()
            time.sleep(0.3)  # threads of the closed adapter end
            fds, threads, files = _resources()
            assert (fds, threads, files) == before, (cycle, before, (fds, threads, files))
        lab.stop_process(server)


# -- bad calls: the same LastError in both modes -------------------------------------------------


def _bad_call_codes(inner: str) -> list[tuple[str, int]]:
    """Run a set of bad calls against a fresh adapter; (call, LastError) pairs."""
    results: list[tuple[str, int]] = []
    name = f"bad{secrets.token_hex(2)}"
    kwargs = {"inner": inner} if inner == "userspace" else {}
    first = api.WireGuardCreateAdapter(name, "wgpy", None, **kwargs)  # type: ignore[arg-type]
    assert first is not None, api.GetLastError()
    second = api.WireGuardCreateAdapter(name + "x", "wgpy", None, **kwargs)  # type: ignore[arg-type]
    assert second is not None, api.GetLastError()
    try:

        def note(what: str, ok: object) -> None:
            assert not ok, what
            results.append((what, api.GetLastError()))

        note("set state 2", api.WireGuardSetAdapterState(first, 2))
        note("set config garbage", api.WireGuardSetConfiguration(first, b"\xff" * 10, 10))
        note("set config short", api.WireGuardSetConfiguration(first, bytes(80), 200))
        ok, _ = api.WireGuardGetConfiguration(first, bytearray(8), 8)
        note("get config small", ok)
        note("open unknown", api.WireGuardOpenAdapter(name + "-none"))
        note("create empty name", api.WireGuardCreateAdapter("", "wgpy", None))
        buf = pack_configuration(
            InterfaceConfig(flags=InterfaceFlag.HAS_LISTEN_PORT, listen_port=51990)
        )
        assert api.WireGuardSetConfiguration(first, buf, len(buf))
        note("port in use", api.WireGuardSetConfiguration(second, buf, len(buf)))
        api.WireGuardCloseAdapter(second)
        note("closed handle", api.WireGuardSetAdapterState(second, 1))
        second = None
    finally:
        api.WireGuardCloseAdapter(first)
        if second is not None:
            api.WireGuardCloseAdapter(second)
    return results


def test_bad_calls_give_the_same_errors_as_a_tun_adapter(
    netns_factory: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WGPY_NT_RUN_DIR", tempfile.mkdtemp(prefix="wgpy-nt-"))
    make = netns_factory
    assert callable(make)
    tun = call_in_ns(make(), _bad_call_codes, "tun")
    userspace = call_in_ns(make(), _bad_call_codes, "userspace")
    assert userspace == tun
    codes = dict(tun)
    assert codes["set state 2"] == ErrorCode.ERROR_INVALID_PARAMETER
    assert codes["get config small"] == ErrorCode.ERROR_MORE_DATA
    assert codes["port in use"] == ErrorCode.ERROR_ADDRESS_ALREADY_ASSOCIATED
    assert codes["closed handle"] == ErrorCode.ERROR_INVALID_HANDLE
    assert codes["open unknown"] == ErrorCode.ERROR_NOT_FOUND
