"""The UAPI over a Unix socket: :class:`UapiServer` (one thread per
connection, the socket file watched) and :class:`UapiClient` (wireguard-go's
``ipc/``)."""

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
from typing import Final

from wgpy.constants import (
    UAPI_EINVAL,
    UAPI_EIO,
    UAPI_ENOANO,
    UAPI_EPROTO,
    UAPI_MAX_LINE,
    UAPI_SET_BATCH,
    UAPI_SET_IDLE_TIMEOUT,
    UAPI_SOCKET_DIRECTORY,
)
from wgpy.uapi.apply import SetOperation, UapiBackend, uapi_get
from wgpy.uapi.protocol import (
    _OP_LINE_MAX,
    UapiConfig,
    UapiError,
    _errno_line,
    parse_get_response,
)

__all__ = ["UapiClient", "UapiServer", "socket_path"]

log = logging.getLogger("wgpy.uapi")

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
