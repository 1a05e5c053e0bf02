"""The cross-platform userspace API (UAPI): ``get``/``set`` over a Unix socket.

This is the text protocol of wireguard.com/xplatform that ``wg`` speaks to a
userspace implementation through ``/var/run/wireguard/NAME.sock``.  The
semantics follow wireguard-go (``device/uapi.go``, ``ipc/uapi_*.go``):

* framing: a request starts with the line ``get=1`` or ``set=1``; anything
  else closes the connection without an answer.  ``get=1`` must be followed
  by an empty line.  Every answer ends with ``errno=N`` and an empty line,
  N being 0 or a *negated* errno (``errno=-22``).  One connection may carry
  several operations.
* ``get``: ``private_key`` (if set), ``listen_port`` and ``fwmark`` (if not
  zero), then per peer in insertion order ``public_key``, ``preshared_key``
  (all-zero when unset), ``protocol_version=1``, ``endpoint`` (if known),
  ``last_handshake_time_sec``/``_nsec`` (Unix time, 0 = never), ``tx_bytes``,
  ``rx_bytes``, ``persistent_keepalive_interval`` and one ``allowed_ip`` per
  prefix in insertion order.
* ``set``: ``key=value`` lines applied in order until an empty line or end of
  input.  Device keys come first; ``public_key`` selects (or creates) a peer
  and the following lines configure it.  The first bad line stops the
  operation with an errno; the lines before it stay applied (as in
  wireguard-go, nothing is rolled back).

Entry points: :func:`uapi_get` and :func:`uapi_set` work on any
:class:`UapiBackend` (the runtime's ``Interface`` is one);
:class:`UapiServer` serves them on a Unix socket; :class:`UapiClient` is the
matching client for our CLI and tests.

Differences from wireguard-go (current master), on purpose:

* peers come out in insertion order (go walks a map: random order);
* a set is applied in batches under the backend lock, which is never held
  while waiting for the client (go's ipcMutex is separate from its data
  path; ours is not);
* the immediate keepalive goes only to a peer whose interval this request
  turned on (go's pkaOn flag survives into the following peer blocks, so it
  also pokes those peers); when a later line fails, the interval given
  before it is still applied and its keepalive sent (go skips the
  keepalive then);
* an IPv6 endpoint zone must be a number or an existing interface name (as
  the Linux bind of wireguard-go 0.0.2022 required; current go accepts any
  text and fails when sending);
* IPv4-mapped endpoints are shown as IPv4 (wgpy.endpoint keeps one form);
* after a failed set the connection is closed (go reads the rest as a new
  operation, after its line scanner swallowed whatever it had buffered, so
  in practice it closes too); operations pipelined after a successful set
  are served (go's scanner swallows them);
* an over-long line (> UAPI_MAX_LINE) answers EIO and ends the connection.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from wgpy.constants import (
    KEY_LEN,
    UAPI_EADDRINUSE,
    UAPI_EINVAL,
    UAPI_EIO,
    UAPI_ENOANO,
    UAPI_EPROTO,
    UAPI_MAX_LINE,
    UAPI_SET_BATCH,
    UAPI_SET_IDLE_TIMEOUT,
    UAPI_SOCKET_DIRECTORY,
)
from wgpy.device import Device, Output
from wgpy.endpoint import Endpoint
from wgpy.peer import Peer

__all__ = [
    "SetOperation",
    "UapiBackend",
    "UapiClient",
    "UapiConfig",
    "UapiError",
    "UapiPeer",
    "UapiServer",
    "parse_get_response",
    "socket_path",
    "uapi_get",
    "uapi_set",
]

log = logging.getLogger("wgpy.uapi")

_ZERO_KEY_HEX: Final = "00" * KEY_LEN
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_U16_MAX: Final = 0xFFFF
_U32_MAX: Final = 0xFFFFFFFF
#: Longest operation line worth reading: "get=1"/"set=1" are all there is.
_OP_LINE_MAX: Final = 64
#: How often the server re-checks that its socket file still exists, in
#: seconds, besides the inotify events (Linux) that wake it at once.
_WATCH_POLL_INTERVAL: Final = 1.0
#: Seconds close() waits for each connection thread to notice the shutdown.
_JOIN_TIMEOUT: Final = 5.0
# inotify(7) event bits watched on the socket file (as wireguard-go does,
# plus IN_MOVE_SELF: a socket renamed away is unreachable too).
_IN_ATTRIB: Final = 0x00000004
_IN_DELETE_SELF: Final = 0x00000400
_IN_MOVE_SELF: Final = 0x00000800


# ---------------------------------------------------------------------------
# Backend protocol
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# Value parsers: each returns None for anything wireguard-go would refuse.
# ---------------------------------------------------------------------------


def _parse_key(value: str) -> bytes | None:
    """Exactly 64 hex digits (either case), as Go's hex decoding wants."""
    if len(value) != 2 * KEY_LEN or not _HEX_DIGITS.issuperset(value):
        return None
    return bytes.fromhex(value)


def _parse_uint(value: str, maximum: int) -> int | None:
    """Decimal digits only (leading zeros fine, no sign), like strconv.ParseUint."""
    if not value or not value.isascii() or not value.isdigit():
        return None
    if len(value.lstrip("0")) > 20:  # also keeps int() away from huge strings
        return None
    n = int(value)
    return n if n <= maximum else None


def _parse_prefix(value: str) -> tuple[bytes, int] | None:
    """``ADDR/BITS`` as netip.ParsePrefix accepts it: the slash is required,
    no zone, BITS without sign or leading zeros.  Host bits are kept (the
    table masks them)."""
    addr, slash, bits = value.rpartition("/")
    if not slash or not bits or len(bits) > 3 or not bits.isascii() or not bits.isdigit():
        return None
    if len(bits) > 1 and bits[0] == "0":
        return None
    six = ":" in addr
    try:
        packed = socket.inet_pton(socket.AF_INET6 if six else socket.AF_INET, addr)
    except (OSError, ValueError):  # ValueError: NUL or unencodable text
        return None
    cidr = int(bits)
    if cidr > (128 if six else 32):
        return None
    return packed, cidr


def _parse_endpoint(value: str) -> Endpoint | None:
    """``a.b.c.d:port`` or ``[v6(%zone)]:port``, numeric only, as
    netip.ParseAddrPort accepts it (brackets exactly for IPv6, a non-empty
    zone only on IPv6), and a zone that resolves (see :func:`_zone_ok`)."""
    host, colon, port_text = value.rpartition(":")
    if not colon or not host or not port_text:
        return None
    bracketed = host[0] == "["
    if bracketed:
        if len(host) < 2 or host[-1] != "]":
            return None
        host = host[1:-1]
    port = _parse_uint(port_text, _U16_MAX)
    if port is None:
        return None
    addr, pct, zone = host.partition("%")
    six = ":" in addr
    if six != bracketed or (pct and (not zone or not six)):
        return None
    if zone and not _zone_ok(zone):
        return None
    try:
        socket.inet_pton(socket.AF_INET6 if six else socket.AF_INET, addr)
        return Endpoint(host, port)
    except (OSError, ValueError):
        return None


def _zone_ok(zone: str) -> bool:
    """A scope must be a u32 index or an existing interface's name (as
    wireguard-go's Linux bind required), so sending to it cannot fail later
    for a name nobody can resolve."""
    if zone.isascii() and zone.isdigit():
        return len(zone) <= 10 and int(zone) <= _U32_MAX
    try:
        socket.if_nametoindex(zone)
    except (OSError, ValueError):
        return False
    return True


def _format_addr(addr: bytes) -> str:
    """Address text as Go's netip prints it (RFC 5952 for IPv6)."""
    if len(addr) == 4:
        return socket.inet_ntop(socket.AF_INET, addr)
    text = socket.inet_ntop(socket.AF_INET6, addr)
    if "." in text and not text.startswith("::ffff:"):
        # glibc prints ::a.b.c.d for IPv4-compatible addresses; Go prints
        # dotted form only for IPv4-mapped ones.
        import ipaddress

        text = str(ipaddress.IPv6Address(addr))
    return text


# ---------------------------------------------------------------------------
# get
# ---------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------
# set
# ---------------------------------------------------------------------------


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
            now, _ = self.backend.clock()
            # All-zero clears the key; a peer with the new public key goes.
            dev.set_private_key(private, now)
        elif key == "listen_port":
            port = _parse_uint(value, _U16_MAX)
            if port is None:
                return UAPI_EINVAL
            try:
                self.backend.set_listen_port(port)
            except OSError as exc:
                log.info("UAPI: cannot bind port %d: %s", port, exc)
                return UAPI_EADDRINUSE
        elif key == "fwmark":
            mark = _parse_uint(value, _U32_MAX)
            if mark is None:
                return UAPI_EINVAL
            try:
                self.backend.set_fwmark(mark)
            except OSError as exc:
                log.info("UAPI: cannot set fwmark %d: %s", mark, exc)
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
                table = dev.allowed_ips
                addr, cidr = parsed
                if remove:
                    table.remove(addr, cidr, peer)  # only if this peer owns it
                else:
                    # Re-adding a prefix puts it last in the peer's list (the
                    # trie does that itself, as wireguard-go and the kernel).
                    table.insert(addr, cidr, peer)
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
                dev.allowed_ips.remove_by_owner(peer)
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


# ---------------------------------------------------------------------------
# Server
# ---------------------------------------------------------------------------


def socket_path(name: str, directory: str = UAPI_SOCKET_DIRECTORY) -> str:
    """``DIRECTORY/NAME.sock``."""
    return os.path.join(directory, name + ".sock")


class _LineTooLong(Exception):
    pass


class _LineReader:
    """Buffered line reader over a byte stream (``recv(n)``, b"" at end) with
    a line-length cap: a socket's ``recv``, or a named pipe's read."""

    __slots__ = ("_buf", "_eof", "_pos", "_recv")

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._buf = bytearray()
        self._pos = 0
        self._eof = False

    def _fill(self) -> None:
        if self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        data = self._recv(65536)
        if data:
            self._buf += data
        else:
            self._eof = True

    def has_line(self) -> bool:
        """Whether a complete line is already buffered."""
        return self._buf.find(b"\n", self._pos) >= 0

    def readline(self, limit: int) -> tuple[bytes | None, bool]:
        """(line without its newline, True); at end of input (rest, False),
        or (None, False) when nothing is left.  ``_LineTooLong`` past
        ``limit`` bytes."""
        while True:
            buf, pos = self._buf, self._pos
            i = buf.find(b"\n", pos)
            if i >= 0:
                if i - pos > limit:
                    raise _LineTooLong
                self._pos = i + 1
                return bytes(buf[pos:i]), True
            if len(buf) - pos > limit:
                raise _LineTooLong
            if self._eof:
                self._pos = len(buf)
                return (bytes(buf[pos:]), False) if len(buf) > pos else (None, False)
            self._fill()

    def readbyte(self) -> bytes | None:
        """One byte, or None at end of input."""
        while self._pos >= len(self._buf):
            if self._eof:
                return None
            self._fill()
        b = bytes(self._buf[self._pos : self._pos + 1])
        self._pos += 1
        return b


def _errno_line(err: int) -> bytes:
    return f"errno={-err}\n\n".encode()


def _inotify_watch(path: str) -> int | None:
    """A non-blocking inotify fd watching ``path`` (Linux), else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init1 = libc.inotify_init1
        init1.argtypes = [ctypes.c_int]
        init1.restype = ctypes.c_int
        add = libc.inotify_add_watch
        add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
        add.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    fd = int(init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        return None
    if add(fd, os.fsencode(path), _IN_ATTRIB | _IN_DELETE_SELF | _IN_MOVE_SELF) < 0:
        os.close(fd)
        return None
    return fd


class UapiServer:
    """Serves UAPI for one interface on ``DIRECTORY/NAME.sock``.

    :meth:`start` creates the directory (0755) and the socket (under umask
    077, so only root can connect).  A leftover socket file is handled as
    wireguard-go does: if something still accepts connections on it,
    ``start`` fails with EADDRINUSE; otherwise the stale file is replaced.
    One daemon thread accepts and watches the socket file; each connection
    gets its own daemon thread and may carry several operations.  Set and get
    operations are serialized (wireguard-go's ipcMutex).

    Socket removal: the accept thread watches the socket file with inotify
    (Linux; ``IN_ATTRIB``/``IN_DELETE_SELF``/``IN_MOVE_SELF`` wake it) and
    re-checks it with ``lstat`` at least every second (the only mechanism
    elsewhere).  When the path is gone, or now names a different file, the
    server stops accepting and calls :attr:`on_socket_removed` once, from
    that thread: wireguard-go exits then, and the daemon does the same.
    """

    def __init__(
        self, name: str, backend: UapiBackend, directory: str = UAPI_SOCKET_DIRECTORY
    ) -> None:
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"invalid interface name {name!r}")
        self.name = name
        self.backend = backend
        self.directory = directory
        #: The socket file's path.
        self.path = socket_path(name, directory)
        #: Called once (from the accept thread) when the socket file is deleted.
        self.on_socket_removed: Callable[[], None] | None = None
        self._listener: socket.socket | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of our file
        self._inotify: int | None = None
        self._wake_r = -1
        self._wake_w = -1
        self._accept_thread: threading.Thread | None = None
        self._conns: dict[socket.socket, threading.Thread] = {}
        self._conns_lock = threading.Lock()
        self._op_lock = threading.Lock()
        self._closing = threading.Event()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Create the socket and start serving; ``OSError`` on failure."""
        if self._listener is not None or self._closed:
            raise RuntimeError("UapiServer.start() called twice")
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        listener = self._bind()
        try:
            st = os.lstat(self.path)
            self._identity = (st.st_dev, st.st_ino)
            listener.listen(socket.SOMAXCONN)
            listener.setblocking(False)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
        except BaseException:
            listener.close()
            self._unlink_if_ours()
            raise
        self._listener = listener
        self._inotify = _inotify_watch(self.path)
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"uapi-{self.name}", daemon=True
        )
        self._accept_thread.start()

    def _bind(self) -> socket.socket:
        path = self.path
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o077)
        try:
            try:
                sock.bind(path)
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                # The file exists: in use by a live server, or stale?
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(1.0)
                    try:
                        probe.connect(path)
                    except OSError:
                        pass
                    else:
                        raise OSError(errno.EADDRINUSE, f"UAPI socket {path} is in use") from None
                os.unlink(path)
                sock.bind(path)
        except BaseException:
            sock.close()
            raise
        finally:
            os.umask(old_umask)
        return sock

    def close(self) -> None:
        """Stop serving, remove the socket file (if still ours), end the
        connection threads.  Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._wake()
        current = threading.current_thread()
        thread = self._accept_thread
        if thread is not None and thread is not current:
            thread.join()
        if self._listener is not None:
            self._listener.close()
        self._unlink_if_ours()
        with self._conns_lock:
            conns = list(self._conns.items())
        for conn, _ in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for _, t in conns:
            if t is not current:
                t.join(_JOIN_TIMEOUT)
        for fd in (self._inotify, self._wake_r, self._wake_w):
            if fd is not None and fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._inotify = None
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> UapiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    def _socket_present(self) -> bool:
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return False
        except OSError:
            return True  # cannot tell: keep serving
        return (st.st_dev, st.st_ino) == self._identity and stat.S_ISSOCK(st.st_mode)

    def _unlink_if_ours(self) -> None:
        # Never delete a socket another process created at the same path.
        if self._identity is not None and self._socket_present():
            with contextlib.suppress(OSError):
                os.unlink(self.path)

    # -- accepting -------------------------------------------------------------

    def _accept_loop(self) -> None:
        listener = self._listener
        assert listener is not None
        watched = [listener.fileno(), self._wake_r]
        if self._inotify is not None:
            watched.append(self._inotify)
        while not self._closing.is_set():
            try:
                ready, _, _ = select.select(watched, [], [], _WATCH_POLL_INTERVAL)
            except OSError:
                if self._closing.is_set():
                    return
                raise
            if self._closing.is_set():
                return
            if self._inotify is not None and self._inotify in ready:
                with contextlib.suppress(OSError):
                    os.read(self._inotify, 65536)
            if not self._socket_present():
                log.info("UAPI socket %s was removed", self.path)
                callback = self.on_socket_removed
                if callback is not None:
                    try:
                        callback()
                    except Exception:
                        log.exception("on_socket_removed callback failed")
                return
            if listener.fileno() in ready:
                self._accept(listener)

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as exc:
            log.warning("UAPI accept failed: %s", exc)
            return
        conn.setblocking(True)
        thread = threading.Thread(
            target=self._serve_connection, args=(conn,), name=f"uapi-{self.name}-conn", daemon=True
        )
        with self._conns_lock:
            if self._closing.is_set():
                conn.close()
                return
            self._conns[conn] = thread
        thread.start()

    # -- one connection ----------------------------------------------------------

    def _serve_connection(self, conn: socket.socket) -> None:
        reader = _LineReader(conn.recv)
        try:
            while not self._closing.is_set():
                op, complete = reader.readline(_OP_LINE_MAX)
                if op is None or not complete:
                    return  # end of input (a partial line is no operation)
                keep = True
                if op == b"get=1":
                    nxt = reader.readbyte()
                    if nxt is None:
                        return
                    if nxt != b"\n":
                        log.info("UAPI: trailing character %r after get=1", nxt)
                        answer = _errno_line(UAPI_EINVAL)
                    else:
                        answer = self._get()
                elif op == b"set=1":
                    # A set holds the operation lock: a client that stalls
                    # mid-request must not block every other client forever.
                    conn.settimeout(UAPI_SET_IDLE_TIMEOUT)
                    err, keep = self._set(reader)
                    conn.settimeout(None)
                    answer = _errno_line(err)
                else:
                    log.info("UAPI: invalid operation %.40r", op)
                    return
                conn.sendall(answer)
                if not keep:
                    return
        except (OSError, _LineTooLong):
            return
        except Exception:
            log.exception("UAPI connection failed")
        finally:
            with self._conns_lock:
                self._conns.pop(conn, None)
            conn.close()

    def _get(self) -> bytes:
        with self._op_lock:
            try:
                return uapi_get(self.backend).encode()
            except Exception:
                log.exception("UAPI get failed")
                return _errno_line(UAPI_ENOANO)

    def _set(self, reader: _LineReader) -> tuple[int, bool]:
        """Run one set operation; returns (errno, keep the connection)."""
        backend = self.backend
        with self._op_lock:
            op = SetOperation(backend)
            while True:
                batch: list[str] = []
                end = False
                read_error = False
                try:
                    # Apply what has arrived before blocking for more, so the
                    # backend lock is never held while waiting for the client.
                    while True:
                        raw, complete = reader.readline(UAPI_MAX_LINE)
                        if raw is None:
                            end = True
                            break
                        line = raw.decode("utf-8", "surrogateescape")
                        batch.append(line)
                        if not complete or line in ("", "\r"):
                            end = True
                            break
                        if len(batch) >= UAPI_SET_BATCH or not reader.has_line():
                            break
                except (_LineTooLong, OSError) as exc:
                    log.info("UAPI set: read failed: %s", type(exc).__name__)
                    read_error = end = True
                with backend.lock:
                    err = op.apply(batch)
                    if err or end or op.done:
                        op.finish()
                if err:
                    # The rest of the request is unread garbage: close after
                    # answering (go's scanner has usually swallowed it too).
                    return err, False
                if read_error:
                    return UAPI_EIO, False
                if end or op.done:
                    return 0, True


# ---------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------


class UapiError(OSError):
    """A UAPI operation failed; ``errno`` is the positive error number."""

    def __init__(self, code: int, detail: str | None = None) -> None:
        super().__init__(code, detail or os.strerror(code))


@dataclass
class UapiPeer:
    """One peer as ``get`` reports it."""

    public_key: bytes
    preshared_key: bytes | None = None
    endpoint: str | None = None
    last_handshake_ns: int = 0
    tx_bytes: int = 0
    rx_bytes: int = 0
    persistent_keepalive: int = 0
    protocol_version: int = 1
    allowed_ips: list[str] = field(default_factory=list)


@dataclass
class UapiConfig:
    """The answer to ``get``: interface values and peers, in order."""

    private_key: bytes | None = None
    listen_port: int = 0
    fwmark: int = 0
    peers: list[UapiPeer] = field(default_factory=list)

    def peer(self, public_key: bytes) -> UapiPeer | None:
        """The peer with this public key, if listed."""
        for p in self.peers:
            if p.public_key == public_key:
                return p
        return None


def parse_get_response(text: str) -> UapiConfig:
    """Parse a get answer (``errno=0`` line and the blank line optional).

    Raises :class:`UapiError` for a non-zero errno, ``ValueError`` for a
    malformed line.  Unknown keys are ignored, as ``wg`` does.
    """
    cfg = UapiConfig()
    peer: UapiPeer | None = None
    for line in text.split("\n"):
        if not line:
            continue
        key, eq, value = line.partition("=")
        if not eq:
            raise ValueError(f"malformed UAPI line {line!r}")
        if key == "errno":
            code = int(value)
            if code:
                raise UapiError(abs(code))
            continue
        if key == "public_key":
            peer = UapiPeer(bytes.fromhex(value))
            cfg.peers.append(peer)
        elif peer is None:
            if key == "private_key":
                cfg.private_key = bytes.fromhex(value)
            elif key == "listen_port":
                cfg.listen_port = int(value)
            elif key == "fwmark":
                cfg.fwmark = int(value)
        elif key == "preshared_key":
            psk = bytes.fromhex(value)
            peer.preshared_key = None if psk == bytes(KEY_LEN) else psk
        elif key == "endpoint":
            peer.endpoint = value
        elif key == "last_handshake_time_sec":
            peer.last_handshake_ns += int(value) * 1_000_000_000
        elif key == "last_handshake_time_nsec":
            peer.last_handshake_ns += int(value)
        elif key == "tx_bytes":
            peer.tx_bytes = int(value)
        elif key == "rx_bytes":
            peer.rx_bytes = int(value)
        elif key == "persistent_keepalive_interval":
            peer.persistent_keepalive = int(value)
        elif key == "protocol_version":
            peer.protocol_version = int(value)
        elif key == "allowed_ip":
            peer.allowed_ips.append(value)
    return cfg


class UapiClient:
    """Talks UAPI to ``/var/run/wireguard/NAME.sock`` (or to a path: any
    argument containing ``/``).  One connection per operation, as ``wg``."""

    def __init__(
        self,
        name_or_path: str,
        *,
        directory: str = UAPI_SOCKET_DIRECTORY,
        timeout: float | None = 30.0,
    ) -> None:
        if "/" in name_or_path:
            self.path = name_or_path
        else:
            self.path = socket_path(name_or_path, directory)
        self.timeout = timeout

    def request(self, payload: bytes) -> str:
        """Send one raw request and return the raw answer up to and including
        its terminating blank line.  ``UapiError(EPROTO)`` if the server
        closed without a complete answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(self.timeout)
            sock.connect(self.path)
            sock.sendall(payload)
            buf = bytearray()
            start = 0
            while True:
                end = buf.find(b"\n\n", start)
                if end >= 0:
                    return buf[: end + 2].decode("utf-8", "surrogateescape")
                start = max(0, len(buf) - 1)
                chunk = sock.recv(65536)
                if not chunk:
                    raise UapiError(UAPI_EPROTO, "UAPI server closed the connection")
                buf += chunk

    @staticmethod
    def _check(answer: str) -> str:
        body, _, last = answer.rstrip("\n").rpartition("\n")
        if not last.startswith("errno="):
            raise UapiError(UAPI_EPROTO, "UAPI answer without errno")
        code = int(last[len("errno=") :])
        if code:
            raise UapiError(abs(code))
        return body

    def get_text(self) -> str:
        """The raw get answer (including ``errno=0`` and the blank line)."""
        answer = self.request(b"get=1\n\n")
        self._check(answer)
        return answer

    def get(self) -> UapiConfig:
        """The parsed configuration; ``UapiError`` on failure."""
        return parse_get_response(self.get_text())

    def set(self, config: str | Iterable[str]) -> None:
        """Send ``key=value`` lines (one string with newlines, or an iterable
        of lines); ``UapiError`` carries the errno of a failure."""
        lines = config.strip("\n").split("\n") if isinstance(config, str) else list(config)
        while lines and not lines[-1]:
            lines.pop()
        for line in lines:
            if not line or "\n" in line:
                raise ValueError("UAPI set lines must be non-empty single lines")
        body = "".join(line + "\n" for line in lines)
        self._check(self.request(b"set=1\n" + body.encode() + b"\n"))
