"""Network-namespace helpers for tests that need real interfaces.

Every namespace and interface made here gets a unique name (prefix, pid and a
random suffix) and every namespace is deleted when its context exits, even when
the body raised.  Deleting a namespace also deletes the interfaces inside it
(and veth peers in other namespaces), so tests need no further cleanup.

Typical use::

    with netns("tun") as ns:
        ip(ns, "link", "add", "dummy0", "type", "dummy")
        tun = call_in_ns(ns, LinuxTun.create, "wgt0")   # fd lives in ns

    with netns("a") as a, netns("b") as b:
        va, vb = veth_pair(a, b, addrs_a=["10.9.0.1/24"], addrs_b=["10.9.0.2/24"])
        run_in_ns(b, ["ping", "-c1", "10.9.0.1"])

``call_in_ns`` runs a Python callable on a fresh thread that has entered the
namespace with setns(2); sockets and TUN devices it creates belong to that
namespace for their whole life, while the test itself stays in its own one.
``python_in_ns`` runs a separate interpreter via ``ip netns exec``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

__all__ = [
    "NETNS_DIR",
    "CommandFailed",
    "call_in_ns",
    "have_netns_support",
    "ip",
    "netns",
    "netns_exists",
    "popen_in_ns",
    "python_in_ns",
    "run_in_ns",
    "unique_ifname",
    "veth_pair",
]

T = TypeVar("T")

NETNS_DIR = Path("/run/netns")
_CLONE_NEWNET = 0x40000000
_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_TIMEOUT = 30.0


def have_netns_support() -> str | None:
    """Return None when namespaces can be made here, else the missing thing."""
    if os.geteuid() != 0:
        return "root (CAP_SYS_ADMIN/CAP_NET_ADMIN) for network namespaces"
    if not any(Path(d, "ip").exists() for d in ("/usr/sbin", "/sbin", "/usr/bin", "/bin")):
        return "the iproute2 'ip' command"
    return None


def _unique(prefix: str, width: int) -> str:
    """``prefix`` + 6 random hex digits, with the prefix cut to fit ``width``."""
    token = secrets.token_hex(3)
    return prefix[: max(0, width - len(token))] + token


def unique_ifname(prefix: str = "wgt") -> str:
    """An interface name unlikely to collide, at most 15 bytes (IFNAMSIZ - 1)."""
    return _unique(prefix, 15)


def netns_exists(name: str) -> bool:
    """True when the named namespace is registered under /run/netns."""
    return (NETNS_DIR / name).exists()


class CommandFailed(subprocess.CalledProcessError):
    """A helper command failed; its message includes the command's stderr."""

    def __str__(self) -> str:
        err = (self.stderr or b"").decode(errors="replace").strip()
        return f"{super().__str__()} stderr: {err}" if err else super().__str__()


def _run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        list(argv), capture_output=True, timeout=timeout, input=input, check=False
    )
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, list(argv), proc.stdout, proc.stderr)
    return proc


@contextlib.contextmanager
def netns(name_prefix: str = "wgpyt") -> Iterator[str]:
    """Create a fresh namespace (with ``lo`` up), yield its name, always delete it."""
    name = f"{name_prefix}-{os.getpid()}-{secrets.token_hex(4)}"
    _run(["ip", "netns", "add", name])
    try:
        _run(["ip", "-n", name, "link", "set", "lo", "up"])
        yield name
    finally:
        # Deleting the namespace removes every interface that lives in it.
        _run(["ip", "netns", "del", name], check=False)


def ip(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run ``ip -n NS ARGS...``; raise CalledProcessError (with stderr) on failure."""
    return _run(["ip", "-n", ns, *args], check=check)


def veth_pair(
    ns_a: str,
    ns_b: str,
    *,
    name_a: str | None = None,
    name_b: str | None = None,
    addrs_a: Sequence[str] = (),
    addrs_b: Sequence[str] = (),
    up: bool = True,
    nodad: bool = True,
) -> tuple[str, str]:
    """Create a veth pair with one end in ``ns_a`` and the other in ``ns_b``.

    ``ns_a`` may equal ``ns_b``.  Addresses are CIDR strings; IPv6 ones get
    ``nodad`` by default so they are usable at once.  Returns the two interface
    names.  Nothing to delete: the pair dies with either namespace.
    """
    name_a = name_a or unique_ifname("va")
    name_b = name_b or unique_ifname("vb")
    for n in (name_a, name_b):
        if len(n.encode()) > 15:
            raise ValueError(f"interface name too long: {n!r}")
    _run(
        [
            "ip",
            "link",
            "add",
            name_a,
            "netns",
            ns_a,
            "type",
            "veth",
            "peer",
            "name",
            name_b,
            "netns",
            ns_b,
        ]
    )
    for ns, dev, addrs in ((ns_a, name_a, addrs_a), (ns_b, name_b, addrs_b)):
        for addr in addrs:
            extra = ["nodad"] if nodad and ":" in addr else []
            ip(ns, "addr", "add", addr, "dev", dev, *extra)
        if up:
            ip(ns, "link", "set", dev, "up")
    return name_a, name_b


def run_in_ns(
    ns: str,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command inside ``ns`` (``ip netns exec``) and capture its output."""
    return _run(["ip", "netns", "exec", ns, *argv], check=check, timeout=timeout, input=input)


def _python_env() -> dict[str, str]:
    env = dict(os.environ)
    paths = [str(_REPO_ROOT), str(_REPO_ROOT / "tests")]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def python_in_ns(
    ns: str,
    code: str,
    *args: str,
    check: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -c CODE ARGS...`` inside ``ns`` with the repo on ``sys.path``."""
    argv = ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args]
    proc = subprocess.run(
        argv, capture_output=True, timeout=timeout, input=input, env=_python_env(), check=False
    )
    if check and proc.returncode != 0:
        raise CommandFailed(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc


@contextlib.contextmanager
def popen_in_ns(
    ns: str, argv: Sequence[str], **kwargs: object
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a background process inside ``ns``; terminate (then kill) it on exit.

    Only the process started here (and its process group) is signalled.
    """
    kwargs.setdefault("env", _python_env())
    proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
        ["ip", "netns", "exec", ns, *argv], start_new_session=True, **kwargs
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


# CDLL(None) is the running process's symbols on POSIX; None elsewhere (Windows).
_libc = ctypes.CDLL(None, use_errno=True) if os.name == "posix" else None


def _setns(fd: int) -> None:
    if _libc is None:
        raise OSError("network namespaces need Linux")
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def call_in_ns(ns: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
    """Call ``fn(*args, **kwargs)`` on a new thread inside namespace ``ns``.

    The thread enters ``ns`` with setns(2) and ends after the call, so the
    caller's own namespace never changes.  Sockets, TUN devices and other
    namespace-bound objects created by ``fn`` stay in ``ns``.  The result is
    returned; an exception raised by ``fn`` is re-raised here.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(NETNS_DIR / ns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(fn(*args, **kwargs))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=body, name=f"netns-{ns}", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]
