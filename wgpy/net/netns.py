"""Linux network namespaces and interface flags, for the I/O shell.

An interface lives in a network namespace that need not be the calling thread's:
a wireguard.h adapter stays in the namespace of the thread that created it, and a
TUN link may be moved to another namespace (``ip link set IFACE netns OTHER``)
while its process, UAPI socket and UDP sockets stay where they were.  Whatever
must happen "inside" a namespace (binding UDP sockets, an ioctl socket for the
link's flags, a netlink socket for its events) goes through :func:`call_in_netns`,
which runs a function on a short-lived thread that entered the namespace with
setns(2) when the caller is not already there; sockets keep the namespace they
were created in for their whole life.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import socket
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

__all__ = [
    "call_in_netns",
    "get_link_up",
    "get_mtu",
    "link_gone",
    "netns_identity",
    "open_thread_netns",
    "same_netns",
    "set_link_up",
    "setns",
]

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_SIOCGIFMTU = 0x8921
_IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sH22x")  # struct ifreq: name + short flags, 40 bytes
_IFREQ_INT = struct.Struct("16si20x")  # struct ifreq: name + int (mtu, ifindex)

_libc: ctypes.CDLL | None = None


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace ``fd`` refers to."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _thread_netns_path() -> str:
    return f"/proc/self/task/{threading.get_native_id()}/ns/net"


def open_thread_netns() -> int:
    """An O_RDONLY descriptor of the calling thread's network namespace."""
    return os.open(_thread_netns_path(), os.O_RDONLY | os.O_CLOEXEC)


def netns_identity(fd: int) -> tuple[int, int]:
    """(device, inode) of the namespace ``fd`` refers to: equal for equal namespaces."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def same_netns(fd: int) -> bool:
    """Whether the calling thread is in the namespace ``fd`` refers to."""
    b = os.stat(_thread_netns_path())
    return netns_identity(fd) == (b.st_dev, b.st_ino)


def call_in_netns(target: int | str, fn: Callable[[], T]) -> T:
    """``fn()`` inside the namespace ``target`` (a descriptor or a path to open).

    Runs in the calling thread when it is already there, else on a helper thread
    that enters the namespace first (the caller's own namespace never changes).
    """
    fd = target if isinstance(target, int) else os.open(target, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if same_netns(fd):
            return fn()
        result: list[T] = []
        error: list[BaseException] = []

        def body() -> None:
            try:
                setns(fd)
                result.append(fn())
            except BaseException as exc:
                error.append(exc)

        thread = threading.Thread(target=body, name="wgpy-nt-netns", daemon=True)
        thread.start()
        thread.join()
        if error:
            raise error[0]
        return result[0]
    finally:
        if not isinstance(target, int):
            os.close(fd)


def _flags(sock: socket.socket, ifname: str) -> int:
    req = fcntl.ioctl(sock, _SIOCGIFFLAGS, _IFREQ_FLAGS.pack(ifname.encode(), 0))
    return int(_IFREQ_FLAGS.unpack(req)[1])


def get_link_up(sock: socket.socket, ifname: str) -> bool:
    """IFF_UP of ``ifname`` in the namespace of ``sock`` (OSError ENODEV if gone)."""
    return bool(_flags(sock, ifname) & _IFF_UP)


def get_mtu(sock: socket.socket, ifname: str) -> int:
    """The MTU of ``ifname`` in the namespace of ``sock`` (OSError ENODEV if gone)."""
    req = fcntl.ioctl(sock, _SIOCGIFMTU, _IFREQ_INT.pack(ifname.encode(), 0))
    return int(_IFREQ_INT.unpack(req)[1])


def set_link_up(sock: socket.socket, ifname: str, up: bool) -> None:
    """Set or clear IFF_UP on ``ifname`` in the namespace of ``sock``."""
    flags = _flags(sock, ifname)
    new = (flags | _IFF_UP) if up else (flags & ~_IFF_UP)
    if new != flags:
        fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ_FLAGS.pack(ifname.encode(), new & 0xFFFF))


def link_gone(exc: OSError) -> bool:
    """Whether an interface ioctl failed because the interface no longer exists."""
    return exc.errno in (errno.ENODEV, errno.ENXIO)
