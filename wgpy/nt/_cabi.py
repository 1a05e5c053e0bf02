"""The Python side of wgpy's C-ABI library (see :mod:`wgpy.nt._build`).

:func:`install` is called by the library's embedded init code with its cffi
``ffi``/``lib``; it defines the ``extern "Python"`` functions the C wrappers call.
Each one receives copies of the caller's data (the C side did the copying and the
pointer checks), calls :mod:`wgpy.nt.api`, and reports a Win32 error through its
``err`` out parameter.  Handles are the integer ids of
:class:`~wgpy.nt.api.AdapterHandle` objects.  Nothing here may raise into C: an
unexpected exception is printed and reported as ERROR_INTERNAL_ERROR.
"""

from __future__ import annotations

import functools
import itertools
import sys
import traceback
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from wgpy.nt import api
from wgpy.nt.abi import ErrorCode
from wgpy.nt.errors import GetLastError

__all__ = ["install"]

F = TypeVar("F", bound=Callable[..., Any])

_CODEC = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
_installed: list[Any] = []


def _decode(ffi: Any, pointer: Any, length: int) -> str:
    """A copied UTF-16 name (unpaired surrogates kept)."""
    raw = bytes(ffi.buffer(pointer, 2 * length))
    return raw.decode(_CODEC, "surrogatepass")


def _set(ffi: Any, out: Any, value: int) -> None:
    if out != ffi.NULL:
        out[0] = value


def install(ffi: Any, lib: Any, version: int) -> None:
    """Define the ``extern "Python"`` functions of the library ``ffi``/``lib``."""
    from wgpy.nt._build import CABI_VERSION

    if version != CABI_VERSION or lib.wgpy_cabi_version() != CABI_VERSION:
        raise ImportError(f"wgpy C library ABI {version} does not match this wgpy ({CABI_VERSION})")
    wg = api.default_api()
    internal = int(ErrorCode.ERROR_INTERNAL_ERROR)

    def guarded(default: Any, err_index: int | None = None) -> Callable[[F], F]:
        """Turn an exception into ``default`` (and ERROR_INTERNAL_ERROR in ``err``)."""

        def wrap(fn: F) -> F:
            @functools.wraps(fn)
            def inner(*args: Any) -> Any:
                try:
                    return fn(*args)
                except BaseException:
                    traceback.print_exc()
                    if err_index is not None:
                        _set(ffi, args[err_index], internal)
                    return default

            return inner  # type: ignore[return-value]

        return wrap

    def handle(value: int) -> api.AdapterHandle | None:
        return api.handle_from_id(int(value))

    def finish(err: Any, ok: bool) -> int:
        _set(ffi, err, 0 if ok else GetLastError())
        return 1 if ok else 0

    @ffi.def_extern(name="_wgpy_create_adapter")  # type: ignore[untyped-decorator]
    @guarded(0, 5)
    def create_adapter(
        name: Any, name_len: int, tunnel_type: Any, type_len: int, guid: Any, err: Any
    ) -> int:
        requested = None
        if guid != ffi.NULL:
            requested = uuid.UUID(bytes_le=bytes(ffi.buffer(guid, 16)))
        result = wg.WireGuardCreateAdapter(
            _decode(ffi, name, name_len), _decode(ffi, tunnel_type, type_len), requested
        )
        finish(err, result is not None)
        return result.id if result is not None else 0

    @ffi.def_extern(name="_wgpy_open_adapter")  # type: ignore[untyped-decorator]
    @guarded(0, 2)
    def open_adapter(name: Any, name_len: int, err: Any) -> int:
        result = wg.WireGuardOpenAdapter(_decode(ffi, name, name_len))
        finish(err, result is not None)
        return result.id if result is not None else 0

    @ffi.def_extern(name="_wgpy_close_adapter")  # type: ignore[untyped-decorator]
    @guarded(None)
    def close_adapter(adapter: int) -> None:
        wg.WireGuardCloseAdapter(handle(adapter))

    @ffi.def_extern(name="_wgpy_delete_driver")  # type: ignore[untyped-decorator]
    @guarded(0, 0)
    def delete_driver(err: Any) -> int:
        return finish(err, wg.WireGuardDeleteDriver())

    @ffi.def_extern(name="_wgpy_get_adapter_luid")  # type: ignore[untyped-decorator]
    @guarded(0)
    def get_adapter_luid(adapter: int) -> int:
        found = handle(adapter)
        if found is None:
            return 0
        return int(wg.WireGuardGetAdapterLUID(found).Value)

    @ffi.def_extern(name="_wgpy_get_running_driver_version")  # type: ignore[untyped-decorator]
    @guarded(0, 0)
    def get_running_driver_version(err: Any) -> int:
        version = wg.WireGuardGetRunningDriverVersion()
        finish(err, version != 0)
        return version

    def c_logger(level: int, timestamp: int, message: str) -> None:
        units = message.encode(_CODEC, "surrogatepass") + b"\0\0"
        buf = ffi.new("uint16_t[]", len(units) // 2)
        ffi.memmove(buf, units, len(units))
        lib.wgpy_emit_log(level, timestamp, buf)

    @ffi.def_extern(name="_wgpy_set_logger")  # type: ignore[untyped-decorator]
    @guarded(None)
    def set_logger(enabled: int) -> None:
        wg.WireGuardSetLogger(c_logger if enabled else None)

    @ffi.def_extern(name="_wgpy_set_adapter_logging")  # type: ignore[untyped-decorator]
    @guarded(0, 2)
    def set_adapter_logging(adapter: int, state: int, err: Any) -> int:
        return finish(err, wg.WireGuardSetAdapterLogging(handle(adapter), state))  # type: ignore[arg-type]

    @ffi.def_extern(name="_wgpy_set_adapter_state")  # type: ignore[untyped-decorator]
    @guarded(0, 2)
    def set_adapter_state(adapter: int, state: int, err: Any) -> int:
        return finish(err, wg.WireGuardSetAdapterState(handle(adapter), state))  # type: ignore[arg-type]

    @ffi.def_extern(name="_wgpy_get_adapter_state")  # type: ignore[untyped-decorator]
    @guarded(0, 2)
    def get_adapter_state(adapter: int, state: Any, err: Any) -> int:
        ok, value = wg.WireGuardGetAdapterState(handle(adapter))  # type: ignore[arg-type]
        if ok:
            state[0] = int(value)
        return finish(err, ok)

    @ffi.def_extern(name="_wgpy_set_configuration")  # type: ignore[untyped-decorator]
    @guarded(0, 3)
    def set_configuration(adapter: int, buf: Any, size: int, err: Any) -> int:
        data = ffi.buffer(buf, size)
        return finish(err, wg.WireGuardSetConfiguration(handle(adapter), data, size))  # type: ignore[arg-type]

    @ffi.def_extern(name="_wgpy_get_configuration")  # type: ignore[untyped-decorator]
    @guarded(0, 5)
    def get_configuration(
        adapter: int, buf: Any, capacity: int, size: Any, written: Any, err: Any
    ) -> int:
        found = handle(adapter)
        if found is None:
            # Through the API, so the failure is recorded and logged as usual.
            ok, _ = wg.WireGuardGetConfiguration(found, None, 0)  # type: ignore[arg-type]
            return finish(err, ok)
        data, needed = wg.configuration_bytes(found, capacity)
        if data is None:
            return finish(err, False)
        if data:
            ffi.memmove(buf, data, len(data))
        written[0] = len(data)
        size[0] = needed
        if needed > capacity:
            api.SetLastError(ErrorCode.ERROR_MORE_DATA)
            return finish(err, False)
        return finish(err, True)

    # -- wgpy.h: userspace adapters ------------------------------------------------

    sessions: dict[int, Any] = {}
    session_ids = itertools.count(0x5000, 0x10)

    def session(value: int) -> Any:
        return sessions.get(int(value))

    @ffi.def_extern(name="_wgpy_set_adapter_addresses")  # type: ignore[untyped-decorator]
    @guarded(0, 3)
    def set_adapter_addresses(adapter: int, text: Any, length: int, err: Any) -> int:
        return finish(err, wg.WgpySetAdapterAddresses(handle(adapter), _decode(ffi, text, length)))  # type: ignore[arg-type]

    @ffi.def_extern(name="_wgpy_start_session")  # type: ignore[untyped-decorator]
    @guarded(0, 3)
    def start_session(adapter: int, capacity: int, flags: int, err: Any) -> int:
        found = wg.WgpyStartSession(handle(adapter), capacity, flags)  # type: ignore[arg-type]
        finish(err, found is not None)
        if found is None:
            return 0
        key = next(session_ids)
        sessions[key] = found
        return key

    @ffi.def_extern(name="_wgpy_end_session")  # type: ignore[untyped-decorator]
    @guarded(None)
    def end_session(value: int) -> None:
        found = sessions.pop(int(value), None)
        if found is not None:
            wg.WgpyEndSession(found)

    @ffi.def_extern(name="_wgpy_read_wait_event")  # type: ignore[untyped-decorator]
    @guarded(-1, 1)
    def read_wait_event(value: int, err: Any) -> int:
        found = session(value)
        if found is None:
            _set(ffi, err, int(ErrorCode.ERROR_INVALID_HANDLE))
            return 0 if sys.platform == "win32" else -1
        return int(wg.WgpyGetReadWaitEvent(found))

    @ffi.def_extern(name="_wgpy_receive_packet")  # type: ignore[untyped-decorator]
    @guarded(0, 4)
    def receive_packet(value: int, buf: Any, capacity: int, size: Any, err: Any) -> int:
        found = session(value)
        if found is None:
            _set(ffi, err, int(ErrorCode.ERROR_INVALID_HANDLE))
            return 0
        packet = wg.WgpyReceivePacket(found)
        if packet is None:
            _set(ffi, err, GetLastError())
            return 0
        if len(packet) > capacity:  # pragma: no cover - the MTU is far below 64 KiB
            _set(ffi, err, int(ErrorCode.ERROR_BUFFER_OVERFLOW))
            return 0
        ffi.memmove(buf, packet, len(packet))
        size[0] = len(packet)
        return 1

    @ffi.def_extern(name="_wgpy_send_packet")  # type: ignore[untyped-decorator]
    @guarded(0, 3)
    def send_packet(value: int, buf: Any, length: int, err: Any) -> int:
        found = session(value)
        if found is None:
            _set(ffi, err, int(ErrorCode.ERROR_INVALID_HANDLE))
            return 0
        return finish(err, wg.WgpySendPacket(found, bytes(ffi.buffer(buf, length))))

    @ffi.def_extern(name="_wgpy_atexit")  # type: ignore[untyped-decorator]
    @guarded(None)
    def at_exit() -> None:
        api.close_all_adapters()

    # Keep the callbacks alive for the life of the library.
    _installed.append(
        (
            create_adapter,
            open_adapter,
            close_adapter,
            delete_driver,
            get_adapter_luid,
            get_running_driver_version,
            set_logger,
            set_adapter_logging,
            set_adapter_state,
            get_adapter_state,
            set_configuration,
            get_configuration,
            set_adapter_addresses,
            start_session,
            end_session,
            read_wait_event,
            receive_packet,
            send_packet,
            at_exit,
        )
    )
    if lib.wgpy_embedded():
        # This process is a C program: no interpreter shutdown will run Python's
        # atexit hooks, so adapters are removed from a C exit handler instead.
        lib.wgpy_register_atexit()
