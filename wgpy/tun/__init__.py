"""TUN devices: the packet side of the I/O shell.

``TunDevice`` is the interface the runtime uses; ``MemoryTun`` is an
in-process implementation for tests.  The Linux device is in
:mod:`wgpy.tun.linux` (imported on demand, it needs ``fcntl``).
"""

from __future__ import annotations

from .base import TunClosed, TunDevice
from .memory import MemoryTun

__all__ = ["MemoryTun", "TunClosed", "TunDevice"]
