"""Linux helpers for wgpy.nt: network namespaces and interface flags.

An adapter lives in the network namespace of the thread that created it.  Later
calls may come from any thread (or another process), so everything that must happen
"inside" that namespace (binding UDP sockets, setting the link up) goes through
:func:`call_in_netns`, which runs a function on a short-lived thread that entered the
namespace with setns(2) when the caller is not already there.
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
    "open_thread_netns",
    "same_netns",
    "set_link_up",
]

T = TypeVar("T")

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("16sH22x")

_libc: ctypes.CDLL | None = None


def _setns(fd: int) -> None:
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


def same_netns(fd: int) -> bool:
    """Whether the calling thread is in the namespace ``fd`` refers to."""
    a = os.fstat(fd)
    b = os.stat(_thread_netns_path())
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


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
                _setns(fd)
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


def set_link_up(sock: socket.socket, ifname: str, up: bool) -> None:
    """Set or clear IFF_UP on ``ifname`` in the namespace of ``sock``."""
    flags = _flags(sock, ifname)
    new = (flags | _IFF_UP) if up else (flags & ~_IFF_UP)
    if new != flags:
        fcntl.ioctl(sock, _SIOCSIFFLAGS, _IFREQ_FLAGS.pack(ifname.encode(), new & 0xFFFF))


def link_gone(exc: OSError) -> bool:
    """Whether an interface ioctl failed because the interface no longer exists."""
    return exc.errno in (errno.ENODEV, errno.ENXIO)
