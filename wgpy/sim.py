"""An in-memory network of sans-IO devices with a fake clock.

Used by the tests, the fuzzers and ``wgpy demo --memory``: several
:class:`~wgpy.device.Device` objects exchange datagrams through a
:class:`SimNetwork` that can drop, duplicate, reorder and re-address them,
while a :class:`FakeClock` advances time deterministically (hours of
protocol time run in milliseconds).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from wgpy.device import Device, Output
from wgpy.endpoint import Endpoint
from wgpy.inet import ipv4_packet, ipv6_packet
from wgpy.noise.primitives import public_key
from wgpy.rng import Rng, SeededRng

__all__ = ["FakeClock", "SimNetwork", "SimNode", "ipv4_packet", "ipv6_packet", "make_pair"]

#: A fixed wall-clock origin (2026-01-01T00:00:00Z) so transcripts are stable.
WALL_EPOCH_NS = 1_767_225_600 * 1_000_000_000


class FakeClock:
    """Monotonic seconds plus a wall clock that can be moved independently."""

    def __init__(self, start: float = 1000.0, wall_ns: int = WALL_EPOCH_NS) -> None:
        self.now = start
        self._wall_offset_ns = wall_ns - int(start * 1e9)

    @property
    def wall_ns(self) -> int:
        """Unix nanoseconds."""
        return int(self.now * 1e9) + self._wall_offset_ns

    def advance(self, seconds: float) -> None:
        """Move both clocks forward."""
        self.now += seconds

    def step_wall(self, seconds: float) -> None:
        """Move only the wall clock (it may go backwards, like NTP steps)."""
        self._wall_offset_ns += int(seconds * 1e9)


@dataclass
class SimNode:
    """A device attached to the simulated network at ``address``."""

    name: str
    device: Device
    address: Endpoint
    #: Packets the device wrote to its (virtual) TUN.
    delivered: list[bytes] = field(default_factory=list)
    #: Every datagram this node sent, in order (for wire-level assertions).
    sent: list[tuple[Endpoint, bytes]] = field(default_factory=list)


Fault = Callable[[Endpoint, Endpoint, bytes], list[tuple[Endpoint, Endpoint, bytes]]]


class SimNetwork:
    """Delivers datagrams between nodes by destination address.

    ``fault`` (optional) sees each datagram (source, destination, bytes) and
    returns what to deliver instead: [] drops it, two copies duplicate it, a
    different source re-addresses it.  ``reorder`` shuffles each delivery
    round with a seeded generator.
    """

    def __init__(self, clock: FakeClock, seed: int = 0) -> None:
        self.clock = clock
        self.nodes: dict[Endpoint, SimNode] = {}
        self.in_flight: list[tuple[Endpoint, Endpoint, bytes]] = []
        self.fault: Fault | None = None
        self.reorder = False
        self._random = random.Random(seed)
        #: Datagrams sent to addresses where no node listens.
        self.undeliverable: list[tuple[Endpoint, Endpoint, bytes]] = []

    def add(self, node: SimNode) -> SimNode:
        """Attach a node."""
        self.nodes[node.address] = node
        return node

    def move(self, node: SimNode, new_address: Endpoint) -> None:
        """Re-address a node (roaming): it now sends from and listens on ``new_address``."""
        del self.nodes[node.address]
        node.address = new_address
        self.nodes[new_address] = node

    def collect(self, node: SimNode, out: Output) -> None:
        """Queue a node's outgoing datagrams and keep its TUN writes."""
        for data, dst in out.datagrams:
            node.sent.append((dst, data))
            self.in_flight.append((node.address, dst, data))
        node.delivered.extend(out.packets)

    def send_packets(self, node: SimNode, packets: list[bytes]) -> None:
        """Packets enter ``node``'s TUN."""
        c = self.clock
        self.collect(node, node.device.send(packets, c.now, c.wall_ns))

    def run(self, max_rounds: int = 100) -> int:
        """Deliver until nothing is in flight; returns datagrams delivered."""
        delivered = 0
        for _ in range(max_rounds):
            if not self.in_flight:
                break
            batch, self.in_flight = self.in_flight, []
            if self.fault is not None:
                faulted: list[tuple[Endpoint, Endpoint, bytes]] = []
                for item in batch:
                    faulted.extend(self.fault(*item))
                batch = faulted
            if self.reorder:
                self._random.shuffle(batch)
            per_node: dict[Endpoint, list[tuple[bytes, Endpoint]]] = {}
            for src, dst, data in batch:
                if dst not in self.nodes:
                    self.undeliverable.append((src, dst, data))
                    continue
                per_node.setdefault(dst, []).append((data, src))
            for dst, items in per_node.items():
                node = self.nodes[dst]
                c = self.clock
                self.collect(node, node.device.receive(items, c.now, c.wall_ns))
                delivered += len(items)
        return delivered

    def tick(self, seconds: float, step: float = 0.25) -> None:
        """Advance time in steps, running due timers and delivering traffic."""
        end = self.clock.now + seconds
        while True:
            due = [
                d
                for d in (n.device.next_deadline() for n in self.nodes.values())
                if d is not None and d <= end
            ]
            target = min([*due, self.clock.now + step, end])
            self.clock.now = max(self.clock.now, target)
            for node in list(self.nodes.values()):
                deadline = node.device.next_deadline()
                if deadline is not None and deadline <= self.clock.now:
                    c = self.clock
                    self.collect(node, node.device.handle_timers(c.now, c.wall_ns))
            self.run()
            if self.clock.now >= end:
                break


def make_pair(
    seed: bytes = b"wgpy-sim",
    *,
    psk: bytes | None = None,
    rng_a: Rng | None = None,
    rng_b: Rng | None = None,
) -> tuple[SimNetwork, SimNode, SimNode]:
    """Two devices A (10.0.0.1, [fd00::1]) and B (10.0.0.2, [fd00::2]) that
    know each other, on a fresh network with a fake clock."""
    keys = SeededRng(seed + b"/keys")
    priv_a, priv_b = keys.random_bytes(32), keys.random_bytes(32)
    clock = FakeClock()
    net = SimNetwork(clock)
    dev_a = Device(priv_a, rng=rng_a or SeededRng(seed + b"/a"))
    dev_b = Device(priv_b, rng=rng_b or SeededRng(seed + b"/b"))
    ep_a = Endpoint("192.0.2.1", 51820)
    ep_b = Endpoint("192.0.2.2", 51820)
    dev_a.add_peer(
        public_key(priv_b),
        preshared_key=psk,
        endpoint=ep_b,
        allowed_ips=["10.0.0.2/32", "fd00::2/128"],
    )
    dev_b.add_peer(
        public_key(priv_a),
        preshared_key=psk,
        endpoint=ep_a,
        allowed_ips=["10.0.0.1/32", "fd00::1/128"],
    )
    a = net.add(SimNode("A", dev_a, ep_a))
    b = net.add(SimNode("B", dev_b, ep_b))
    return net, a, b
