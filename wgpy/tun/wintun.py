"""Wintun (``wintun.dll``, API 0.14) through ctypes, and a TUN device on top of it.

Layers, bottom up:

* :class:`WintunLibrary` loads the DLL (``WinDLL`` on Windows; ``CDLL`` elsewhere,
  which is how the tests load a Linux test double with the same exports), declares
  ``argtypes``/``restype`` for all 14 functions and turns failures into
  :class:`WintunError` using the Win32 last error.
* :class:`WintunAdapter` and :class:`WintunSession` wrap the two handle kinds.  The
  session exposes the ring primitives (receive/release, allocate/send) with NULL
  checks, the 0xFFFF packet limit and Wintun's error codes mapped to Python:
  ``ERROR_NO_MORE_ITEMS`` is an empty ring (``None``), ``ERROR_HANDLE_EOF`` is
  :class:`~wgpy.tun.base.TunClosed`, ``ERROR_BUFFER_OVERFLOW`` is
  :class:`WintunRingFull`, ``ERROR_INVALID_DATA`` (corrupt ring) and anything else
  is :class:`WintunError`.
* :class:`WintunTun` implements the runtime's ``TunDevice`` protocol.

Strings cross the ABI as NUL-terminated UTF-16 in native byte order, built here
by hand: ``ctypes.c_wchar`` is 4 bytes on Linux.

Facts: ``shared/reference/wireguard-h-abi.md`` section 4.
"""

from __future__ import annotations

import ctypes
import io
import os
import select
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import Any, Final

from ..constants import DEFAULT_MTU, IO_BATCH_SIZE
from ..win32 import MAX_ADAPTER_NAME, ErrorCode
from .base import TunClosed

__all__ = [
    "DEFAULT_RING_CAPACITY",
    "WINTUN_MAX_IP_PACKET_SIZE",
    "WINTUN_MAX_RING_CAPACITY",
    "WINTUN_MIN_RING_CAPACITY",
    "ReceivedPacket",
    "SendBuffer",
    "WintunAdapter",
    "WintunError",
    "WintunLibrary",
    "WintunLogLevel",
    "WintunRingFull",
    "WintunSession",
    "WintunTun",
    "check_ring_capacity",
]

WINTUN_MIN_RING_CAPACITY: Final = 0x20000  # 128 KiB
WINTUN_MAX_RING_CAPACITY: Final = 0x4000000  # 64 MiB
WINTUN_MAX_IP_PACKET_SIZE: Final = 0xFFFF
#: Ring capacity wireguard-go uses (8 MiB).
DEFAULT_RING_CAPACITY: Final = 0x800000
#: Longest name Wintun accepts, in UTF-16 code units.
MAX_NAME_UNITS: Final = MAX_ADAPTER_NAME - 1


class WintunLogLevel(IntEnum):
    """``WINTUN_LOGGER_LEVEL``."""

    INFO = 0
    WARN = 1
    ERR = 2


class WintunError(Exception):
    """A Wintun call failed; ``error_code`` is the Win32 last error."""

    def __init__(self, function: str, error_code: int, detail: str = "") -> None:
        self.function = function
        self.error_code = error_code
        try:
            name = ErrorCode(error_code).name
        except ValueError:
            name = f"error 0x{error_code:08X}"
        text = f"{function} failed: {name} ({error_code})"
        super().__init__(f"{text}: {detail}" if detail else text)


class WintunRingFull(WintunError):
    """``WintunAllocateSendPacket`` found the ring full (ERROR_BUFFER_OVERFLOW)."""


def check_ring_capacity(capacity: int) -> int:
    """Return ``capacity`` if it is a power of two in [0x20000, 0x4000000], else ValueError."""
    if (
        not WINTUN_MIN_RING_CAPACITY <= capacity <= WINTUN_MAX_RING_CAPACITY
        or capacity & (capacity - 1) != 0
    ):
        raise ValueError(
            f"ring capacity {capacity:#x} must be a power of two between "
            f"{WINTUN_MIN_RING_CAPACITY:#x} and {WINTUN_MAX_RING_CAPACITY:#x}"
        )
    return capacity


_UTF16: Final = "utf-16-le" if sys.byteorder == "little" else "utf-16-be"
_WCHAR = ctypes.c_uint16
_LPCWSTR = ctypes.POINTER(_WCHAR)
_HANDLE = ctypes.c_void_p
_BOOL = ctypes.c_int
_DWORD = ctypes.c_uint32
_DWORD64 = ctypes.c_uint64


def _utf16z(text: str, what: str) -> ctypes.Array[ctypes.c_uint16]:
    """``text`` as a NUL-terminated native-order UTF-16 buffer (a ``WCHAR[]``)."""
    if "\0" in text:
        raise ValueError(f"{what} must not contain NUL characters")
    # surrogatepass: lone surrogates go through so the DLL decides about them.
    raw = text.encode(_UTF16, "surrogatepass") + b"\0\0"
    return (_WCHAR * (len(raw) // 2)).from_buffer_copy(raw)


def _read_utf16z(address: int | None, limit: int = 1 << 16) -> str:
    """Decode the NUL-terminated UTF-16 string at ``address`` (at most ``limit`` units)."""
    if not address:
        return ""
    units = ctypes.cast(address, _LPCWSTR)
    length = 0
    while length < limit and units[length]:
        length += 1
    return ctypes.string_at(address, 2 * length).decode(_UTF16, "replace")


# Signatures of the 14 exports: name -> (restype, argtypes).
_SIGNATURES: Final[dict[str, tuple[Any, list[Any] | None]]] = {
    "WintunCreateAdapter": (_HANDLE, [_LPCWSTR, _LPCWSTR, ctypes.c_void_p]),
    "WintunOpenAdapter": (_HANDLE, [_LPCWSTR]),
    "WintunCloseAdapter": (None, [_HANDLE]),
    "WintunDeleteDriver": (_BOOL, []),
    "WintunGetAdapterLUID": (None, [_HANDLE, ctypes.POINTER(_DWORD64)]),
    "WintunGetRunningDriverVersion": (_DWORD, []),
    "WintunSetLogger": (None, None),  # argtypes filled in with the callback type
    "WintunStartSession": (_HANDLE, [_HANDLE, _DWORD]),
    "WintunEndSession": (None, [_HANDLE]),
    "WintunGetReadWaitEvent": (_HANDLE, [_HANDLE]),
    "WintunReceivePacket": (ctypes.c_void_p, [_HANDLE, ctypes.POINTER(_DWORD)]),
    "WintunReleaseReceivePacket": (None, [_HANDLE, ctypes.c_void_p]),
    "WintunAllocateSendPacket": (ctypes.c_void_p, [_HANDLE, _DWORD]),
    "WintunSendPacket": (None, [_HANDLE, ctypes.c_void_p]),
}

#: ``(level, timestamp as FILETIME, message)``.
LoggerCallback = Callable[[WintunLogLevel, int, str], None]


class WintunLibrary:
    """A loaded ``wintun.dll`` (or a library with the same exports).

    Raises OSError if the library cannot be loaded or lacks an export; like
    Wintun's own example loader, all 14 functions must be present.  Outside
    Windows the library must also export ``WintunTestGetLastError`` (the test
    double's stand-in for GetLastError).
    """

    # The 14 ctypes functions, set up in __init__ from _SIGNATURES.
    _WintunCreateAdapter: Any
    _WintunOpenAdapter: Any
    _WintunCloseAdapter: Any
    _WintunDeleteDriver: Any
    _WintunGetAdapterLUID: Any
    _WintunGetRunningDriverVersion: Any
    _WintunSetLogger: Any
    _WintunStartSession: Any
    _WintunEndSession: Any
    _WintunGetReadWaitEvent: Any
    _WintunReceivePacket: Any
    _WintunReleaseReceivePacket: Any
    _WintunAllocateSendPacket: Any
    _WintunSendPacket: Any
    _dll: Any
    _kernel32: Any
    _callback_type: Any
    _get_last_error: Callable[[], int]
    _set_event: Callable[[int], bool] | None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._loggers: list[Any] = []  # every callback ever installed stays alive
        if sys.platform == "win32":
            self._dll = ctypes.WinDLL(self.path, use_last_error=True)
            self._callback_type = ctypes.WINFUNCTYPE(None, ctypes.c_int, _DWORD64, ctypes.c_void_p)
            kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
            kernel32.SetEvent.restype = _BOOL
            kernel32.SetEvent.argtypes = [_HANDLE]
            kernel32.WaitForSingleObject.restype = _DWORD
            kernel32.WaitForSingleObject.argtypes = [_HANDLE, _DWORD]
            self._kernel32 = kernel32
            self._get_last_error = ctypes.get_last_error
            self._set_event = lambda handle: bool(kernel32.SetEvent(handle))
        else:
            self._dll = ctypes.CDLL(self.path)
            self._callback_type = ctypes.CFUNCTYPE(None, ctypes.c_int, _DWORD64, ctypes.c_void_p)
            self._kernel32 = None
            try:
                getter = self._dll.WintunTestGetLastError
            except AttributeError as exc:
                raise OSError(
                    f"{self.path}: no WintunTestGetLastError export (needed outside Windows)"
                ) from exc
            getter.restype = _DWORD
            getter.argtypes = []
            self._get_last_error = lambda: int(getter())
            set_event = getattr(self._dll, "WintunTestSetEvent", None)
            if set_event is not None:
                set_event.restype = _BOOL
                set_event.argtypes = [_HANDLE]
                self._set_event = lambda handle: bool(set_event(handle))
            else:
                self._set_event = None
        for name, (restype, argtypes) in _SIGNATURES.items():
            try:
                func = getattr(self._dll, name)
            except AttributeError as exc:
                raise OSError(f"{self.path}: missing export {name}") from exc
            func.restype = restype
            func.argtypes = argtypes if argtypes is not None else [self._callback_type]
            setattr(self, "_" + name, func)

    # -- plumbing ---------------------------------------------------------------

    @property
    def dll(self) -> Any:
        """The raw ctypes library, with argtypes set (for tests and callers that need it)."""
        return self._dll

    def last_error(self) -> int:
        """The calling thread's last Win32 error as the library left it."""
        return self._get_last_error()

    def _error(self, function: str, detail: str = "") -> WintunError:
        return WintunError(function, self.last_error(), detail)

    def signal_event(self, handle: int) -> bool:
        """SetEvent on a read-wait event (wakes a waiter); False if unsupported/failed."""
        if self._set_event is None:
            return False
        return self._set_event(handle)

    def wait_event(self, handle: int, timeout: float | None) -> bool:
        """Wait until the read-wait event is signalled; True if it was, False on timeout."""
        if sys.platform == "win32":
            ms = 0xFFFFFFFF if timeout is None else max(0, int(timeout * 1000))
            return int(self._kernel32.WaitForSingleObject(handle, ms)) == 0  # WAIT_OBJECT_0
        ready, _, _ = select.select([handle], [], [], timeout)
        return bool(ready)

    # -- driver-wide functions -------------------------------------------------

    def create_adapter(
        self, name: str, tunnel_type: str = "WireGuard", guid: uuid.UUID | None = None
    ) -> WintunAdapter:
        """``WintunCreateAdapter``: a new adapter, removed again when it is closed.

        ``name`` is at most 127 UTF-16 code units (longer: ERROR_BUFFER_OVERFLOW from
        the DLL).  ``guid`` fixes the adapter's GUID; None lets the system choose.
        """
        wname = _utf16z(name, "adapter name")
        wtype = _utf16z(tunnel_type, "tunnel type")
        guid_buf = None if guid is None else ctypes.create_string_buffer(guid.bytes_le, 16)
        handle = self._WintunCreateAdapter(wname, wtype, guid_buf)
        if not handle:
            raise self._error("WintunCreateAdapter", repr(name))
        return WintunAdapter(self, int(handle), name, created=True)

    def open_adapter(self, name: str) -> WintunAdapter:
        """``WintunOpenAdapter``: an existing adapter (ERROR_NOT_FOUND if none)."""
        handle = self._WintunOpenAdapter(_utf16z(name, "adapter name"))
        if not handle:
            raise self._error("WintunOpenAdapter", repr(name))
        return WintunAdapter(self, int(handle), name, created=False)

    def delete_driver(self) -> None:
        """``WintunDeleteDriver``: uninstall the driver if no adapter uses it."""
        if not self._WintunDeleteDriver():
            raise self._error("WintunDeleteDriver")

    def running_driver_version(self) -> int:
        """``WintunGetRunningDriverVersion``: ``(major << 16) | minor``.

        Raises WintunError (ERROR_FILE_NOT_FOUND) when the driver is not loaded.
        """
        version = int(self._WintunGetRunningDriverVersion())
        if version == 0:
            raise self._error("WintunGetRunningDriverVersion")
        return version

    def set_logger(self, callback: LoggerCallback | None) -> None:
        """``WintunSetLogger``: route the DLL's log lines to ``callback`` (None: off).

        The callback may run on any thread, concurrently; exceptions it raises are
        swallowed (they cannot cross the C boundary).  Every ctypes trampoline ever
        installed is kept alive, since the DLL may still be calling an old one.
        """
        if callback is None:
            self._WintunSetLogger(self._callback_type())  # a NULL function pointer
            return

        def trampoline(level: int, timestamp: int, message: int | None) -> None:
            try:
                try:
                    lvl = WintunLogLevel(level)
                except ValueError:
                    lvl = WintunLogLevel.ERR
                callback(lvl, int(timestamp), _read_utf16z(message))
            except Exception:  # an exception must not unwind into C
                return

        c_callback = self._callback_type(trampoline)
        self._loggers.append(c_callback)
        self._WintunSetLogger(c_callback)


class WintunAdapter:
    """An adapter handle.  Closing the handle that created the adapter removes it."""

    def __init__(self, library: WintunLibrary, handle: int, name: str, *, created: bool) -> None:
        self.library = library
        self.name = name
        self.created = created
        self._handle: int | None = handle

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._handle is None

    @property
    def handle(self) -> int:
        """The raw ``WINTUN_ADAPTER_HANDLE``; raises TunClosed once closed."""
        if self._handle is None:
            raise TunClosed(f"Wintun adapter {self.name!r} is closed")
        return self._handle

    def luid(self) -> int:
        """``WintunGetAdapterLUID``: the adapter's ``NET_LUID`` value."""
        value = _DWORD64(0)
        self.library._WintunGetAdapterLUID(self.handle, ctypes.byref(value))
        if value.value == 0:
            # The call has no error return; an all-zero LUID never names an adapter.
            raise self.library._error("WintunGetAdapterLUID")
        return int(value.value)

    def start_session(self, capacity: int = DEFAULT_RING_CAPACITY) -> WintunSession:
        """``WintunStartSession`` with ring ``capacity`` (checked: ValueError if bad)."""
        check_ring_capacity(capacity)
        session = self.library._WintunStartSession(self.handle, capacity)
        if not session:
            raise self.library._error("WintunStartSession")
        return WintunSession(self, int(session), capacity)

    def close(self) -> None:
        """``WintunCloseAdapter``; idempotent."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self.library._WintunCloseAdapter(handle)

    def __enter__(self) -> WintunAdapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<WintunAdapter {self.name!r}{state}>"


class ReceivedPacket:
    """A packet inside the receive ring; valid until released (or the session ends)."""

    __slots__ = ("_released", "address", "session", "size")

    def __init__(self, session: WintunSession, address: int, size: int) -> None:
        self.session = session
        self.address = address
        self.size = size
        self._released = False

    @property
    def released(self) -> bool:
        """True once handed back to the ring."""
        return self._released

    def tobytes(self) -> bytes:
        """A copy of the packet."""
        self._check()
        return ctypes.string_at(self.address, self.size)

    def view(self) -> memoryview:
        """A writable view into the ring (do not keep it past the release)."""
        self._check()
        return memoryview((ctypes.c_ubyte * self.size).from_address(self.address)).cast("B")

    def release(self) -> None:
        """Give the ring space back (``WintunReleaseReceivePacket``); idempotent."""
        self.session.release_receive_packet(self)

    def _check(self) -> None:
        if self._released:
            raise ValueError("packet already released")
        self.session._live_handle()

    def __enter__(self) -> ReceivedPacket:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self._released and not self.session.ended:
            self.release()


class SendBuffer:
    """Space allocated in the send ring; fill it, then :meth:`send` it."""

    __slots__ = ("_sent", "address", "session", "size")

    def __init__(self, session: WintunSession, address: int, size: int) -> None:
        self.session = session
        self.address = address
        self.size = size
        self._sent = False

    @property
    def sent(self) -> bool:
        """True once committed."""
        return self._sent

    def view(self) -> memoryview:
        """A writable view of the allocation."""
        if self._sent:
            raise ValueError("packet already sent")
        self.session._live_handle()
        return memoryview((ctypes.c_ubyte * self.size).from_address(self.address)).cast("B")

    def write(self, data: bytes | bytearray | memoryview, offset: int = 0) -> None:
        """Copy ``data`` into the allocation at ``offset``."""
        n = len(data)
        if offset < 0 or offset + n > self.size:
            raise ValueError(f"{n} bytes at offset {offset} overflow a {self.size}-byte packet")
        self.view()[offset : offset + n] = data

    def send(self) -> None:
        """Commit the packet (``WintunSendPacket``)."""
        self.session.send_packet(self)


class WintunSession:
    """A ring session on an adapter (one per adapter at a time).

    Every method raises TunClosed once the session has ended.  ``end()`` must not
    overlap other calls on the session (Wintun frees the rings); :class:`WintunTun`
    takes care of that.
    """

    def __init__(self, adapter: WintunAdapter, handle: int, capacity: int) -> None:
        self.adapter = adapter
        self.library = adapter.library
        self.capacity = capacity
        self._handle: int | None = handle
        self._size = _DWORD(0)
        self._size_ref = ctypes.byref(self._size)
        self._recv_lock = threading.Lock()  # guards self._size between threads
        event = self.library._WintunGetReadWaitEvent(handle)
        if not event:
            error = self.library._error("WintunGetReadWaitEvent")
            self.end()
            raise error
        self._read_wait_event = int(event)

    @property
    def ended(self) -> bool:
        """True after :meth:`end`."""
        return self._handle is None

    def _live_handle(self) -> int:
        handle = self._handle
        if handle is None:
            raise TunClosed(f"Wintun session on {self.adapter.name!r} has ended")
        return handle

    @property
    def read_wait_event(self) -> int:
        """The read-wait event: a HANDLE on Windows, a pollable fd in the test double.

        Owned by the session: never close it.
        """
        self._live_handle()
        return self._read_wait_event

    def signal_read_event(self) -> bool:
        """Set the read-wait event (wakes a thread waiting on it)."""
        return self.library.signal_event(self._read_wait_event) if not self.ended else False

    def wait_readable(self, timeout: float | None = None) -> bool:
        """Wait on the read-wait event; False on timeout."""
        return self.library.wait_event(self.read_wait_event, timeout)

    # -- OS -> application ---------------------------------------------------------

    def receive_packet(self) -> ReceivedPacket | None:
        """``WintunReceivePacket``: the next packet, or None when the ring is empty.

        Raises TunClosed when the adapter is terminating (ERROR_HANDLE_EOF) and
        WintunError for a corrupt ring (ERROR_INVALID_DATA) or other failures.
        """
        handle = self._live_handle()
        with self._recv_lock:
            address = self.library._WintunReceivePacket(handle, self._size_ref)
            size = self._size.value
        if address:
            if size > WINTUN_MAX_IP_PACKET_SIZE:
                raise WintunError("WintunReceivePacket", ErrorCode.ERROR_INVALID_DATA)
            return ReceivedPacket(self, int(address), size)
        code = self.library.last_error()
        if code == ErrorCode.ERROR_NO_MORE_ITEMS:
            return None
        if code == ErrorCode.ERROR_HANDLE_EOF:
            raise TunClosed(f"Wintun adapter {self.adapter.name!r} is terminating")
        raise WintunError("WintunReceivePacket", code)

    def release_receive_packet(self, packet: ReceivedPacket) -> None:
        """``WintunReleaseReceivePacket``; releasing twice is a no-op."""
        if packet.session is not self:
            raise ValueError("packet belongs to another session")
        if packet._released:
            return
        handle = self._live_handle()
        packet._released = True
        self.library._WintunReleaseReceivePacket(handle, packet.address)

    def recv(self) -> bytes | None:
        """Receive, copy and release one packet; None when the ring is empty."""
        packet = self.receive_packet()
        if packet is None:
            return None
        try:
            return ctypes.string_at(packet.address, packet.size)
        finally:
            self.release_receive_packet(packet)

    # -- application -> OS -----------------------------------------------------------

    def allocate_send_packet(self, size: int) -> SendBuffer:
        """``WintunAllocateSendPacket``: ``size`` bytes (0..0xFFFF) in the send ring.

        Raises ValueError for a bad size, WintunRingFull when the ring is full,
        TunClosed when the adapter is terminating.
        """
        if not 0 <= size <= WINTUN_MAX_IP_PACKET_SIZE:
            raise ValueError(f"packet size {size} exceeds {WINTUN_MAX_IP_PACKET_SIZE}")
        handle = self._live_handle()
        address = self.library._WintunAllocateSendPacket(handle, size)
        if address:
            return SendBuffer(self, int(address), size)
        code = self.library.last_error()
        if code == ErrorCode.ERROR_BUFFER_OVERFLOW:
            raise WintunRingFull("WintunAllocateSendPacket", code)
        if code == ErrorCode.ERROR_HANDLE_EOF:
            raise TunClosed(f"Wintun adapter {self.adapter.name!r} is terminating")
        raise WintunError("WintunAllocateSendPacket", code)

    def send_packet(self, packet: SendBuffer) -> None:
        """``WintunSendPacket``: commit an allocation (once)."""
        if packet.session is not self:
            raise ValueError("packet belongs to another session")
        if packet._sent:
            raise ValueError("packet already sent")
        handle = self._live_handle()
        packet._sent = True
        self.library._WintunSendPacket(handle, packet.address)

    def send(self, data: bytes | bytearray | memoryview) -> bool:
        """Allocate, copy and commit one packet; False if the ring was full (dropped)."""
        try:
            buffer = self.allocate_send_packet(len(data))
        except WintunRingFull:
            return False
        ctypes.memmove(buffer.address, bytes(data), len(data))
        self.send_packet(buffer)
        return True

    def end(self) -> None:
        """``WintunEndSession``; idempotent.  Outstanding packets become invalid."""
        handle, self._handle = self._handle, None
        if handle is not None:
            self.library._WintunEndSession(handle)

    def __enter__(self) -> WintunSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.end()

    def __repr__(self) -> str:
        state = " ended" if self.ended else ""
        return f"<WintunSession {self.adapter.name!r} capacity={self.capacity:#x}{state}>"


class WintunTun:
    """A ``TunDevice`` over a Wintun session.

    ``read_batch`` drains ReceivePacket/ReleaseReceivePacket without blocking;
    ``write_batch`` allocates, copies and sends each packet, dropping (and counting
    in ``stats``) packets over 0xFFFF bytes and packets that meet a full ring, as
    wireguard-go does.  ``fileno()`` is the read-wait event where that is a file
    descriptor (the Linux test double); on Windows wait on :attr:`read_wait_event`
    with WaitForSingleObject instead (``fileno()`` raises io.UnsupportedOperation).

    ``close()`` may be called from another thread: it sets the read-wait event,
    waits for calls in progress, then ends the session and closes the adapter.
    """

    stats: dict[str, int]

    def __init__(
        self,
        adapter: WintunAdapter,
        session: WintunSession,
        *,
        mtu: int = DEFAULT_MTU,
        owns_adapter: bool = True,
    ) -> None:
        """Wrap a running session; :meth:`create` is the usual constructor."""
        self._adapter = adapter
        self._session = session
        self._mtu = mtu
        self._owns_adapter = owns_adapter
        self._cv = threading.Condition()
        self._busy = 0
        self._closing = False
        self._closed = False
        self._gone = False
        self.stats = {}

    @classmethod
    def create(
        cls,
        library: WintunLibrary,
        name: str,
        *,
        tunnel_type: str = "WireGuard",
        guid: uuid.UUID | None = None,
        ring_capacity: int = DEFAULT_RING_CAPACITY,
        mtu: int = DEFAULT_MTU,
    ) -> WintunTun:
        """Create adapter ``name`` and start a session on it.

        ``mtu`` is what the runtime should assume; the interface MTU itself is set
        by the system tools (IP Helper on Windows, ``ip`` with the test double).
        """
        check_ring_capacity(ring_capacity)
        adapter = library.create_adapter(name, tunnel_type, guid)
        try:
            session = adapter.start_session(ring_capacity)
        except BaseException:
            adapter.close()
            raise
        return cls(adapter, session, mtu=mtu)

    # -- properties -----------------------------------------------------------------

    @property
    def name(self) -> str:
        """The adapter name."""
        return self._adapter.name

    @property
    def mtu(self) -> int:
        """The MTU the runtime uses for this device."""
        return self._mtu

    @property
    def adapter(self) -> WintunAdapter:
        """The underlying adapter."""
        return self._adapter

    @property
    def session(self) -> WintunSession:
        """The underlying session."""
        return self._session

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or once Wintun reported the adapter terminating."""
        return self._closed or self._closing or self._gone

    @property
    def read_wait_event(self) -> int:
        """The session's read-wait event (HANDLE on Windows, fd in the double)."""
        return self._session.read_wait_event

    def fileno(self) -> int:
        """The read-wait event as a file descriptor; -1 once closed."""
        if self._closed or self._closing:
            return -1
        if sys.platform == "win32":
            raise io.UnsupportedOperation("Wintun's read-wait event is a HANDLE, not an fd")
        return self._session.read_wait_event

    # -- packet I/O ----------------------------------------------------------------

    def _count(self, reason: str, n: int = 1) -> None:
        self.stats[reason] = self.stats.get(reason, 0) + n

    def _enter(self) -> None:
        with self._cv:
            if self._closing or self._closed:
                raise TunClosed(f"Wintun device {self.name!r} is closed")
            if self._gone:
                raise TunClosed(f"Wintun adapter {self.name!r} is gone")
            self._busy += 1

    def _leave(self) -> None:
        with self._cv:
            self._busy -= 1
            if self._busy == 0:
                self._cv.notify_all()

    def read_batch(self, max_packets: int = IO_BATCH_SIZE) -> list[bytes]:
        """Every packet in the ring now, up to ``max_packets``; ``[]`` if none.

        Raises TunClosed after close() or once the adapter is terminating (packets
        already taken in the same call are returned first; the next call raises).
        A corrupt ring raises WintunError.
        """
        self._enter()
        out: list[bytes] = []
        try:
            session = self._session
            library = session.library
            handle = session._live_handle()
            receive = library._WintunReceivePacket
            release = library._WintunReleaseReceivePacket
            size = _DWORD(0)
            size_ref = ctypes.byref(size)
            string_at = ctypes.string_at
            while len(out) < max_packets:
                address = receive(handle, size_ref)
                if not address:
                    code = library.last_error()
                    if code == ErrorCode.ERROR_NO_MORE_ITEMS:
                        break
                    if code == ErrorCode.ERROR_HANDLE_EOF:
                        self._gone = True
                        if out:
                            break
                        raise TunClosed(f"Wintun adapter {self.name!r} is terminating")
                    self._count(f"read_error_{code}")
                    raise WintunError("WintunReceivePacket", code)
                n = size.value
                if n > WINTUN_MAX_IP_PACKET_SIZE:  # cannot happen with a sane DLL
                    self._count("read_invalid_size")
                    raise WintunError("WintunReceivePacket", ErrorCode.ERROR_INVALID_DATA)
                out.append(string_at(address, n))
                release(handle, address)
        finally:
            self._leave()
        return out

    def write_batch(self, packets: Sequence[bytes | memoryview]) -> None:
        """Send each packet; oversized ones and ones meeting a full ring are dropped.

        Raises TunClosed after close() or once the adapter is terminating.
        """
        self._enter()
        try:
            session = self._session
            library = session.library
            handle = session._live_handle()
            allocate = library._WintunAllocateSendPacket
            send = library._WintunSendPacket
            memmove = ctypes.memmove
            for packet in packets:
                n = len(packet)
                if n > WINTUN_MAX_IP_PACKET_SIZE:
                    self._count("write_oversize")
                    continue
                address = allocate(handle, n)
                if not address:
                    code = library.last_error()
                    if code == ErrorCode.ERROR_BUFFER_OVERFLOW:
                        self._count("write_ring_full")
                        continue
                    if code == ErrorCode.ERROR_HANDLE_EOF:
                        self._gone = True
                        raise TunClosed(f"Wintun adapter {self.name!r} is terminating")
                    self._count(f"write_error_{code}")
                    continue
                memmove(address, packet if isinstance(packet, bytes) else bytes(packet), n)
                send(handle, address)
        finally:
            self._leave()

    def close(self) -> None:
        """End the session and close the adapter (which removes it); idempotent."""
        with self._cv:
            if self._closing or self._closed:
                return
            self._closing = True
        # Wake a reader blocked on the event, then wait for calls in progress.
        self._session.signal_read_event()
        with self._cv:
            while self._busy:
                self._cv.wait()
        try:
            self._session.end()
        finally:
            if self._owns_adapter:
                self._adapter.close()
            with self._cv:
                self._closed = True

    def __enter__(self) -> WintunTun:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else ""
        return f"<WintunTun {self.name!r}{state}>"
