"""``wgpy demo``: show a WireGuard tunnel working, end to end.

Default (needs root): creates two network namespaces joined by a veth pair,
runs ``wgpy-userspace`` in one and wgpy (or, with ``--peer wireguard-go``,
Debian's wireguard-go) in the other, configures both with the real ``wg``,
handshakes, pings, runs a short TCP transfer (iperf3 if installed) and prints
a summary; everything it created is removed at the end, also on failure.

``--memory`` needs nothing: two sans-IO devices exchange packets over an
in-memory network with a fake clock, showing the handshake, data, a rekey and
the message sizes on the wire.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from wgpy.sim import ipv4_packet, make_pair

__all__ = ["main", "memory_demo"]


def _kind(data: bytes) -> str:
    return {1: "initiation", 2: "response", 3: "cookie reply", 4: "transport"}.get(data[0], "?")


def memory_demo() -> int:
    """Run the in-memory demo, printing to stdout; returns an exit status."""
    net, a, b = make_pair()
    t0 = time.perf_counter()
    print("wgpy in-memory demo: two devices, A (10.0.0.1) and B (10.0.0.2)")
    net.send_packets(a, [ipv4_packet("10.0.0.1", "10.0.0.2", b"hello from A")])
    net.run()
    elapsed = (time.perf_counter() - t0) * 1000
    for who, node in (("A", a), ("B", b)):
        for _, data in node.sent:
            print(f"  {who} -> {'B' if who == 'A' else 'A'}: {_kind(data):<11} {len(data):4} bytes")
    print(f"handshake + first packet: {elapsed:.1f} ms of CPU (Python, in-process)")
    if b.delivered != [ipv4_packet("10.0.0.1", "10.0.0.2", b"hello from A")]:
        print("FAILED: B did not receive A's packet", file=sys.stderr)
        return 1
    print(f"B received: {b.delivered[0][20:].decode()!r}")
    net.send_packets(b, [ipv4_packet("10.0.0.2", "10.0.0.1", b"hello from B")])
    net.run()
    print(f"A received: {a.delivered[0][20:].decode()!r}")
    n = 1000
    t0 = time.perf_counter()
    net.send_packets(a, [ipv4_packet("10.0.0.1", "10.0.0.2", bytes(1392))] * n)
    net.run()
    dt = time.perf_counter() - t0
    print(f"{n} packets of 1420 bytes A -> B: {n / dt:,.0f} packets/s through both engines")
    rekeys_before = sum(1 for _, d in a.sent if d[0] == 1)
    net.tick(125)
    net.send_packets(a, [ipv4_packet("10.0.0.1", "10.0.0.2", b"after two minutes")])
    net.run()
    rekeys = sum(1 for _, d in a.sent if d[0] == 1) - rekeys_before
    ok = b.delivered[-1].endswith(b"after two minutes") and rekeys == 1
    print(f"after 125 s of simulated time: {rekeys} new handshake (rekey), data still flows")
    pa = a.device.peers[0]
    print(f"A's counters for B: tx {pa.tx_bytes} B, rx {pa.rx_bytes} B")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``wgpy demo``."""
    parser = argparse.ArgumentParser(prog="wgpy demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--memory", action="store_true", help="in-memory demo: no root, no network")
    parser.add_argument(
        "--peer",
        choices=["wgpy", "wireguard-go"],
        default="wgpy",
        help="implementation on the far side (default: wgpy)",
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the transfer")
    args = parser.parse_args(argv)
    if args.memory:
        return memory_demo()
    from wgpy.netdemo import netns_demo

    return netns_demo(peer=args.peer, seconds=args.seconds)


if __name__ == "__main__":
    sys.exit(main())
