"""Win32-style errors for the wireguard.h API: a per-thread last error and an exception.

The header's functions report failure as NULL/FALSE/0 and leave a Win32 error code
behind, read with ``GetLastError()``.  :func:`GetLastError` and :func:`SetLastError` are
the Python equivalents (one value per thread, as on Windows); :class:`WireGuardError`
is what the Pythonic layer (:mod:`wgpy.nt.adapter`) raises instead.

:data:`MESSAGES` holds the short system texts used in the ERR log line that every
failing call emits, and :func:`errno_for` maps a code to the errno that the C library
also sets on Linux.
"""

from __future__ import annotations

import errno
import threading

from wgpy.nt.abi import ErrorCode

__all__ = [
    "MESSAGES",
    "GetLastError",
    "SetLastError",
    "WireGuardError",
    "errno_for",
    "error_message",
]

_state = threading.local()


def GetLastError() -> int:
    """The Win32 error code of this thread's most recent failing call (0 if none).

    As on Windows, a successful call may leave the value unchanged.
    """
    return int(getattr(_state, "code", 0))


def SetLastError(code: int) -> None:
    """Set this thread's last error code."""
    _state.code = int(code) & 0xFFFF_FFFF


#: Short system texts for the codes this API reports (the Windows wording).
MESSAGES: dict[int, str] = {
    ErrorCode.ERROR_SUCCESS: "The operation completed successfully.",
    ErrorCode.ERROR_INVALID_FUNCTION: "Incorrect function.",
    ErrorCode.ERROR_FILE_NOT_FOUND: "The system cannot find the file specified.",
    ErrorCode.ERROR_ACCESS_DENIED: "Access is denied.",
    ErrorCode.ERROR_INVALID_HANDLE: "The handle is invalid.",
    ErrorCode.ERROR_NOT_ENOUGH_MEMORY: "Not enough memory resources are available.",
    ErrorCode.ERROR_GEN_FAILURE: "A device attached to the system is not functioning.",
    ErrorCode.ERROR_DUP_NAME: "A duplicate name exists on the network.",
    ErrorCode.ERROR_INVALID_PARAMETER: "The parameter is incorrect.",
    ErrorCode.ERROR_BUFFER_OVERFLOW: "The file name is too long.",
    ErrorCode.ERROR_INVALID_NAME: "The file name syntax is incorrect.",
    ErrorCode.ERROR_MORE_DATA: "More data is available.",
    ErrorCode.ERROR_NOACCESS: "Invalid access to memory location.",
    ErrorCode.ERROR_DLL_INIT_FAILED: "A dynamic link library (DLL) initialization routine failed.",
    ErrorCode.ERROR_NOT_FOUND: "Element not found.",
    ErrorCode.ERROR_ADDRESS_ALREADY_ASSOCIATED: "The address is already in use.",
    ErrorCode.ERROR_INTERNAL_ERROR: "An internal error occurred.",
    ErrorCode.ERROR_DEVICE_NOT_AVAILABLE: "The device is not ready for use.",
    ErrorCode.ERROR_INF_IN_USE_BY_DEVICES: "The INF is in use by devices.",
}


def error_message(code: int) -> str:
    """The system text for ``code`` (a generic one for codes not in :data:`MESSAGES`)."""
    return MESSAGES.get(code, "Unknown error.")


_ERRNO: dict[int, int] = {
    ErrorCode.ERROR_INVALID_FUNCTION: errno.ENOSYS,
    ErrorCode.ERROR_FILE_NOT_FOUND: errno.ENOENT,
    ErrorCode.ERROR_ACCESS_DENIED: errno.EACCES,
    ErrorCode.ERROR_INVALID_HANDLE: errno.EBADF,
    ErrorCode.ERROR_NOT_ENOUGH_MEMORY: errno.ENOMEM,
    ErrorCode.ERROR_GEN_FAILURE: errno.EIO,
    ErrorCode.ERROR_DUP_NAME: errno.EEXIST,
    ErrorCode.ERROR_INVALID_PARAMETER: errno.EINVAL,
    ErrorCode.ERROR_BUFFER_OVERFLOW: errno.ENAMETOOLONG,
    ErrorCode.ERROR_INVALID_NAME: errno.EINVAL,
    ErrorCode.ERROR_MORE_DATA: errno.ERANGE,
    ErrorCode.ERROR_NOACCESS: errno.EFAULT,
    ErrorCode.ERROR_DLL_INIT_FAILED: errno.ELIBBAD,
    ErrorCode.ERROR_NOT_FOUND: errno.ENOENT,
    ErrorCode.ERROR_ADDRESS_ALREADY_ASSOCIATED: errno.EADDRINUSE,
    ErrorCode.ERROR_INTERNAL_ERROR: errno.EIO,
    ErrorCode.ERROR_DEVICE_NOT_AVAILABLE: errno.ENODEV,
    ErrorCode.ERROR_INF_IN_USE_BY_DEVICES: errno.EBUSY,
}


def errno_for(code: int) -> int:
    """The errno the C library sets beside a Win32 ``code`` (0 for success, else EIO
    when nothing closer exists).  The C source carries the same table."""
    if code == 0:
        return 0
    return _ERRNO.get(code, errno.EIO)


class WireGuardError(OSError):
    """A wireguard.h call failed; ``code`` (also ``winerror``) is the Win32 error."""

    def __init__(self, code: int, function: str = "") -> None:
        self.code = int(code)
        try:
            name = ErrorCode(self.code).name
        except ValueError:
            name = f"error {self.code}"
        prefix = f"{function}: " if function else ""
        super().__init__(errno_for(self.code), f"{prefix}{name}: {error_message(self.code)}")
        self.winerror = self.code
