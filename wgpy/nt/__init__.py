"""The WireGuardNT ``wireguard.h`` API over wgpy's userspace engine.

* :mod:`wgpy.nt.abi` - ctypes structures with the Windows layout, enums, error
  codes and the configuration-buffer codec (re-exported here);
* :mod:`wgpy.nt.api` - the twelve functions with the header's names and error
  convention (return value + :func:`GetLastError`), also reachable as
  ``wgpy.nt.WireGuardCreateAdapter`` and so on;
* :mod:`wgpy.nt.adapter` - :class:`Adapter`, a context manager that raises
  :class:`WireGuardError`;
* ``python -m wgpy.nt --library-path`` - the C-ABI shared library (built with cffi)
  that C programs load instead of ``wireguard.dll``; ``--include-path`` - the
  directory of our ``wireguard.h``;
* :mod:`wgpy.nt.wireguard_dll` - the same interface over the real ``wireguard.dll``
  (Windows).

The API modules are imported lazily, so ``import wgpy.nt`` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wgpy.nt.abi import *  # noqa: F403
from wgpy.nt.abi import WIREGUARD_FUNCTIONS
from wgpy.nt.abi import __all__ as _abi_all
from wgpy.nt.errors import GetLastError, SetLastError, WireGuardError

if TYPE_CHECKING:
    from wgpy.nt.adapter import Adapter
    from wgpy.nt.api import (
        AdapterHandle,
        WgpyApi,
        WireGuardCloseAdapter,
        WireGuardCreateAdapter,
        WireGuardDeleteDriver,
        WireGuardGetAdapterLUID,
        WireGuardGetAdapterState,
        WireGuardGetConfiguration,
        WireGuardGetRunningDriverVersion,
        WireGuardOpenAdapter,
        WireGuardSetAdapterLogging,
        WireGuardSetAdapterState,
        WireGuardSetConfiguration,
        WireGuardSetLogger,
    )

_FUNCTIONS = WIREGUARD_FUNCTIONS
_LAZY = {
    "Adapter": "wgpy.nt.adapter",
    "AdapterHandle": "wgpy.nt.api",
    "WgpyApi": "wgpy.nt.api",
    **dict.fromkeys(_FUNCTIONS, "wgpy.nt.api"),
}

__all__ = [
    *_abi_all,
    "WireGuardCloseAdapter",
    "WireGuardCreateAdapter",
    "WireGuardDeleteDriver",
    "WireGuardGetAdapterLUID",
    "WireGuardGetAdapterState",
    "WireGuardGetConfiguration",
    "WireGuardGetRunningDriverVersion",
    "WireGuardOpenAdapter",
    "WireGuardSetAdapterLogging",
    "WireGuardSetAdapterState",
    "WireGuardSetConfiguration",
    "WireGuardSetLogger",
    "Adapter",
    "AdapterHandle",
    "GetLastError",
    "SetLastError",
    "WgpyApi",
    "WireGuardError",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'wgpy.nt' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
