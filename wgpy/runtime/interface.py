"""A running WireGuard interface: the sans-IO Device driven by real I/O.

:class:`Interface` owns a TUN device, a :class:`~wgpy.net.udp.UdpBind` and a
:class:`~wgpy.device.Device`, and runs one event loop (``selectors``/epoll)
that moves batches between them, feeding the engine the monotonic clock
(``CLOCK_BOOTTIME`` where available, so suspend time counts as the kernel's
timers do) and the wall clock.  Configuration from other threads (the UAPI
server, the wireguard.h layer) goes through :attr:`Interface.lock`, which
the loop holds while it processes a batch.

The I/O shell is this package (here: the event-loop thread and the clocks;
:mod:`~wgpy.runtime.keylog`: the key-log file), :mod:`wgpy.net` (UDP
sockets, network namespaces) and :mod:`wgpy.tun` (TUN devices).  The front
doors that serve requests hold threads and sockets of their own:
:mod:`wgpy.uapi.server` (a thread per connection), :mod:`wgpy.daemon` (the
process and its signals) and :mod:`wgpy.nt` (adapters).  The core
(:mod:`wgpy.device` and below) has none.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable

from wgpy.constants import DEFAULT_MTU, IO_BATCH_SIZE, UNDER_LOAD_BACKLOG
from wgpy.device import Device, Event, EventKind, Output
from wgpy.net.udp import UdpBind
from wgpy.rng import Rng, SeededRng
from wgpy.runtime.keylog import KeylogFile
from wgpy.runtime.options import InterfaceOptions, UdpFactory, udp_bind_factory
from wgpy.tun.base import TunClosed, TunDevice

__all__ = ["Interface", "monotonic", "open_interface"]

log = logging.getLogger("wgpy.runtime")

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


#: Order of service within one wakeup: data, TUN, control (2), handshakes.
_PRIORITY = {"udp": 0, "tun": 1, "udp-hs": 3}


def _priority(item: tuple[selectors.SelectorKey, int]) -> int:
    """Sort key of a ready selector entry (see :data:`_PRIORITY`)."""
    return _PRIORITY.get(item[0].data, 2)


def short_key(key: bytes) -> str:
    """A public key abbreviated for logs, as wireguard-go prints peers."""
    return (
        "(" + base64.b64encode(key).decode()[:4] + "…" + base64.b64encode(key).decode()[-5:-1] + ")"
    )


def monotonic() -> float:
    """Monotonic seconds that keep counting during suspend where possible."""
    if _BOOTTIME is not None:
        return time.clock_gettime(_BOOTTIME)
    return time.monotonic()


#: Batches drained from one ready descriptor per wakeup (fairness).
_MAX_BATCHES_PER_WAKEUP = 8
#: Upper bound on a select() wait, for link-state polling.
_POLL_INTERVAL = 1.0
#: Pause after an unexpected error in the loop, so a persistent fault
#: cannot turn into a busy loop.
_ERROR_BACKOFF = 0.01
#: Batches read from a handshake-only socket per wakeup: fewer than for data,
#: so a flood of junk there leaves the data sockets most of the loop, and
#: just enough to see a backlog of UNDER_LOAD_BACKLOG messages (two).
_HS_BATCHES_PER_WAKEUP = -(-UNDER_LOAD_BACKLOG // IO_BATCH_SIZE)
#: How long handshake sockets rest once the handshake budget is spent
#: (about the time the budget takes to refill a full batch).
_HS_PAUSE = 0.016


class Interface:
    """A WireGuard interface with real I/O.  Implements the UAPI backend.

    ``tun`` may be any :class:`~wgpy.tun.base.TunDevice`.  The UDP sockets
    are opened by :meth:`start` through ``options`` (see
    :mod:`wgpy.runtime.options`; read from the environment when not given),
    in ``netns_fd``'s network namespace if given, else the calling thread's.
    The link state comes from ``is_link_up``, else from the TUN's own
    ``is_up()`` when it has one (a Linux TUN reads it wherever the link lives).
    """

    def __init__(
        self,
        tun: TunDevice,
        *,
        options: InterfaceOptions | None = None,
        netns_fd: int | None = None,
        listen_port: int = 0,
        private_key: bytes | None = None,
        rng: Rng | None = None,
        is_link_up: Callable[[], bool] | None = None,
        udp_factory: UdpFactory | None = None,
    ) -> None:
        self.tun = tun
        self.name = tun.name
        self.options = options if options is not None else InterfaceOptions.from_environment()
        seed = self.options.insecure_rng_seed
        if rng is None and seed:
            # Test-only switch for recording reproducible transcripts: every
            # ephemeral key becomes predictable, so never use it for real.
            log.warning("%s: WGPY_INSECURE_TEST_RNG_SEED is set: keys are predictable", tun.name)
            rng = SeededRng(seed.encode())
        self.device = Device(private_key, rng=rng, mtu=tun.mtu or DEFAULT_MTU)
        # Debug switch: every handshake needs a cookie (tests the DoS path).
        self.device.force_under_load = self.options.force_under_load
        self._keylog: KeylogFile | None = None
        if self.options.keylog_file:
            # Wireshark's wg.keylog_file: a secret, written only when asked for.
            log.warning("%s: writing handshake keys to %s", tun.name, self.options.keylog_file)
            self._keylog = KeylogFile(self.options.keylog_file)
            self.device.keylog = self._keylog.write
        self.lock = threading.RLock()
        self.udp: UdpBind | None = None
        self._listen_port = listen_port
        self._fwmark = 0
        if is_link_up is None:
            is_link_up = getattr(tun, "is_up", None)
        self._is_link_up = is_link_up
        self._udp_factory = udp_factory or udp_bind_factory(self.options, netns_fd)
        self._selector: selectors.BaseSelector | None = None
        # A socket pair, not a pipe: select() on Windows waits only on sockets.
        self._wake_sockets = socket.socketpair()
        for sock in self._wake_sockets:
            sock.setblocking(False)
        self._wake_r, self._wake_w = (sock.fileno() for sock in self._wake_sockets)
        self._stop = threading.Event()
        self._registered_udp: list[int] = []
        self._registered_bind: UdpBind | None = None
        self._hs_paused_until: float | None = None
        self._link_watch: socket.socket | None = None
        self._link_netns: tuple[int, int] | None = None
        self._link_watched = False
        self._out = Output()
        self.closed_reason: str | None = None
        #: Unexpected errors caught (and survived) by the event loop.
        self.errors = 0
        self.events: list[Event] = []
        self.on_event: Callable[[Event], None] | None = None

    # -- UAPI backend ----------------------------------------------------------

    def clock(self) -> tuple[float, int]:
        """(monotonic seconds, Unix nanoseconds)."""
        return monotonic(), time.time_ns()

    def get_listen_port(self) -> int:
        """The bound UDP port, or the configured one before the sockets open."""
        return self.udp.port if self.udp is not None else self._listen_port

    def set_listen_port(self, port: int) -> None:
        """Rebind to ``port`` (0 = random); OSError (EADDRINUSE) keeps the old bind."""
        with self.lock:
            if self.udp is not None and (port == self.udp.port and port != 0):
                return
            self._listen_port = port
            if self.udp is None:
                return
            new = self._udp_factory(port, self._fwmark)
            old, self.udp = self.udp, new
            old.close()
            self._wake()

    def get_fwmark(self) -> int:
        """The socket mark (0 = none)."""
        return self._fwmark

    def set_fwmark(self, mark: int) -> None:
        """Set SO_MARK on the sockets."""
        with self.lock:
            if self.udp is not None:
                self.udp.set_fwmark(mark)
            self._fwmark = mark

    def submit(self, out: Output) -> None:
        """Perform the actions of an Output produced outside the loop."""
        with self.lock:
            self._flush(out)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Open the UDP sockets (may raise OSError, e.g. EADDRINUSE)."""
        with self.lock:
            if self.udp is None:
                self.udp = self._udp_factory(self._listen_port, self._fwmark)
            up = self._is_link_up() if self._is_link_up is not None else True
            now, wall = self.clock()
            self._flush(self.device.set_up(up, now, wall))

    def stop(self) -> None:
        """Ask the loop to return (thread-safe)."""
        self._stop.set()
        self._wake()

    def close(self) -> None:
        """Release every resource (sockets, TUN, pipe) and wipe every secret
        of the engine.  Idempotent."""
        self._stop.set()
        with self.lock:
            if self.udp is not None:
                self.udp.close()
                self.udp = None
            self.device.erase()
            if self._keylog is not None:
                self.device.keylog = None
                self._keylog.close()
            self.tun.close()
            for sock in self._wake_sockets:
                sock.close()
            self._wake_r = self._wake_w = -1

    def _wake(self) -> None:
        if self._wake_w >= 0:
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_sockets[1].send(b"\0")

    # -- the loop ------------------------------------------------------------------

    def run(self) -> str:
        """Run until stopped or the TUN disappears; returns the reason."""
        if self.udp is None:
            self.start()
        sel = selectors.DefaultSelector()
        self._selector = sel
        sel.register(self.tun.fileno(), selectors.EVENT_READ, "tun")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._follow_link_namespace()
        self._sync_udp_registrations()
        last_poll = monotonic()
        reason = "stopped"
        try:
            while not self._stop.is_set():
                deadline = self.device.next_deadline()
                now = monotonic()
                timeout = _POLL_INTERVAL
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - now))
                if self._hs_paused_until is not None:
                    timeout = min(timeout, max(0.0, self._hs_paused_until - now))
                ready = sel.select(timeout)
                try:
                    last_poll = self._iteration(ready, last_poll)
                except TunClosed:
                    raise
                except Exception:
                    # A bug in the engine or a handler must not end the
                    # interface: log it (rate-limited), back off briefly, go on.
                    self.errors += 1
                    if self.errors <= 10 or self.errors % 1000 == 0:
                        log.exception("%s: error in the event loop (#%d)", self.name, self.errors)
                    time.sleep(_ERROR_BACKOFF)
        except TunClosed:
            reason = "interface removed"
        finally:
            sel.close()
            self._selector = None
            if self._link_watch is not None:
                self._link_watch.close()
                self._link_watch = None
            self._link_watched = False
        self.closed_reason = reason
        return reason

    def _iteration(self, ready: list[tuple[selectors.SelectorKey, int]], last_poll: float) -> float:
        """Handle one wakeup; returns the time of the last link poll."""
        with self.lock:
            if self._stop.is_set():
                return last_poll
            now = monotonic()
            if self._hs_paused_until is not None and now >= self._hs_paused_until:
                self._hs_paused_until = None
            self._sync_udp_registrations()
            # Data first, handshakes last: a handshake flood must not delay data.
            for key, _ in sorted(ready, key=_priority):
                what = key.data
                if what == "udp-hs":
                    self._on_udp_handshakes(key.fd)
                elif what == "tun":
                    self._on_tun()
                elif what == "wake":
                    with contextlib.suppress(BlockingIOError, OSError):
                        self._wake_sockets[0].recv(4096)
                elif what == "link":
                    # Any link change: re-read our state at once.
                    watch = self._link_watch
                    with contextlib.suppress(BlockingIOError, OSError):
                        while watch is not None and watch.recv(65536):
                            pass
                    self._poll_link(*self.clock())
                else:
                    self._on_udp(key.fd)
            now, wall = self.clock()
            deadline = self.device.next_deadline()
            if deadline is not None and deadline <= now:
                self._flush(self.device.handle_timers(now, wall, self._new_out()))
            if now - last_poll >= _POLL_INTERVAL:
                last_poll = now
                self._poll_link(now, wall)
        return last_poll

    def _follow_link_namespace(self) -> None:
        """Watch link events in the namespace where the link lives now: open
        the netlink watch there at start, and again after the link was moved
        to another namespace (events of the old one no longer concern it)."""
        opener = getattr(self.tun, "open_link_watch", None)
        sel = self._selector
        if opener is None or sel is None or self._is_link_up is None:
            return
        where = getattr(self.tun, "netns_identity", lambda: None)()
        if self._link_watched and where == self._link_netns:
            return
        if self._link_watched:
            log.info("%s: the link moved to another network namespace", self.name)
        if self._link_watch is not None:
            with contextlib.suppress(KeyError, ValueError):
                sel.unregister(self._link_watch)
            self._link_watch.close()
            self._link_watch = None
        watch = opener()
        if watch is not None:
            sel.register(watch, selectors.EVENT_READ, "link")
        self._link_watch, self._link_netns, self._link_watched = watch, where, True

    def _new_out(self) -> Output:
        out = self._out
        out.clear()
        return out

    def _sync_udp_registrations(self) -> None:
        sel = self._selector
        if sel is None:
            return
        # Under the lock: a configuration thread may rebind (and close the
        # old sockets) at any moment.  A new bind is registered afresh even if
        # its descriptors reuse the numbers of closed ones, which epoll has
        # already forgotten.
        with self.lock:
            udp = self.udp
            want = udp.filenos() if udp is not None else []
            if self._hs_paused_until is not None and udp is not None:
                # Handshake sockets rest while the handshake budget refills.
                want = [fd for fd in want if fd not in udp.handshake_fds]
            if want == self._registered_udp and udp is self._registered_bind:
                return
            for fd in self._registered_udp:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    sel.unregister(fd)
            hs_fds = udp.handshake_fds if udp is not None else frozenset()
            for fd in want:
                sel.register(fd, selectors.EVENT_READ, "udp-hs" if fd in hs_fds else "udp")
            self._registered_udp = list(want)
            self._registered_bind = udp

    def _on_tun(self) -> None:
        tun, device = self.tun, self.device
        for _ in range(_MAX_BATCHES_PER_WAKEUP):
            packets = tun.read_batch(IO_BATCH_SIZE)
            if not packets:
                return
            now, wall = self.clock()
            if not device.up:
                self._poll_link(now, wall)
            self._flush(device.send(packets, now, wall, self._new_out()))
            if len(packets) < IO_BATCH_SIZE:
                return

    def _on_udp(self, fd: int) -> None:
        udp, device = self.udp, self.device
        if udp is None:
            return
        for _ in range(_MAX_BATCHES_PER_WAKEUP):
            datagrams = udp.recv_batch(fd, IO_BATCH_SIZE)
            if not datagrams:
                return
            now, wall = self.clock()
            self._flush(device.receive(datagrams, now, wall, self._new_out()))
            if len(datagrams) < IO_BATCH_SIZE:
                return

    def _on_udp_handshakes(self, fd: int) -> None:
        """Read a handshake-only socket.  Each datagram costs at most a mac1
        check until the engine's budget of valid-mac1 messages is spent;
        then the socket rests until the budget refills (the kernel queue
        absorbs, then drops, the excess).  Junk without a valid mac1 never
        spends the budget, so it cannot make the socket rest and a genuine
        handshake behind it is read at once.  A wakeup that leaves the
        socket readable after its share of valid-mac1 messages tells the
        engine its queue is backing up (under load, as wireguard-go)."""
        udp, device = self.udp, self.device
        if udp is None:
            return
        valid = 0
        now = 0.0
        for _ in range(_HS_BATCHES_PER_WAKEUP):
            now, wall = self.clock()
            budget = device.handshake_budget(now)
            if budget < 1:
                self._hs_paused_until = now + _HS_PAUSE
                self._sync_udp_registrations()
                return
            # No more than the budget could let through, in case all are valid.
            limit = min(IO_BATCH_SIZE, budget)
            read = udp.recv_batch(fd, limit, device.screen)
            if read:
                valid += len(read)
                self._flush(device.receive(read, now, wall, self._new_out()))
            if udp.last_read < limit:
                return
        device.handshake_backlog(valid, now)

    def _flush(self, out: Output) -> None:
        if out.datagrams and self.udp is not None:
            self.udp.send_batch(out.datagrams)
        if out.packets:
            try:
                self.tun.write_batch(out.packets)
            except TunClosed:
                self._stop.set()
        for event in out.events:
            self._log_event(event)

    def _log_event(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s: peer %s: %s", self.name, short_key(event.peer), event.kind)
        elif event.kind in (EventKind.HANDSHAKE_GAVE_UP, EventKind.KEYS_ERASED):
            log.info("%s: peer %s: %s", self.name, short_key(event.peer), event.kind)

    def _poll_link(self, now: float, wall: int) -> None:
        """Follow the link: gone (end the loop), moved to another namespace,
        MTU changed (the engine pads up to the current one), up or down."""
        tun = self.tun
        if tun.closed:
            raise TunClosed(self.name)
        self._follow_link_namespace()
        mtu = tun.mtu
        device = self.device
        if mtu and mtu != device.mtu:
            log.info("%s: MTU %d", self.name, mtu)
            device.mtu = mtu
        if self._is_link_up is None:
            return
        try:
            up = self._is_link_up()
        except OSError:
            return
        if up != device.up:
            log.info("%s: link %s", self.name, "up" if up else "down")
            self._flush(device.set_up(up, now, wall))


def open_interface(
    name: str, options: InterfaceOptions | None = None, *, netns_fd: int | None = None
) -> Interface:
    """Create the Linux TUN interface ``name`` (in the calling thread's
    namespace) and the :class:`Interface` around it, built from ``options``
    (the environment's when None).  OSError/ValueError when the TUN cannot
    be made."""
    from wgpy.tun.linux import LinuxTun

    options = options if options is not None else InterfaceOptions.from_environment()
    tun = LinuxTun.create(name, mtu=options.mtu, offload=options.offload)
    try:
        return Interface(tun, options=options, netns_fd=netns_fd)
    except BaseException:
        tun.close()
        raise
