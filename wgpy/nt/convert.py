"""Translate between wireguard.h configurations and the UAPI text protocol.

wgpy applies a ``WireGuardSetConfiguration`` buffer by turning it into one UAPI
``set`` operation (to the local :class:`~wgpy.runtime.interface.Interface`, or over
the UAPI socket to the process that owns the adapter), and answers
``WireGuardGetConfiguration`` from a UAPI ``get``.  One translation serves both the
in-process and the cross-process case, so their semantics cannot drift apart.

How the driver's steps (reference section 3.1) map to UAPI lines, in the driver's
order:

* ``HAS_LISTEN_PORT`` -> ``listen_port`` (first, so a bind failure changes nothing);
* ``REPLACE_PEERS`` -> ``replace_peers=true``;
* ``HAS_PRIVATE_KEY`` -> ``private_key`` (an identical key changes nothing; a peer
  with the new public key is removed);
* per peer: ``public_key``; ``REMOVE`` -> ``remove=true`` and nothing else;
  ``UPDATE_ONLY`` -> ``update_only=true`` (an unknown key is a silent no-op);
  ``HAS_PRESHARED_KEY``, ``HAS_ENDPOINT`` (only families 2 and 23; others are
  ignored as the driver does), ``REPLACE_ALLOWED_IPS``, each allowed IP (``-``
  prefix for ``WIREGUARD_ALLOWED_IP_REMOVE``) and ``HAS_PERSISTENT_KEEPALIVE``.

The interface public key and ``HAS_PUBLIC_KEY`` are ignored on set, and the read-only
peer fields (TxBytes, RxBytes, LastHandshake) too, as in the driver.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

from wgpy.endpoint import host_port_text
from wgpy.noise.primitives import public_key as derive_public_key
from wgpy.nt.abi import (
    AllowedIPConfig,
    AllowedIPFlag,
    InterfaceConfig,
    InterfaceFlag,
    PeerConfig,
    PeerFlag,
    filetime_from_unix_ns,
)
from wgpy.uapi import UapiConfig

__all__ = ["config_from_uapi", "config_to_uapi_lines", "parse_endpoint_text"]

#: What GetConfiguration always reports for a peer.
_PEER_GET_FLAGS = PeerFlag.HAS_PUBLIC_KEY | PeerFlag.HAS_PERSISTENT_KEEPALIVE


def parse_endpoint_text(text: str) -> tuple[str, int] | None:
    """``(host, port)`` from a UAPI endpoint; a named IPv6 zone becomes its index
    (0 when no interface of that name is visible here).  None if unparsable."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    addr, pct, zone = host.partition("%")
    try:
        parsed = ipaddress.ip_address(addr)
    except ValueError:
        return None
    port = int(port_text)
    if port > 0xFFFF:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and pct:
        scope = 0
        if zone.isdigit():
            scope = int(zone)
        else:
            with contextlib.suppress(OSError):
                scope = socket.if_nametoindex(zone)
        return (f"{parsed}%{scope}" if scope else str(parsed)), port
    return str(parsed), port


def _allowed_ip_line(allowed: AllowedIPConfig) -> str:
    address = ipaddress.ip_address(allowed.address)
    remove = "-" if allowed.flags & AllowedIPFlag.REMOVE else ""
    return f"allowed_ip={remove}{address}/{allowed.cidr}"


def config_to_uapi_lines(config: InterfaceConfig) -> list[str]:
    """The UAPI ``set`` lines (without ``set=1`` and the final blank line) that apply
    ``config`` with the driver's semantics.  ``config`` must have passed
    :func:`~wgpy.nt.abi.parse_configuration` (families and prefix lengths valid)."""
    lines: list[str] = []
    put = lines.append
    if config.flags & InterfaceFlag.HAS_LISTEN_PORT:
        put(f"listen_port={config.listen_port}")
    if config.flags & InterfaceFlag.REPLACE_PEERS:
        put("replace_peers=true")
    if config.flags & InterfaceFlag.HAS_PRIVATE_KEY:
        put("private_key=" + bytes(config.private_key).hex())
    for peer in config.peers:
        put("public_key=" + bytes(peer.public_key).hex())
        if peer.flags & PeerFlag.REMOVE:
            put("remove=true")  # the rest of the record is ignored
            continue
        if peer.flags & PeerFlag.UPDATE_ONLY:
            put("update_only=true")
        if peer.flags & PeerFlag.HAS_PRESHARED_KEY:
            put("preshared_key=" + bytes(peer.preshared_key).hex())
        if peer.flags & PeerFlag.HAS_ENDPOINT and peer.endpoint is not None:
            put("endpoint=" + host_port_text(*peer.endpoint))
        if peer.flags & PeerFlag.REPLACE_ALLOWED_IPS:
            put("replace_allowed_ips=true")
        lines.extend(_allowed_ip_line(allowed) for allowed in peer.allowed_ips)
        if peer.flags & PeerFlag.HAS_PERSISTENT_KEEPALIVE:
            put(f"persistent_keepalive_interval={peer.persistent_keepalive}")
    return lines


def _allowed_from_text(text: str) -> AllowedIPConfig:
    address, _, cidr = text.partition("/")
    return AllowedIPConfig(str(ipaddress.ip_address(address)), int(cidr))


def config_from_uapi(uapi: UapiConfig) -> InterfaceConfig:
    """The configuration GetConfiguration reports for a UAPI ``get`` answer.

    Flags are rebuilt as the driver does: ``HAS_LISTEN_PORT`` only for a non-zero
    port, both key flags only with a private key; every peer has
    ``HAS_PUBLIC_KEY | HAS_PERSISTENT_KEEPALIVE`` plus ``HAS_PRESHARED_KEY`` /
    ``HAS_ENDPOINT`` when set, ``Reserved`` = 1 (the protocol version) and
    ``LastHandshake`` as a FILETIME (0 = never).
    """
    flags = InterfaceFlag(0)
    private = bytes(32)
    public = bytes(32)
    if uapi.private_key is not None and uapi.private_key != bytes(32):
        flags |= InterfaceFlag.HAS_PRIVATE_KEY | InterfaceFlag.HAS_PUBLIC_KEY
        private = uapi.private_key
        public = derive_public_key(private)
    if uapi.listen_port:
        flags |= InterfaceFlag.HAS_LISTEN_PORT
    peers = []
    for p in uapi.peers:
        peer_flags = _PEER_GET_FLAGS
        endpoint = parse_endpoint_text(p.endpoint) if p.endpoint else None
        if p.preshared_key is not None:
            peer_flags |= PeerFlag.HAS_PRESHARED_KEY
        if endpoint is not None:
            peer_flags |= PeerFlag.HAS_ENDPOINT
        peers.append(
            PeerConfig(
                flags=peer_flags,
                public_key=p.public_key,
                preshared_key=p.preshared_key or bytes(32),
                persistent_keepalive=p.persistent_keepalive,
                endpoint=endpoint,
                tx_bytes=p.tx_bytes,
                rx_bytes=p.rx_bytes,
                last_handshake=(
                    filetime_from_unix_ns(p.last_handshake_ns) if p.last_handshake_ns else 0
                ),
                allowed_ips=tuple(_allowed_from_text(a) for a in p.allowed_ips),
                reserved=1,
            )
        )
    return InterfaceConfig(
        flags=flags,
        listen_port=uapi.listen_port,
        private_key=private,
        public_key=public,
        peers=tuple(peers),
    )
