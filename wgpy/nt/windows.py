"""Windows pieces of wgpy.nt: Wintun adapters for the runtime, and UAPI on a named pipe.

Nothing here has run on Windows yet (see docs/nt.md); the portable parts are tested
on Linux: :class:`EventBridgeTun` against the Wintun test double, and
:func:`serve_uapi_stream` (the UAPI framing the pipe server uses) over a socket pair.

* :func:`create_tun` makes a Wintun adapter with a session
  (:class:`~wgpy.tun.wintun.WintunTun`) and wraps it in :class:`EventBridgeTun`:
  Wintun signals packets through an event HANDLE, while the runtime's event loop
  selects on sockets, so a helper thread waits on the event and wakes the loop
  through a socket pair.
* :class:`NamedPipeUapiServer` serves UAPI at
  ``\\\\.\\pipe\\ProtectedPrefix\\Administrators\\WireGuard\\NAME`` (the path
  wireguard-go and ``wg.exe`` use) with wireguard-go's security descriptor
  ``O:SYD:P(A;;GA;;;SY)(A;;GA;;;BA)S:(ML;;NWNRNX;;;HI)``: owner SYSTEM, full access
  for SYSTEM and Administrators, high integrity.  ``wg.exe`` refuses a pipe whose
  owner is not LocalSystem; only a process running as SYSTEM may set that owner, so
  in an ordinary elevated process the server falls back to the default owner (and
  logs that ``wg.exe`` will not talk to it; wgpy's own clients still can).

Known gap: :class:`~wgpy.runtime.interface.Interface` wakes its loop through
``os.pipe()``, which ``select()`` cannot wait on under Windows; the runtime needs a
socket-pair wake-up there before adapters can run on Windows.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from wgpy.constants import DEFAULT_MTU, IO_BATCH_SIZE, UAPI_MAX_LINE
from wgpy.tun.wintun import WintunLibrary, WintunTun
from wgpy.uapi import UapiBackend, UapiClient, UapiError, uapi_get, uapi_set
from wgpy.uapi.protocol import _OP_LINE_MAX, _errno_line
from wgpy.uapi.server import _LineReader, _LineTooLong

__all__ = [
    "PIPE_PREFIX",
    "PIPE_SDDL",
    "EventBridgeTun",
    "NamedPipeUapiServer",
    "PipeUapiClient",
    "create_tun",
    "pipe_path",
    "serve_uapi_stream",
    "tun_ifindex",
    "wintun_library",
]

log = logging.getLogger("wgpy.nt")

PIPE_PREFIX = "\\\\.\\pipe\\ProtectedPrefix\\Administrators\\WireGuard\\"
#: wireguard-go's descriptor for the UAPI pipe (ipc/uapi_windows.go).
PIPE_SDDL = "O:SYD:P(A;;GA;;;SY)(A;;GA;;;BA)S:(ML;;NWNRNX;;;HI)"
#: The same without the owner, for processes that may not make SYSTEM the owner.
_PIPE_SDDL_NO_OWNER = "D:P(A;;GA;;;SY)(A;;GA;;;BA)S:(ML;;NWNRNX;;;HI)"
_WAIT_SLICE = 0.5


#: Pipes of userspace adapters, which need no administrator: a prefix of the
#: user's own (under ProtectedPrefix only administrators may create pipes).
USER_PIPE_PREFIX = "\\\\.\\pipe\\wgpy\\"
#: The user pipe's descriptor: SYSTEM, administrators and the owner (the user).
_USER_PIPE_SDDL = "D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)"


def pipe_path(name: str, *, user: bool = False) -> str:
    """The UAPI named pipe of interface ``name`` (``user``: of a userspace
    adapter, ``\\\\.\\pipe\\wgpy\\USERNAME\\NAME``)."""
    if user:
        return f"{USER_PIPE_PREFIX}{os.environ.get('USERNAME', 'user')}\\{name}"
    return PIPE_PREFIX + name


# ---------------------------------------------------------------------------
# Wintun adapters
# ---------------------------------------------------------------------------


def wintun_library() -> WintunLibrary:
    """``wintun.dll`` from ``$WGPY_WINTUN_DLL``, else next to this package, else the
    DLL search path."""
    path = os.environ.get("WGPY_WINTUN_DLL")
    if not path:
        beside = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wintun.dll")
        path = beside if os.path.exists(beside) else "wintun.dll"
    return WintunLibrary(path)


class EventBridgeTun:
    """A ``TunDevice`` over a :class:`WintunTun` whose ``fileno()`` is a socket.

    A helper thread waits on Wintun's read-wait event and writes one byte into a
    socket pair; :meth:`read_batch` drains that byte and the ring.  The thread waits
    again only after a read found the ring drained, so a level-triggered event (the
    Linux test double) does not make it spin.
    """

    stats: dict[str, int]

    def __init__(self, tun: WintunTun, library: WintunLibrary) -> None:
        self._tun = tun
        self.stats = tun.stats  # the same counters
        self._library = library
        self._r, self._w = socket.socketpair()
        self._r.setblocking(False)
        self._w.setblocking(False)
        self._stop = threading.Event()
        self._rearm = threading.Event()
        self._rearm.set()
        self._thread = threading.Thread(target=self._wait, name="wgpy-wintun-event", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        """The adapter name."""
        return self._tun.name

    @property
    def mtu(self) -> int:
        """The MTU the runtime uses."""
        return self._tun.mtu

    @property
    def closed(self) -> bool:
        """True once closed or the adapter went away."""
        return self._tun.closed

    @property
    def wintun(self) -> WintunTun:
        """The wrapped device."""
        return self._tun

    def fileno(self) -> int:
        """A socket that is readable when packets may be waiting; -1 once closed."""
        return -1 if self._stop.is_set() else self._r.fileno()

    def _poke(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            self._w.send(b"\0")

    def _wait(self) -> None:
        handle = self._tun.read_wait_event
        while not self._stop.is_set():
            if not self._rearm.wait(_WAIT_SLICE):
                continue
            try:
                signalled = self._library.wait_event(handle, _WAIT_SLICE)
            except (OSError, ValueError):
                return  # the session ended under us
            if signalled and not self._stop.is_set():
                self._rearm.clear()
                self._poke()

    def read_batch(self, max_packets: int = IO_BATCH_SIZE) -> list[bytes]:
        """Packets from the ring (TunClosed once the adapter is gone)."""
        with contextlib.suppress(BlockingIOError, OSError):
            while self._r.recv(4096):
                pass
        packets = self._tun.read_batch(max_packets)
        if len(packets) >= max_packets:
            self._poke()  # more may be waiting: come back without a new event
        else:
            self._rearm.set()
        return packets

    def write_batch(self, packets: Sequence[bytes | memoryview]) -> None:
        """Send packets into the ring."""
        self._tun.write_batch(packets)

    def close(self) -> None:
        """Stop the helper thread, end the session, close the adapter."""
        self._stop.set()
        self._rearm.set()
        self._tun.close()  # signals the read event, which wakes the thread
        if self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self._r.close()
        self._w.close()


def create_tun(ifname: str, tunnel_type: str, guid: uuid.UUID | None) -> EventBridgeTun:
    """A Wintun adapter ``ifname`` with a running session, ready for the runtime."""
    library = wintun_library()
    tun = WintunTun.create(library, ifname, tunnel_type=tunnel_type, guid=guid, mtu=DEFAULT_MTU)
    try:
        return EventBridgeTun(tun, library)
    except BaseException:
        tun.close()
        raise


def tun_ifindex(tun: EventBridgeTun) -> int:
    """The NetLuidIndex of the Wintun adapter's LUID (wgpy reports it in its LUID)."""
    return (tun.wintun.adapter.luid() >> 24) & 0xFF_FFFF


# ---------------------------------------------------------------------------
# UAPI over a byte stream (the pipe server's connection handler)
# ---------------------------------------------------------------------------


def serve_uapi_stream(
    recv: Callable[[int], bytes],
    send: Callable[[bytes], None],
    backend: UapiBackend,
    op_lock: AbstractContextManager[Any],
) -> None:
    """Serve UAPI operations on one connection until it ends (wireguard.com/xplatform
    framing: ``get=1`` + blank line, or ``set=1`` + lines + blank line, each answered
    with ``errno=N`` and a blank line; anything else ends the connection)."""
    reader = _LineReader(recv)
    try:
        while True:
            op, _ = reader.readline(_OP_LINE_MAX)  # a partial last line counts
            if op is None:
                return
            if op == b"get=1":
                nxt = reader.readbyte()
                if nxt is None:
                    return
                if nxt != b"\n":
                    send(_errno_line(22))
                    continue
                with op_lock:
                    answer = uapi_get(backend).encode()
                send(answer)
            elif op == b"set=1":
                lines: list[str] = []
                while True:
                    raw, _ = reader.readline(UAPI_MAX_LINE)
                    if raw is None or raw in (b"", b"\r"):
                        break
                    lines.append(raw.decode("utf-8", "surrogateescape"))
                with op_lock:
                    err = uapi_set(backend, lines)
                send(_errno_line(err))
            else:
                return
    except (_LineTooLong, OSError):
        return


class PipeUapiClient(UapiClient):
    """:class:`~wgpy.uapi.UapiClient` over a named pipe (or any path ``open()``
    can read and write), one request per connection."""

    def __init__(self, path: str) -> None:
        super().__init__(path, timeout=None)
        self.path = path  # a pipe name, not a socket in the UAPI directory

    def request(self, payload: bytes) -> str:
        """Send one request; the answer up to and including its blank line."""
        with open(self.path, "r+b", buffering=0) as pipe:
            pipe.write(payload)
            buf = bytearray()
            while b"\n\n" not in buf:
                chunk = pipe.read(65536)
                if not chunk:
                    raise UapiError(71, "UAPI server closed the connection")  # EPROTO
                buf += chunk
        return bytes(buf[: buf.index(b"\n\n") + 2]).decode("utf-8", "surrogateescape")


# ---------------------------------------------------------------------------
# The named-pipe server (Windows only)
# ---------------------------------------------------------------------------

_VP = ctypes.c_void_p
_U32 = ctypes.c_uint32
_INVALID_HANDLE = ctypes.c_void_p(-1).value
_ERROR_BROKEN_PIPE = 109
_ERROR_PIPE_NOT_CONNECTED = 233
_ERROR_PIPE_CONNECTED = 535
_ERROR_INVALID_OWNER = 1307


@functools.cache
def _win32() -> Any:
    """kernel32/advapi32 with the signatures used here (Windows only)."""
    if sys.platform != "win32":
        raise OSError("named pipes exist only on Windows")
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    advapi32 = ctypes.WinDLL("advapi32", use_last_error=True)
    sigs: dict[Any, tuple[list[Any], Any]] = {
        kernel32.CreateNamedPipeW: (
            [ctypes.c_wchar_p, _U32, _U32, _U32, _U32, _U32, _U32, _VP],
            _VP,
        ),
        kernel32.ConnectNamedPipe: ([_VP, _VP], ctypes.c_int),
        kernel32.DisconnectNamedPipe: ([_VP], ctypes.c_int),
        kernel32.CloseHandle: ([_VP], ctypes.c_int),
        kernel32.ReadFile: ([_VP, _VP, _U32, _VP, _VP], ctypes.c_int),
        kernel32.WriteFile: ([_VP, _VP, _U32, _VP, _VP], ctypes.c_int),
        kernel32.CreateFileW: ([ctypes.c_wchar_p, _U32, _U32, _VP, _U32, _U32, _VP], _VP),
        advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW: (
            [ctypes.c_wchar_p, _U32, _VP, _VP],
            ctypes.c_int,
        ),
    }
    for fn, (argtypes, restype) in sigs.items():
        fn.argtypes = argtypes
        fn.restype = restype
    return kernel32, advapi32


class _SecurityAttributes(ctypes.Structure):
    _fields_ = [
        ("nLength", ctypes.c_uint32),
        ("lpSecurityDescriptor", ctypes.c_void_p),
        ("bInheritHandle", ctypes.c_int),
    ]


def _security(sddl: str) -> _SecurityAttributes:
    _, advapi32 = _win32()
    descriptor = ctypes.c_void_p()
    convert = advapi32.ConvertStringSecurityDescriptorToSecurityDescriptorW
    if not convert(sddl, 1, ctypes.byref(descriptor), None):  # SDDL_REVISION_1
        raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
    # The descriptor lives as long as the process (one per adapter): never freed.
    return _SecurityAttributes(ctypes.sizeof(_SecurityAttributes), descriptor, 0)


class NamedPipeUapiServer:
    """UAPI for one interface on its named pipe (Windows; see the module docstring)."""

    def __init__(self, name: str, backend: UapiBackend, *, user: bool = False) -> None:
        self.name = name
        self.backend = backend
        self.path = pipe_path(name, user=user)
        self._sddl = _USER_PIPE_SDDL if user else PIPE_SDDL
        self._op_lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self._security: _SecurityAttributes | None = None
        self._owner_is_system = True

    def start(self) -> None:
        """Create the first pipe instance and start accepting (OSError on failure)."""
        self._security = _security(self._sddl)
        first = self._create_instance(first=True)
        self._thread = threading.Thread(
            target=self._accept_loop, args=(first,), name=f"uapi-pipe-{self.name}", daemon=True
        )
        self._thread.start()

    def _create_instance(self, first: bool = False) -> int:
        kernel32, _ = _win32()
        open_mode = 0x00000003  # PIPE_ACCESS_DUPLEX
        if first:
            open_mode |= 0x00080000  # FILE_FLAG_FIRST_PIPE_INSTANCE: fail if the name is taken
        pipe_mode = 0x0  # PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT
        assert self._security is not None
        handle = kernel32.CreateNamedPipeW(
            self.path, open_mode, pipe_mode, 255, 4096, 4096, 0, ctypes.byref(self._security)
        )
        if handle in (None, _INVALID_HANDLE):
            err = ctypes.get_last_error()  # type: ignore[attr-defined]
            if err == _ERROR_INVALID_OWNER and self._owner_is_system and self._sddl == PIPE_SDDL:
                log.warning(
                    "%s: cannot make SYSTEM the pipe owner (not running as SYSTEM); "
                    "wg.exe will refuse this pipe",
                    self.name,
                )
                self._owner_is_system = False
                self._security = _security(_PIPE_SDDL_NO_OWNER)
                return self._create_instance(first)
            raise ctypes.WinError(err)  # type: ignore[attr-defined]
        return int(handle)

    def _accept_loop(self, handle: int) -> None:
        kernel32, _ = _win32()
        while not self._closing.is_set():
            ok = kernel32.ConnectNamedPipe(handle, None)
            if not ok and ctypes.get_last_error() != _ERROR_PIPE_CONNECTED:  # type: ignore[attr-defined]
                _close_handle(handle)
                if self._closing.is_set():
                    return
                handle = self._create_instance()
                continue
            if self._closing.is_set():
                _close_handle(handle)
                return
            threading.Thread(
                target=self._serve, args=(handle,), name=f"uapi-pipe-{self.name}-conn", daemon=True
            ).start()
            try:
                handle = self._create_instance()
            except OSError:
                log.exception("%s: cannot create the next pipe instance", self.name)
                return

    def _serve(self, handle: int) -> None:
        try:
            serve_uapi_stream(
                lambda n: _read_file(handle, n),
                lambda data: _write_file(handle, data),
                self.backend,
                self._op_lock,
            )
        finally:
            _close_handle(handle)

    def close(self) -> None:
        """Stop accepting; a connection in progress finishes on its own."""
        if self._closing.is_set():
            return
        self._closing.set()
        if self._thread is None:
            return
        # Wake ConnectNamedPipe by connecting to ourselves.
        kernel32, _ = _win32()
        client = kernel32.CreateFileW(
            self.path, 0xC0000000, 0, None, 3, 0, None
        )  # RW, OPEN_EXISTING
        if client not in (None, _INVALID_HANDLE):
            kernel32.CloseHandle(client)
        self._thread.join(5.0)


def _read_file(handle: int, size: int) -> bytes:
    kernel32, _ = _win32()
    buf = ctypes.create_string_buffer(size)
    got = ctypes.c_uint32(0)
    if not kernel32.ReadFile(handle, buf, size, ctypes.byref(got), None):
        err = ctypes.get_last_error()  # type: ignore[attr-defined]
        if err in (_ERROR_BROKEN_PIPE, _ERROR_PIPE_NOT_CONNECTED):
            return b""  # the client went away: end of input
        raise ctypes.WinError(err)  # type: ignore[attr-defined]
    return buf.raw[: got.value]


def _write_file(handle: int, data: bytes) -> None:
    kernel32, _ = _win32()
    view = memoryview(data)
    while view:
        done = ctypes.c_uint32(0)
        if not kernel32.WriteFile(handle, bytes(view), len(view), ctypes.byref(done), None):
            raise ctypes.WinError(ctypes.get_last_error())  # type: ignore[attr-defined]
        view = view[done.value :]


def _close_handle(handle: int) -> None:
    kernel32, _ = _win32()
    kernel32.DisconnectNamedPipe(handle)
    kernel32.CloseHandle(handle)
