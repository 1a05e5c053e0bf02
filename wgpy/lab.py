"""A small network-namespace lab for demos, interop tests, conformance runs
and benchmarks (needs root).

:class:`Lab` creates namespaces and veth pairs, starts userspace WireGuard
implementations in the foreground (wgpy, wireguard-go, or any command that
follows the ``PROGRAM -f INTERFACE`` convention), configures them with the
real ``wg`` and ``ip``, and on exit ends exactly the processes it started
(by PID) and deletes everything it created, also after a failure.
"""

from __future__ import annotations

import base64
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType

from wgpy.constants import UAPI_SOCKET_DIRECTORY
from wgpy.noise.primitives import clamp, public_key

__all__ = [
    "IMPLEMENTATIONS",
    "WIREGUARD_GO_MODERN",
    "WIREGUARD_GO_MODERN_ENV",
    "Lab",
    "LabError",
    "Node",
    "PeerDump",
    "find_wireguard_go_modern",
]

SOCKET_DIR = UAPI_SOCKET_DIRECTORY


def _wgpy_argv(ifname: str) -> list[str]:
    return [sys.executable, "-m", "wgpy.daemon", "-f", ifname]


def _wggo_argv(ifname: str) -> list[str]:
    return ["wireguard-go", "-f", ifname]


#: The current wireguard-go release people run (TUN offloads, UDP GSO/GRO),
#: as a static build; Debian's ``wireguard-go`` (0.0.20220316) predates both.
WIREGUARD_GO_MODERN = "wireguard-go-0.0.20250522"
#: Environment variable naming that binary's path (overrides the search).
WIREGUARD_GO_MODERN_ENV = "WGPY_WIREGUARD_GO_MODERN"


def find_wireguard_go_modern() -> str | None:
    """Path of the modern wireguard-go binary, or None.

    Looked for in ``$WGPY_WIREGUARD_GO_MODERN``, then in ``shared/tools/bin/``
    beside the repository or any directory above it (the project's tool
    shelf, ``../shared/tools/bin/``), ``/work/shared/tools/bin/``, then on
    PATH.  A set variable that names no executable is an error, not a
    fallback, so a typo cannot silently measure another build.
    """
    wanted = os.environ.get(WIREGUARD_GO_MODERN_ENV)
    if wanted:
        if not (os.path.isfile(wanted) and os.access(wanted, os.X_OK)):
            raise LabError(f"{WIREGUARD_GO_MODERN_ENV}={wanted} is not an executable file")
        return wanted
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parents = [here]
    while os.path.dirname(parents[-1]) != parents[-1]:
        parents.append(os.path.dirname(parents[-1]))
    for base in [*parents, "/work"]:
        path = os.path.join(base, "shared", "tools", "bin", WIREGUARD_GO_MODERN)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which(WIREGUARD_GO_MODERN)


def _wggo_modern_argv(ifname: str) -> list[str]:
    path = find_wireguard_go_modern()
    if path is None:
        raise LabError(
            f"{WIREGUARD_GO_MODERN} not found: put it in ../shared/tools/bin/ or set "
            f"{WIREGUARD_GO_MODERN_ENV}"
        )
    return [path, "-f", ifname]


#: Userspace implementations the lab can start, by name.
IMPLEMENTATIONS = {
    "wgpy": _wgpy_argv,
    "wireguard-go": _wggo_argv,
    "wireguard-go-modern": _wggo_modern_argv,
}


class LabError(Exception):
    """A lab step failed; the message names the command and its output."""


@dataclass
class PeerDump:
    """One peer line of ``wg show IFACE dump``."""

    public_key: str
    preshared_key: str
    endpoint: str
    allowed_ips: str
    latest_handshake: int
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: str


@dataclass
class Node:
    """A WireGuard interface in a namespace, run by some implementation."""

    lab: Lab
    ns: str
    ifname: str
    impl: str
    proc: subprocess.Popen[bytes]
    private: bytes = field(default_factory=lambda: clamp(secrets.token_bytes(32)))

    @property
    def public(self) -> bytes:
        """Static public key."""
        return public_key(self.private)

    @property
    def public_b64(self) -> str:
        """Static public key, base64."""
        return base64.b64encode(self.public).decode()

    def sh(self, *argv: str, timeout: float = 30.0, check: bool = True) -> str:
        """Run a command in this node's namespace; returns stdout."""
        return self.lab.run(self.ns, *argv, timeout=timeout, check=check).stdout

    def wg(self, *args: str, timeout: float = 60.0) -> str:
        """``wg ARGS`` against this interface's namespace (UAPI socket)."""
        return self.sh("wg", *args, timeout=timeout)

    def set_private_key(self, private: bytes | None = None) -> None:
        """Set (or generate and set) the interface's private key."""
        if private is not None:
            self.private = clamp(private)
        self.wg("set", self.ifname, "private-key", self.lab.key_file(self.private))

    def configure(
        self,
        listen_port: int,
        *,
        address: Sequence[str] = (),
        mtu: int = 1420,
        up: bool = True,
    ) -> None:
        """Private key, listen port, addresses, MTU and link state."""
        self.wg(
            "set",
            self.ifname,
            "private-key",
            self.lab.key_file(self.private),
            "listen-port",
            str(listen_port),
        )
        for addr in address:
            self.sh("ip", "address", "add", addr, "dev", self.ifname)
        self.sh("ip", "link", "set", self.ifname, "mtu", str(mtu))
        if up:
            self.sh("ip", "link", "set", self.ifname, "up")

    def add_peer(
        self,
        other: Node | bytes,
        *,
        allowed_ips: Sequence[str],
        endpoint: str | None = None,
        psk: bytes | None = None,
        keepalive: int | None = None,
    ) -> None:
        """Add or update a peer with ``wg set``."""
        pub = other.public if isinstance(other, Node) else other
        argv = ["set", self.ifname, "peer", base64.b64encode(pub).decode()]
        argv += ["allowed-ips", ",".join(allowed_ips)]
        if endpoint:
            argv += ["endpoint", endpoint]
        if psk is not None:
            argv += ["preshared-key", self.lab.key_file(psk)]
        if keepalive is not None:
            argv += ["persistent-keepalive", str(keepalive)]
        self.wg(*argv)

    def remove_peer(self, other: Node | bytes) -> None:
        """Remove a peer with ``wg set ... remove``."""
        pub = other.public if isinstance(other, Node) else other
        self.wg("set", self.ifname, "peer", base64.b64encode(pub).decode(), "remove")

    def dump(self) -> list[PeerDump]:
        """Peers as ``wg show IFACE dump`` reports them."""
        lines = self.wg("show", self.ifname, "dump").splitlines()[1:]
        out = []
        for line in lines:
            f = line.split("\t")
            out.append(PeerDump(f[0], f[1], f[2], f[3], int(f[4]), int(f[5]), int(f[6]), f[7]))
        return out

    def ping(self, addr: str, count: int = 1, size: int = 56, timeout: float = 5.0) -> bool:
        """True if all ``count`` pings of ``size`` bytes got replies."""
        ping = "ping6" if ":" in addr else "ping"
        done = self.lab.run(
            self.ns,
            ping,
            "-c",
            str(count),
            "-i",
            "0.2",
            "-s",
            str(size),
            "-W",
            str(int(timeout)),
            addr,
            timeout=timeout * count + 10,
            check=False,
        )
        return done.returncode == 0

    def alive(self) -> bool:
        """Whether the implementation's process is still running."""
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the implementation (by PID) and wait; returns its status."""
        return self.lab.stop_process(self.proc, timeout)


class Lab:
    """Namespaces, links and processes that are all undone on exit."""

    def __init__(self, tag: str | None = None) -> None:
        self.tag = tag or secrets.token_hex(3)
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.sockets: list[str] = []
        self.logs: dict[int, str] = {}
        self._tmp = tempfile.TemporaryDirectory(prefix="wgpy-lab-")
        self._counter = 0

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- commands -------------------------------------------------------------

    def run(
        self, ns: str | None, *argv: str, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (in namespace ``ns`` unless None)."""
        full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
        try:
            done = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"timed out after {timeout} s: {' '.join(full)}") from exc
        if check and done.returncode != 0:
            raise LabError(
                f"{' '.join(full)} exited {done.returncode}: {(done.stderr or done.stdout).strip()}"
            )
        return done

    def popen(
        self, ns: str | None, *argv: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start a background process the lab will end on exit."""
        full = ["ip", "netns", "exec", ns, *argv] if ns else list(argv)
        # Output goes to a file, never a pipe: a chatty daemon must not block.
        self._counter += 1
        log_path = os.path.join(self._tmp.name, f"p{self._counter}.log")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                full, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )
        self.processes.append(proc)
        self.logs[proc.pid] = log_path
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        """What a process started with :meth:`popen` printed so far."""
        try:
            with open(self.logs[proc.pid], "rb") as fh:
                return fh.read().decode(errors="replace")
        except (KeyError, OSError):
            return ""

    def stop_process(self, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL if needed.  Only our own children."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(timeout=5)
        return proc.returncode

    def key_file(self, key: bytes) -> str:
        """A 0600 file holding ``key`` in base64 (for ``wg set ... private-key``)."""
        self._counter += 1
        path = os.path.join(self._tmp.name, f"k{self._counter}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(base64.b64encode(key).decode() + "\n")
        return path

    # -- topology ----------------------------------------------------------------

    def namespace(self, hint: str) -> str:
        """Create a namespace with ``lo`` up."""
        name = f"wgpy-{hint}-{self.tag}"
        self.run(None, "ip", "netns", "add", name)
        self.namespaces.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")
        return name

    def veth(
        self,
        ns_a: str,
        ns_b: str,
        addrs_a: Sequence[str] = (),
        addrs_b: Sequence[str] = (),
        names: tuple[str, str] = ("veth0", "veth0"),
    ) -> tuple[str, str]:
        """A veth pair between two namespaces, with addresses, both up."""
        tmp_a, tmp_b = f"va{self.tag}", f"vb{self.tag}"
        self.run(None, "ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        self.run(None, "ip", "link", "set", tmp_a, "netns", ns_a, "name", names[0])
        self.run(None, "ip", "link", "set", tmp_b, "netns", ns_b, "name", names[1])
        for ns, dev, addrs in ((ns_a, names[0], addrs_a), (ns_b, names[1], addrs_b)):
            for addr in addrs:
                extra = ["nodad"] if ":" in addr else []
                self.run(ns, "ip", "address", "add", addr, "dev", dev, *extra)
            self.run(ns, "ip", "link", "set", dev, "up")
        return names

    def start(
        self,
        ns: str,
        impl: str | Sequence[str],
        ifname: str | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 20.0,
    ) -> Node:
        """Start a userspace implementation in the foreground and wait for its
        UAPI socket.  ``impl`` is a name in IMPLEMENTATIONS or an argv prefix
        to which ``-f IFNAME`` is appended."""
        self._counter += 1
        ifname = ifname or f"wg{self._counter}{self.tag}"[:15]
        if isinstance(impl, str):
            argv = IMPLEMENTATIONS[impl](ifname)
            name = impl
        else:
            argv = [*impl, "-f", ifname]
            name = os.path.basename(impl[0])
        full_env = dict(os.environ, WG_PROCESS_FOREGROUND="1", **(env or {}))
        proc = self.popen(ns, *argv, env=full_env)
        path = os.path.join(SOCKET_DIR, ifname + ".sock")
        self.sockets.append(path)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"{name} exited during start-up: {self.output(proc).strip()}")
            if os.path.exists(path):
                return Node(self, ns, ifname, name, proc)
            time.sleep(0.05)
        raise LabError(f"{name} did not create {path} within {timeout} s")

    # -- teardown ------------------------------------------------------------------

    def close(self) -> None:
        """End our processes, delete our namespaces, sockets and key files."""
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                self.stop_process(proc, timeout=5)
        self.processes.clear()
        for ns in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        self.namespaces.clear()
        for path in self.sockets:
            with contextlib.suppress(OSError):
                os.unlink(path)
        self.sockets.clear()
        self._tmp.cleanup()
