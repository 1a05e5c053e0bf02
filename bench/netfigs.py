"""The network figures: iperf3 TCP and UDP, ping RTT, CPU per byte,
handshakes over the wire, memory per idle peer, and the optional profile."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.topology import REPO_ROOT, KernelVM, Pair
from bench.util import cpu_seconds, percentile, rss_bytes
from bench.wire import pool_size
from wgpy.lab import Lab, Node
from wgpy.noise.primitives import clamp, public_key

__all__ = [
    "hs_wire_run",
    "memory_run",
    "ping_run",
    "profile_run",
    "tcp_run",
    "udp_run",
    "warm_up",
]

_RTT = re.compile(r"time=([0-9.]+) ms")


class FigureError(RuntimeError):
    """A measurement could not be taken (the message says why)."""


def warm_up(pair: Pair) -> None:
    """Make sure the tunnel has a session before measuring (the first packet
    after an idle spell would otherwise pay for a handshake)."""
    for _ in range(3):
        if pair.node_a.ping(pair.addr_b, count=2, timeout=2):
            return
    raise FigureError(f"{pair.name}: no ping reply through the tunnel")


def _iperf(lab: Lab, pair: Pair, args: list[str], seconds: float) -> dict[str, Any]:
    argv = ["iperf3", "-c", pair.addr_b, "-J", "--connect-timeout", "5000", *args]
    done = lab.run(pair.ns_a, *argv, timeout=seconds + 40, check=False)
    try:
        data: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise FigureError(f"iperf3 gave no JSON: {(done.stderr or done.stdout)[-300:]}") from None
    if data.get("error"):
        raise FigureError(f"iperf3: {data['error']}")
    return data


def tcp_run(lab: Lab, pair: Pair, seconds: float, reverse: bool) -> dict[str, Any]:
    """One iperf3 TCP run (A→B, or B→A with ``reverse``), with the CPU time
    the implementation processes used during it."""
    args = ["-t", f"{seconds:g}"] + (["-R"] if reverse else [])
    cpu_a0, cpu_b0 = cpu_seconds(pair.pids_a), cpu_seconds(pair.pids_b)
    data = _iperf(lab, pair, args, seconds)
    cpu_a = cpu_seconds(pair.pids_a) - cpu_a0
    cpu_b = cpu_seconds(pair.pids_b) - cpu_b0
    end = data["end"]
    received = end["sum_received"]
    nbytes = int(received["bytes"])
    cpu = cpu_a + cpu_b
    return {
        "mbps": received["bits_per_second"] / 1e6,
        "bytes": nbytes,
        "seconds": received["seconds"],
        "retransmits": end.get("sum_sent", {}).get("retransmits"),
        "cpu_a": cpu_a,
        "cpu_b": cpu_b,
        # CPU seconds of the userspace ends per 10^9 bytes carried.
        "cpu_s_per_gb": cpu / (nbytes / 1e9) if nbytes else None,
        "cpu_ends": "A only (B is the kernel VM)" if pair.kernel else "A+B",
    }


def udp_run(lab: Lab, pair: Pair, size: int, seconds: float) -> dict[str, Any]:
    """iperf3 UDP at full speed with ``size``-byte IP packets inside the
    tunnel (UDP payload = size - 28); received packets/s and loss."""
    args = ["-u", "-l", str(size - 28), "-b", "0", "-t", f"{seconds:g}"]
    data = _iperf(lab, pair, args, seconds)
    rcv = data["end"]["sum_received"]
    sent = data["end"].get("sum_sent", {})
    got = int(rcv["packets"]) - int(rcv["lost_packets"])
    return {
        "kpps": got / float(rcv["seconds"]) / 1e3,
        "loss_pct": float(rcv["lost_percent"]),
        "received": got,
        "sent": int(sent.get("packets", rcv["packets"])),
        "seconds": rcv["seconds"],
    }


def _ping_rtts(node: Node, addr: str, count: int) -> tuple[list[float], int]:
    done = node.lab.run(
        node.ns,
        "ping",
        "-n",
        "-i",
        "0.01",
        "-c",
        str(count),
        "-W",
        "1",
        addr,
        timeout=count * 0.05 + 20,
        check=False,
    )
    rtts = [float(m.group(1)) for m in _RTT.finditer(done.stdout)]
    return rtts, count - len(rtts)


def ping_run(lab: Lab, pair: Pair, count: int, load: bool) -> dict[str, Any]:
    """``count`` pings every 10 ms A→B; with ``load`` while iperf3 TCP A→B runs."""
    load_proc = None
    if load:
        seconds = count * 0.01 + 3
        load_proc = lab.popen(
            pair.ns_a,
            "iperf3",
            "-c",
            pair.addr_b,
            "-t",
            f"{seconds:.0f}",
            "--connect-timeout",
            "5000",
        )
        time.sleep(1.0)  # let TCP ramp up
    try:
        rtts, lost = _ping_rtts(pair.node_a, pair.addr_b, count)
    finally:
        if load_proc is not None:
            try:
                load_proc.wait(timeout=count * 0.01 + 30)
            except subprocess.TimeoutExpired:
                lab.stop_process(load_proc)
    if load_proc is not None and load_proc.returncode != 0:
        raise FigureError(f"load iperf3 failed: {lab.output(load_proc)[-300:]}")
    if not rtts:
        raise FigureError("no ping replies")
    return {
        "p50": percentile(rtts, 50),
        "p99": percentile(rtts, 99),
        "min": min(rtts),
        "max": max(rtts),
        "replies": len(rtts),
        "lost": lost,
    }


# -- memory per idle peer -------------------------------------------------------------


def _peer_conf(count: int, seed: int = 0) -> str:
    """``count`` [Peer] sections: random public keys, one /32 allowed IP each."""
    lines = []
    for i in range(count):
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        n = i + 1
        lines += [
            "[Peer]",
            f"PublicKey = {key}",
            f"AllowedIPs = 10.{64 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}/32",
            "",
        ]
    return "\n".join(lines)


def memory_run(impl: str, peers: int, settle: float = 2.0) -> dict[str, Any]:
    """RSS growth of a fresh daemon when ``peers`` idle peers with one allowed
    IP each are added with ``wg addconf``, per peer."""
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="wgpy-bench-mem-") as tmp:
        ns = lab.namespace("mem")
        node = lab.start(ns, impl, env={"LOG_LEVEL": "error", "PYTHONPATH": str(REPO_ROOT)})
        node.configure(51820, up=True)
        conf = Path(tmp) / "peers.conf"
        conf.write_text(_peer_conf(peers))
        time.sleep(settle)
        pids = [node.proc.pid]
        before = rss_bytes(pids)
        t0 = time.monotonic()
        node.wg("addconf", node.ifname, str(conf), timeout=600)
        add_seconds = time.monotonic() - t0
        time.sleep(settle)
        after = rss_bytes(pids)
        configured = len(node.wg("show", node.ifname, "peers").split())
        if configured != peers:
            raise FigureError(f"{impl} reports {configured} peers after adding {peers}")
        return {
            "namespaces": [ns],
            "bytes_per_peer": (after - before) / peers,
            "rss_before": before,
            "rss_after": after,
            "peers": peers,
            "add_seconds": add_seconds,
        }


# -- handshakes over the wire ----------------------------------------------------------


def _initiator(ns: str, job: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "bench.wire"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise FigureError(f"initiator failed: {done.stderr.strip()[-400:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    if result["verify_failed"]:
        raise FigureError(f"{result['verify_failed']} responses failed verification")
    return result


def _identity_list(keys: list[bytes], srcs: list[str]) -> list[list[str]]:
    """The job's identities: (private key base64, source address)."""
    return [[base64.b64encode(k).decode(), s] for k, s in zip(keys, srcs, strict=True)]


def hs_wire_run(
    impl: str, identities: int, seconds: float, kvm: KernelVM | None = None
) -> dict[str, Any]:
    """Complete handshakes per second a responder answers (see bench.wire)."""
    keys = [clamp(secrets.token_bytes(32)) for _ in range(identities)]
    pubs = [base64.b64encode(public_key(k)).decode() for k in keys]
    job: dict[str, Any] = {
        "seconds": seconds,
        "pool": pool_size(seconds),
        "verify_every": 8,
    }
    timeout = seconds + 60 + identities * job["pool"] * 0.002
    if impl == "kernel":
        if kvm is None:
            raise FigureError("kernel VM not running")
        return _hs_wire_kernel(kvm, keys, pubs, job, timeout)
    with Lab() as lab, tempfile.TemporaryDirectory(prefix="wgpy-bench-hs-") as tmp:
        ns_i = lab.namespace("hsi")
        ns_t = lab.namespace("hst")
        lab.veth(ns_i, ns_t, ["10.98.0.1/16"], ["10.98.0.2/16"])
        srcs = [f"10.98.{1 + i // 250}.{1 + i % 250}" for i in range(identities)]
        for s in srcs:
            lab.run(ns_i, "ip", "address", "add", f"{s}/16", "dev", "veth0")
        target = lab.start(ns_t, impl, env={"LOG_LEVEL": "error", "PYTHONPATH": str(REPO_ROOT)})
        target.configure(51820)
        conf = Path(tmp) / "peers.conf"
        conf.write_text(
            "\n".join(
                f"[Peer]\nPublicKey = {p}\nAllowedIPs = 10.77.{i >> 8}.{i & 255}/32\n"
                for i, p in enumerate(pubs)
            )
        )
        target.wg("addconf", target.ifname, str(conf))
        job["target"] = "10.98.0.2:51820"
        job["target_public"] = target.public_b64
        job["identities"] = [
            [base64.b64encode(k).decode(), s] for k, s in zip(keys, srcs, strict=True)
        ]
        cpu0 = cpu_seconds([target.proc.pid])
        result = _initiator(ns_i, job, timeout)
        result["responder_cpu_s"] = cpu_seconds([target.proc.pid]) - cpu0
        result["namespaces"] = [ns_i, ns_t]
        return result


def _hs_wire_kernel(
    kvm: KernelVM, keys: list[bytes], pubs: list[str], job: dict[str, Any], timeout: float
) -> dict[str, Any]:
    vm = kvm.vm
    ns = kvm.netns
    # Extra source addresses on the TAP, inside the VM's on-link /24.
    tap = _device_with_address(ns, vm.host_ip)
    srcs = [f"10.201.0.{100 + i}" for i in range(len(keys))]
    if len(keys) > 150:
        raise FigureError("at most 150 identities against the kernel VM")
    added: list[str] = []
    try:
        for s in srcs:
            subprocess.run(
                ["ip", "-n", ns, "address", "add", f"{s}/24", "dev", tap],
                check=True,
                capture_output=True,
            )
            added.append(s)
        for start in range(0, len(pubs), 20):
            chunk = pubs[start : start + 20]
            parts = " ".join(
                f"peer {p} allowed-ips 10.77.{(start + i) >> 8}.{(start + i) & 255}/32"
                for i, p in enumerate(chunk)
            )
            vm.exec(f"wg set wg0 {parts}")
        job["target"] = vm.endpoint
        job["target_public"] = vm.public_key
        job["identities"] = [
            [base64.b64encode(k).decode(), s] for k, s in zip(keys, srcs, strict=True)
        ]
        return _initiator(ns, job, timeout)
    finally:
        for start in range(0, len(pubs), 20):
            parts = " ".join(f"peer {p} remove" for p in pubs[start : start + 20])
            vm.exec(f"wg set wg0 {parts}", check=False)
        for s in added:
            subprocess.run(
                ["ip", "-n", ns, "address", "del", f"{s}/24", "dev", tap],
                check=False,
                capture_output=True,
            )


def _device_with_address(ns: str, addr: str) -> str:
    out = subprocess.run(
        ["ip", "-n", ns, "-o", "-4", "address", "show"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        f = line.split()
        if len(f) > 3 and f[3].split("/")[0] == addr:
            return f[1]
    raise FigureError(f"no device with {addr} in {ns}")


# -- profile -----------------------------------------------------------------------------


def _top_frames(raw: str, limit: int = 40) -> str:
    """A text summary of py-spy's collapsed stacks: self and total samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for f in set(frames):
            total[f] += n
    if not samples:
        return "no samples\n"
    out = [f"{samples} samples\n", "self%  total%  function (file:line)"]
    for frame, n in own.most_common(limit):
        out.append(f"{100 * n / samples:5.1f}  {100 * total[frame] / samples:6.1f}  {frame}")
    out.append("\nby total (inclusive) time:")
    for frame, n in total.most_common(limit):
        out.append(f"{100 * n / samples:6.1f}  {frame}")
    return "\n".join(out) + "\n"


def profile_run(lab: Lab, pair: Pair, seconds: float, out_dir: Path) -> list[str]:
    """One extra TCP A→B run with every wgpy end under py-spy (flamegraph SVG
    plus a text summary), or under pyinstrument if py-spy is missing.
    Returns the files written; the run's throughput is not used."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise FigureError("py-spy not found (pip install py-spy)")
    written: list[str] = []
    procs: list[tuple[subprocess.Popen[bytes], Path, str]] = []
    for side, node in pair.wgpy_nodes():
        stem = out_dir / f"profile-{pair.name}-{side}"
        for fmt, ext in (("flamegraph", "svg"), ("raw", "raw.txt")):
            path = stem.with_suffix(f".{ext}")
            argv = [
                spy,
                "record",
                "--pid",
                str(node.proc.pid),
                "--duration",
                str(max(1, int(seconds))),
                "--rate",
                "250",
                "--nonblocking",
                "--format",
                fmt,
                "--output",
                str(path),
            ]
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            procs.append((proc, path, fmt))
    time.sleep(1.0)  # py-spy attaches
    try:
        tcp_run(lab, pair, seconds, reverse=False)
    finally:
        for proc, path, fmt in procs:
            try:
                _, err = proc.communicate(timeout=seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if path.exists():
                written.append(str(path))
                if fmt == "raw":
                    summary = path.with_name(path.name.replace(".raw.txt", ".txt"))
                    summary.write_text(_top_frames(path.read_text()))
                    written.append(str(summary))
            elif err:
                written.append(f"(py-spy failed for {path.name}: {err.decode()[-200:]})")
    return written
