"""The key-log file writer of a running interface (``WGPY_KEYLOG_FILE``);
the format is :mod:`wgpy.keylog`'s."""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["KeylogFile"]


class KeylogFile:
    """Appends key-log blocks to a file (created 0600), whole lines at once,
    from any thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def write(self, block: str) -> None:
        """Append ``block``; errors are swallowed (logging must not stop the tunnel)."""
        with self._lock:
            if self._fd is None:
                return
            with contextlib.suppress(OSError):
                os.write(self._fd, block.encode())

    def close(self) -> None:
        """Close the file (later writes are ignored)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
