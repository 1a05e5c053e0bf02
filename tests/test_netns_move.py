"""The container trick (wireguard.com/netns): daemons started in one network
namespace, their links moved to others with ``ip link set IFACE netns OTHER``.
The processes, their UAPI sockets and UDP sockets stay in the first
namespace; the tunnel must carry traffic between the other two over the
first one's loopback, follow up/down, MTU changes and deletion wherever the
link lives, and roam when the loopback address and listen port change.

Topology::

    C1: wA 10.77.0.1/24          C2: wB 10.77.0.2/24
          \\                         /
    H:  daemon A ---- lo (10.250.0.1, later 10.250.0.2) ---- daemon B

A datagram to a local address leaves with that address as its source, so
the address A sends to is also the one B sees A at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Iterator

import pytest

from wgpy.lab import Lab, Node

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN"),
    pytest.mark.skipif(shutil.which("wg") is None, reason="needs wg (wireguard-tools)"),
]

IN_A, IN_B = "10.77.0.1", "10.77.0.2"
LO_1, LO_2 = "10.250.0.1", "10.250.0.2"
PORT_A, PORT_B, PORT_A2 = 51900, 51901, 51902


class Moved:
    """Two wgpy daemons started in H whose links live in C1 and C2."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.h, self.c1, self.c2 = (lab.namespace(n) for n in ("h", "c1", "c2"))
        lab.run(self.h, "ip", "address", "add", f"{LO_1}/32", "dev", "lo")
        self.a: Node = lab.start(self.h, "wgpy")
        self.b: Node = lab.start(self.h, "wgpy")
        self.a.configure(PORT_A, up=False)
        self.b.configure(PORT_B, up=False)
        self.a.add_peer(self.b, allowed_ips=[f"{IN_B}/32"], endpoint=f"{LO_1}:{PORT_B}")
        self.b.add_peer(self.a, allowed_ips=[f"{IN_A}/32"], endpoint=f"{LO_1}:{PORT_A}")
        for node, ns, addr in ((self.a, self.c1, IN_A), (self.b, self.c2, IN_B)):
            lab.run(self.h, "ip", "link", "set", node.ifname, "netns", ns)
            lab.run(ns, "ip", "address", "add", f"{addr}/24", "dev", node.ifname)
            lab.run(ns, "ip", "link", "set", node.ifname, "up")

    def ping(self, ns: str, addr: str, *, count: int = 2, size: int = 56, timeout: int = 5) -> bool:
        done = self.lab.run(
            ns,
            "ping",
            "-c",
            str(count),
            "-i",
            "0.2",
            "-s",
            str(size),
            "-W",
            str(timeout),
            addr,
            timeout=timeout * count + 10,
            check=False,
        )
        return done.returncode == 0

    def endpoint_of_a_at_b(self) -> str:
        (peer,) = self.b.dump()
        return peer.endpoint


@pytest.fixture
def moved() -> Iterator[Moved]:
    with Lab() as lab:
        yield Moved(lab)


def test_links_moved_to_other_namespaces_carry_traffic_and_roam(moved: Moved) -> None:
    lab = moved.lab
    assert moved.ping(moved.c1, IN_B, timeout=10), lab.output(moved.a.proc)
    assert moved.ping(moved.c2, IN_A)
    assert moved.endpoint_of_a_at_b() == f"{LO_1}:{PORT_A}"

    # TCP through the moved links.
    server = lab.popen(moved.c2, "iperf3", "-s", "-1", "-B", IN_B)
    try:
        time.sleep(0.3)
        done = lab.run(moved.c1, "iperf3", "-c", IN_B, "-t", "2", "-J", timeout=60, check=False)
    finally:
        lab.stop_process(server)
    result = json.loads(done.stdout)
    assert result["end"]["sum_received"]["bytes"] > 1_000_000, done.stdout[-300:]

    # Roaming 1: A listens on another port; B learns it from A's packets.
    moved.a.wg("set", moved.a.ifname, "listen-port", str(PORT_A2))
    assert moved.ping(moved.c1, IN_B)
    assert moved.endpoint_of_a_at_b() == f"{LO_1}:{PORT_A2}"
    assert moved.ping(moved.c2, IN_A)

    # Roaming 2: the loopback address changes (the old one disappears): A
    # now sends from the new one, and B's replies can only arrive if B
    # followed A there.
    lab.run(moved.h, "ip", "address", "add", f"{LO_2}/32", "dev", "lo")
    moved.a.add_peer(moved.b, allowed_ips=[f"{IN_B}/32"], endpoint=f"{LO_2}:{PORT_B}")
    lab.run(moved.h, "ip", "address", "del", f"{LO_1}/32", "dev", "lo")
    assert moved.ping(moved.c1, IN_B)
    assert moved.endpoint_of_a_at_b() == f"{LO_2}:{PORT_A2}"
    assert moved.ping(moved.c2, IN_A)


def test_moved_link_follows_down_up_mtu_and_deletion(moved: Moved) -> None:
    lab = moved.lab
    assert moved.ping(moved.c1, IN_B, timeout=10), lab.output(moved.a.proc)

    # Down in the new namespace: no traffic; up again: traffic again.
    lab.run(moved.c1, "ip", "link", "set", moved.a.ifname, "down")
    time.sleep(0.5)
    assert not moved.ping(moved.c2, IN_A, count=1, timeout=2)
    lab.run(moved.c1, "ip", "link", "set", moved.a.ifname, "up")
    lab.run(moved.c1, "ip", "route", "replace", "10.77.0.0/24", "dev", moved.a.ifname)
    assert moved.ping(moved.c1, IN_B, timeout=10)

    # The MTU set in the new namespace caps the padding: a 1410-byte packet
    # on a 1412-byte link is padded to 1412, not to 1420.
    lab.run(moved.c1, "ip", "link", "set", moved.a.ifname, "mtu", "1412")
    lengths = capture_udp_lengths(lab, moved.h, "lo", PORT_B, moved.c1, IN_B, 1410 - 28)
    assert 1412 + 32 in lengths, lengths
    assert 1420 + 32 not in lengths, lengths

    # Deleted in the new namespace: the daemon ends.
    lab.run(moved.c1, "ip", "link", "del", moved.a.ifname)
    moved.a.proc.wait(timeout=10)
    assert moved.a.proc.returncode == 0, lab.output(moved.a.proc)
    assert moved.b.alive()


def capture_udp_lengths(
    lab: Lab, cap_ns: str, dev: str, port: int, ping_ns: str, dst: str, size: int
) -> list[int]:
    """UDP payload lengths to ``port`` on ``dev`` while ``ping_ns`` pings ``dst``
    with ``size`` bytes of ICMP payload (DF set)."""
    dump = lab.popen(
        cap_ns, "tcpdump", "-i", dev, "-n", "-l", "-q", "udp", "dst", "port", str(port)
    )
    try:
        deadline = time.monotonic() + 10
        while "listening on" not in lab.output(dump) and time.monotonic() < deadline:
            time.sleep(0.05)
        lab.run(
            ping_ns, "ping", "-c", "2", "-i", "0.2", "-M", "do", "-s", str(size), dst, check=False
        )
        time.sleep(0.5)
    finally:
        lab.stop_process(dump)
    return [int(n) for n in re.findall(r"UDP, length (\d+)", lab.output(dump))]


def test_mtu_set_after_start_caps_the_padding_on_the_wire() -> None:
    # As wg-quick does: the daemon creates the link (1420), the MTU is set
    # afterwards.  A 1410-byte inner packet on a 1412-byte link is padded to
    # 1412: over IPv6 the outer packet is 1492 bytes, not 1500.
    with Lab() as lab:
        ns_a, ns_b = lab.namespace("a"), lab.namespace("b")
        lab.veth(ns_a, ns_b, ["fd00:243::1/64"], ["fd00:243::2/64"])
        a, b = lab.start(ns_a, "wgpy"), lab.start(ns_b, "wgpy")
        a.configure(PORT_A, address=[f"{IN_A}/24"])
        b.configure(PORT_B, address=[f"{IN_B}/24"])
        a.add_peer(b, allowed_ips=[f"{IN_B}/32"], endpoint=f"[fd00:243::2]:{PORT_B}")
        b.add_peer(a, allowed_ips=[f"{IN_A}/32"], endpoint=f"[fd00:243::1]:{PORT_A}")
        assert a.ping(IN_B, timeout=10)
        for mtu, ip_len in ((1412, 1410), (1420, 1410), (1300, 1290), (1440, 1400)):
            lab.run(ns_a, "ip", "link", "set", a.ifname, "mtu", str(mtu))
            lengths = capture_udp_lengths(lab, ns_b, "veth0", PORT_B, ns_a, IN_B, ip_len - 28)
            want = min(-(-ip_len // 16) * 16, mtu) + 32  # padded to 16, never past the MTU
            assert lengths and all(n == want for n in lengths), (mtu, lengths)
