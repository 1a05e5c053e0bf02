"""An in-process TUN device for tests of the runtime: queues instead of a kernel."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence

from ..constants import DEFAULT_MTU, IO_BATCH_SIZE
from .base import ReadySignal, TunClosed

__all__ = ["MemoryTun"]


class MemoryTun:
    """A :class:`~wgpy.tun.base.TunDevice` backed by in-memory queues.

    ``inject(packet)`` queues a packet for ``read_batch`` (as if the local
    stack had routed it into the interface); ``write_batch`` appends to
    ``written``.  ``fileno()`` is one end of a socketpair that is readable
    exactly while packets are queued or after :meth:`remove`, so selectors and
    poll loops work as with a real device.  Writes get the same sanity check
    the Linux TUN applies (first nibble must be 4 or 6, else a counted
    ``write_einval`` drop).  Thread-safe.
    """

    stats: dict[str, int]

    def __init__(self, name: str = "mem0", mtu: int = DEFAULT_MTU) -> None:
        """Make a device called ``name`` reporting ``mtu``."""
        self._name = name
        self.mtu = mtu
        self.stats = {}
        self.written: list[bytes] = []
        self._queue: deque[bytes] = deque()
        self._lock = threading.Lock()
        self._ready = ReadySignal()
        self._closed = False
        self._removed = False

    @property
    def name(self) -> str:
        """The device name."""
        return self._name

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or :meth:`remove`."""
        return self._closed or self._removed

    def fileno(self) -> int:
        """Readable while packets are queued or once removed; -1 once closed."""
        return -1 if self._closed else self._ready.fileno()

    def inject(self, packet: bytes | bytearray | memoryview) -> None:
        """Queue one packet for the next ``read_batch``."""
        with self._lock:
            if self._closed or self._removed:
                raise TunClosed(f"memory TUN {self._name} is closed")
            self._queue.append(bytes(packet))
            self._ready.set()

    def inject_batch(self, packets: Sequence[bytes | bytearray | memoryview]) -> None:
        """Queue several packets at once."""
        for packet in packets:
            self.inject(packet)

    def remove(self) -> None:
        """Simulate ``ip link del``: later reads and writes raise TunClosed."""
        with self._lock:
            self._removed = True
            self._queue.clear()
            if not self._closed:
                self._ready.set()  # the kernel reports POLLERR: the loop wakes up

    def read_batch(self, max_packets: int = IO_BATCH_SIZE) -> list[bytes]:
        """Dequeue up to ``max_packets`` injected packets; ``[]`` if none."""
        with self._lock:
            if self._closed or self._removed:
                raise TunClosed(f"memory TUN {self._name} is closed")
            queue = self._queue
            out = [queue.popleft() for _ in range(min(max_packets, len(queue)))]
            if not queue:
                self._ready.clear()
            return out

    def write_batch(self, packets: Sequence[bytes | memoryview]) -> None:
        """Record packets in ``written``; non-IP ones are dropped and counted."""
        with self._lock:
            if self._closed or self._removed:
                raise TunClosed(f"memory TUN {self._name} is closed")
            for packet in packets:
                data = bytes(packet)
                if not data or data[0] >> 4 not in (4, 6):
                    self.stats["write_einval"] = self.stats.get("write_einval", 0) + 1
                    continue
                self.written.append(data)

    def pending(self) -> int:
        """Packets injected but not yet read."""
        with self._lock:
            return len(self._queue)

    def close(self) -> None:
        """Close the socketpair; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._ready.close()

    def __enter__(self) -> MemoryTun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MemoryTun {self._name} queued={len(self._queue)}>"
