"""The TUN device interface the runtime drives, and its end-of-life signal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

__all__ = ["TunClosed", "TunDevice"]


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
