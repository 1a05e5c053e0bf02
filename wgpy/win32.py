"""Windows facts shared by the Wintun binding (:mod:`wgpy.tun.wintun`) and
the ``wireguard.h`` ABI (:mod:`wgpy.nt.abi`, which re-exports them): the Win32
error codes both DLLs report, and two limits of Windows adapters.

Plain values only, importable on any platform (the tests run both users on
Linux).  Facts: ``shared/reference/wireguard-h-abi.md`` sections 3 and 4.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Final

__all__ = ["IF_TYPE_PROP_VIRTUAL", "MAX_ADAPTER_NAME", "ErrorCode"]

#: ``MAX_ADAPTER_NAME`` from ipexport.h: names hold at most 127 WCHARs plus NUL.
MAX_ADAPTER_NAME: Final = 128
#: ``IF_TYPE_PROP_VIRTUAL``, the IfType of WireGuard and Wintun adapters (the
#: top 16 bits of their LUID).
IF_TYPE_PROP_VIRTUAL: Final = 53


class ErrorCode(IntEnum):
    """Win32 error codes that ``wireguard.dll`` and ``wintun.dll`` report."""

    ERROR_SUCCESS = 0
    ERROR_INVALID_FUNCTION = 1  # STATUS_NOT_IMPLEMENTED (bad protocol version)
    ERROR_FILE_NOT_FOUND = 2  # driver not loaded
    ERROR_ACCESS_DENIED = 5  # caller not elevated
    ERROR_INVALID_HANDLE = 6
    ERROR_NOT_ENOUGH_MEMORY = 8
    ERROR_INVALID_DATA = 13  # Wintun: ring corrupt
    ERROR_GEN_FAILURE = 31
    ERROR_HANDLE_EOF = 38  # Wintun: adapter terminating
    ERROR_NOT_SUPPORTED = 50  # wgpy: an extension call on an adapter without a userspace side
    ERROR_DUP_NAME = 52
    ERROR_INVALID_PARAMETER = 87
    ERROR_BUFFER_OVERFLOW = 111  # name too long; Wintun: send ring full
    ERROR_INSUFFICIENT_BUFFER = 122
    ERROR_INVALID_NAME = 123
    ERROR_ALREADY_EXISTS = 183
    ERROR_MORE_DATA = 234  # GetConfiguration: buffer too small
    ERROR_NO_MORE_ITEMS = 259  # Wintun: receive ring empty
    ERROR_UNDEFINED_CHARACTER = 583
    ERROR_VERSION_PARSE_ERROR = 777
    ERROR_OPERATION_ABORTED = 995
    ERROR_NOACCESS = 998  # buffer shorter than the byte count claimed
    ERROR_DLL_INIT_FAILED = 1114  # wgpy's C library: the embedded Python did not start
    ERROR_NOT_FOUND = 1168  # OpenAdapter: no such name
    ERROR_ADDRESS_ALREADY_ASSOCIATED = 1227  # wgpy: listen port in use (driver code unverified)
    ERROR_ALREADY_INITIALIZED = 1247  # Wintun: second session on an adapter
    ERROR_INTERNAL_ERROR = 1359  # wgpy: an unexpected Python exception
    ERROR_NO_SYSTEM_RESOURCES = 1450
    ERROR_DEVICE_NOT_AVAILABLE = 4319
    ERROR_OBJECT_ALREADY_EXISTS = 5010
    #: SetupAPI's "driver package in use"; the exact DeleteDriver error is unverified.
    ERROR_INF_IN_USE_BY_DEVICES = 0xE000023D
