"""The twelve wireguard.h functions, in Python, over wgpy's userspace engine.

Names, arguments and results follow the header; a failing call returns its
failure value (None for a handle, False for a BOOL, 0 for the version) and leaves a
Win32 error code for :func:`GetLastError` (per thread), exactly as the DLL does.
Nothing here raises for API misuse; :mod:`wgpy.nt.adapter` is the Pythonic layer
that raises :class:`~wgpy.nt.errors.WireGuardError` instead.

Where the header has an out parameter, the Python function returns it:

* ``WireGuardGetAdapterLUID(handle) -> NET_LUID``
* ``WireGuardGetAdapterState(handle) -> (ok, state)``
* ``WireGuardGetConfiguration(handle, buffer_or_None, bytes_in) -> (ok, bytes_out)``:
  ``bytes_out`` is the number of bytes written, or with ``ERROR_MORE_DATA`` the
  size needed.

Buffers are any object with the buffer protocol (``bytes``, ``bytearray``,
``memoryview``, a ctypes array or structure); ``WireGuardGetConfiguration`` needs a
writable one.  Like the driver, every failure (except ``ERROR_MORE_DATA``) also
sends an ERR line "``<Function>: <text> (Code 0x<code>)``" to the logger.

:class:`WgpyApi` bundles the functions as methods, the shape shared with
:class:`wgpy.nt.wireguard_dll.WireGuardDll` (the real driver) so callers can drive
either one.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import itertools
import logging
import os
import socket
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

from wgpy.nt.abi import (
    ALLOWED_IP_SIZE,
    INTERFACE_SIZE,
    MAX_ADAPTER_NAME,
    NET_LUID,
    PEER_SIZE,
    WIREGUARD_FUNCTIONS,
    AbiError,
    AdapterState,
    ErrorCode,
    InterfaceConfig,
    LoggerLevel,
    driver_version,
    net_luid_value,
    pack_configuration,
    parse_configuration,
)
from wgpy.nt.backend import (
    INNER_USERSPACE,
    AdapterBackend,
    AdapterGone,
    LocalAdapter,
    RemoteAdapter,
    find_uapi_socket,
    hub,
    inner_side,
    local_adapter,
    local_adapters,
)
from wgpy.nt.convert import config_from_uapi, config_to_uapi_lines
from wgpy.nt.errors import GetLastError, SetLastError, error_message
from wgpy.nt.registry import Registry
from wgpy.tun.userspace import (
    SESSION_CAPACITY_DEFAULT,
    PacketSession,
    TunnelSocket,
    UserspaceTun,
)
from wgpy.uapi import UapiError

#: WgpyStartSession flag: every packet goes to the session, none to the host.
TAKE_OVER = 1

__all__ = [
    *WIREGUARD_FUNCTIONS,
    "NET_LUID",
    "TAKE_OVER",
    "AdapterHandle",
    "GetLastError",
    "LoggerCallback",
    "SetLastError",
    "WgpyApi",
    "WgpyCreateUdpSocket",
    "WgpyEndSession",
    "WgpyGetAdapterAddresses",
    "WgpyGetReadWaitEvent",
    "WgpyReceivePacket",
    "WgpySendPacket",
    "WgpySetAdapterAddresses",
    "WgpyStartSession",
    "handle_from_id",
    "pack_partial_configuration",
]

log = logging.getLogger("wgpy.nt")

LoggerCallback = Callable[[int, int, str], None]

_E = ErrorCode
_MAX_NAME_UNITS = MAX_ADAPTER_NAME - 1
_TUNNEL_SUFFIX = " Tunnel"
#: Map from OS errors at adapter creation to Win32 codes.
_OS_ERRORS = {
    errno.EPERM: _E.ERROR_ACCESS_DENIED,
    errno.EACCES: _E.ERROR_ACCESS_DENIED,
    errno.ENOENT: _E.ERROR_FILE_NOT_FOUND,
    errno.ENODEV: _E.ERROR_DEVICE_NOT_AVAILABLE,
    errno.EBUSY: _E.ERROR_DUP_NAME,
    errno.EEXIST: _E.ERROR_DUP_NAME,
    errno.EADDRINUSE: _E.ERROR_ADDRESS_ALREADY_ASSOCIATED,
    errno.ENOMEM: _E.ERROR_NOT_ENOUGH_MEMORY,
}


class AdapterHandle:
    """``WIREGUARD_ADAPTER_HANDLE``: opaque; pass it to the other functions.

    ``id`` is the pointer value the C library hands out for it.
    """

    __slots__ = ("_backend", "_closed", "created", "id")

    def __init__(self, backend: AdapterBackend, created: bool, handle_id: int) -> None:
        self._backend = backend
        self.created = created
        self.id = handle_id
        self._closed = False

    @property
    def closed(self) -> bool:
        """True after WireGuardCloseAdapter."""
        return self._closed

    @property
    def backend(self) -> AdapterBackend:
        """The adapter behind the handle."""
        return self._backend

    def __repr__(self) -> str:
        kind = "created" if self.created else "opened"
        state = " closed" if self._closed else ""
        return f"<AdapterHandle {self._backend.ifname!r} {kind}{state} id={self.id:#x}>"


_handles_lock = threading.Lock()
_handles: dict[int, AdapterHandle] = {}
_handle_ids = itertools.count(0x1000, 0x10)


def _new_handle(backend: AdapterBackend, created: bool) -> AdapterHandle:
    with _handles_lock:
        handle = AdapterHandle(backend, created, next(_handle_ids))
        _handles[handle.id] = handle
    return handle


def handle_from_id(handle_id: int) -> AdapterHandle | None:
    """The open handle with this C pointer value, or None."""
    with _handles_lock:
        return _handles.get(handle_id)


def _fail(function: str, code: int, detail: str = "") -> None:
    """Record ``code`` as the last error and log the DLL's ERR line."""
    SetLastError(code)
    if code != _E.ERROR_MORE_DATA:
        text = f"{function}: {error_message(code)} (Code 0x{code:08X})"
        if detail:
            log.debug("%s failed: %s", function, detail)
        hub.emit(LoggerLevel.ERR, text)


def _units(text: str) -> int:
    """Length in UTF-16 code units."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _live(handle: object, function: str) -> AdapterHandle | None:
    if isinstance(handle, AdapterHandle) and not handle.closed:
        return handle
    _fail(function, _E.ERROR_INVALID_HANDLE)
    return None


def _coerce_guid(value: object) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    raw = bytes(memoryview(value))  # type: ignore[arg-type]
    if len(raw) != 16:
        raise ValueError("a GUID is 16 bytes")
    return uuid.UUID(bytes_le=raw)


def pack_partial_configuration(config: InterfaceConfig, capacity: int) -> bytes:
    """What GetConfiguration leaves in a buffer too small for ``config``: the
    interface record (its PeersCount saying how many follow) and each whole peer,
    with its allowed IPs, that fits.  Empty below 80 bytes."""
    if capacity < INTERFACE_SIZE:
        return b""
    room = capacity - INTERFACE_SIZE
    fitting = 0
    for peer in config.peers:
        size = PEER_SIZE + ALLOWED_IP_SIZE * len(peer.allowed_ips)
        if size > room:
            break
        room -= size
        fitting += 1
    partial = InterfaceConfig(
        flags=config.flags,
        listen_port=config.listen_port,
        private_key=config.private_key,
        public_key=config.public_key,
        peers=config.peers[:fitting],
    )
    return pack_configuration(partial)


class WgpyApi:
    """The wireguard.h functions over wgpy, as methods (see the module docstring)."""

    def __init__(self, registry: Registry | None = None) -> None:
        self._registry = registry

    @property
    def registry(self) -> Registry:
        """The adapter registry (read from the environment when first used)."""
        return self._registry or Registry()

    # -- adapters -----------------------------------------------------------------

    def WireGuardCreateAdapter(
        self,
        name: str,
        tunnel_type: str,
        requested_guid: object = None,
        *,
        inner: str | None = None,
        addresses: str | None = None,
    ) -> AdapterHandle | None:
        """Create an adapter in the calling thread's network namespace.

        ``requested_guid``: None, a :class:`uuid.UUID`, a 16-byte GUID buffer or a
        ``GUID`` structure.  Names longer than 127 UTF-16 units, and tunnel types
        that make "<type> Tunnel" longer than that, give ERROR_BUFFER_OVERFLOW.

        wgpy's keywords: ``inner="userspace"`` makes an adapter with no TUN or
        Wintun device and no privilege needed (``$WGPY_ADAPTER`` chooses when
        None; see :mod:`wgpy.tun.userspace`), ``addresses`` its tunnel
        addresses (CIDRs; default ``$WGPY_ADAPTER_ADDRESSES``).  A bad value
        gives ERROR_INVALID_PARAMETER.
        """
        fn = "WireGuardCreateAdapter"
        if not isinstance(name, str) or not name or "\0" in name:
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return None
        if not isinstance(tunnel_type, str) or "\0" in tunnel_type:
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return None
        if _units(name) > _MAX_NAME_UNITS or _units(tunnel_type + _TUNNEL_SUFFIX) > _MAX_NAME_UNITS:
            _fail(fn, _E.ERROR_BUFFER_OVERFLOW)
            return None
        try:
            guid = _coerce_guid(requested_guid)
        except (TypeError, ValueError):
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return None
        try:
            adapter = LocalAdapter.create(
                name, tunnel_type, guid, self._registry, inner=inner, addresses=addresses
            )
        except OSError as exc:
            code = getattr(exc, "winerror", None) or _OS_ERRORS.get(
                exc.errno or 0, _E.ERROR_GEN_FAILURE
            )
            _fail(fn, code, str(exc))
            return None
        except ValueError as exc:
            _fail(fn, _E.ERROR_INVALID_PARAMETER, str(exc))
            return None
        return _new_handle(adapter, True)

    def WireGuardOpenAdapter(self, name: str) -> AdapterHandle | None:
        """Open an existing adapter by name (ignoring case): one of wgpy's, in this
        process or another, else any UAPI interface of that name (e.g. one run by
        wireguard-go).  ERROR_NOT_FOUND when there is none."""
        fn = "WireGuardOpenAdapter"
        if not isinstance(name, str) or not name or "\0" in name:
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return None
        if _units(name) > _MAX_NAME_UNITS:
            _fail(fn, _E.ERROR_NOT_FOUND)
            return None
        try:
            record = self.registry.find(name)
            backend: AdapterBackend
            if record is not None:
                local = local_adapter(record.ifname) if record.pid == os.getpid() else None
                backend = local if local is not None else RemoteAdapter.from_record(record)
            else:
                found = find_uapi_socket(name)
                if found is None:
                    _fail(fn, _E.ERROR_NOT_FOUND)
                    return None
                backend = RemoteAdapter.from_socket(*found)
        except AdapterGone:
            _fail(fn, _E.ERROR_NOT_FOUND)
            return None
        except OSError as exc:
            _fail(fn, _OS_ERRORS.get(exc.errno or 0, _E.ERROR_GEN_FAILURE), str(exc))
            return None
        return _new_handle(backend, False)

    def WireGuardCloseAdapter(self, handle: AdapterHandle | None) -> None:
        """Release a handle; a handle that created its adapter removes it.  None and
        already-closed handles are ignored."""
        if not isinstance(handle, AdapterHandle) or handle.closed:
            return
        with _handles_lock:
            handle._closed = True
            _handles.pop(handle.id, None)
        backend = handle.backend
        if handle.created and isinstance(backend, LocalAdapter):
            backend.destroy()
        elif isinstance(backend, RemoteAdapter):
            backend.close()

    def WireGuardDeleteDriver(self) -> bool:
        """Forget the adapters of processes that died; FALSE with
        ERROR_INF_IN_USE_BY_DEVICES while any wgpy adapter is still alive."""
        registry = self.registry
        try:
            with registry.locked():
                live = registry.entries()
        except OSError as exc:
            _fail("WireGuardDeleteDriver", _E.ERROR_ACCESS_DENIED, str(exc))
            return False
        if live:
            _fail("WireGuardDeleteDriver", _E.ERROR_INF_IN_USE_BY_DEVICES)
            return False
        return True

    def WireGuardGetAdapterLUID(self, handle: AdapterHandle) -> NET_LUID:
        """The adapter's LUID: IfType 53, NetLuidIndex = the interface index.
        Cannot fail (an invalid handle gives an all-zero LUID)."""
        luid = NET_LUID()
        if isinstance(handle, AdapterHandle) and not handle.closed:
            index = handle.backend.ifindex
            luid.Value = net_luid_value(index & 0xFF_FFFF)
        return luid

    def WireGuardGetRunningDriverVersion(self) -> int:
        """wgpy's version as ``(major << 16) | minor``; 0 with ERROR_FILE_NOT_FOUND
        where the TUN driver is missing (no /dev/net/tun)."""
        fn = "WireGuardGetRunningDriverVersion"
        try:
            userspace = inner_side(None) == INNER_USERSPACE
        except ValueError:
            userspace = False
        if (
            not userspace
            and sys.platform.startswith("linux")
            and not os.path.exists("/dev/net/tun")
        ):
            _fail(fn, _E.ERROR_FILE_NOT_FOUND)
            return 0
        major, minor = _wgpy_version()
        if major == 0 and minor == 0:
            _fail(fn, _E.ERROR_VERSION_PARSE_ERROR)
            return 0
        return driver_version(major, minor)

    # -- logging --------------------------------------------------------------------

    def WireGuardSetLogger(self, logger: LoggerCallback | None) -> None:
        """Install the process-wide ``logger(level, filetime, message)``; None turns
        logging off.  It may be called from several threads at once."""
        hub.set_logger(logger)

    def WireGuardSetAdapterLogging(self, handle: AdapterHandle, state: int) -> bool:
        """Forward the adapter's own lines (non-zero ``state``), prefixed with
        ``"<ifindex>: "`` for WIREGUARD_ADAPTER_LOG_ON_WITH_PREFIX."""
        live = _live(handle, "WireGuardSetAdapterLogging")
        if live is None:
            return False
        live.backend.set_logging(int(state))
        return True

    # -- state ---------------------------------------------------------------------

    def WireGuardSetAdapterState(self, handle: AdapterHandle, state: int) -> bool:
        """Bring the adapter up (1) or down (0); anything else gives
        ERROR_INVALID_PARAMETER."""
        fn = "WireGuardSetAdapterState"
        live = _live(handle, fn)
        if live is None:
            return False
        if not isinstance(state, int) or state not in (AdapterState.DOWN, AdapterState.UP):
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return False
        return self._call(fn, lambda: live.backend.set_state(state == AdapterState.UP))

    def WireGuardGetAdapterState(self, handle: AdapterHandle) -> tuple[bool, AdapterState]:
        """``(TRUE, state)``, or ``(FALSE, DOWN)`` on failure."""
        fn = "WireGuardGetAdapterState"
        live = _live(handle, fn)
        if live is None:
            return False, AdapterState.DOWN
        result: list[bool] = []
        ok = self._call(fn, lambda: result.append(live.backend.get_state()))
        if not ok:
            return False, AdapterState.DOWN
        return True, AdapterState.UP if result[0] else AdapterState.DOWN

    # -- configuration ----------------------------------------------------------------

    def WireGuardSetConfiguration(self, handle: AdapterHandle, buffer: Any, size: int) -> bool:
        """Apply the configuration in the first ``size`` bytes of ``buffer``.

        The whole buffer is checked before anything is applied (unlike the driver,
        which applies records until the first bad one), so a malformed buffer
        leaves the adapter's configuration as it was.
        """
        fn = "WireGuardSetConfiguration"
        live = _live(handle, fn)
        if live is None:
            return False
        if buffer is None:
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return False
        try:
            view = memoryview(buffer)
        except TypeError:
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return False
        try:
            config = parse_configuration(view, size)
        except AbiError as exc:
            _fail(fn, exc.error_code, exc.reason)
            return False
        lines = config_to_uapi_lines(config)
        result: list[int] = []
        if not self._call(fn, lambda: result.append(live.backend.set_uapi(lines))):
            return False
        if result[0]:
            _fail(fn, _uapi_error(result[0]))
            return False
        return True

    def WireGuardGetConfiguration(
        self, handle: AdapterHandle, buffer: Any, size: int
    ) -> tuple[bool, int]:
        """Write the configuration into ``buffer`` (``size`` bytes of it).

        Returns ``(TRUE, bytes written)``; or ``(FALSE, bytes needed)`` with
        ERROR_MORE_DATA when it does not fit (the whole records that fit are still
        written), including for a None buffer, which is a size query.
        """
        fn = "WireGuardGetConfiguration"
        live = _live(handle, fn)
        if live is None:
            return False, 0
        view: memoryview | None = None
        capacity = 0
        if buffer is not None:
            try:
                view = memoryview(buffer).cast("B")
            except TypeError:
                _fail(fn, _E.ERROR_INVALID_PARAMETER)
                return False, 0
            if view.readonly:
                _fail(fn, _E.ERROR_NOACCESS)
                return False, 0
            if not isinstance(size, int) or not 0 <= size <= 0xFFFF_FFFF:
                _fail(fn, _E.ERROR_INVALID_PARAMETER)
                return False, 0
            if size > len(view):
                _fail(fn, _E.ERROR_NOACCESS)
                return False, 0
            capacity = size
        data, needed = self.configuration_bytes(live, capacity)
        if data is None:
            return False, 0
        if view is not None and data:
            view[: len(data)] = data
        if needed > capacity:
            _fail(fn, _E.ERROR_MORE_DATA)
            return False, needed
        return True, needed

    def configuration_bytes(self, handle: AdapterHandle, capacity: int) -> tuple[bytes | None, int]:
        """``(bytes to write, size needed)`` for GetConfiguration into ``capacity``
        bytes; ``(None, 0)`` after a failure (last error set)."""
        fn = "WireGuardGetConfiguration"
        result: list[InterfaceConfig] = []
        if not self._call(fn, lambda: result.append(config_from_uapi(handle.backend.get_uapi()))):
            return None, 0
        packed = pack_configuration(result[0])
        if len(packed) <= capacity:
            return packed, len(packed)
        return pack_partial_configuration(result[0], capacity), len(packed)

    # -- wgpy's extensions: userspace adapters -------------------------------------------

    def _userspace(self, handle: AdapterHandle, function: str) -> UserspaceTun | None:
        live = _live(handle, function)
        if live is None:
            return None
        backend = live.backend
        tun = backend.userspace if isinstance(backend, LocalAdapter) else None
        if tun is None or tun.closed:
            _fail(function, _E.ERROR_NOT_SUPPORTED, "not a userspace adapter of this process")
            return None
        return tun

    def WgpySetAdapterAddresses(self, handle: AdapterHandle, addresses: str) -> bool:
        """Set a userspace adapter's tunnel addresses (comma-separated CIDRs,
        ``"10.0.0.2/24,fd00::2/64"``; ``""`` removes them all): the built-in
        host answers echo requests to them and its sockets send from them.
        ERROR_INVALID_PARAMETER for a malformed list (nothing changes),
        ERROR_NOT_SUPPORTED for an adapter without a userspace side."""
        fn = "WgpySetAdapterAddresses"
        tun = self._userspace(handle, fn)
        if tun is None:
            return False
        if not isinstance(addresses, str):
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return False
        try:
            tun.set_addresses(addresses)
        except ValueError as exc:
            _fail(fn, _E.ERROR_INVALID_PARAMETER, str(exc))
            return False
        return True

    def WgpyGetAdapterAddresses(self, handle: AdapterHandle) -> str | None:
        """A userspace adapter's addresses as comma-separated CIDRs, or None."""
        tun = self._userspace(handle, "WgpyGetAdapterAddresses")
        return None if tun is None else ",".join(tun.addresses)

    def WgpyCreateUdpSocket(
        self, handle: AdapterHandle, family: int = socket.AF_INET
    ) -> TunnelSocket | None:
        """A UDP socket on a userspace adapter's tunnel side (Python only;
        :class:`wgpy.tun.userspace.TunnelSocket`)."""
        fn = "WgpyCreateUdpSocket"
        tun = self._userspace(handle, fn)
        if tun is None:
            return None
        try:
            return tun.udp_socket(family)
        except ValueError as exc:
            _fail(fn, _E.ERROR_INVALID_PARAMETER, str(exc))
            return None

    def WgpyStartSession(
        self, handle: AdapterHandle, capacity: int = SESSION_CAPACITY_DEFAULT, flags: int = 0
    ) -> PacketSession | None:
        """Open a userspace adapter's packet session (WintunStartSession in
        shape): ``capacity`` packets held (1..2^20), ``flags`` 0 or
        WGPY_SESSION_TAKE_OVER (every packet to the session, none to the
        built-in host).  ERROR_ALREADY_INITIALIZED when one is open (as
        Wintun), ERROR_INVALID_PARAMETER for a bad capacity or flag."""
        fn = "WgpyStartSession"
        tun = self._userspace(handle, fn)
        if tun is None:
            return None
        if not isinstance(capacity, int) or not isinstance(flags, int) or flags & ~TAKE_OVER:
            _fail(fn, _E.ERROR_INVALID_PARAMETER)
            return None
        try:
            return tun.start_session(capacity, take_over=bool(flags & TAKE_OVER))
        except ValueError as exc:
            _fail(fn, _E.ERROR_INVALID_PARAMETER, str(exc))
            return None
        except OSError as exc:
            code = _E.ERROR_ALREADY_INITIALIZED if exc.errno == errno.EBUSY else _E.ERROR_HANDLE_EOF
            _fail(fn, code, str(exc))
            return None

    def WgpyEndSession(self, session: PacketSession) -> None:
        """End a packet session (WintunEndSession); None is ignored."""
        if isinstance(session, PacketSession):
            session.end()

    def WgpyReceivePacket(self, session: PacketSession) -> bytes | None:
        """The next packet from the tunnel, or None with ERROR_NO_MORE_ITEMS
        when none waits (ERROR_HANDLE_EOF once the session or adapter ended)."""
        fn = "WgpyReceivePacket"
        if not isinstance(session, PacketSession):
            _fail(fn, _E.ERROR_INVALID_HANDLE)
            return None
        try:
            packet = session.receive_packet()
        except OSError:
            SetLastError(_E.ERROR_HANDLE_EOF)
            return None
        if packet is None:
            SetLastError(_E.ERROR_NO_MORE_ITEMS)  # routine, as with Wintun: not logged
        return packet

    def WgpySendPacket(self, session: PacketSession, packet: Any) -> bool:
        """Send one IP packet into the tunnel.  ERROR_INVALID_PARAMETER if it is
        not an IP packet or exceeds the MTU, ERROR_HANDLE_EOF once ended."""
        fn = "WgpySendPacket"
        if not isinstance(session, PacketSession):
            _fail(fn, _E.ERROR_INVALID_HANDLE)
            return False
        try:
            session.send_packet(bytes(memoryview(packet)))
        except (ValueError, TypeError) as exc:
            _fail(fn, _E.ERROR_INVALID_PARAMETER, str(exc))
            return False
        except OSError as exc:
            _fail(fn, _E.ERROR_HANDLE_EOF, str(exc))
            return False
        return True

    def WgpyGetReadWaitEvent(self, session: PacketSession) -> int:
        """What to wait on for packets: a descriptor readable while packets
        wait (POSIX), the event handle (Windows); -1/0 for a bad session."""
        if not isinstance(session, PacketSession):
            SetLastError(_E.ERROR_INVALID_HANDLE)
            return -1 if sys.platform != "win32" else 0
        return session.read_wait_event()

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _call(function: str, body: Callable[[], object]) -> bool:
        """Run ``body``; map what it raises to a Win32 error and return False."""
        try:
            body()
        except AdapterGone:
            _fail(function, _E.ERROR_FILE_NOT_FOUND)
            return False
        except UapiError as exc:
            _fail(function, _uapi_error(exc.errno or 0), str(exc))
            return False
        except OSError as exc:
            _fail(function, _OS_ERRORS.get(exc.errno or 0, _E.ERROR_GEN_FAILURE), str(exc))
            return False
        except Exception as exc:
            log.exception("%s failed", function)
            _fail(function, _E.ERROR_INTERNAL_ERROR, repr(exc))
            return False
        return True

    @staticmethod
    def GetLastError() -> int:
        """This thread's last error (see :func:`wgpy.nt.errors.GetLastError`)."""
        return GetLastError()


def _uapi_error(err: int) -> int:
    if err == errno.EADDRINUSE:
        return _E.ERROR_ADDRESS_ALREADY_ASSOCIATED
    if err == errno.EINVAL:
        return _E.ERROR_INVALID_PARAMETER
    return _E.ERROR_GEN_FAILURE


def _wgpy_version() -> tuple[int, int]:
    from importlib import metadata

    try:
        text = metadata.version("wgpy")
    except metadata.PackageNotFoundError:
        return 0, 0
    parts = [*text.split("."), "0", "0"][:2]
    try:
        return int(parts[0]) & 0xFFFF, int("".join(c for c in parts[1] if c.isdigit()) or 0)
    except ValueError:
        return 0, 0


# ---------------------------------------------------------------------------
# Module-level functions: the default instance
# ---------------------------------------------------------------------------

_api = WgpyApi()

WireGuardCreateAdapter = _api.WireGuardCreateAdapter
WireGuardOpenAdapter = _api.WireGuardOpenAdapter
WireGuardCloseAdapter = _api.WireGuardCloseAdapter
WireGuardDeleteDriver = _api.WireGuardDeleteDriver
WireGuardGetAdapterLUID = _api.WireGuardGetAdapterLUID
WireGuardGetRunningDriverVersion = _api.WireGuardGetRunningDriverVersion
WireGuardSetLogger = _api.WireGuardSetLogger
WireGuardSetAdapterLogging = _api.WireGuardSetAdapterLogging
WireGuardSetAdapterState = _api.WireGuardSetAdapterState
WireGuardGetAdapterState = _api.WireGuardGetAdapterState
WireGuardSetConfiguration = _api.WireGuardSetConfiguration
WireGuardGetConfiguration = _api.WireGuardGetConfiguration
WgpySetAdapterAddresses = _api.WgpySetAdapterAddresses
WgpyGetAdapterAddresses = _api.WgpyGetAdapterAddresses
WgpyCreateUdpSocket = _api.WgpyCreateUdpSocket
WgpyStartSession = _api.WgpyStartSession
WgpyEndSession = _api.WgpyEndSession
WgpyReceivePacket = _api.WgpyReceivePacket
WgpySendPacket = _api.WgpySendPacket
WgpyGetReadWaitEvent = _api.WgpyGetReadWaitEvent


def default_api() -> WgpyApi:
    """The instance behind the module-level functions."""
    return _api


def close_all_adapters() -> None:
    """Remove every adapter this process created (run at interpreter exit)."""
    with _handles_lock:
        handles = list(_handles.values())
    for handle in handles:
        with contextlib.suppress(Exception):
            _api.WireGuardCloseAdapter(handle)
    for adapter in local_adapters():
        with contextlib.suppress(Exception):
            adapter.destroy()


atexit.register(close_all_adapters)
