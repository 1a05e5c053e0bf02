"""Capture a real wgpy <-> wireguard-go handshake into vectors/interop/ (root).

wireguard-go initiates (it pings through the tunnel); wgpy answers with its
RNG seeded (WGPY_INSECURE_TEST_RNG_SEED), so its ephemeral key, receiver
index and every byte it sends are reproducible.  Both static keys are
recorded.  tests/test_interop_transcript.py replays the capture against the
sans-IO engine: the same initiation must produce byte-identical responses,
and wireguard-go's transport packets must decrypt with wgpy's keys.

Usage:  python vectors/capture_wireguard_go.py [OUTPUT.json]
"""

from __future__ import annotations

import base64
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

from wgpy.lab import Lab
from wgpy.noise.primitives import clamp

OUT = Path(__file__).resolve().parent / "interop" / "wireguard-go-initiates.json"


def udp_payloads(pcap: bytes) -> list[tuple[str, int, bytes]]:
    """(source IP, source port, payload) of each IPv4/UDP frame in a pcap."""
    magic = struct.unpack_from("<I", pcap)[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack_from(endian + "I", pcap, 20)[0]
    off, out = 24, []
    while off + 16 <= len(pcap):
        _, _, caplen, _ = struct.unpack_from(endian + "IIII", pcap, off)
        frame = pcap[off + 16 : off + 16 + caplen]
        off += 16 + caplen
        l2 = 14 if linktype == 1 else 16  # Ethernet or Linux cooked capture
        ip = frame[l2:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 15) * 4
        src = ".".join(str(b) for b in ip[12:16])
        sport, _, length = struct.unpack_from("!HHH", ip, ihl)
        out.append((src, sport, ip[ihl + 8 : ihl + length]))
    return out


def main() -> int:
    out_path = Path(sys.argv[1]) if len(sys.argv) > 1 else OUT
    seed = "wgpy-vs-wireguard-go/1"
    wgpy_priv = clamp(os.urandom(32))
    go_priv = clamp(os.urandom(32))
    with Lab() as lab:
        ns_a, ns_b = lab.namespace("cap-a"), lab.namespace("cap-b")
        lab.veth(ns_a, ns_b, ["192.168.241.1/24"], ["192.168.241.2/24"])
        a = lab.start(ns_a, "wgpy", env={"WGPY_INSECURE_TEST_RNG_SEED": seed})
        b = lab.start(ns_b, "wireguard-go")
        a.private, b.private = wgpy_priv, go_priv
        a.configure(51820, address=["10.66.0.1/24"])
        b.configure(51821, address=["10.66.0.2/24"])
        a.add_peer(b, allowed_ips=["10.66.0.2/32"])  # no endpoint: wgpy only answers
        b.add_peer(a, allowed_ips=["10.66.0.1/32"], endpoint="192.168.241.1:51820")
        pcap_path = os.path.join(lab._tmp.name, "cap.pcap")
        dump = lab.popen(
            ns_a, "tcpdump", "-U", "--immediate-mode", "-n", "-i", "veth0", "-w", pcap_path, "udp"
        )
        time.sleep(1.0)
        wall_before = time.time_ns()
        ok = b.ping("10.66.0.1", count=1, timeout=10)
        time.sleep(0.5)
        lab.stop_process(dump)
        if not ok:
            print("ping through the tunnel failed", file=sys.stderr)
            return 1
        pcap = Path(pcap_path).read_bytes()
    frames = udp_payloads(pcap)
    messages = [
        {"from": "wgpy" if src == "192.168.241.1" else "wireguard-go", "hex": data.hex()}
        for src, _, data in frames
    ]
    record = {
        "description": "wireguard-go (Debian) initiates to wgpy; wgpy's RNG is SeededRng(seed)",
        "wireguard_go_version": subprocess.run(
            ["wireguard-go", "--version"], capture_output=True, text=True
        ).stdout.split("\n")[0],
        "captured_wall_ns": wall_before,
        "seed": seed,
        "wgpy_private": wgpy_priv.hex(),
        "wireguard_go_private": go_priv.hex(),
        "wgpy_public_b64": base64.b64encode(a.public).decode(),
        "wireguard_go_public_b64": base64.b64encode(b.public).decode(),
        "wgpy_tunnel_address": "10.66.0.1",
        "wireguard_go_tunnel_address": "10.66.0.2",
        "messages": messages,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out_path}: " + ", ".join(f"{m['from']}:{len(m['hex']) // 2}" for m in messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
