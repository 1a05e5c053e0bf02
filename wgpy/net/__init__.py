"""UDP sockets: the network side of the I/O shell."""

from __future__ import annotations

from .udp import UdpBind

__all__ = ["UdpBind"]
