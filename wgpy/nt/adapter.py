"""A Pythonic layer over the wireguard.h functions: :class:`Adapter`.

::

    from wgpy.nt import Adapter, InterfaceConfig, InterfaceFlag

    with Adapter.create("Demo", "Example") as adapter:
        adapter.set_config(InterfaceConfig(flags=InterfaceFlag.HAS_PRIVATE_KEY, ...))
        adapter.up()
        print(adapter.get_config().peers)

Every method raises :class:`~wgpy.nt.errors.WireGuardError` (an ``OSError`` whose
``code`` is the Win32 error) where the function underneath would return a failure.

The functions come from an *api* object: wgpy's own (:class:`wgpy.nt.api.WgpyApi`,
the default) or :class:`wgpy.nt.wireguard_dll.WireGuardDll` (the real
``wireguard.dll`` on Windows), so the same code drives either.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from wgpy.nt.abi import (
    AdapterLogState,
    AdapterState,
    ErrorCode,
    InterfaceConfig,
    net_luid_fields,
    pack_configuration,
    parse_configuration,
)
from wgpy.nt.errors import WireGuardError

__all__ = ["Adapter", "WireGuardApi"]

#: First GetConfiguration guess, as wireguard-windows starts.
_FIRST_GUESS = 512


class WireGuardApi(Protocol):
    """The function set an :class:`Adapter` needs (see :mod:`wgpy.nt.api`)."""

    def WireGuardCreateAdapter(
        self, name: str, tunnel_type: str, requested_guid: object = None
    ) -> Any | None: ...

    def WireGuardOpenAdapter(self, name: str) -> Any | None: ...

    def WireGuardCloseAdapter(self, handle: Any) -> None: ...

    def WireGuardGetAdapterLUID(self, handle: Any) -> Any: ...

    def WireGuardSetAdapterLogging(self, handle: Any, state: int) -> bool: ...

    def WireGuardSetAdapterState(self, handle: Any, state: int) -> bool: ...

    def WireGuardGetAdapterState(self, handle: Any) -> tuple[bool, AdapterState]: ...

    def WireGuardSetConfiguration(self, handle: Any, buffer: Any, size: int) -> bool: ...

    def WireGuardGetConfiguration(
        self, handle: Any, buffer: Any, size: int
    ) -> tuple[bool, int]: ...

    def GetLastError(self) -> int: ...


def _default_api() -> WireGuardApi:
    from wgpy.nt.api import default_api

    return default_api()


class Adapter:
    """An open adapter handle; a context manager that closes it.

    Closing an adapter made with :meth:`create` removes it; one made with
    :meth:`open` is left in place.
    """

    def __init__(self, api: WireGuardApi, handle: Any, name: str, created: bool) -> None:
        self.api = api
        self.handle = handle
        self._name = name
        self.created = created
        self._closed = False

    # -- construction ---------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        tunnel_type: str = "WireGuard",
        guid: uuid.UUID | None = None,
        *,
        api: WireGuardApi | None = None,
        inner: str | None = None,
        addresses: str | None = None,
    ) -> Adapter:
        """``WireGuardCreateAdapter``: a new adapter (in the calling thread's
        network namespace with wgpy).  wgpy only: ``inner="userspace"`` for an
        adapter without a device or privilege, ``addresses`` its CIDRs (see
        :meth:`wgpy.nt.api.WgpyApi.WireGuardCreateAdapter`)."""
        api = api or _default_api()
        if inner is None and addresses is None:
            handle = api.WireGuardCreateAdapter(name, tunnel_type, guid)
        else:
            handle = api.WireGuardCreateAdapter(  # type: ignore[call-arg]
                name, tunnel_type, guid, inner=inner, addresses=addresses
            )
        if handle is None:
            raise WireGuardError(api.GetLastError(), "WireGuardCreateAdapter")
        return cls(api, handle, name, True)

    @classmethod
    def open(cls, name: str, *, api: WireGuardApi | None = None) -> Adapter:
        """``WireGuardOpenAdapter``: an existing adapter, by name ignoring case."""
        api = api or _default_api()
        handle = api.WireGuardOpenAdapter(name)
        if handle is None:
            raise WireGuardError(api.GetLastError(), "WireGuardOpenAdapter")
        return cls(api, handle, name, False)

    # -- properties -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The name this adapter was created or opened with."""
        return self._name

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def luid(self) -> int:
        """``NET_LUID.Value``."""
        self._check()
        return int(self.api.WireGuardGetAdapterLUID(self.handle).Value)

    @property
    def ifindex(self) -> int:
        """The NetLuidIndex of the LUID (wgpy: the interface index)."""
        return net_luid_fields(self.luid)[0]

    @property
    def state(self) -> AdapterState:
        """``WireGuardGetAdapterState``."""
        self._check()
        ok, state = self.api.WireGuardGetAdapterState(self.handle)
        if not ok:
            raise WireGuardError(self.api.GetLastError(), "WireGuardGetAdapterState")
        return state

    # -- operations -------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise WireGuardError(ErrorCode.ERROR_INVALID_HANDLE, "Adapter")

    def set_state(self, state: AdapterState | int) -> None:
        """``WireGuardSetAdapterState``."""
        self._check()
        if not self.api.WireGuardSetAdapterState(self.handle, int(state)):
            raise WireGuardError(self.api.GetLastError(), "WireGuardSetAdapterState")

    def up(self) -> None:
        """Bring the adapter up."""
        self.set_state(AdapterState.UP)

    def down(self) -> None:
        """Bring the adapter down (peers and keys stay)."""
        self.set_state(AdapterState.DOWN)

    def set_logging(self, state: AdapterLogState | int = AdapterLogState.ON) -> None:
        """``WireGuardSetAdapterLogging``."""
        self._check()
        if not self.api.WireGuardSetAdapterLogging(self.handle, int(state)):
            raise WireGuardError(self.api.GetLastError(), "WireGuardSetAdapterLogging")

    def set_config(self, config: InterfaceConfig) -> None:
        """``WireGuardSetConfiguration`` with ``config`` packed into the ABI buffer."""
        self._check()
        buf = pack_configuration(config)
        if not self.api.WireGuardSetConfiguration(self.handle, buf, len(buf)):
            raise WireGuardError(self.api.GetLastError(), "WireGuardSetConfiguration")

    def get_config(self) -> InterfaceConfig:
        """``WireGuardGetConfiguration`` in the ERROR_MORE_DATA loop, parsed."""
        self._check()
        size = _FIRST_GUESS
        while True:
            buf = bytearray(size)
            ok, size_out = self.api.WireGuardGetConfiguration(self.handle, buf, size)
            if ok:
                return parse_configuration(buf, size_out)
            code = self.api.GetLastError()
            if code != ErrorCode.ERROR_MORE_DATA:
                raise WireGuardError(code, "WireGuardGetConfiguration")
            size = size_out

    # -- wgpy's userspace extensions (raise ERROR_NOT_SUPPORTED elsewhere) ------------

    def _wgpy(self, function: str) -> Any:
        self._check()
        if not hasattr(self.api, function):
            raise WireGuardError(ErrorCode.ERROR_NOT_SUPPORTED, function)
        return getattr(self.api, function)

    @property
    def addresses(self) -> list[str]:
        """The userspace adapter's addresses (CIDRs)."""
        text = self._wgpy("WgpyGetAdapterAddresses")(self.handle)
        if text is None:
            raise WireGuardError(self.api.GetLastError(), "WgpyGetAdapterAddresses")
        return [a for a in text.split(",") if a]

    def set_addresses(self, addresses: str | list[str]) -> None:
        """Set the userspace adapter's addresses (CIDRs)."""
        text = addresses if isinstance(addresses, str) else ",".join(addresses)
        if not self._wgpy("WgpySetAdapterAddresses")(self.handle, text):
            raise WireGuardError(self.api.GetLastError(), "WgpySetAdapterAddresses")

    def udp_socket(self, family: int = 2) -> Any:
        """A UDP socket on the tunnel side (:class:`wgpy.tun.userspace.TunnelSocket`;
        ``family`` 2 = AF_INET, else AF_INET6 as the socket module numbers it)."""
        sock = self._wgpy("WgpyCreateUdpSocket")(self.handle, family)
        if sock is None:
            raise WireGuardError(self.api.GetLastError(), "WgpyCreateUdpSocket")
        return sock

    def start_session(self, capacity: int = 4096, *, take_over: bool = False) -> Any:
        """The packet session (:class:`wgpy.tun.userspace.PacketSession`)."""
        session = self._wgpy("WgpyStartSession")(self.handle, capacity, 1 if take_over else 0)
        if session is None:
            raise WireGuardError(self.api.GetLastError(), "WgpyStartSession")
        return session

    def close(self) -> None:
        """``WireGuardCloseAdapter`` (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.api.WireGuardCloseAdapter(self.handle)

    def __enter__(self) -> Adapter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        kind = "created" if self.created else "opened"
        state = " closed" if self._closed else ""
        return f"<Adapter {self._name!r} {kind}{state}>"
