"""The network-namespace demo behind ``wgpy demo`` (needs root).

Two namespaces joined by a veth pair; wgpy on side A and wgpy or
wireguard-go on side B, configured with the real ``wg``; then a handshake,
pings, a short TCP transfer and a summary.  Everything is built with
:class:`wgpy.lab.Lab`, which removes every namespace, process and key file it
created before the demo returns, also when something fails.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

from wgpy.lab import Lab, LabError, Node

__all__ = ["netns_demo"]


def _throughput(lab: Lab, a: Node, b_addr: str, b: Node, seconds: float) -> tuple[str, float]:
    """Mbit/s from A to B: iperf3 when installed, else a Python TCP stream."""
    if shutil.which("iperf3"):
        server = lab.popen(b.ns, "iperf3", "-s", "-1", "-B", b_addr)
        time.sleep(0.5)
        out = a.sh("iperf3", "-c", b_addr, "-t", f"{seconds:g}", "-J", timeout=seconds + 30)
        lab.stop_process(server)
        bps = json.loads(out)["end"]["sum_received"]["bits_per_second"]
        return "iperf3 TCP", bps / 1e6
    sink = lab.popen(
        b.ns,
        sys.executable,
        "-c",
        f"import socket\nc,_=socket.create_server(('{b_addr}',5201)).accept()\n"
        "while c.recv(1<<20):pass\n",
    )
    time.sleep(0.5)
    code = (
        "import socket,sys,time\n"
        "s=socket.create_connection((sys.argv[1],5201));b=bytes(65536);t=time.time();n=0\n"
        "while time.time()-t<float(sys.argv[2]):s.sendall(b);n+=len(b)\n"
        "s.close();print(n/(time.time()-t)*8/1e6)\n"
    )
    out = a.sh(sys.executable, "-c", code, b_addr, f"{seconds:g}", timeout=seconds + 30)
    lab.stop_process(sink)
    return "Python TCP stream", float(out.strip())


def netns_demo(peer: str = "wgpy", seconds: float = 3.0) -> int:
    """Run the demo; prints progress and a summary; returns an exit status."""
    import os

    if os.geteuid() != 0:
        print("wgpy demo needs root (network namespaces, TUN devices).", file=sys.stderr)
        print("Run it with sudo, or try `wgpy demo --memory` (no root).", file=sys.stderr)
        return 1
    needed = ["ip", "wg"] + (["wireguard-go"] if peer == "wireguard-go" else [])
    missing = [t for t in needed if shutil.which(t) is None]
    if missing:
        print(
            f"wgpy demo needs {', '.join(missing)}: "
            "apt-get install iproute2 wireguard-tools wireguard-go",
            file=sys.stderr,
        )
        return 1
    print(f"wgpy demo: side A runs wgpy, side B runs {peer}")
    try:
        with Lab() as lab:
            ns_a, ns_b = lab.namespace("demo-a"), lab.namespace("demo-b")
            lab.veth(ns_a, ns_b, ["192.168.241.1/24"], ["192.168.241.2/24"])
            a = lab.start(ns_a, "wgpy")
            b = lab.start(ns_b, peer)
            print(f"  namespaces {ns_a} and {ns_b}, interfaces {a.ifname} and {b.ifname}")
            a.configure(51820, address=["10.66.0.1/24"])
            b.configure(51821, address=["10.66.0.2/24"])
            a.add_peer(b, allowed_ips=["10.66.0.2/32"], endpoint="192.168.241.2:51821")
            b.add_peer(a, allowed_ips=["10.66.0.1/32"], endpoint="192.168.241.1:51820")
            t0 = time.monotonic()
            if not a.ping("10.66.0.2", timeout=10):
                print("wgpy demo failed: no reply to the first ping", file=sys.stderr)
                return 1
            print(f"  handshake + first ping: {(time.monotonic() - t0) * 1000:.1f} ms")
            out = a.sh("ping", "-c", "10", "-i", "0.2", "-W", "2", "10.66.0.2", check=False)
            stats = out.strip().splitlines()[-2:]
            print("  10 pings: " + " / ".join(s.strip() for s in stats))
            how, mbps = _throughput(lab, a, "10.66.0.2", b, seconds)
            print(f"  {seconds:g} s {how}, A -> B: {mbps:,.1f} Mbit/s")
            (pa,), (pb,) = a.dump(), b.dump()
            now = time.time()
            print()
            print(f"  {'':<26}{'A (wgpy)':>18}{'B (' + peer + ')':>22}")
            print(f"  {'peer endpoint':<26}{pa.endpoint:>18}{pb.endpoint:>22}")
            print(
                f"  {'latest handshake':<26}{now - pa.latest_handshake:>16.0f} s"
                f"{now - pb.latest_handshake:>20.0f} s"
            )
            print(f"  {'bytes received':<26}{pa.rx_bytes:>18,}{pb.rx_bytes:>22,}")
            print(f"  {'bytes sent':<26}{pa.tx_bytes:>18,}{pb.tx_bytes:>22,}")
            ok = pa.rx_bytes > 0 and pb.rx_bytes > 0 and pa.latest_handshake > 0
            print("\n  OK: the tunnel worked." if ok else "\n  FAILED")
            return 0 if ok else 1
    except LabError as exc:
        print(f"wgpy demo failed: {exc}", file=sys.stderr)
        return 1
    finally:
        print("  cleaned up: namespaces, processes and key files removed")
