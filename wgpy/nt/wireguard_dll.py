"""The wireguard.h functions from a real ``wireguard.dll`` (WireGuardNT), via ctypes.

:class:`WireGuardDll` has the same methods, arguments and results as
:class:`wgpy.nt.api.WgpyApi`, so :class:`wgpy.nt.adapter.Adapter` (and any
benchmark or conformance script written against that interface) drives WireGuardNT
and wgpy alike::

    from wgpy.nt.adapter import Adapter
    from wgpy.nt.wireguard_dll import WireGuardDll

    dll = WireGuardDll("wireguard.dll")            # Windows, elevated
    with Adapter.create("Bench", "wgpy", api=dll) as adapter:
        ...

On Windows the DLL is loaded with ``WinDLL`` (``__stdcall``; the same as the C
convention on x64) with ``use_last_error``, the logger trampoline is a
``WINFUNCTYPE``, and :meth:`WireGuardDll.GetLastError` is the Win32 last error of the
calling thread's previous call into the DLL.  Elsewhere the library is loaded with
``CDLL`` and the last error comes from its ``WireGuardGetLastError`` export, which is
how the tests point this class at wgpy's own C library on Linux.

Handles are the DLL's pointer values (ints).  Strings are passed as NUL-terminated
UTF-16 built by hand (``c_wchar`` is 4 bytes outside Windows).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

from wgpy.nt.abi import GUID, NET_LUID, AdapterState, ErrorCode

__all__ = ["WireGuardDll", "signatures"]

_CODEC = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
_VP = ctypes.c_void_p
_U32 = ctypes.c_uint32
_BOOL = ctypes.c_int


def _wide(text: str) -> ctypes.Array[ctypes.c_char]:
    raw = text.encode(_CODEC, "surrogatepass") + b"\0\0"
    return ctypes.create_string_buffer(raw, len(raw))


def _read_wide(address: int | None, limit: int = 1 << 16) -> str:
    if not address:
        return ""
    out = bytearray()
    while len(out) < 2 * limit:
        unit = ctypes.string_at(address + len(out), 2)
        if unit == b"\0\0":
            break
        out += unit
    return out.decode(_CODEC, "surrogatepass")


class _Pointer:
    """A pointer argument to a caller's buffer, kept alive for the call."""

    def __init__(self, buffer: Any, writable: bool) -> None:
        self.keep: Any = None
        self.address: Any = None
        if buffer is None:
            return
        if isinstance(buffer, bytes):
            self.keep = buffer
            self.address = ctypes.cast(ctypes.c_char_p(buffer), _VP)
            return
        view = memoryview(buffer).cast("B")
        if view.readonly:
            if writable:
                raise TypeError("the buffer must be writable")
            self.keep = (ctypes.c_char * len(view)).from_buffer_copy(view)
        else:
            self.keep = (ctypes.c_char * len(view)).from_buffer(view)
        self.address = ctypes.cast(self.keep, _VP)


def signatures(callback_type: Any) -> dict[str, tuple[list[Any], Any]]:
    """argtypes and restype of each wireguard.h function, in the header's
    order (:data:`wgpy.nt.abi.WIREGUARD_FUNCTIONS`); ``callback_type`` is the
    logger callback's ctypes type (stdcall on Windows)."""
    return {
        "WireGuardCreateAdapter": ([_VP, _VP, _VP], _VP),
        "WireGuardOpenAdapter": ([_VP], _VP),
        "WireGuardCloseAdapter": ([_VP], None),
        "WireGuardDeleteDriver": ([], _BOOL),
        "WireGuardGetAdapterLUID": ([_VP, _VP], None),
        "WireGuardGetRunningDriverVersion": ([], _U32),
        "WireGuardSetLogger": ([callback_type], None),
        "WireGuardSetAdapterLogging": ([_VP, ctypes.c_int], _BOOL),
        "WireGuardSetAdapterState": ([_VP, ctypes.c_int], _BOOL),
        "WireGuardGetAdapterState": ([_VP, _VP], _BOOL),
        "WireGuardSetConfiguration": ([_VP, _VP, _U32], _BOOL),
        "WireGuardGetConfiguration": ([_VP, _VP, _VP], _BOOL),
    }


class WireGuardDll:
    """A loaded ``wireguard.dll`` (or any library with the same exports).

    Raises OSError if the library cannot be loaded or lacks one of the twelve
    functions (the documented loader gives up in that case too).
    """

    _callback_type: Any
    _last_error: Callable[[], int]

    def __init__(self, path: str | os.PathLike[str] = "wireguard.dll") -> None:
        self.path = os.fspath(path)
        self._loggers: list[Any] = []  # trampolines stay alive: the DLL may still call them
        self._lock = threading.Lock()
        if sys.platform == "win32":
            self._dll = ctypes.WinDLL(self.path, use_last_error=True)
            self._callback_type = ctypes.WINFUNCTYPE(None, ctypes.c_int, ctypes.c_uint64, _VP)
            self._last_error = ctypes.get_last_error
        else:
            self._dll = ctypes.CDLL(self.path)
            self._callback_type = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_uint64, _VP)
            getter = getattr(self._dll, "WireGuardGetLastError", None)
            if getter is None:
                raise OSError(f"{self.path}: no WireGuardGetLastError export (needed off Windows)")
            getter.argtypes = []
            getter.restype = _U32
            self._last_error = lambda: int(getter())
        sigs = signatures(self._callback_type)
        self._fn: dict[str, Any] = {}
        for name, (argtypes, restype) in sigs.items():
            try:
                fn = getattr(self._dll, name)
            except AttributeError as exc:
                raise OSError(f"{self.path}: missing export {name}") from exc
            fn.argtypes = argtypes
            fn.restype = restype
            self._fn[name] = fn

    def GetLastError(self) -> int:
        """The calling thread's last error from the DLL's most recent failing call."""
        return int(self._last_error())

    # -- adapters -------------------------------------------------------------------

    def WireGuardCreateAdapter(
        self, name: str, tunnel_type: str, requested_guid: object = None
    ) -> int | None:
        """``WireGuardCreateAdapter``; the handle, or None (see GetLastError)."""
        guid: GUID | None = None
        if isinstance(requested_guid, uuid.UUID):
            guid = GUID.from_uuid(requested_guid)
        elif isinstance(requested_guid, GUID):
            guid = requested_guid
        elif requested_guid is not None:
            guid = GUID.from_buffer_copy(bytes(memoryview(requested_guid)))  # type: ignore[arg-type]
        handle = self._fn["WireGuardCreateAdapter"](
            _wide(name), _wide(tunnel_type), ctypes.byref(guid) if guid is not None else None
        )
        return int(handle) if handle else None

    def WireGuardOpenAdapter(self, name: str) -> int | None:
        """``WireGuardOpenAdapter``; the handle, or None (ERROR_NOT_FOUND)."""
        handle = self._fn["WireGuardOpenAdapter"](_wide(name))
        return int(handle) if handle else None

    def WireGuardCloseAdapter(self, handle: int | None) -> None:
        """``WireGuardCloseAdapter`` (None is ignored, as by the DLL)."""
        self._fn["WireGuardCloseAdapter"](handle)

    def WireGuardDeleteDriver(self) -> bool:
        """``WireGuardDeleteDriver``."""
        return bool(self._fn["WireGuardDeleteDriver"]())

    def WireGuardGetAdapterLUID(self, handle: int) -> NET_LUID:
        """``WireGuardGetAdapterLUID``."""
        luid = NET_LUID()
        self._fn["WireGuardGetAdapterLUID"](handle, ctypes.byref(luid))
        return luid

    def WireGuardGetRunningDriverVersion(self) -> int:
        """``WireGuardGetRunningDriverVersion``: ``(major << 16) | minor``, 0 on failure."""
        return int(self._fn["WireGuardGetRunningDriverVersion"]())

    # -- logging ----------------------------------------------------------------------

    def WireGuardSetLogger(self, logger: Callable[[int, int, str], None] | None) -> None:
        """``WireGuardSetLogger``: ``logger(level, filetime, message)``; None: off.

        The callback may run on DLL threads; what it raises is dropped (it cannot
        unwind into C).
        """
        if logger is None:
            self._fn["WireGuardSetLogger"](self._callback_type())
            return

        def trampoline(level: int, timestamp: int, message: int | None) -> None:
            try:
                logger(int(level), int(timestamp), _read_wide(message))
            except Exception:
                return

        callback = self._callback_type(trampoline)
        with self._lock:
            self._loggers.append(callback)
        self._fn["WireGuardSetLogger"](callback)

    def WireGuardSetAdapterLogging(self, handle: int, state: int) -> bool:
        """``WireGuardSetAdapterLogging``."""
        return bool(self._fn["WireGuardSetAdapterLogging"](handle, int(state)))

    # -- state ----------------------------------------------------------------------------

    def WireGuardSetAdapterState(self, handle: int, state: int) -> bool:
        """``WireGuardSetAdapterState``."""
        return bool(self._fn["WireGuardSetAdapterState"](handle, int(state)))

    def WireGuardGetAdapterState(self, handle: int) -> tuple[bool, AdapterState]:
        """``WireGuardGetAdapterState``: ``(ok, state)``."""
        state = ctypes.c_int(0)
        ok = bool(self._fn["WireGuardGetAdapterState"](handle, ctypes.byref(state)))
        if not ok:
            return False, AdapterState.DOWN
        try:
            return True, AdapterState(state.value)
        except ValueError:
            return True, AdapterState.UP if state.value else AdapterState.DOWN

    # -- configuration ------------------------------------------------------------------------

    def WireGuardSetConfiguration(self, handle: int, buffer: Any, size: int) -> bool:
        """``WireGuardSetConfiguration`` with the first ``size`` bytes of ``buffer``."""
        pointer = _Pointer(buffer, writable=False)
        return bool(self._fn["WireGuardSetConfiguration"](handle, pointer.address, size))

    def WireGuardGetConfiguration(self, handle: int, buffer: Any, size: int) -> tuple[bool, int]:
        """``WireGuardGetConfiguration``: ``(ok, bytes written or needed)``."""
        pointer = _Pointer(buffer, writable=True)
        count = _U32(size if buffer is not None else 0)
        ok = bool(
            self._fn["WireGuardGetConfiguration"](handle, pointer.address, ctypes.byref(count))
        )
        if not ok and self.GetLastError() not in (ErrorCode.ERROR_MORE_DATA,):
            return False, 0
        return ok, int(count.value)
