"""The TUN device interface the runtime drives, and its end-of-life signal."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["ReadySignal", "TunClosed", "TunDevice"]


class TunClosed(Exception):
    """The TUN device is gone: closed by us, or its interface was deleted.

    Raised by ``read_batch``/``write_batch``.  On Linux the kernel reports a
    deleted interface (``ip link del``) with EBADFD on every read, write and
    TUN ioctl of the still-open file descriptor, and poll() reports POLLERR.
    The runtime treats this as "shut down cleanly".
    """


@runtime_checkable
class TunDevice(Protocol):
    """A layer-3 packet device: whole IPv4/IPv6 packets in, whole packets out.

    Reads and writes never block.  ``fileno()`` becomes readable when
    ``read_batch`` has something to return (or the device has vanished), so a
    selector can wait on it.
    """

    @property
    def name(self) -> str:
        """Interface name."""
        ...

    @property
    def mtu(self) -> int:
        """Current interface MTU in bytes."""
        ...

    #: Drop and error counters by reason (for example ``write_einval``).
    stats: dict[str, int]

    def fileno(self) -> int:
        """Descriptor to wait on for readability; -1 once closed."""
        ...

    def read_batch(self, max_packets: int = 64) -> list[bytes]:
        """Packets readable now, about ``max_packets``; ``[]`` if none.

        With offloads, one read can be a super-packet whose segments are
        never split across calls, so a batch may exceed ``max_packets`` by
        up to one super-packet's segments (about 45).
        """
        ...

    def write_batch(self, packets: Sequence[bytes | memoryview]) -> None:
        """Write IP packets; ones the kernel refuses are dropped and counted."""
        ...

    def close(self) -> None:
        """Release the device; idempotent."""
        ...

    @property
    def closed(self) -> bool:
        """True after ``close()`` or once the interface has vanished."""
        ...


class ReadySignal:
    """A descriptor that is readable exactly while it is set: one end of a
    socket pair that holds one byte while set (sockets, so ``select`` works on
    Windows too).  Callers serialise :meth:`set` and :meth:`clear` with their
    own lock."""

    def __init__(self) -> None:
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._set = False
        self._closed = False

    def fileno(self) -> int:
        """The descriptor to wait on; -1 once closed."""
        return -1 if self._closed else self._r.fileno()

    def set(self) -> None:
        """Make the descriptor readable (idempotent)."""
        if not self._set and not self._closed:
            self._set = True
            with contextlib.suppress(BlockingIOError, OSError):
                self._w.send(b"\0")

    def clear(self) -> None:
        """Make it unreadable again (idempotent)."""
        if self._set and not self._closed:
            self._set = False
            with contextlib.suppress(BlockingIOError, OSError):
                self._r.recv(64)

    def close(self) -> None:
        """Close both ends; idempotent."""
        if not self._closed:
            self._closed = True
            self._r.close()
            self._w.close()
