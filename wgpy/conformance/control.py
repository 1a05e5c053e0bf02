"""Ways for the conformance runner to configure the implementation under test.

Without a control the runner can only talk WireGuard to a target someone else
configured, and scenarios that must change the target's configuration (fresh
peer state, PSK, persistent keepalive, low-order peer keys) are skipped.  With
a control the runner installs its own key as the target's peer, resets that
peer between scenarios, and reads back the endpoint the target recorded.

* :class:`UapiControl`: the cross-platform UAPI socket (wgpy, wireguard-go,
  boringtun, anything ``wg`` can drive in userspace).
* :class:`NtControl`: the WireGuardNT ``wireguard.h`` API as :mod:`wgpy.nt`
  exposes it (``WireGuardOpenAdapter`` / ``WireGuardSetConfiguration``).
* Anything else (the kernel module in a VM, a remote box over ssh) is a class
  with the methods of :class:`TargetControl`; the test suite has one for the
  kernel peer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from wgpy.endpoint import host_port_text
from wgpy.noise.primitives import public_key

__all__ = [
    "ControlError",
    "NtControl",
    "PeerSpec",
    "TargetControl",
    "UapiControl",
]


class ControlError(Exception):
    """Configuring the target failed (or this kind of control is unavailable)."""


@dataclass
class PeerSpec:
    """How the target should know the runner (or another peer)."""

    public_key: bytes
    allowed_ips: Sequence[str] = ()
    endpoint: str | None = None  # "IP:PORT" or "[IPv6]:PORT"
    preshared_key: bytes | None = None
    persistent_keepalive: int = 0
    extra: dict[str, str] = field(default_factory=dict)


class TargetControl(Protocol):
    """What the runner needs from a way of configuring the target."""

    #: Short description for reports, e.g. "uapi:/var/run/wireguard/wg0.sock".
    name: str

    def target_public_key(self) -> bytes | None:
        """The target's static public key, if the control can tell."""
        ...

    def set_peer(self, spec: PeerSpec, *, fresh: bool) -> None:
        """Create or update a peer.  With ``fresh`` the peer is removed first,
        so the target forgets its sessions, handshake and timestamp memory."""
        ...

    def set_keepalive(self, public_key: bytes, interval: int) -> None:
        """Change only the persistent keepalive interval of an existing peer."""
        ...

    def remove_peer(self, public_key: bytes) -> None:
        """Remove a peer (no error if it is absent)."""
        ...

    def peer_endpoint(self, public_key: bytes) -> str | None:
        """The endpoint the target currently has for a peer ("IP:PORT"), None
        if it has none; raises NotImplementedError if the control cannot read
        configuration back."""
        ...


class UapiControl:
    """Configure the target through its UAPI socket (``set=1`` / ``get=1``)."""

    def __init__(self, interface_or_path: str, *, timeout: float = 10.0) -> None:
        from wgpy.uapi import UapiClient

        self._client = UapiClient(interface_or_path, timeout=timeout)
        self.name = f"uapi:{self._client.path}"

    def _set(self, lines: list[str]) -> None:
        from wgpy.uapi import UapiError

        try:
            self._client.set(lines)
        except (UapiError, OSError) as exc:
            raise ControlError(f"UAPI set on {self._client.path} failed: {exc}") from exc

    def target_public_key(self) -> bytes | None:
        from wgpy.uapi import UapiError

        try:
            cfg = self._client.get()
        except (UapiError, OSError, ValueError) as exc:
            raise ControlError(f"UAPI get on {self._client.path} failed: {exc}") from exc
        return public_key(cfg.private_key) if cfg.private_key else None

    def set_peer(self, spec: PeerSpec, *, fresh: bool) -> None:
        key = spec.public_key.hex()
        if fresh:
            self._set([f"public_key={key}", "remove=true"])
        lines = [f"public_key={key}", "replace_allowed_ips=true"]
        lines += [f"allowed_ip={net}" for net in spec.allowed_ips]
        if spec.endpoint:
            lines.append(f"endpoint={spec.endpoint}")
        lines.append(f"preshared_key={(spec.preshared_key or bytes(32)).hex()}")
        lines.append(f"persistent_keepalive_interval={spec.persistent_keepalive}")
        lines += [f"{k}={v}" for k, v in spec.extra.items()]
        self._set(lines)

    def set_keepalive(self, public_key: bytes, interval: int) -> None:
        self._set(
            [
                f"public_key={public_key.hex()}",
                "update_only=true",
                f"persistent_keepalive_interval={interval}",
            ]
        )

    def remove_peer(self, public_key: bytes) -> None:
        self._set([f"public_key={public_key.hex()}", "remove=true"])

    def raw(self, request: str) -> str:
        """Send one raw UAPI request (``get=1`` or ``set=1`` and its lines,
        ending with an empty line) and return the answer unparsed, through
        its blank line: the ``uapi`` scenario judges the protocol itself.  An
        answer cut off before its blank line comes back as ``""``."""
        from wgpy.constants import UAPI_EPROTO
        from wgpy.uapi import UapiError

        try:
            return self._client.request(request.encode())
        except UapiError as exc:
            if exc.errno == UAPI_EPROTO:  # closed without a complete answer
                return ""
            raise ControlError(f"UAPI request on {self._client.path} failed: {exc}") from exc
        except OSError as exc:
            raise ControlError(f"UAPI request on {self._client.path} failed: {exc}") from exc

    def peer_endpoint(self, public_key: bytes) -> str | None:
        from wgpy.uapi import UapiError

        try:
            peer = self._client.get().peer(public_key)
        except (UapiError, OSError, ValueError) as exc:
            raise ControlError(f"UAPI get on {self._client.path} failed: {exc}") from exc
        return peer.endpoint if peer is not None else None


class NtControl:
    """Configure the target through the ``wireguard.h`` API of :mod:`wgpy.nt`.

    Uses the functions under the header's names (``WireGuardOpenAdapter``,
    ``WireGuardSetConfiguration``, ``WireGuardGetConfiguration``) and the
    configuration-buffer codec of :mod:`wgpy.nt.abi`, so it drives wgpy's own
    adapters now and, through a binding to the real ``wireguard.dll``, the
    WireGuardNT driver on Windows.  Raises :class:`ControlError` if the API is
    not available in this build.
    """

    def __init__(self, adapter_name: str, api: Any = None) -> None:
        if api is None:
            try:
                import wgpy.nt as api
            except ImportError as exc:  # pragma: no cover - wgpy.nt is part of wgpy
                raise ControlError(f"wgpy.nt is not importable: {exc}") from exc
        missing = [
            fn
            for fn in ("WireGuardOpenAdapter", "WireGuardSetConfiguration")
            if not callable(getattr(api, fn, None))
        ]
        if missing:
            raise ControlError(
                "the wireguard.h API is not available in this wgpy build "
                f"(missing {', '.join(missing)})"
            )
        self._api = api
        self._handle = api.WireGuardOpenAdapter(adapter_name)
        if not self._handle:
            code = api.GetLastError() if callable(getattr(api, "GetLastError", None)) else "?"
            raise ControlError(f"WireGuardOpenAdapter({adapter_name!r}) failed: error {code}")
        self.name = f"nt:{adapter_name}"

    def _apply(self, peers: list[Any]) -> None:
        from wgpy.nt import abi

        buf = abi.pack_configuration(abi.InterfaceConfig(peers=tuple(peers)))
        if not self._api.WireGuardSetConfiguration(self._handle, buf, len(buf)):
            code = getattr(self._api, "GetLastError", lambda: "?")()
            raise ControlError(f"WireGuardSetConfiguration failed: error {code}")

    def _get(self) -> Any:
        """The adapter's configuration (``WireGuardGetConfiguration``, sized
        by a first call with no buffer), as :class:`wgpy.nt.abi.InterfaceConfig`."""
        from wgpy.nt import abi

        get = getattr(self._api, "WireGuardGetConfiguration", None)
        if not callable(get):
            raise NotImplementedError("this wireguard.h API cannot read the configuration")
        size = 0
        for _ in range(4):  # the configuration may grow between the two calls
            buf = bytearray(size)
            ok, n = get(self._handle, buf if size else None, size)
            if ok:
                return abi.parse_configuration(bytes(buf[:n]), n)
            if n <= size:
                code = getattr(self._api, "GetLastError", lambda: "?")()
                raise ControlError(f"WireGuardGetConfiguration failed: error {code}")
            size = n
        raise ControlError("WireGuardGetConfiguration: the configuration kept growing")

    def target_public_key(self) -> bytes | None:
        try:
            cfg = self._get()
        except NotImplementedError:
            return None
        key = bytes(cfg.public_key)
        return key if any(key) else None

    def set_peer(self, spec: PeerSpec, *, fresh: bool) -> None:
        from wgpy.nt import abi

        flags = (
            abi.PeerFlag.HAS_PUBLIC_KEY
            | abi.PeerFlag.HAS_PRESHARED_KEY
            | abi.PeerFlag.HAS_PERSISTENT_KEEPALIVE
            | abi.PeerFlag.REPLACE_ALLOWED_IPS
        )
        endpoint = None
        if spec.endpoint:
            host, _, port = spec.endpoint.rpartition(":")
            endpoint = (host.strip("[]"), int(port))
            flags |= abi.PeerFlag.HAS_ENDPOINT
        allowed = []
        for text in spec.allowed_ips:
            net = ipaddress.ip_network(text, strict=False)
            allowed.append(abi.AllowedIPConfig(str(net.network_address), net.prefixlen))
        peers = []
        if fresh:
            peers.append(
                abi.PeerConfig(
                    flags=abi.PeerFlag.HAS_PUBLIC_KEY | abi.PeerFlag.REMOVE,
                    public_key=spec.public_key,
                )
            )
        peers.append(
            abi.PeerConfig(
                flags=flags,
                public_key=spec.public_key,
                preshared_key=spec.preshared_key or bytes(32),
                persistent_keepalive=spec.persistent_keepalive,
                endpoint=endpoint,
                allowed_ips=tuple(allowed),
            )
        )
        self._apply(peers)

    def set_keepalive(self, public_key: bytes, interval: int) -> None:
        from wgpy.nt import abi

        flags = (
            abi.PeerFlag.HAS_PUBLIC_KEY
            | abi.PeerFlag.HAS_PERSISTENT_KEEPALIVE
            | abi.PeerFlag.UPDATE_ONLY
        )
        self._apply(
            [abi.PeerConfig(flags=flags, public_key=public_key, persistent_keepalive=interval)]
        )

    def remove_peer(self, public_key: bytes) -> None:
        from wgpy.nt import abi

        flags = abi.PeerFlag.HAS_PUBLIC_KEY | abi.PeerFlag.REMOVE
        self._apply([abi.PeerConfig(flags=flags, public_key=public_key)])

    def close(self) -> None:
        """Close the adapter handle (an opened adapter stays)."""
        close = getattr(self._api, "WireGuardCloseAdapter", None)
        if self._handle and callable(close):
            close(self._handle)
        self._handle = None

    def peer_endpoint(self, public_key: bytes) -> str | None:
        for peer in self._get().peers:
            if bytes(peer.public_key) == public_key:
                return host_port_text(*peer.endpoint) if peer.endpoint else None
        return None
