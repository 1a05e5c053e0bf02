"""The adapters behind wgpy's wireguard.h API: in this process or in another one.

:class:`LocalAdapter` is an adapter this process created: a TUN interface (Linux
``/dev/net/tun``; Wintun on Windows), a :class:`~wgpy.runtime.interface.Interface`
whose event loop runs on a background thread, and a UAPI server (Unix socket; named
pipe on Windows) so that ``wg`` and other processes see and configure it.  Its entry
in the :mod:`~wgpy.nt.registry` lets other processes find it by name.

:class:`RemoteAdapter` is an adapter some other process owns (or any UAPI interface
such as a wireguard-go one, found by its socket name): configuration goes over UAPI,
state through the link flag in the owner's network namespace.

Both speak UAPI internally (see :mod:`wgpy.nt.convert`), so a configuration applies
the same way whichever process calls.

Deviations from WireGuardNT, on purpose (documented in docs/nt.md):

* the adapter state is the interface's link state (IFF_UP on Linux): ``ip link set``
  and ``WireGuardSetAdapterState`` are the same switch, and any process can flip it;
* the UDP port is bound when the adapter is created, not at the first Up, and stays
  bound while the adapter is down (the driver closes its sockets on Down);
* adapter log lines reach only the owning process's logger.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from wgpy import paths
from wgpy.constants import (
    MAX_TIMER_HANDSHAKES,
    UAPI_SOCKET_DIRECTORY,
    ZERO_KEY_MATERIAL_AFTER,
)
from wgpy.device import Event, EventKind
from wgpy.nt.abi import AdapterLogState, LoggerLevel, filetime_from_unix_ns
from wgpy.nt.registry import AdapterRecord, Registry, fold_name, process_start_time
from wgpy.runtime.interface import Interface
from wgpy.runtime.options import InterfaceOptions
from wgpy.tun.base import TunDevice
from wgpy.uapi import UapiClient, UapiConfig, UapiError, parse_get_response, uapi_get, uapi_set

if TYPE_CHECKING:
    from wgpy.nt.windows import PipeUapiClient as PipeClient
    from wgpy.tun.userspace import UserspaceTun

__all__ = [
    "INNER_TUN",
    "INNER_USERSPACE",
    "AdapterBackend",
    "AdapterGone",
    "LocalAdapter",
    "LogHub",
    "RemoteAdapter",
    "addresses_from_environment",
    "find_uapi_socket",
    "hub",
    "inner_side",
    "local_adapter",
]

log = logging.getLogger("wgpy.nt")

#: Entries kept for an adapter whose logging is off (the driver's ring size).
_LOG_RING = 64
#: Longest a line may be before it is cut and ends in U+2026 (the DLL's limit).
_LOG_LINE_MAX = 1024
_LOOP_JOIN_TIMEOUT = 10.0
_LINUX = sys.platform.startswith("linux")


class AdapterGone(Exception):
    """The adapter behind a handle no longer exists."""


# ---------------------------------------------------------------------------
# Logging
# ---------------------------------------------------------------------------

LoggerCallback = Callable[[int, int, str], None]


def _now_filetime() -> int:
    return filetime_from_unix_ns(time.time_ns())


class LogHub:
    """The process-wide logger (``WireGuardSetLogger``).  Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logger: LoggerCallback | None = None

    def set_logger(self, logger: LoggerCallback | None) -> None:
        """Install ``logger(level, filetime, message)``; None turns logging off."""
        with self._lock:
            self._logger = logger

    def emit(self, level: int, message: str, timestamp: int | None = None) -> None:
        """Send one line to the logger, if any.  Never raises."""
        logger = self._logger
        if logger is None:
            return
        if len(message) > _LOG_LINE_MAX - 1:
            message = message[: _LOG_LINE_MAX - 2] + "\u2026"
        try:
            logger(int(level), _now_filetime() if timestamp is None else timestamp, message)
        except Exception:
            log.exception("wireguard.h logger callback raised")


#: The one hub of this process.
hub = LogHub()


# ---------------------------------------------------------------------------
# Backend protocol
# ---------------------------------------------------------------------------


class AdapterBackend(Protocol):
    """What a handle needs from an adapter, wherever it lives."""

    @property
    def ifname(self) -> str:
        """The system interface name."""
        ...

    @property
    def ifindex(self) -> int:
        """The interface index (NetLuidIndex of the LUID)."""
        ...

    def display_name(self) -> str:
        """The current adapter name (it changes when another adapter takes it)."""
        ...

    def get_uapi(self) -> UapiConfig:
        """The configuration as a UAPI ``get`` reports it; AdapterGone if gone."""
        ...

    def set_uapi(self, lines: list[str]) -> int:
        """Apply UAPI ``set`` lines; 0 or a positive errno; AdapterGone if gone."""
        ...

    def get_state(self) -> bool:
        """True when up; AdapterGone if gone."""
        ...

    def set_state(self, up: bool) -> None:
        """Bring the adapter up or down; AdapterGone if gone."""
        ...

    def set_logging(self, state: int) -> None:
        """Forward (or not) this adapter's log lines to the process logger."""
        ...


# ---------------------------------------------------------------------------
# Local adapters
# ---------------------------------------------------------------------------

_local_lock = threading.Lock()
_local: dict[str, LocalAdapter] = {}  # by ifname
_peer_numbers = itertools.count(1)  # driver-wide peer counter
_keypair_numbers = itertools.count(1)


def local_adapter(ifname: str) -> LocalAdapter | None:
    """The live adapter this process created under ``ifname``, if any."""
    with _local_lock:
        return _local.get(ifname)


def local_adapters() -> list[LocalAdapter]:
    """Every live adapter this process created."""
    with _local_lock:
        return list(_local.values())


class LocalAdapter:
    """An adapter owned by this process.  Build with :meth:`create`."""

    def __init__(
        self,
        record: AdapterRecord,
        iface: Interface,
        registry: Registry,
        *,
        server_close: Callable[[], None],
        set_link: Callable[[bool], None],
        get_link: Callable[[], bool],
        netns_fd: int | None,
        cleanup: Callable[[], None],
    ) -> None:
        self._record = record
        self.iface = iface
        self._registry = registry
        self._server_close = server_close
        self._set_link = set_link
        self._get_link = get_link
        self._netns_fd = netns_fd
        self._cleanup = cleanup
        self._log_state = int(AdapterLogState.OFF)
        self._pending: deque[tuple[int, int, str]] = deque(maxlen=_LOG_RING)
        self._log_lock = threading.RLock()
        self._peer_ids: dict[bytes, int] = {}
        self._gone = False
        self._destroyed = False
        self._thread: threading.Thread | None = None
        iface.on_event = self._on_event

    # -- creation ----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        tunnel_type: str,
        guid: uuid.UUID | None,
        registry: Registry | None = None,
        *,
        inner: str | None = None,
        addresses: str | None = None,
    ) -> LocalAdapter:
        """Create adapter ``name`` in the calling thread's network namespace.

        If a wgpy adapter already has this name (ignoring case), it is renamed
        ``"<name> N"`` (the first free N from 1) and the new adapter takes the name,
        as the driver does.  Raises OSError (or ValueError) when the interface cannot
        be made.

        ``inner`` is the adapter's inner side: ``"tun"`` (a TUN or Wintun device)
        or ``"userspace"`` (no device, no privilege: :mod:`wgpy.tun.userspace`);
        None reads ``$WGPY_ADAPTER`` (default ``tun``).  ``addresses`` (userspace
        only; CIDRs) defaults to :func:`addresses_from_environment`.
        """
        registry = registry or Registry()
        guid = guid or uuid.uuid4()
        inner = inner_side(inner)
        if inner == INNER_USERSPACE:
            if addresses is None:
                addresses = addresses_from_environment(name)
            return cls._create_userspace(name, tunnel_type, guid, registry, addresses)
        if addresses is not None:
            raise ValueError("addresses can only be given to a userspace adapter")
        if sys.platform == "win32":
            return cls._create_windows(name, tunnel_type, guid, registry)
        return cls._create_linux(name, tunnel_type, guid, registry)

    @classmethod
    def _create_userspace(
        cls, name: str, tunnel_type: str, guid: uuid.UUID, registry: Registry, addresses: str
    ) -> LocalAdapter:
        from wgpy.net import netns
        from wgpy.tun.userspace import UserspaceTun

        options = InterfaceOptions.from_environment()
        with registry.locked():
            ifname = registry.choose_ifname(name, lambda _name: False)
            tun = UserspaceTun(ifname, mtu=options.mtu, addresses=addresses)
            # UDP sockets open in the creating thread's namespace, whichever
            # thread later changes the listen port.
            netns_fd = netns.open_thread_netns() if _LINUX else None

            def cleanup() -> None:
                if netns_fd is not None:
                    os.close(netns_fd)

            iface, server, record = _start_adapter(
                registry,
                name,
                tun,
                lambda: Interface(tun, options=options, netns_fd=netns_fd),
                lambda iface: _user_uapi_server(ifname, iface),
                cleanup,
                lambda uapi: AdapterRecord(
                    name=name,
                    ifname=ifname,
                    ifindex=_free_ifindex(registry),
                    tunnel_type=tunnel_type,
                    guid=str(guid),
                    start_time=process_start_time(os.getpid()) or 0,
                    netns="",
                    inner=INNER_USERSPACE,
                    pid=os.getpid(),
                    uapi=uapi,
                ),
            )
        return cls._launch(
            record, iface, registry, server, tun.set_up, tun.is_up, netns_fd, cleanup
        )

    @classmethod
    def _create_linux(
        cls, name: str, tunnel_type: str, guid: uuid.UUID, registry: Registry
    ) -> LocalAdapter:
        from wgpy.net import netns
        from wgpy.uapi import UapiServer

        options = InterfaceOptions.from_environment()
        with registry.locked():
            ifname = registry.choose_ifname(name, _interface_exists)
            netns_fd = netns.open_thread_netns()
            tun: TunDevice | None = None
            try:
                tun, ifindex = _open_linux_tun(ifname, tunnel_type, guid, options)
                set_link, get_link, close_link = _link_switch(tun, netns_fd)
            except BaseException:
                if tun is not None:
                    tun.close()
                os.close(netns_fd)
                raise
            opened = tun

            def cleanup() -> None:
                close_link()
                os.close(netns_fd)

            iface, server, record = _start_adapter(
                registry,
                name,
                opened,
                # UDP sockets always open in the adapter's namespace, whichever
                # thread asks (a SetConfiguration may come from anywhere).
                lambda: Interface(opened, options=options, netns_fd=netns_fd, is_link_up=get_link),
                lambda iface: UapiServer(opened.name, iface, UAPI_SOCKET_DIRECTORY),
                cleanup,
                lambda uapi: AdapterRecord(
                    name=name,
                    ifname=opened.name,
                    ifindex=ifindex,
                    tunnel_type=tunnel_type,
                    guid=str(guid),
                    start_time=process_start_time(os.getpid()) or 0,
                    netns=f"/proc/{os.getpid()}/fd/{netns_fd}",
                    pid=os.getpid(),
                    uapi=uapi,
                ),
            )
        return cls._launch(record, iface, registry, server, set_link, get_link, netns_fd, cleanup)

    @classmethod
    def _create_windows(
        cls, name: str, tunnel_type: str, guid: uuid.UUID, registry: Registry
    ) -> LocalAdapter:
        from wgpy.nt import windows

        state = {"up": False}

        def set_link(up: bool) -> None:
            state["up"] = up

        def get_link() -> bool:
            return state["up"]

        with registry.locked():
            ifname = registry.choose_ifname(name, lambda _n: False)
            tun = windows.create_tun(ifname, tunnel_type, guid)
            iface, server, record = _start_adapter(
                registry,
                name,
                tun,
                lambda: Interface(
                    tun, options=InterfaceOptions.from_environment(), is_link_up=get_link
                ),
                lambda iface: windows.NamedPipeUapiServer(ifname, iface),
                _nothing,
                lambda uapi: AdapterRecord(
                    name=name,
                    ifname=ifname,
                    ifindex=windows.tun_ifindex(tun),
                    tunnel_type=tunnel_type,
                    guid=str(guid),
                    start_time=0,
                    netns="",
                    pid=os.getpid(),
                    uapi=uapi,
                ),
            )
        return cls._launch(record, iface, registry, server, set_link, get_link, None, _nothing)

    @classmethod
    def _launch(
        cls,
        record: AdapterRecord,
        iface: Interface,
        registry: Registry,
        server: _Server,
        set_link: Callable[[bool], None],
        get_link: Callable[[], bool],
        netns_fd: int | None,
        cleanup: Callable[[], None],
    ) -> LocalAdapter:
        """The adapter object around a started interface, its loop running."""
        adapter = cls(
            record,
            iface,
            registry,
            server_close=server.close,
            set_link=set_link,
            get_link=get_link,
            netns_fd=netns_fd,
            cleanup=cleanup,
        )
        adapter._start_loop()
        return adapter

    def _start_loop(self) -> None:
        with _local_lock:
            _local[self.ifname] = self
        thread = threading.Thread(target=self._loop, name=f"wgpy-nt-{self.ifname}", daemon=True)
        self._thread = thread
        thread.start()
        self.adapter_log(LoggerLevel.INFO, "Interface created")

    def _loop(self) -> None:
        reason = "stopped"
        try:
            if self._netns_fd is not None:
                from wgpy.net import netns

                if not netns.same_netns(self._netns_fd):
                    # The link-state watch opens a netlink socket here.
                    netns.setns(self._netns_fd)
            reason = self.iface.run()
        except Exception:
            log.exception("%s: event loop failed", self.ifname)
            reason = "failed"
        if reason != "stopped":
            # The interface was deleted under us (ip link del): the adapter is gone.
            self._gone = True
            self._teardown()

    # -- properties ----------------------------------------------------------------

    @property
    def ifname(self) -> str:
        """The system interface name."""
        return self._record.ifname

    @property
    def ifindex(self) -> int:
        """The interface index."""
        return self._record.ifindex

    @property
    def record(self) -> AdapterRecord:
        """The registry entry as written at creation."""
        return self._record

    @property
    def gone(self) -> bool:
        """True once the adapter was destroyed or its interface deleted."""
        return self._gone or self._destroyed

    @property
    def userspace(self) -> UserspaceTun | None:
        """The inner side of a userspace adapter (host, sockets, sessions);
        None for a TUN/Wintun adapter."""
        from wgpy.tun.userspace import UserspaceTun

        tun = self.iface.tun
        return tun if isinstance(tun, UserspaceTun) else None

    def display_name(self) -> str:
        """The current adapter name (read from the registry)."""
        with self._registry.locked():
            for record in self._registry.entries():
                if record.ifname == self.ifname and record.pid == os.getpid():
                    return record.name
        return self._record.name

    def _check(self) -> None:
        if self.gone:
            raise AdapterGone(self.ifname)

    # -- configuration -------------------------------------------------------------

    def get_uapi(self) -> UapiConfig:
        """The configuration through the in-process UAPI ``get``."""
        self._check()
        return parse_get_response(uapi_get(self.iface))

    def set_uapi(self, lines: list[str]) -> int:
        """Apply UAPI lines in-process; logs peers created and destroyed."""
        self._check()
        device = self.iface.device
        with self.iface.lock:
            before = {p.public_key: p for p in device.peers}
            err = uapi_set(self.iface, lines)
            after = {p.public_key: p for p in device.peers}
        for key, peer in before.items():
            if key not in after:
                where = str(peer.endpoint) if peer.endpoint is not None else "no address"
                self.adapter_log(LoggerLevel.INFO, f"Peer {self._peer_id(key)} ({where}) destroyed")
        for key in after:
            if key not in before:
                self.adapter_log(LoggerLevel.INFO, f"Peer {self._peer_id(key)} created")
        return err

    # -- state -----------------------------------------------------------------------

    def get_state(self) -> bool:
        """The link state."""
        self._check()
        try:
            return self._get_link()
        except OSError as exc:
            raise AdapterGone(self.ifname) from exc

    def set_state(self, up: bool) -> None:
        """Set the link state and bring the engine along at once."""
        self._check()
        was = self.get_state()
        try:
            self._set_link(up)
        except OSError as exc:
            from wgpy.net import netns

            if _LINUX and netns.link_gone(exc):
                raise AdapterGone(self.ifname) from exc
            raise
        iface = self.iface
        with iface.lock:
            if iface.device.up != up:
                now, wall = iface.clock()
                iface.submit(iface.device.set_up(up, now, wall))
        if was != up:
            self.adapter_log(LoggerLevel.INFO, "Interface up" if up else "Interface down")
            if self._record.inner == INNER_USERSPACE:
                # No link another process could read: the record carries the state.
                self._record = dataclasses.replace(self._record, up=up)
                with contextlib.suppress(OSError), self._registry.locked():
                    current = self._registry.lookup(self.ifname)
                    if current is not None and current.pid == os.getpid():
                        self._registry.write(dataclasses.replace(current, up=up))

    # -- logging ---------------------------------------------------------------------

    def set_logging(self, state: int) -> None:
        """Any non-zero state forwards lines (first the ones kept while off)."""
        with self._log_lock:
            self._log_state = int(state)
            if state:
                while self._pending:
                    self._deliver(*self._pending.popleft())

    def adapter_log(self, level: int, message: str) -> None:
        """An adapter line: forwarded now, or kept (64 at most) while logging is off."""
        entry = (int(level), _now_filetime(), message)
        with self._log_lock:
            if self._log_state:
                self._deliver(*entry)
            else:
                self._pending.append(entry)

    def _deliver(self, level: int, timestamp: int, message: str) -> None:
        if self._log_state == AdapterLogState.ON_WITH_PREFIX:
            message = f"{self.ifindex}: {message}"
        hub.emit(level, message, timestamp)

    def _peer_id(self, key: bytes) -> int:
        number = self._peer_ids.get(key)
        if number is None:
            number = self._peer_ids[key] = next(_peer_numbers)
        return number

    def _on_event(self, event: Event) -> None:
        peer = self.iface.device.peer(event.peer)
        where = "no address"
        if peer is not None and peer.endpoint is not None:
            where = str(peer.endpoint)
        number = self._peer_id(event.peer)
        kind = event.kind
        if kind is EventKind.INITIATION_SENT:
            self.adapter_log(
                LoggerLevel.INFO, f"Sending handshake initiation to peer {number} ({where})"
            )
        elif kind is EventKind.INITIATION_CONSUMED:
            self.adapter_log(
                LoggerLevel.INFO, f"Receiving handshake initiation from peer {number} ({where})"
            )
        elif kind is EventKind.HANDSHAKE_COMPLETE:
            self.adapter_log(
                LoggerLevel.INFO, f"Keypair {next(_keypair_numbers)} created for peer {number}"
            )
        elif kind is EventKind.HANDSHAKE_GAVE_UP:
            self.adapter_log(
                LoggerLevel.INFO,
                f"Handshake for peer {number} ({where}) did not complete after "
                f"{MAX_TIMER_HANDSHAKES + 2} attempts, giving up",
            )
        elif kind is EventKind.KEYS_ERASED:
            self.adapter_log(
                LoggerLevel.INFO,
                f"Zeroing out all keys for peer {number} ({where}), since we haven't "
                f"received a new one in {int(ZERO_KEY_MATERIAL_AFTER)} seconds",
            )

    # -- teardown -------------------------------------------------------------------

    def destroy(self) -> None:
        """Remove the adapter: stop the loop, the UAPI server and the interface."""
        if self._destroyed:
            return
        self._destroyed = True
        with self._log_lock:
            self._log_state = int(AdapterLogState.OFF)
        self.iface.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_LOOP_JOIN_TIMEOUT)
        self._teardown()

    def _teardown(self) -> None:
        with _local_lock:
            if _local.get(self.ifname) is self:
                del _local[self.ifname]
        with contextlib.suppress(Exception):
            self._server_close()
        with contextlib.suppress(Exception), self._registry.locked():
            self._registry.remove(self.ifname, os.getpid())
        with contextlib.suppress(Exception):
            self.iface.close()
        cleanup, self._cleanup = self._cleanup, lambda: None
        with contextlib.suppress(Exception):
            cleanup()


def _open_linux_tun(
    ifname: str, tunnel_type: str, guid: uuid.UUID, options: InterfaceOptions
) -> tuple[TunDevice, int]:
    """The TUN device of a new adapter and its interface index.

    ``$WGPY_NT_TUN=wintun`` makes it a Wintun adapter (the Windows path, through
    ``$WGPY_WINTUN_DLL``) instead of ``/dev/net/tun``: with the Linux test double of
    wintun.dll this runs the Windows device path of the runtime on Linux.
    """
    if os.environ.get("WGPY_NT_TUN", "linux") == "wintun":
        from wgpy.nt import windows

        bridge = windows.create_tun(ifname, tunnel_type, guid)
        try:
            return bridge, socket.if_nametoindex(bridge.name)
        except BaseException:
            bridge.close()
            raise
    from wgpy.tun.linux import LinuxTun

    tun = LinuxTun.create(ifname, mtu=options.mtu, offload=options.offload)
    return tun, tun.ifindex


def _nothing() -> None:
    """A close function with nothing to close."""


#: The inner sides an adapter can have (``$WGPY_ADAPTER``).
INNER_TUN = "tun"
INNER_USERSPACE = "userspace"
_ENV_ADAPTER = "WGPY_ADAPTER"
_ENV_ADDRESSES = "WGPY_ADAPTER_ADDRESSES"
#: Interface indexes given to userspace adapters (no kernel interface has one
#: this high on a normal system; 24 bits fit the LUID's NetLuidIndex).
_USERSPACE_IFINDEX_BASE = 0x800000


def inner_side(requested: str | None) -> str:
    """The inner side to use: ``requested``, else ``$WGPY_ADAPTER``, else
    ``tun``.  ValueError for anything but ``tun`` and ``userspace``."""
    value = (requested or os.environ.get(_ENV_ADAPTER) or INNER_TUN).strip().lower()
    if value not in (INNER_TUN, INNER_USERSPACE):
        raise ValueError(f"unknown adapter inner side {value!r} (tun or userspace)")
    return value


def addresses_from_environment(name: str) -> str:
    """The addresses ``$WGPY_ADAPTER_ADDRESSES`` gives adapter ``name``.

    Either a list of CIDRs for every adapter (``10.0.0.2/24,fd00::2/64``) or,
    for several adapters, ``NAME=CIDRS`` entries separated by ``;``
    (``wg0=10.0.0.2/24,fd00::2/64;wg1=10.1.0.2/24``; names match ignoring
    case; an entry without ``NAME=`` applies to every adapter not named).
    """
    text = os.environ.get(_ENV_ADDRESSES, "")
    default = ""
    key = fold_name(name)
    for entry in text.split(";"):
        entry = entry.strip()
        if not entry:
            continue
        who, sep, cidrs = entry.rpartition("=")
        if not sep:
            default = entry
        elif fold_name(who.strip()) == key:
            return cidrs
    return default


def _free_ifindex(registry: Registry) -> int:
    """The lowest userspace interface index no live adapter uses (lock held)."""
    used = {r.ifindex for r in registry.entries()}
    index = _USERSPACE_IFINDEX_BASE
    while index in used:
        index += 1
    return index


class _Server(Protocol):
    path: str

    def start(self) -> None: ...

    def close(self) -> None: ...


def _start_adapter(
    registry: Registry,
    name: str,
    tun: TunDevice,
    make_iface: Callable[[], Interface],
    make_server: Callable[[Interface], _Server],
    cleanup: Callable[[], None],
    describe: Callable[[str], AdapterRecord],
) -> tuple[Interface, _Server, AdapterRecord]:
    """Start the interface on an open ``tun`` and its UAPI server, take the
    adapter name and write its registry entry (``describe`` builds it from
    the server's UAPI path).  On any failure all of it is undone, the TUN
    and ``cleanup`` included, and the error re-raised.  Call under the
    registry lock."""
    iface: Interface | None = None
    server: _Server | None = None
    try:
        iface = make_iface()
        iface.start()
        server = make_server(iface)
        server.start()
        _steal_name(registry, name)
        entry = describe(server.path)
        registry.write(entry)
    except BaseException:
        if server is not None:
            server.close()
        if iface is not None:
            iface.close()
        else:
            tun.close()
        cleanup()
        raise
    return iface, server, entry


def _user_uapi_server(ifname: str, iface: Interface) -> _Server:
    """The UAPI server of a userspace adapter: the usual socket or pipe when
    this process may create it, else one in the user's own directory (no
    privilege needed; see :mod:`wgpy.paths`)."""
    if sys.platform == "win32":
        from wgpy.nt import windows

        return windows.NamedPipeUapiServer(ifname, iface, user=True)
    from wgpy.uapi import UapiServer

    return UapiServer(ifname, iface, paths.uapi_directory())


def _link_switch(
    tun: TunDevice, netns_fd: int
) -> tuple[Callable[[bool], None], Callable[[], bool], Callable[[], None]]:
    """(set, get, close) of an adapter's link state: the TUN's own where it has
    them (a Linux TUN follows its link into another namespace), else IFF_UP of
    the interface by name in the adapter's namespace (the Wintun test double)."""
    get_up = getattr(tun, "is_up", None)
    set_up = getattr(tun, "set_up", None)
    if get_up is not None and set_up is not None:
        return set_up, get_up, _nothing
    from wgpy.net import netns

    sock = netns.call_in_netns(netns_fd, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    name = tun.name
    return (
        lambda up: netns.set_link_up(sock, name, up),
        lambda: netns.get_link_up(sock, name),
        sock.close,
    )


def _interface_exists(ifname: str) -> bool:
    try:
        socket.if_nametoindex(ifname)
    except (OSError, ValueError):
        return False
    return True


def _steal_name(registry: Registry, name: str) -> None:
    """Rename the wgpy adapter holding ``name`` (if any) to ``"<name> N"``.
    Call with the registry lock held."""
    records = registry.entries()
    key = fold_name(name)
    holder = next((r for r in records if fold_name(r.name) == key), None)
    if holder is None:
        return
    taken = {fold_name(r.name) for r in records}
    for n in range(1, 1001):
        candidate = f"{name} {n}"
        if fold_name(candidate) not in taken:
            registry.rename(holder, candidate)
            return
    raise FileExistsError(f"no free name for the adapter holding {name!r}")


# ---------------------------------------------------------------------------
# Remote adapters
# ---------------------------------------------------------------------------


def find_uapi_socket(name: str) -> tuple[str, str] | None:
    """(interface name, socket path) of a UAPI socket ``<name>.sock`` matching
    ``name`` ignoring case, in the system directory or this user's (any
    userspace implementation, e.g. wireguard-go), or None."""
    key = fold_name(name)
    for directory in paths.uapi_directories():
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".sock") and fold_name(entry[: -len(".sock")]) == key:
                return entry[: -len(".sock")], os.path.join(directory, entry)
    return None


class RemoteAdapter:
    """An adapter owned by another process, reached over UAPI."""

    def __init__(self, record: AdapterRecord, netns_fd: int | None) -> None:
        self._record = record
        self._netns_fd = netns_fd
        self._client: UapiClient | PipeClient
        if sys.platform == "win32":
            from wgpy.nt.windows import PipeUapiClient

            self._client = PipeUapiClient(record.uapi)
        else:
            self._client = UapiClient(record.uapi, timeout=30.0)
        self._closed = False

    @classmethod
    def from_record(cls, record: AdapterRecord) -> RemoteAdapter:
        """Open the adapter a registry entry describes (AdapterGone if it is not
        reachable any more)."""
        netns_fd: int | None = None
        if record.netns:
            try:
                netns_fd = os.open(record.netns, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as exc:
                raise AdapterGone(record.ifname) from exc
        return cls(record, netns_fd)

    @classmethod
    def from_socket(cls, ifname: str, path: str) -> RemoteAdapter:
        """Open a plain UAPI interface (no registry entry) by its socket ``path``:
        its link and index are looked up in the calling thread's namespace."""
        netns_fd: int | None = None
        ifindex = 0
        if _LINUX:
            from wgpy.net import netns

            netns_fd = netns.open_thread_netns()
            with contextlib.suppress(OSError):
                ifindex = socket.if_nametoindex(ifname)
        record = AdapterRecord(
            name=ifname,
            ifname=ifname,
            ifindex=ifindex,
            tunnel_type="",
            guid="",
            pid=0,
            start_time=0,
            netns="",
            uapi=path,
        )
        return cls(record, netns_fd)

    @property
    def ifname(self) -> str:
        """The system interface name."""
        return self._record.ifname

    @property
    def ifindex(self) -> int:
        """The interface index recorded by the owner."""
        return self._record.ifindex

    def display_name(self) -> str:
        """The current adapter name (read from the registry)."""
        if not self._record.pid:
            return self._record.name
        registry = Registry()
        with registry.locked():
            for record in registry.entries():
                if record.ifname == self.ifname and record.pid == self._record.pid:
                    return record.name
        return self._record.name

    def get_uapi(self) -> UapiConfig:
        """UAPI ``get`` to the owner."""
        try:
            return self._client.get()
        except UapiError:
            raise
        except OSError as exc:
            raise AdapterGone(self.ifname) from exc

    def set_uapi(self, lines: list[str]) -> int:
        """UAPI ``set`` to the owner; 0 or the errno it answered."""
        try:
            self._client.set(list(lines))
        except UapiError as exc:
            return exc.errno or 0
        except OSError as exc:
            raise AdapterGone(self.ifname) from exc
        return 0

    def _in_netns(self, fn: Callable[[socket.socket], bool | None]) -> bool | None:
        from wgpy.net import netns

        def body() -> bool | None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                return fn(sock)

        try:
            if self._netns_fd is None:
                return body()
            return netns.call_in_netns(self._netns_fd, body)
        except OSError as exc:
            if netns.link_gone(exc):
                raise AdapterGone(self.ifname) from exc
            raise

    def get_state(self) -> bool:
        """IFF_UP of the interface in the owner's namespace; for a userspace
        adapter (no link) the state its owner recorded."""
        if self._record.inner == INNER_USERSPACE:
            with Registry().locked():
                current = Registry().lookup(self.ifname)
            if current is None or current.pid != self._record.pid:
                raise AdapterGone(self.ifname)
            return current.up
        if not _LINUX:
            raise OSError("the state of another process's adapter is not reachable here")
        from wgpy.net import netns

        return bool(self._in_netns(lambda s: netns.get_link_up(s, self.ifname)))

    def set_state(self, up: bool) -> None:
        """Set IFF_UP; the owner's event loop follows the link.  A userspace
        adapter has no link another process could set: OSError ENOTSUP."""
        if self._record.inner == INNER_USERSPACE:
            raise OSError(errno.ENOTSUP, "only the owner sets a userspace adapter's state")
        if not _LINUX:
            raise OSError("the state of another process's adapter is not reachable here")
        from wgpy.net import netns

        self._in_netns(lambda s: netns.set_link_up(s, self.ifname, up))

    def set_logging(self, state: int) -> None:
        """Accepted; the owner's lines stay with the owner (see the module docstring)."""

    def close(self) -> None:
        """Release the namespace descriptor."""
        if self._closed:
            return
        self._closed = True
        if self._netns_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._netns_fd)
            self._netns_fd = None
