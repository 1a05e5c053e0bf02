"""Applying the UAPI to a Device: the answer to ``get`` and the line-by-line
application of a ``set`` (wireguard-go's ``device/uapi.go``), on any
:class:`UapiBackend`.  Changes go through Device methods only."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any, Protocol

from wgpy.constants import (
    KEY_LEN,
    UAPI_EADDRINUSE,
    UAPI_EINVAL,
    UAPI_ENOANO,
    UAPI_EPROTO,
)
from wgpy.device import Device, Output
from wgpy.peer import Peer
from wgpy.uapi.protocol import (
    _U16_MAX,
    _U32_MAX,
    _ZERO_KEY_HEX,
    _format_addr,
    _parse_endpoint,
    _parse_key,
    _parse_prefix,
    _parse_uint,
)

__all__ = ["SetOperation", "UapiBackend", "uapi_get", "uapi_set"]

log = logging.getLogger("wgpy.uapi")


class UapiBackend(Protocol):
    """What the UAPI needs from a running interface (the runtime implements it).

    ``lock`` is held while a get is serialized or a batch of set lines is
    applied; ``clock`` returns (monotonic seconds, Unix nanoseconds);
    ``set_listen_port`` rebinds (``OSError`` on failure: the answer is
    EADDRINUSE); ``set_fwmark`` raises ``OSError`` on failure; ``submit``
    sends what a configuration change produced.
    """

    @property
    def lock(self) -> AbstractContextManager[Any]:
        """A re-entrant lock guarding the device."""
        ...

    @property
    def device(self) -> Device:
        """The sans-IO engine being configured."""
        ...

    def clock(self) -> tuple[float, int]:
        """(monotonic now, wall-clock Unix nanoseconds)."""
        ...

    def get_listen_port(self) -> int:
        """The bound UDP port (the configured one before binding; 0 = none)."""
        ...

    def set_listen_port(self, port: int) -> None:
        """Rebind to ``port`` (0 = random); ``OSError`` if that fails."""
        ...

    def get_fwmark(self) -> int:
        """The socket mark (0 = none)."""
        ...

    def set_fwmark(self, mark: int) -> None:
        """Set the socket mark; ``OSError`` if that fails."""
        ...

    def submit(self, out: Output) -> None:
        """Send the datagrams of an Output produced by a config change."""
        ...


def uapi_get(backend: UapiBackend) -> str:
    """The full answer to ``get=1``, ending with ``errno=0`` and a blank line."""
    # Take a consistent snapshot under the lock; format it after releasing
    # the lock (formatting 100k prefixes takes longer than copying them).
    with backend.lock:
        dev = backend.device
        private = dev.private_key
        port = backend.get_listen_port()
        mark = backend.get_fwmark()
        entries = dev.allowed_ips.entries
        peers = [
            (
                p.public_key,
                p.preshared_key,
                p.endpoint,
                p.last_handshake_ns,
                p.tx_bytes,
                p.rx_bytes,
                p.persistent_keepalive,
                entries(p),
            )
            for p in dev.peers
        ]
    lines: list[str] = []
    put = lines.append
    if private is not None:
        put("private_key=" + private.hex())
    if port:
        put(f"listen_port={port}")
    if mark:
        put(f"fwmark={mark}")
    ntop = socket.inet_ntop
    inet, inet6 = socket.AF_INET, socket.AF_INET6
    for public, psk, endpoint, handshake_ns, tx, rx, keepalive, prefixes in peers:
        put("public_key=" + public.hex())
        put("preshared_key=" + (psk.hex() if psk is not None else _ZERO_KEY_HEX))
        put("protocol_version=1")
        if endpoint is not None:
            put(f"endpoint={endpoint}")
        secs, nsecs = divmod(handshake_ns, 1_000_000_000)
        put(f"last_handshake_time_sec={secs}")
        put(f"last_handshake_time_nsec={nsecs}")
        put(f"tx_bytes={tx}")
        put(f"rx_bytes={rx}")
        put(f"persistent_keepalive_interval={keepalive}")
        for addr, cidr in prefixes:
            if len(addr) == 4:
                put(f"allowed_ip={ntop(inet, addr)}/{cidr}")
            else:
                text = ntop(inet6, addr)
                if "." in text:
                    text = _format_addr(addr)
                put(f"allowed_ip={text}/{cidr}")
    put("errno=0")
    return "\n".join(lines) + "\n\n"


class SetOperation:
    """One ``set`` operation, fed its lines in one or more batches.

    Call :meth:`apply` (holding the backend lock) with consecutive lines; it
    returns 0 or a positive errno, and :attr:`done` turns true at the empty
    line that ends the operation.  Call :meth:`finish` (holding the lock)
    once at the end, whatever happened: it completes the current peer (the
    "post config" step).  :func:`uapi_set` does all of this in one go.
    """

    def __init__(self, backend: UapiBackend) -> None:
        self.backend = backend
        self.device = backend.device
        #: True once the terminating empty line was consumed.
        self.done = False
        #: The errno that stopped the operation (0 while it goes on).
        self.errno = 0
        self._device_section = True
        self._peer: Peer | None = None
        self._dummy = False  # lines for this peer are checked, then ignored
        self._created = False
        self._pka: int | None = None  # keepalive interval given for this peer
        self._pka_on = False  # the last such line turned keepalive on from 0

    def apply(self, lines: Iterable[str]) -> int:
        """Apply lines in order (trailing ``\\n``/``\\r\\n`` are stripped).
        Stops at the first error (returned, positive) or the empty line."""
        if self.done or self.errno:
            return self.errno
        for raw in lines:
            line = raw[:-1] if raw.endswith("\n") else raw
            if line.endswith("\r"):  # Go's line scanner drops a trailing CR
                line = line[:-1]
            if not line:
                self.done = True
                return 0
            try:
                err = self._line(line)
            except ValueError as exc:  # the engine refused a value
                log.debug("UAPI set: %s", exc)
                err = UAPI_EINVAL
            except Exception:  # a bug must not take the server down
                log.exception("UAPI set: internal error on %.80r", line)
                err = UAPI_ENOANO
            if err:
                log.info("UAPI set failed (errno %d) at line %.80r", err, line)
                self.errno = err
                return err
        return 0

    def finish(self) -> None:
        """Complete the peer being configured (idempotent)."""
        try:
            self._post_config()
        except Exception:
            log.exception("UAPI set: internal error while completing a peer")

    # -- line handlers -----------------------------------------------------

    def _line(self, line: str) -> int:
        key, eq, value = line.partition("=")
        if not eq:
            return UAPI_EPROTO
        if key == "public_key":
            self._device_section = False
            self._post_config()
            return self._select_peer(value)
        if self._device_section:
            return self._device_line(key, value)
        return self._peer_line(key, value)

    def _device_line(self, key: str, value: str) -> int:
        dev = self.device
        if key == "private_key":
            private = _parse_key(value)
            if private is None:
                return UAPI_EINVAL
            # All-zero clears the key; a peer with the new public key goes.
            dev.set_private_key(private)
        elif key in ("listen_port", "fwmark"):
            # Both (re)configure the sockets: a number, then a bind that may fail.
            port = key == "listen_port"
            number = _parse_uint(value, _U16_MAX if port else _U32_MAX)
            if number is None:
                return UAPI_EINVAL
            try:
                (self.backend.set_listen_port if port else self.backend.set_fwmark)(number)
            except OSError as exc:
                log.info("UAPI: cannot set %s %d: %s", key, number, exc)
                return UAPI_EADDRINUSE
        elif key == "replace_peers":
            if value != "true":
                return UAPI_EINVAL
            dev.remove_all_peers()
        else:
            return UAPI_EINVAL  # unknown key, or a peer key before public_key
        return 0

    def _select_peer(self, value: str) -> int:
        public = _parse_key(value)
        if public is None:
            return UAPI_EINVAL
        dev = self.device
        self._pka = None
        self._pka_on = False
        # A fresh wireguard-go device's own public key is all zero until a
        # private key is set, so that key is ignored too.
        own = dev.public_key or bytes(KEY_LEN)
        if public == own:
            self._peer, self._dummy, self._created = None, True, False
            return 0
        peer = dev.peer(public)
        self._dummy = False
        self._created = peer is None
        if peer is None:
            try:
                peer = dev.add_peer(public)
            except ValueError as exc:  # e.g. too many peers
                log.info("UAPI: cannot create peer: %s", exc)
                self._peer, self._dummy, self._created = None, True, False
                return UAPI_EINVAL
        self._peer = peer
        return 0

    def _peer_line(self, key: str, value: str) -> int:
        dev = self.device
        peer = self._peer
        live = peer is not None and not self._dummy and not peer.removed
        if key == "allowed_ip":
            remove = value.startswith("-")
            parsed = _parse_prefix(value[1:] if remove else value)
            if parsed is None:
                return UAPI_EINVAL
            if live:
                assert peer is not None
                addr, cidr = parsed
                if remove:
                    dev.remove_allowed_ip(peer, addr, cidr)  # only if this peer owns it
                else:
                    dev.add_allowed_ip(peer, addr, cidr)
        elif key == "endpoint":
            endpoint = _parse_endpoint(value)
            if endpoint is None:
                return UAPI_EINVAL
            if live:
                assert peer is not None
                dev.set_endpoint(peer, endpoint)
        elif key == "persistent_keepalive_interval":
            interval = _parse_uint(value, _U16_MAX)
            if interval is None:
                return UAPI_EINVAL
            if live:
                assert peer is not None
                old = self._pka if self._pka is not None else peer.persistent_keepalive
                self._pka = interval
                self._pka_on = old == 0 and interval != 0
        elif key == "preshared_key":
            psk = _parse_key(value)
            if psk is None:
                return UAPI_EINVAL
            if live:
                assert peer is not None
                dev.set_preshared_key(peer, psk)  # all-zero = none
        elif key == "replace_allowed_ips":
            if value != "true":
                return UAPI_EINVAL
            if live:
                assert peer is not None
                dev.replace_allowed_ips(peer)
        elif key == "update_only":
            if value != "true":
                return UAPI_EINVAL
            if live and self._created:
                assert peer is not None
                dev.remove_peer(peer.public_key)
                self._dummy = True
        elif key == "remove":
            if value != "true":
                return UAPI_EINVAL
            if live:
                assert peer is not None
                dev.remove_peer(peer.public_key)
            self._dummy = True
        elif key == "protocol_version":
            if value != "1":
                return UAPI_EINVAL
        else:
            return UAPI_EINVAL  # unknown key, or a device key after a peer
        return 0

    def _post_config(self) -> None:
        """wireguard-go's handlePostConfig: apply the keepalive interval and,
        if this block turned it on, send the immediate keepalive."""
        peer, interval, turned_on = self._peer, self._pka, self._pka_on
        self._pka = None
        self._pka_on = False
        if peer is None or self._dummy or peer.removed or interval is None:
            return
        dev = self.device
        now, wall = self.backend.clock()
        if turned_on and peer.persistent_keepalive:
            # e.g. 25, then 0, then 30 in one block: go sends a keepalive.
            dev.set_persistent_keepalive(peer, 0, now, wall)
        out = dev.set_persistent_keepalive(peer, interval, now, wall)
        if out.datagrams or out.packets:
            self.backend.submit(out)


def uapi_set(backend: UapiBackend, lines: Iterable[str]) -> int:
    """Apply a ``set`` operation's lines (without the ``set=1`` line).

    Stops at the first empty line.  Returns 0 or a *positive* errno (the
    server writes it negated); lines before a failing one stay applied.
    """
    with backend.lock:
        op = SetOperation(backend)
        err = op.apply(lines)
        op.finish()
    return err
