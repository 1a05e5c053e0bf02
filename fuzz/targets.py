"""Fuzz targets for wgpy: plain functions ``bytes -> Summary`` that raise on a bug.

They are driven by atheris (``fuzz/run_atheris.py``) and replayed over the
committed corpora by ``tests/test_fuzz_targets.py``.  Each one checks
invariants beyond "no exception", because the engine deliberately swallows
its own exceptions on remote input (``Device.receive`` counts them as
``rx_dropped_internal_error``; ``SetOperation`` answers ENOANO and logs).

``receive``
    A tiny interpreter over two sans-IO devices on the in-memory network.
    The input's first byte picks the set-up (bit 0: session already
    established, bit 1: preshared key); the rest is a program of operations
    (see :data:`RECEIVE_OPS`): raw datagrams from chosen sources, packets
    sealed by A with its real session, delivery rounds, byte mutations of
    datagrams in flight, replays of delivered datagrams, clock jumps (also
    backwards), re-addressing to another address of the same node, traffic
    from B.  Valid packets come from the devices themselves, so the corpus
    stays meaningful when the engine's internals (RNG use, indices) change.
    Checks: no internal error, every delivered inner packet is byte-identical
    to one the other side sent and delivered at most once, bounded index
    table and staging, and afterwards (faults stop) a packet gets through in
    each direction within a few REKEY_TIMEOUT rounds.

``uapi``
    First byte bit 0 clear: the rest, as text lines, is one UAPI ``set``
    applied with :func:`wgpy.uapi.uapi_set` to a device that already has a
    key and a peer.  Bit 0 set: the rest is a raw UAPI byte stream (``get=1``
    / ``set=1`` framing, several operations) fed through the server's
    connection handler over a socketpair.  Checks: no internal error (no
    ERROR log, no ENOANO), only documented errnos, ``get`` still answers and
    parses, and the configuration ``get`` reports round-trips: applied to a
    fresh device it reads back identically.

``nt_config``
    A ``WireGuardSetConfiguration`` buffer for
    :func:`wgpy.nt.abi.parse_configuration` (first byte: how ``size``
    relates to the buffer).  Checks: only :class:`~wgpy.nt.abi.AbiError`
    escapes; a parsed configuration packs to exactly ``configuration_size``
    bytes and parses back equal; converted to UAPI lines it applies to a
    device without internal error; the device's configuration read back as
    a wireguard.h configuration packs and parses again.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from wgpy.constants import (
    MAX_STAGED_PACKETS,
    REKEY_TIMEOUT,
    REKEY_TIMEOUT_JITTER_MAX,
    UAPI_EADDRINUSE,
    UAPI_EINVAL,
    UAPI_EIO,
    UAPI_EPROTO,
)
from wgpy.device import Device, Output
from wgpy.endpoint import Endpoint
from wgpy.nt import abi
from wgpy.nt.convert import config_from_uapi, config_to_uapi_lines
from wgpy.rng import SeededRng
from wgpy.sim import SimNode, ipv4_packet, make_pair
from wgpy.uapi import UapiServer, parse_get_response, uapi_get, uapi_set

__all__ = ["TARGETS", "FuzzBug", "Summary", "nt_config", "receive", "uapi"]


class FuzzBug(AssertionError):
    """An invariant of a target does not hold: a bug in wgpy (or in the target)."""


def check(condition: object, message: str) -> None:
    """Raise :class:`FuzzBug` unless ``condition``."""
    if not condition:
        raise FuzzBug(message)


@dataclass
class Summary:
    """What one input exercised (the tests use it to check corpus coverage)."""

    counters: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, n: int = 1) -> None:
        self.counters[key] = self.counters.get(key, 0) + n


class _ErrorLogs(logging.Handler):
    """Collects ERROR records of wgpy loggers (internal errors are logged so)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


_ERRORS: Final = _ErrorLogs()
logging.getLogger("wgpy").addHandler(_ERRORS)


def _no_error_logs(where: str) -> None:
    if _ERRORS.records:
        rec = _ERRORS.records[0]
        _ERRORS.records.clear()
        text = rec.getMessage()
        if rec.exc_info and rec.exc_info[1] is not None:
            text += f": {rec.exc_info[1]!r}"
        raise FuzzBug(f"{where}: internal error logged: {text}")


# ---------------------------------------------------------------------------
# receive
# ---------------------------------------------------------------------------

A4, B4 = "10.0.0.1", "10.0.0.2"
_ALLOWED = {"A": ["10.0.0.1/32", "fd00::1/128"], "B": ["10.0.0.2/32", "fd00::2/128"]}
_TAG = struct.Struct("!4sIc")
_TAG_MAGIC = b"FUZZ"
#: Sources a raw datagram can claim: nobody, the peers' real addresses and
#: their alternative addresses, an IPv6 stranger.
_STRANGERS: Final = (
    Endpoint("203.0.113.7", 666),
    Endpoint("192.0.2.1", 51820),
    Endpoint("192.0.2.2", 51820),
    Endpoint("2001:db8::7", 51820),
    Endpoint("192.0.2.1", 40011),
)
#: Clock steps (seconds) a CLOCK operation picks from; negative = backwards.
_CLOCK_STEPS: Final = (
    0.001,
    0.021,
    1.0,
    5.5,
    10.5,
    15.5,
    121.0,
    166.0,
    181.0,
    541.0,
    -0.5,
    -10.0,
    -200.0,
    3600.0,
    0.0,
    2.0,
)
#: Operation codes of the receive program (opcode byte modulo 8).
RECEIVE_OPS: Final = {
    0: "RAW src:u8 len:u16le data  - a datagram from a chosen source to B",
    1: "SEAL len:u8 payload         - A sends an inner packet (sealed or staged)",
    2: "DELIVER                     - deliver everything in flight (one round)",
    3: "MUTATE idx:u8 pos:u16le x:u8 - xor a byte of a datagram in flight",
    4: "REPLAY idx:u8 n:u8          - a delivered datagram goes in flight again, "
    "1 + 4n times (a flood)",
    5: "CLOCK step:u8               - move the clock, run expired timers",
    6: "B_SEND len:u8 payload       - B sends an inner packet to A",
    7: "READDRESS idx:u8 alias:u8   - a datagram in flight now comes from another "
    "address of its sender",
}
#: Rounds after the program: send both ways, deliver, let REKEY_TIMEOUT pass.
HEAL_ROUNDS: Final = 6
#: Longest program the target runs (ops), so one input stays cheap.
MAX_OPS: Final = 400
_INDEX_PER_PEER: Final = 4  # 3 keypair slots + 1 pending initiation


class _Run:
    """One execution of the receive program."""

    def __init__(self, established: bool, psk: bool) -> None:
        self.net, a, b = make_pair(b"wgpy-fuzz-receive", psk=bytes(range(32)) if psk else None)
        self.nodes: dict[str, SimNode] = {"A": a, "B": b}
        self.sent: dict[int, bytes] = {}
        self.seen: set[int] = set()
        self.next_id = 0
        self.history: list[tuple[Endpoint, Endpoint, bytes]] = []
        self.aliases = {
            "A": [a.address, Endpoint(a.address.ip, 40011), Endpoint("198.51.100.11", 51820)],
            "B": [b.address, Endpoint(b.address.ip, 40022), Endpoint("198.51.100.22", 51820)],
        }
        for name, eps in self.aliases.items():
            for ep in eps[1:]:
                self.net.nodes[ep] = self.nodes[name]
        self.summary = Summary()
        if established:
            self.send("A", b"hello")
            self.settle()
            self.send("B", b"back")
            self.settle()
        self.history.clear()  # REPLAY indices count from the program's start

    @property
    def clock(self) -> tuple[float, int]:
        c = self.net.clock
        return c.now, c.wall_ns

    def send(self, sender: str, payload: bytes) -> None:
        self.next_id += 1
        src, dst = (A4, B4) if sender == "A" else (B4, A4)
        pkt = ipv4_packet(src, dst, _TAG.pack(_TAG_MAGIC, self.next_id, sender.encode()) + payload)
        self.sent[self.next_id] = pkt
        node = self.nodes[sender]
        now, wall = self.clock
        self.net.collect(node, node.device.send([pkt], now, wall))

    def deliver_round(self) -> None:
        net = self.net
        batch, net.in_flight = net.in_flight, []
        per_node: dict[str, list[tuple[bytes, Endpoint]]] = {}
        for src, dst, data in batch:
            node = net.nodes.get(dst)
            if node is None:
                continue
            per_node.setdefault(node.name, []).append((data, src))
            if len(self.history) < 64:
                self.history.append((src, dst, data))
        for name, items in per_node.items():
            node = self.nodes[name]
            now, wall = self.clock
            net.collect(node, node.device.receive(items, now, wall))

    def settle(self) -> None:
        for _ in range(20):
            if not self.net.in_flight:
                return
            self.deliver_round()

    def run_timers(self) -> None:
        now, wall = self.clock
        for node in self.nodes.values():
            deadline = node.device.next_deadline()
            if deadline is not None and deadline <= now:
                self.net.collect(node, node.device.handle_timers(now, wall))

    def check(self) -> None:
        for name, node in self.nodes.items():
            dev = node.device
            check(
                dev.stats["rx_dropped_internal_error"] == 0,
                f"{name}: Device.receive swallowed an internal error",
            )
            check(len(dev._index) <= _INDEX_PER_PEER * max(1, len(dev)), f"{name}: index table")
            for peer in dev.peers:
                check(peer.staged_count <= MAX_STAGED_PACKETS, f"{name}: staging unbounded")
            for pkt in node.delivered:
                check(pkt[20:24] == _TAG_MAGIC, f"{name}: delivered a packet nobody sent")
                _, ident, sender = _TAG.unpack_from(pkt, 20)
                check(self.sent.get(ident) == pkt, f"{name}: delivered packet {ident} altered")
                check(sender != name.encode(), f"{name}: delivered its own packet")
                check(ident not in self.seen, f"{name}: packet {ident} delivered twice")
                self.seen.add(ident)
            self.summary.add(f"delivered_{name}", len(node.delivered))
            node.delivered.clear()

    def heal(self) -> None:
        """Faults stop: both directions must deliver within HEAL_ROUNDS."""
        net = self.net
        net.in_flight.clear()
        start = self.next_id
        got = {"A": False, "B": False}
        for _ in range(HEAL_ROUNDS):
            self.send("A", b"probe")
            self.send("B", b"probe")
            net.run(max_rounds=20)
            for name, node in self.nodes.items():
                got[name] = got[name] or any(
                    _TAG.unpack_from(p, 20)[1] > start for p in node.delivered
                )
            self.check()
            if all(got.values()):
                return
            net.tick(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + 0.1, step=1.0)
        raise FuzzBug(f"delivery did not resume after the faults stopped: {got}")


def receive(data: bytes) -> Summary:
    """The receive-path target (see the module docstring)."""
    if not data:
        return Summary()
    mode = data[0]
    run = _Run(established=bool(mode & 1), psk=bool(mode & 2))
    net = run.net
    pos, n, ops = 1, len(data), 0
    while pos < n and ops < MAX_OPS:
        op = data[pos] % 8
        pos += 1
        ops += 1
        flight = net.in_flight
        if op == 0:  # RAW
            src = _STRANGERS[data[pos] % len(_STRANGERS)] if pos < n else _STRANGERS[0]
            length = int.from_bytes(data[pos + 1 : pos + 3], "little") % 2048
            body = data[pos + 3 : pos + 3 + length]
            pos += 3 + length
            flight.append((src, run.nodes["B"].address, body))
            run.summary.add("raw")
        elif op in (1, 6):  # SEAL / B_SEND
            length = data[pos] if pos < n else 0
            payload = data[pos + 1 : pos + 1 + length]
            pos += 1 + length
            run.send("A" if op == 1 else "B", payload)
        elif op == 2:  # DELIVER
            run.deliver_round()
        elif op == 3:  # MUTATE
            args = data[pos : pos + 4].ljust(4, b"\0")
            pos += 4
            if flight:
                i = args[0] % len(flight)
                src, dst, body = flight[i]
                if body:
                    buf = bytearray(body)
                    buf[int.from_bytes(args[1:3], "little") % len(buf)] ^= args[3] or 1
                    flight[i] = (src, dst, bytes(buf))
        elif op == 4:  # REPLAY
            args = data[pos : pos + 2].ljust(2, b"\0")
            pos += 2
            if run.history:
                copies = 1 + 4 * args[1]
                flight.extend([run.history[args[0] % len(run.history)]] * copies)
                run.summary.add("replay", copies)
        elif op == 5:  # CLOCK
            step = _CLOCK_STEPS[(data[pos] if pos < n else 0) % len(_CLOCK_STEPS)]
            pos += 1
            net.clock.now += step
            run.run_timers()
        else:  # READDRESS
            args = data[pos : pos + 2].ljust(2, b"\0")
            pos += 2
            if flight:
                i = args[0] % len(flight)
                src, dst, body = flight[i]
                for eps in run.aliases.values():
                    if src in eps:
                        flight[i] = (eps[args[1] % len(eps)], dst, body)
        run.check()
    for name, node in run.nodes.items():
        for key, value in node.device.stats.items():
            run.summary.add(f"{name}.{key}", value)
    run.heal()
    return run.summary


# ---------------------------------------------------------------------------
# uapi
# ---------------------------------------------------------------------------

_UAPI_ERRNOS: Final = frozenset({0, UAPI_EINVAL, UAPI_EPROTO, UAPI_EADDRINUSE, UAPI_EIO})
_BUSY_PORT: Final = 4242  # "already in use" in the fake backend
_FLAKY_MARK: Final = 666  # setting this fwmark fails in the fake backend
_VOLATILE: Final = (
    "tx_bytes=",
    "rx_bytes=",
    "last_handshake_time_sec=",
    "last_handshake_time_nsec=",
)


class FakeBackend:
    """A real Device behind the UAPI backend protocol, with fake port/fwmark."""

    def __init__(self, seed: bytes = b"fuzz-uapi") -> None:
        self.lock = threading.RLock()
        self.device = Device(rng=SeededRng(seed))
        self.port = 0
        self.mark = 0
        self.submitted: list[Output] = []

    def clock(self) -> tuple[float, int]:
        return 1000.0, 1_767_225_600 * 10**9

    def get_listen_port(self) -> int:
        return self.port

    def set_listen_port(self, port: int) -> None:
        if port == _BUSY_PORT:
            raise OSError(98, "address in use")
        self.port = port or 43210

    def get_fwmark(self) -> int:
        return self.mark

    def set_fwmark(self, mark: int) -> None:
        if mark == _FLAKY_MARK:
            raise OSError(1, "not permitted")
        self.mark = mark

    def submit(self, out: Output) -> None:
        if len(self.submitted) < 16:
            self.submitted.append(out)


def _seeded_backend() -> FakeBackend:
    be = FakeBackend()
    err = uapi_set(
        be,
        [
            "private_key=" + bytes(range(1, 33)).hex(),
            "listen_port=51820",
            "public_key=" + bytes(range(2, 34)).hex(),
            "endpoint=192.0.2.2:51820",
            "allowed_ip=10.0.0.2/32",
            "allowed_ip=fd00::2/128",
        ],
    )
    check(err == 0, f"seeding the UAPI backend failed: errno {err}")
    return be


def _config_lines(get_text: str) -> list[str]:
    """``set`` lines that recreate the configuration a ``get`` reported."""
    cfg = parse_get_response(get_text)
    lines = []
    if cfg.private_key is not None:
        lines.append("private_key=" + cfg.private_key.hex())
    if cfg.listen_port:
        lines.append(f"listen_port={cfg.listen_port}")
    if cfg.fwmark:
        lines.append(f"fwmark={cfg.fwmark}")
    lines.append("replace_peers=true")
    for peer in cfg.peers:
        lines.append("public_key=" + peer.public_key.hex())
        lines.append("preshared_key=" + (peer.preshared_key or bytes(32)).hex())
        if peer.endpoint is not None:
            lines.append("endpoint=" + peer.endpoint)
        lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        lines.append("replace_allowed_ips=true")
        lines.extend("allowed_ip=" + ip for ip in peer.allowed_ips)
    return lines


def _stable(get_text: str) -> list[str]:
    return [line for line in get_text.split("\n") if not line.startswith(_VOLATILE)]


def _check_get_round_trip(be: FakeBackend, summary: Summary) -> None:
    text = uapi_get(be)
    check(text.endswith("errno=0\n\n"), "get does not end with errno=0")
    _no_error_logs("get")
    fresh = FakeBackend(b"fuzz-uapi-copy")
    err = uapi_set(fresh, _config_lines(text))
    _no_error_logs("re-applying get output")
    check(err == 0, f"get output does not apply again: errno {err}")
    again = uapi_get(fresh)
    check(_stable(again) == _stable(text), f"get round trip differs:\n{text}---\n{again}")
    summary.add("peers", len(be.device))


def _serve_stream(be: FakeBackend, stream: bytes) -> bytes:
    """Feed ``stream`` to the UAPI server's connection handler; its answer."""
    server = UapiServer("fuzz0", be, directory="/nonexistent-wgpy-fuzz")
    serve: Callable[[socket.socket], None] = server._serve_connection
    ours, theirs = socket.socketpair()
    with ours:
        worker = threading.Thread(target=serve, args=(theirs,), daemon=True)
        worker.start()
        try:
            ours.sendall(stream)
            ours.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may close early (bad operation line)
        chunks = []
        while True:
            try:
                chunk = ours.recv(65536)
            except ConnectionResetError:  # it closed with our bytes unread
                break
            if not chunk:
                break
            chunks.append(chunk)
        worker.join(10)
        check(not worker.is_alive(), "UAPI connection handler did not finish")
    return b"".join(chunks)


def uapi(data: bytes) -> Summary:
    """The UAPI target (see the module docstring)."""
    summary = Summary()
    if not data:
        return summary
    _ERRORS.records.clear()
    be = _seeded_backend()
    if data[0] & 1:
        answer = _serve_stream(be, data[1:])
        _no_error_logs("UAPI stream")
        for line in answer.decode("utf-8", "replace").split("\n"):
            if line.startswith("errno="):
                code = -int(line[len("errno=") :])
                check(code in _UAPI_ERRNOS, f"unexpected errno {code} in the answer")
                summary.add(f"errno_{code}")
    else:
        lines = data[1:].decode("utf-8", "surrogateescape").split("\n")
        err = uapi_set(be, lines)
        _no_error_logs("uapi_set")
        check(err in _UAPI_ERRNOS, f"uapi_set returned errno {err}")
        summary.add(f"errno_{err}")
    _check_get_round_trip(be, summary)
    return summary


# ---------------------------------------------------------------------------
# nt_config
# ---------------------------------------------------------------------------


def nt_config(data: bytes) -> Summary:
    """The wireguard.h configuration target (see the module docstring)."""
    summary = Summary()
    if not data:
        return summary
    _ERRORS.records.clear()
    mode, buf = data[0], data[1:]
    size = len(buf)
    if mode & 1:  # a size short of the buffer
        size = max(0, size - (mode >> 1))
    elif mode & 2:  # a size beyond the buffer
        size += mode >> 2
    try:
        cfg = abi.parse_configuration(buf, size)
    except abi.AbiError as exc:
        summary.add(f"abi_error_{int(exc.error_code)}")
        return summary
    summary.add("parsed")
    packed = abi.pack_configuration(cfg)
    check(len(packed) == abi.configuration_size(cfg), "configuration_size disagrees with pack")
    check(abi.parse_configuration(packed, len(packed)) == cfg, "pack/parse round trip differs")
    be = _seeded_backend()
    err = uapi_set(be, config_to_uapi_lines(cfg))
    _no_error_logs("applying a wireguard.h configuration")
    check(err in _UAPI_ERRNOS, f"applying the configuration returned errno {err}")
    summary.add(f"errno_{err}")
    back = config_from_uapi(parse_get_response(uapi_get(be)))
    repacked = abi.pack_configuration(back)
    check(abi.parse_configuration(repacked, len(repacked)) == back, "get configuration round trip")
    return summary


#: Target name -> function; the corpus of each is ``fuzz/corpus/<name>/``.
TARGETS: Final[dict[str, Callable[[bytes], Summary]]] = {
    "receive": receive,
    "uapi": uapi,
    "nt_config": nt_config,
}
