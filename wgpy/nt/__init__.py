"""The WireGuardNT ``wireguard.h`` API surface.

For now this re-exports the ABI layer (:mod:`wgpy.nt.abi`): ctypes structures with
the Windows layout, the enums and error codes, and the configuration-buffer codec.
The adapter functions (``WireGuardCreateAdapter`` and friends) come later.
"""

from __future__ import annotations

from wgpy.nt.abi import *  # noqa: F403
from wgpy.nt.abi import __all__ as _abi_all

__all__ = list(_abi_all)
