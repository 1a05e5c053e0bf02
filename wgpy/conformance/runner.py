"""The conformance runner: a strict, scripted WireGuard peer on raw UDP sockets.

The runner is not a WireGuard device.  It holds one static identity, one
handshake record for the target and the sessions it derived, and it sends
exactly the bytes a scenario asks for (valid, replayed, forged, malformed)
through ordinary UDP sockets, then records everything the target sends back,
decrypting what belongs to a session it knows.  All cryptography comes from
:mod:`wgpy.noise`, so the runner speaks the same protocol wgpy does, but none
of wgpy's device logic (timers, roaming, replay policy) is in the way: those
are what the scenarios check on the other side.

A scenario is a function ``(Runner) -> str`` that returns a one-line summary
when the target behaved (PASS), or raises :class:`Failed` / :class:`Skipped`.
While it runs, every datagram in either direction is written to the
scenario's trace with its time, which the reports show as "what the target
did".
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import select
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from wgpy.constants import (
    KEY_LEN,
    MAC_LEN,
    MESSAGE_COOKIE_REPLY,
    MESSAGE_INITIATION,
    MESSAGE_RESPONSE,
    MESSAGE_TRANSPORT,
    TRANSPORT_HEADER_SIZE,
)
from wgpy.endpoint import Endpoint, host_port_text
from wgpy.inet import Echo, Udp, echo_overhead, echo_packet, parse_echo, parse_udp, udp_packet
from wgpy.keylog import keylog_block
from wgpy.noise.cookie import CookieGenerator, mac1_key
from wgpy.noise.handshake import (
    Handshake,
    consume_initiation,
    consume_response,
    create_initiation,
    create_response,
    derive_transport_keys,
    initial_hash,
)
from wgpy.noise.keypair import Keypair, padding_for
from wgpy.noise.messages import (
    MAC1_OFFSET_INITIATION,
    MAC1_OFFSET_RESPONSE,
    TRANSPORT_HEADER,
    MessageCookieReply,
    MessageInitiation,
    MessageResponse,
    message_type,
)
from wgpy.noise.primitives import StaticKey, clamp, mac
from wgpy.noise.tai64n import Tai64nStamper
from wgpy.pcapng import write_pcapng

from .control import ControlError, PeerSpec, TargetControl

__all__ = [
    "Clock",
    "EchoSent",
    "Failed",
    "Inbound",
    "Result",
    "Runner",
    "RunnerConfig",
    "Scenario",
    "Skipped",
    "SocketFactory",
    "Status",
]

#: Longest trace kept per scenario; later lines are counted, not stored.
MAX_TRACE_LINES: Final = 400
#: Every flood the runner sends is bounded: at most this many datagrams per
#: second and in all (a target that never answers must not get millions).
FLOOD_MAX_RATE: Final = 50_000
FLOOD_MAX_COUNT: Final = 250_000
#: Most datagrams kept per scenario for its pcapng (floods are cut short).
MAX_CAPTURE: Final = 20_000
_U32_MASK: Final = 0xFFFFFFFF


class Status(StrEnum):
    """A scenario's verdict."""

    PASS = "PASS"
    #: Every check that could be made passed, but some could not be made
    #: (listed in ``Result.unchecked``): not a PASS.
    PARTIAL = "PARTIAL"
    FAIL = "FAIL"
    SKIP = "SKIP"
    ERROR = "ERROR"  # the runner or the control failed, not the target


class Failed(Exception):
    """The target did something the protocol forbids (or failed to do
    something it requires).  The message is the one-line summary."""


class Skipped(Exception):
    """The scenario cannot run with this configuration; the message says why."""


@dataclass
class Result:
    """The outcome of one scenario."""

    name: str
    status: Status
    summary: str
    description: str = ""
    details: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: Checks of the scenario that could not be made against this target
    #: (no setup mode to read state back, no tunnel IPs, ...).
    unchecked: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "status": self.status.value,
            "summary": self.summary,
            "unchecked": list(self.unchecked),
            "description": self.description,
            "seconds": round(self.seconds, 3),
            "details": list(self.details),
        }


@dataclass(frozen=True)
class Scenario:
    """A named check.  ``tunnel``: needs both tunnel IPs; ``control``: needs a
    way to configure the target; ``long``: only with ``--long``."""

    name: str
    func: Callable[[Runner], str]
    description: str
    tunnel: bool = False
    control: bool = False
    long: bool = False


@dataclass
class RunnerConfig:
    """Where the target is and who the runner is."""

    target_endpoint: str  # "IP:PORT" or "[IPv6]:PORT"
    target_public_key: bytes | None = None  # may come from the control
    our_private_key: bytes | None = None  # random if None
    psk: bytes | None = None  # the PSK both sides use in the base configuration
    target_tunnel_ip: str | None = None
    our_tunnel_ip: str | None = None
    listen: str | None = None  # local bind "IP", "IP:PORT" or ":PORT"
    roam_bind: str | None = None  # local IP of the roaming socket (default: same IP)
    target_mtu: int = 1420
    timeout_scale: float = 1.0
    label: str = "target"
    #: Probe with UDP datagrams to this port of the target's tunnel IP (which
    #: must echo them) instead of ICMP echo.
    udp_echo_port: int | None = None
    #: Write each scenario's datagrams, with the runner's handshake keys in a
    #: Decryption Secrets Block, to DIR/NN-SCENARIO.pcapng (Wireshark).
    pcap_dir: str | None = None


class Clock:
    """The runner's time.  Real by default; ``scale`` > 1 runs protocol time
    faster than real time (tests drive an in-process target on the same
    scaled clock, so scenarios of 90 or 180 s take seconds)."""

    def __init__(self, scale: float = 1.0) -> None:
        if scale <= 0:
            raise ValueError("the clock scale must be positive")
        self.scale = scale
        self._t0 = time.monotonic()
        self._w0 = time.time_ns()

    def monotonic(self) -> float:
        """Protocol seconds (monotonic)."""
        return self._t0 + (time.monotonic() - self._t0) * self.scale

    def wall_ns(self) -> int:
        """Protocol wall clock, Unix nanoseconds."""
        return self._w0 + int((time.time_ns() - self._w0) * self.scale)

    def real(self, seconds: float) -> float:
        """Real seconds of ``seconds`` of protocol time."""
        return max(0.0, seconds) / self.scale

    def sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of protocol time."""
        time.sleep(self.real(seconds))


#: Makes an unbound UDP socket of a family (AF_INET/AF_INET6).  Tests pass one
#: that creates the socket inside a network namespace.
SocketFactory = Callable[[int], socket.socket]


def _default_socket(family: int) -> socket.socket:
    return socket.socket(family, socket.SOCK_DGRAM)


def _parse_endpoint(text: str) -> tuple[str, int]:
    """``IP:PORT`` or ``[IPv6]:PORT`` (numeric, as UAPI) as ``(ip, port)``."""
    try:
        ep = Endpoint.parse(text)
    except ValueError:
        raise ValueError(f"endpoint must be IP:PORT or [IPv6]:PORT, not {text!r}") from None
    return ep.ip, ep.port


def _parse_listen(text: str | None) -> tuple[str, int]:
    """``--listen``: "IP", "IP:PORT", "[IPv6]:PORT" or ":PORT"; ("", 0) if None."""
    if not text:
        return "", 0
    if text.startswith(":") and text[1:].isdigit():
        return "", int(text[1:])
    if text.startswith("[") or (text.count(":") == 1 and text.rpartition(":")[2].isdigit()):
        return _parse_endpoint(text)
    return str(ipaddress.ip_address(text)), 0


def _u32(data: bytes, offset: int) -> int:
    return int.from_bytes(data[offset : offset + 4], "little")


@dataclass
class Inbound:
    """One datagram the target sent, as the runner understood it."""

    data: bytes
    via: str  # which runner socket received it
    source: tuple[str, int]
    at: float  # the runner's clock (Runner.now())
    kind: int  # message type, 0 if the framing is invalid
    receiver: int | None = None
    keypair: Keypair | None = None  # the session it decrypted with
    counter: int | None = None
    plaintext: bytes | None = None
    duplicate: bool = False  # a counter the target already used
    echo: Echo | None = None
    udp: Udp | None = None

    @property
    def is_keepalive(self) -> bool:
        """An authenticated transport message with empty plaintext."""
        return self.plaintext == b""

    @property
    def background(self) -> bool:
        """Traffic a target may send at any time on its own: its handshake
        initiations and transport on a session the runner knows."""
        return self.kind == MESSAGE_INITIATION or self.plaintext is not None


@dataclass
class EchoSent:
    """A probe sent through the tunnel (kept to replay or match): an ICMP
    echo request, or with ``--udp-echo`` a UDP datagram to the target's echo
    port, for targets whose stack does not answer pings."""

    packet: bytes
    message: bytes
    ident: int
    seq: int
    payload: bytes
    at: float
    kind: str = "icmp"  # or "udp"
    sport: int = 0


class Runner:
    """The scripted peer.  Use as a context manager; :meth:`run` executes
    scenarios and returns their results."""

    def __init__(
        self,
        config: RunnerConfig,
        control: TargetControl | None = None,
        *,
        socket_factory: SocketFactory | None = None,
        progress: Callable[[Result], None] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self.clock = clock or Clock()
        self.control = control
        self._socket_factory = socket_factory or _default_socket
        self._progress = progress
        self.target_addr = _parse_endpoint(config.target_endpoint)
        self.family = socket.AF_INET6 if ":" in self.target_addr[0] else socket.AF_INET
        private = config.our_private_key or clamp(os.urandom(KEY_LEN))
        self.static = StaticKey(private)
        self.our_public = self.static.public
        target_public = config.target_public_key
        if target_public is None and control is not None:
            target_public = control.target_public_key()
        if target_public is None or len(target_public) != KEY_LEN:
            raise ValueError("the target's public key is needed (--target-public-key)")
        self.target_public = bytes(target_public)
        self.psk = config.psk
        # A test tool sends bursts of initiations: its stamps may lead the clock.
        self.stamper = Tai64nStamper(max_ahead=None)
        self.sockets: dict[str, socket.socket] = {}
        self.sessions: dict[int, Keypair] = {}
        self.current: Keypair | None = None
        self.hs = Handshake(self.target_public, self.psk)
        self.hs.precompute(self.static)
        self.cookie = CookieGenerator(self.target_public)
        self.last_initiation: bytes | None = None
        self.last_accepted_stamp: bytes | None = None
        #: The TAI64N of the target's last accepted initiation, and our wall
        #: clock (ns) when it arrived.
        self.last_target_stamp: tuple[bytes, int] | None = None
        self._stamps: dict[int, bytes] = {}
        self.ident = int.from_bytes(os.urandom(2), "big") or 1
        self.udp_sport = 40000 + int.from_bytes(os.urandom(2), "big") % 20000
        self._seq = 0
        self.trace: list[str] = []
        self._trace_dropped = 0
        self._unchecked: list[str] = []
        #: This scenario's datagrams for --pcap: (Unix us, via, outbound,
        #: remote address, bytes), and the key-log blocks of our handshakes.
        self._capture: list[tuple[int, str, bool, tuple[str, int], bytes]] = []
        self._captured_over = 0
        self._keylog: list[str] = []
        self._scenario_number = 0
        self.quiet = False
        self.t0 = self.now()
        self.history: list[Inbound] = []
        self._installed = False
        self.tunnel_ready = bool(config.target_tunnel_ip and config.our_tunnel_ip)
        if self.tunnel_ready:
            a = ipaddress.ip_address(config.target_tunnel_ip or "")
            b = ipaddress.ip_address(config.our_tunnel_ip or "")
            if a.version != b.version:
                raise ValueError("the two tunnel IPs must be of the same IP version")
            self.tunnel_version = a.version
        else:
            self.tunnel_version = 4

    # -- lifetime --------------------------------------------------------------

    def __enter__(self) -> Runner:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Open the main socket and, with a control, install our peer."""
        self.sock("main")
        if self.control is not None:
            self.control.set_peer(self.base_spec(), fresh=True)
            self._installed = True

    def close(self) -> None:
        """Remove the peer we installed and close every socket."""
        if self.control is not None and self._installed:
            with contextlib.suppress(ControlError, OSError):
                self.control.remove_peer(self.our_public)
            self._installed = False
        closer = getattr(self.control, "close", None)
        if callable(closer):
            with contextlib.suppress(ControlError, OSError):
                closer()
        for s in self.sockets.values():
            s.close()
        self.sockets.clear()

    # -- sockets -----------------------------------------------------------------

    def _local_ip(self) -> str:
        """The local address the target sees for the main socket."""
        bound = self.sockets["main"].getsockname()[0] if "main" in self.sockets else ""
        if bound and not ipaddress.ip_address(bound).is_unspecified:
            return str(bound)
        probe = self._socket_factory(self.family)
        try:
            probe.connect(self.target_addr)
            return str(probe.getsockname()[0])
        finally:
            probe.close()

    def sock(self, name: str) -> socket.socket:
        """The socket called ``name`` (main, roam, aux), created on first use.

        ``main`` binds to ``--listen``; the others bind to the same local IP
        (``roam`` to ``--roam-bind`` if given) on a fresh port.
        """
        s = self.sockets.get(name)
        if s is not None:
            return s
        s = self._socket_factory(self.family)
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        if name == "main":
            host, port = _parse_listen(self.config.listen)
        else:
            host = (self.config.roam_bind if name == "roam" else None) or self._local_ip()
            port = 0
        s.bind((host, port))
        s.setblocking(False)
        self.sockets[name] = s
        return s

    def local_endpoint(self, name: str = "main") -> str:
        """``IP:PORT`` of one of our sockets as the target should use it."""
        s = self.sock(name)
        host = str(s.getsockname()[0])
        if ipaddress.ip_address(host).is_unspecified:
            host = self._local_ip()
        return host_port_text(host, int(s.getsockname()[1]))

    # -- time ----------------------------------------------------------------------

    def now(self) -> float:
        """The runner's monotonic seconds (see :class:`Clock`)."""
        return self.clock.monotonic()

    def wall_ns(self) -> int:
        """The runner's wall clock in Unix nanoseconds."""
        return self.clock.wall_ns()

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (of the runner's clock) without receiving."""
        self.clock.sleep(seconds)

    # -- tracing -----------------------------------------------------------------

    def t(self, seconds: float) -> float:
        """A timeout scaled by ``--timeout-scale``."""
        return seconds * self.config.timeout_scale

    def unchecked(self, check: str) -> None:
        """Record a check this scenario could not make here; a scenario that
        otherwise passes is then reported PARTIAL, not PASS."""
        if check not in self._unchecked:
            self._unchecked.append(check)
            self.note(f"   not checked: {check}")

    def note(self, text: str) -> None:
        """Add a line to the current scenario's trace."""
        if len(self.trace) >= MAX_TRACE_LINES:
            self._trace_dropped += 1
            return
        self.trace.append(f"{self.now() - self.t0:+8.3f}s {text}")

    def describe(self, m: Inbound) -> str:
        """One-line description of a received datagram."""
        n = len(m.data)
        if m.kind == MESSAGE_INITIATION:
            what = f"initiation {n} B (sender {_u32(m.data, 4):#010x})"
        elif m.kind == MESSAGE_RESPONSE:
            what = f"response {n} B (sender {_u32(m.data, 4):#010x}, receiver {m.receiver:#010x})"
        elif m.kind == MESSAGE_COOKIE_REPLY:
            what = f"cookie reply {n} B (receiver {m.receiver:#010x})"
        elif m.kind == MESSAGE_TRANSPORT:
            if m.plaintext is None:
                what = f"transport {n} B that does not decrypt (receiver {m.receiver:#010x})"
            elif m.plaintext == b"":
                what = f"keepalive {n} B (counter {m.counter})"
            elif m.udp is not None:
                what = (
                    f"data {n} B: UDP {m.udp.sport} -> {m.udp.dport}, {len(m.udp.payload)} B "
                    f"payload, padded plaintext {len(m.plaintext)} (counter {m.counter})"
                )
            elif m.echo is not None:
                kind = "echo reply" if m.echo.reply else "echo request"
                what = (
                    f"data {n} B: {kind} seq {m.echo.seq}, IP length {m.echo.length}, "
                    f"padded plaintext {len(m.plaintext)} (counter {m.counter})"
                )
            else:
                what = f"data {n} B, plaintext {len(m.plaintext)} B (counter {m.counter})"
            if m.duplicate:
                what += " DUPLICATE COUNTER"
        else:
            what = f"unparseable datagram {n} B (first bytes {m.data[:4].hex()})"
        src = host_port_text(*m.source)
        if m.source != self.target_addr:
            src += " (not the target's endpoint)"
        return f"<- {what} from {src} to {m.via}"

    # -- sending and receiving -------------------------------------------------------

    def transmit(self, data: bytes, via: str = "main") -> None:
        """Send raw bytes to the target, untraced (but captured for --pcap);
        BlockingIOError when the socket buffer is full."""
        self.sock(via).sendto(data, self.target_addr)
        if self.config.pcap_dir is not None:
            self._record(via, True, self.target_addr, data)

    def _record(self, via: str, outbound: bool, remote: tuple[str, int], data: bytes) -> None:
        if len(self._capture) >= MAX_CAPTURE:
            self._captured_over += 1
            return
        self._capture.append((self.clock.wall_ns() // 1000, via, outbound, remote, data))

    def send(self, data: bytes, via: str = "main", what: str | None = None) -> float:
        """Send raw bytes to the target; returns the send time."""
        self.transmit(data, via)
        at = self.now()
        if not self.quiet:
            self.note(f"-> {what or f'{len(data)} B'} via {via}")
        return at

    def _classify(self, data: bytes, via: str, source: tuple[Any, ...], at: float) -> Inbound:
        kind = message_type(data)
        src = (str(ipaddress.ip_address(str(source[0]).partition("%")[0])), int(source[1]))
        m = Inbound(data, via, src, at, kind)
        if kind == MESSAGE_RESPONSE:
            m.receiver = _u32(data, 8)
        elif kind in (MESSAGE_COOKIE_REPLY, MESSAGE_TRANSPORT):
            m.receiver = _u32(data, 4)
        if kind == MESSAGE_TRANSPORT and m.receiver is not None:
            kp = self.sessions.get(m.receiver)
            if kp is not None:
                _, _, counter = TRANSPORT_HEADER.unpack_from(data)
                plain = kp.open(counter, memoryview(data)[TRANSPORT_HEADER_SIZE:])
                if plain is not None:
                    m.keypair, m.counter, m.plaintext = kp, counter, plain
                    m.duplicate = not kp.replay.validate(counter)
                    if plain:
                        m.echo = parse_echo(plain)
                        m.udp = parse_udp(plain) if m.echo is None else None
        return m

    def receive(self, timeout: float) -> Inbound | None:
        """The next datagram from any of our sockets, or None after ``timeout``."""
        deadline = self.now() + max(0.0, timeout)
        while True:
            for name, s in self.sockets.items():
                try:
                    data, source = s.recvfrom(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except ConnectionRefusedError:
                    # ICMP port unreachable from an earlier send: nobody listens.
                    self.note(f"<- ICMP port unreachable reported on {name}")
                    continue
                m = self._classify(data, name, source, self.now())
                if self.config.pcap_dir is not None:
                    self._record(name, False, m.source, data)
                self.history.append(m)
                if not self.quiet:
                    self.note(self.describe(m))
                return m
            left = deadline - self.now()
            if left <= 0:
                return None
            select.select(list(self.sockets.values()), [], [], self.clock.real(left))

    def wait_for(self, pred: Callable[[Inbound], bool], timeout: float) -> Inbound | None:
        """Receive until a datagram satisfies ``pred`` (returned) or ``timeout``."""
        deadline = self.now() + timeout
        while True:
            m = self.receive(deadline - self.now())
            if m is None:
                return None
            if pred(m):
                return m

    def collect(self, duration: float) -> list[Inbound]:
        """Everything received during ``duration`` seconds."""
        out = []
        deadline = self.now() + duration
        while (m := self.receive(deadline - self.now())) is not None:
            out.append(m)
        return out

    def flood(
        self,
        datagrams: Sequence[bytes],
        *,
        via: str = "aux",
        seconds: float,
        rate: int = FLOOD_MAX_RATE,
        count: int = FLOOD_MAX_COUNT,
        step: Callable[[float], None] | None = None,
        stop: Callable[[Inbound], bool] | None = None,
    ) -> tuple[int, float, Inbound | None]:
        """Send ``datagrams`` round-robin from socket ``via``, at most ``rate``
        per second (capped at :data:`FLOOD_MAX_RATE`) and ``count`` in all
        (capped at :data:`FLOOD_MAX_COUNT`), for at most ``seconds``.  Between
        bursts ``step(elapsed)`` may send other things, and everything the
        target sends is received: the flood ends early at the first datagram
        for which ``stop`` is true, or when ``step`` raises.  Returns
        (datagrams sent, seconds, the datagram that stopped it)."""
        rate = max(1, min(rate, FLOOD_MAX_RATE))
        count = max(0, min(count, FLOOD_MAX_COUNT))
        sent = 0
        start = self.now()
        burst = max(1, rate // 200)  # 5 ms worth per burst
        with self.quietly():
            while sent < count:
                elapsed = self.now() - start
                if elapsed >= seconds:
                    break
                if step is not None:
                    step(elapsed)
                due = min(count, int(elapsed * rate) + burst)
                while sent < due:
                    try:
                        self.transmit(datagrams[sent % len(datagrams)], via)
                    except (BlockingIOError, OSError):
                        break
                    sent += 1
                while (m := self.receive(0)) is not None:
                    if stop is not None and stop(m):
                        return sent, self.now() - start, m
                self.sleep(0.001)
        return sent, self.now() - start, None

    def drain(self, quiet_for: float = 0.3, limit: float = 5.0) -> int:
        """Read until nothing arrived for ``quiet_for`` seconds (at most
        ``limit`` seconds); returns the number of datagrams read."""
        n = 0
        end = self.now() + limit
        while self.now() < end and self.receive(quiet_for) is not None:
            n += 1
        return n

    # -- handshakes ----------------------------------------------------------------

    def new_index(self) -> int:
        """A random non-zero 32-bit index not used by our sessions."""
        while True:
            idx = int.from_bytes(os.urandom(4), "little")
            if idx and idx not in self.sessions:
                return idx

    def reset_handshake(self) -> None:
        """Forget our handshake record and cookie (new peer state)."""
        self.hs = Handshake(self.target_public, self.psk)
        self.hs.precompute(self.static)
        self.cookie = CookieGenerator(self.target_public)

    def initiation_body(
        self, *, stamp: bytes | None = None, sender: int | None = None
    ) -> tuple[bytes, int, bytes]:
        """A fresh initiation without macs (116 bytes): (body, sender, stamp).
        Our handshake record now waits for the response to it."""
        idx = sender if sender is not None else self.new_index()
        ts = stamp if stamp is not None else self.stamper.stamp(self.wall_ns())
        ephemeral = clamp(os.urandom(KEY_LEN))
        body = create_initiation(self.static, self.hs, idx, ephemeral, ts)
        if body is None:
            raise RuntimeError("the target's public key is low-order")
        self._log_keys(self.hs, ephemeral)
        self._stamps[idx] = ts
        return body, idx, ts

    def _log_keys(self, hs: Handshake, ephemeral: bytes) -> None:
        """Keep the keys of a handshake we made for this scenario's pcapng."""
        if self.config.pcap_dir is not None:
            block = keylog_block(
                self.static.private, self.target_public, ephemeral, hs.preshared_key
            )
            self._keylog.append(block)

    def add_macs(self, body: bytes) -> bytes:
        """mac1 (and mac2 while we hold a fresh cookie) for a handshake body."""
        return self.cookie.add_macs(body, self.now())

    def initiation(self, *, stamp: bytes | None = None) -> tuple[bytes, int]:
        """A complete initiation and its sender index."""
        body, idx, _ = self.initiation_body(stamp=stamp)
        msg = self.add_macs(body)
        self.last_initiation = msg
        return msg, idx

    def answers(self, idx: int) -> Callable[[Inbound], bool]:
        """Matches a response or cookie reply to our message with sender ``idx``."""
        return lambda m: m.kind in (MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY) and m.receiver == idx

    def take_cookie(self, m: Inbound) -> None:
        """Store the cookie of a reply to our last handshake message."""
        if not self.cookie.consume_reply(MessageCookieReply.parse(m.data), self.now()):
            raise Failed("the target's cookie reply does not decrypt with the mac1 we sent")
        self.note("   cookie stored: the target is under load; retrying with mac2")

    def send_body(
        self, body: bytes, idx: int, *, via: str = "main", timeout: float | None = None
    ) -> Inbound | None:
        """Send ``body`` with macs and wait for its response; a cookie reply is
        consumed and the same body is sent again with mac2 (up to 3 times).
        Returns the response, or None if none came."""
        for _ in range(4):
            msg = self.add_macs(body)
            self.last_initiation = msg
            self.send(msg, via, f"initiation {len(msg)} B (sender {idx:#010x})")
            m = self.wait_for(self.answers(idx), timeout or self.t(3.0))
            if m is None:
                return None
            if m.kind == MESSAGE_RESPONSE:
                return m
            self.take_cookie(m)
        raise Failed("the target kept answering with cookie replies although mac2 was valid")

    def initiate_raw(self, *, via: str = "main", attempts: int = 2) -> tuple[Inbound, int]:
        """Send initiations until one is answered by a response; returns it and
        the sender index.  :class:`Failed` if the target never responds."""
        for attempt in range(1, attempts + 1):
            body, idx, _ = self.initiation_body()
            m = self.send_body(body, idx, via=via)
            if m is not None:
                if attempt > 1:
                    self.note(f"   (answered on attempt {attempt})")
                return m, idx
        raise Failed(f"no handshake response to {attempts} valid initiations")

    def check_response(self, m: Inbound) -> MessageResponse:
        """The response's framing and mac1 (keyed with our public key)."""
        if len(m.data) != 92:
            raise Failed(f"response is {len(m.data)} bytes, not 92")
        want = mac(mac1_key(self.our_public), m.data[:MAC1_OFFSET_RESPONSE])
        if m.data[MAC1_OFFSET_RESPONSE : MAC1_OFFSET_RESPONSE + MAC_LEN] != want:
            raise Failed("the target's response carries a wrong mac1")
        return MessageResponse.parse(m.data)

    def complete(self, m: Inbound, *, confirm: bool = True, via: str | None = None) -> Keypair:
        """Consume a response to our pending initiation; with ``confirm`` send
        a keepalive on the new session (key confirmation)."""
        msg = self.check_response(m)
        if not consume_response(self.static, self.hs, msg):
            raise Failed("the target's response does not authenticate (keys or PSK differ)")
        keys = derive_transport_keys(self.hs)
        if keys is None:  # pragma: no cover - consume_response guarantees the state
            raise Failed("handshake state lost")
        kp = Keypair.from_handshake(keys, self.now())
        self.sessions[kp.local_index] = kp
        self.current = kp
        self.last_accepted_stamp = self._stamps.get(kp.local_index)
        if confirm:
            self.send(self.seal(kp, b""), via or m.via, "keepalive 32 B (key confirmation)")
        return kp

    def initiate(self, *, via: str = "main", confirm: bool = True) -> Keypair:
        """A complete handshake with the runner as initiator."""
        m, _ = self.initiate_raw(via=via)
        return self.complete(m, confirm=confirm, via=via)

    def wait_initiation(self, timeout: float) -> Inbound | None:
        """Wait for a handshake initiation from the target."""
        return self.wait_for(lambda m: m.kind == MESSAGE_INITIATION, timeout)

    def accept(self, m: Inbound) -> Keypair:
        """Answer the target's initiation with a response; the new session is
        usable for sending once the target confirmed it."""
        want = mac(mac1_key(self.our_public), m.data[:MAC1_OFFSET_INITIATION])
        if m.data[MAC1_OFFSET_INITIATION : MAC1_OFFSET_INITIATION + MAC_LEN] != want:
            raise Failed("the target's initiation carries a wrong mac1")
        msg = MessageInitiation.parse(m.data)
        hs = consume_initiation(
            self.static,
            initial_hash(self.our_public),
            msg,
            lambda pk: self.hs if bytes(pk) == self.target_public else None,
            self.now(),
        )
        if hs is None:
            raise Failed("the target's initiation does not authenticate (or repeats a timestamp)")
        self.last_target_stamp = (bytes(hs.latest_timestamp), self.wall_ns())
        idx = self.new_index()
        ephemeral = clamp(os.urandom(KEY_LEN))
        body = create_response(hs, idx, ephemeral)
        if body is None:
            raise Failed("the target's initiation carries a low-order ephemeral key")
        self._log_keys(hs, ephemeral)
        resp = self.add_macs(body)
        keys = derive_transport_keys(hs)
        if keys is None:  # pragma: no cover
            raise Failed("handshake state lost")
        kp = Keypair.from_handshake(keys, self.now())
        self.sessions[kp.local_index] = kp
        self.send(resp, m.via, f"response {len(resp)} B (sender {idx:#010x})")
        return kp

    # -- transport -------------------------------------------------------------------

    def seal(self, kp: Keypair, plaintext: bytes) -> bytes:
        """A transport message with the next counter, padded for the target's MTU."""
        pad = padding_for(len(plaintext), self.config.target_mtu) if plaintext else 0
        return kp.seal(plaintext, pad)

    def send_packet(
        self, packet: bytes, kp: Keypair | None = None, via: str = "main", what: str = ""
    ) -> bytes:
        """Encrypt an inner packet on ``kp`` (default: current) and send it."""
        kp = kp or self.current
        if kp is None:
            raise RuntimeError("no session")
        msg = self.seal(kp, packet)
        self.send(msg, via, what or f"data {len(msg)} B (counter {kp.send_counter - 1})")
        return msg

    def echo_request(self, payload_len: int = 56, *, reply: bool = False) -> EchoSent:
        """Build (not send) an echo request from our tunnel IP to the target's."""
        if not self.tunnel_ready:
            raise Skipped("needs --target-tunnel-ip and --our-tunnel-ip")
        self._seq = (self._seq + 1) & 0xFFFF
        port = self.config.udp_echo_port
        if port and not reply:
            # The same sizes as the ICMP probe: a UDP header is 8 bytes too.
            payload = self._seq.to_bytes(2, "big") + os.urandom(max(0, payload_len - 2))
            src = ipaddress.ip_address(self.config.our_tunnel_ip or "").packed
            dst = ipaddress.ip_address(self.config.target_tunnel_ip or "").packed
            pkt = udp_packet(src, self.udp_sport, dst, port, payload[:payload_len])
            return EchoSent(
                pkt, b"", 0, self._seq, payload[:payload_len], 0.0, "udp", self.udp_sport
            )
        payload = os.urandom(payload_len)
        pkt = echo_packet(
            self.config.our_tunnel_ip or "",
            self.config.target_tunnel_ip or "",
            self.ident,
            self._seq,
            payload,
            reply=reply,
        )
        return EchoSent(pkt, b"", self.ident, self._seq, payload, 0.0)

    def send_echo(
        self, kp: Keypair | None = None, payload_len: int = 56, via: str = "main"
    ) -> EchoSent:
        """Send an echo request through the tunnel."""
        e = self.echo_request(payload_len)
        e.message = self.send_packet(
            e.packet, kp, via, f"echo request seq {e.seq}, IP length {len(e.packet)}"
        )
        e.at = self.now()
        return e

    def is_reply(self, e: EchoSent) -> Callable[[Inbound], bool]:
        """Matches the echo reply to ``e`` from the target's tunnel IP."""

        def pred(m: Inbound) -> bool:
            if e.kind == "udp":
                udp = m.udp
                return udp is not None and udp.dport == e.sport and udp.payload == e.payload
            echo = m.echo
            return (
                echo is not None
                and echo.reply
                and echo.ident == e.ident
                and echo.seq == e.seq
                and echo.payload == e.payload
            )

        return pred

    def ping(
        self,
        kp: Keypair | None = None,
        payload_len: int = 56,
        via: str = "main",
        timeout: float | None = None,
    ) -> Inbound | None:
        """Echo request through the tunnel; the reply, or None."""
        e = self.send_echo(kp, payload_len, via)
        return self.wait_for(self.is_reply(e), timeout or self.t(3.0))

    def echo_overhead(self) -> int:
        """IP + ICMP header bytes of our echo packets."""
        return echo_overhead(self.tunnel_version)

    # -- the target's configuration ----------------------------------------------------

    def our_allowed_ips(self) -> list[str]:
        """Allowed IPs the target should have for us."""
        ip = self.config.our_tunnel_ip
        if not ip:
            return []
        return [f"{ip}/{32 if ipaddress.ip_address(ip).version == 4 else 128}"]

    def base_spec(self, **changes: Any) -> PeerSpec:
        """The target's peer entry for us: our key, our tunnel IP, our main
        socket as endpoint, the base PSK."""
        spec = PeerSpec(
            public_key=self.our_public,
            allowed_ips=self.our_allowed_ips(),
            endpoint=self.local_endpoint("main"),
            preshared_key=self.psk,
        )
        for k, v in changes.items():
            setattr(spec, k, v)
        return spec

    def fresh(self, *, psk: bytes | bool | None = False, keepalive: int = 0) -> None:
        """Start from a clean slate: with a control, the target's peer entry is
        removed and re-created (``psk``: a different PSK for both sides;
        ``keepalive``: its persistent keepalive); the runner forgets its
        handshake record and current session (old sessions still decrypt)."""
        if psk is not False:
            self.psk = psk if isinstance(psk, bytes) else None
        else:
            self.psk = self.config.psk
        self.reset_handshake()
        self.current = None
        if self.control is not None:
            self.control.set_peer(
                self.base_spec(preshared_key=self.psk, persistent_keepalive=keepalive),
                fresh=True,
            )

    # -- running ---------------------------------------------------------------------

    @contextlib.contextmanager
    def quietly(self) -> Iterator[None]:
        """Do not trace individual datagrams (floods)."""
        was, self.quiet = self.quiet, True
        try:
            yield
        finally:
            self.quiet = was

    def run_one(self, sc: Scenario) -> Result:
        """Run one scenario from a fresh state and return its result."""
        self.trace = []
        self._trace_dropped = 0
        self._unchecked = []
        self._capture, self._captured_over, self._keylog = [], 0, []
        self._scenario_number += 1
        self.history = []
        self.t0 = self.now()
        status, summary = Status.PASS, ""
        if sc.tunnel and not self.tunnel_ready:
            status, summary = Status.SKIP, "needs --target-tunnel-ip and --our-tunnel-ip"
        elif sc.control and self.control is None:
            status, summary = Status.SKIP, "needs a setup mode (--setup-uapi/--setup-nt)"
        else:
            try:
                self.fresh()
                self.drain(0.2, 2.0)
                self.trace.clear()
                self.t0 = self.now()
                summary = sc.func(self)
            except Failed as exc:
                status, summary = Status.FAIL, str(exc)
            except Skipped as exc:
                status, summary = Status.SKIP, str(exc)
            except ControlError as exc:
                status, summary = Status.ERROR, f"configuring the target failed: {exc}"
            except Exception as exc:
                status = Status.ERROR
                summary = f"runner error: {type(exc).__name__}: {exc}"
                self.trace.extend(traceback.format_exc().rstrip().splitlines())
        if self.config.pcap_dir is not None:
            self._write_pcap(sc.name)
        if self._trace_dropped:
            self.trace.append(f"... {self._trace_dropped} more lines not kept")
        if status is Status.PASS and self._unchecked:
            status = Status.PARTIAL
            summary += f" (not checked: {'; '.join(self._unchecked)})"
        result = Result(
            sc.name,
            status,
            summary,
            sc.description,
            list(self.trace),
            self.now() - self.t0,
            list(self._unchecked),
        )
        if self._progress is not None:
            self._progress(result)
        return result

    def _write_pcap(self, name: str) -> None:
        """This scenario's datagrams as IP/UDP packets, with our handshake
        keys in the file, so Wireshark decrypts it as it opens."""
        assert self.config.pcap_dir is not None
        os.makedirs(self.config.pcap_dir, exist_ok=True)
        path = os.path.join(self.config.pcap_dir, f"{self._scenario_number:02d}-{name}.pcapng")
        local: dict[str, tuple[bytes, int]] = {}
        for via in self.sockets:
            host, port = _parse_endpoint(self.local_endpoint(via))
            local[via] = (ipaddress.ip_address(host).packed, port)

        def packets() -> Iterator[tuple[int, bytes]]:
            for micros, via, outbound, remote, data in self._capture:
                ours = local.get(via)
                if ours is None:
                    continue
                theirs = (ipaddress.ip_address(remote[0]).packed, remote[1])
                src, dst = (ours, theirs) if outbound else (theirs, ours)
                yield micros, udp_packet(src[0], src[1], dst[0], dst[1], data)

        with open(path, "wb") as fh:
            n = write_pcapng(fh, packets(), "".join(self._keylog))
        over = f" ({self._captured_over} more not kept)" if self._captured_over else ""
        self.trace.append(f"pcapng: {path}: {n} datagrams{over}")

    def run(self, scenarios: Sequence[Scenario]) -> list[Result]:
        """Run scenarios in order."""
        return [self.run_one(sc) for sc in scenarios]
