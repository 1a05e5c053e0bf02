"""Interop in network namespaces: wgpy <-> wgpy, wgpy <-> Debian's
wireguard-go (0.0.20220316) and wgpy <-> wireguard-go 0.0.20250522 (TUN
TSO/USO reads and UDP GSO/GRO, which the old build never produces), each
side as initiator, configured with the real ``wg`` (needs root).

Topology: namespaces A and B joined by a veth (outer 192.168.241.0/24 and
fd00:241::/64); tunnel addresses 10.66.0.0/24 and fd66::/64.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from wgpy.lab import (
    WIREGUARD_GO_MODERN,
    WIREGUARD_GO_MODERN_ENV,
    Lab,
    Node,
    find_wireguard_go_modern,
)
from wgpy.noise.primitives import clamp, public_key

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN"),
    pytest.mark.skipif(shutil.which("wg") is None, reason="needs wg (wireguard-tools)"),
]

OUT_A4, OUT_B4 = "192.168.241.1", "192.168.241.2"
OUT_A6, OUT_B6 = "fd00:241::1", "fd00:241::2"
IN_A4, IN_B4 = "10.66.0.1", "10.66.0.2"
IN_A6, IN_B6 = "fd66::1", "fd66::2"
PORT_A, PORT_B = 51820, 51821

PAIRS = ["wgpy-wgpy", "wgpy-wireguard-go", "wgpy-wireguard-go-modern"]


def _needs(impl: str) -> None:
    if impl == "wireguard-go" and shutil.which("wireguard-go") is None:
        pytest.skip("needs wireguard-go")
    if impl == "wireguard-go-modern" and find_wireguard_go_modern() is None:
        pytest.skip(
            f"needs {WIREGUARD_GO_MODERN} (../shared/tools/bin/ or ${WIREGUARD_GO_MODERN_ENV})"
        )


class Tunnel:
    """Two configured nodes; A always runs wgpy."""

    def __init__(
        self,
        lab: Lab,
        impl_b: str,
        *,
        outer6: bool = False,
        psk: bytes | None = None,
        env_a: dict[str, str] | None = None,
        env_b: dict[str, str] | None = None,
    ) -> None:
        _needs(impl_b)
        self.lab = lab
        self.ns_a, self.ns_b = lab.namespace("a"), lab.namespace("b")
        lab.veth(
            self.ns_a,
            self.ns_b,
            [f"{OUT_A4}/24", f"{OUT_A6}/64"],
            [f"{OUT_B4}/24", f"{OUT_B6}/64"],
        )
        self.a: Node = lab.start(self.ns_a, "wgpy", env=env_a)
        self.b: Node = lab.start(self.ns_b, impl_b, env=env_b)
        self.a.configure(PORT_A, address=[f"{IN_A4}/24", f"{IN_A6}/64"])
        self.b.configure(PORT_B, address=[f"{IN_B4}/24", f"{IN_B6}/64"])
        ep_a = f"[{OUT_A6}]:{PORT_A}" if outer6 else f"{OUT_A4}:{PORT_A}"
        ep_b = f"[{OUT_B6}]:{PORT_B}" if outer6 else f"{OUT_B4}:{PORT_B}"
        self.a.add_peer(self.b, allowed_ips=[f"{IN_B4}/32", f"{IN_B6}/128"], endpoint=ep_b, psk=psk)
        self.b.add_peer(self.a, allowed_ips=[f"{IN_A4}/32", f"{IN_A6}/128"], endpoint=ep_a, psk=psk)

    def node(self, name: str) -> Node:
        return self.a if name == "A" else self.b

    def addr_of_other(self, name: str, v6: bool = False) -> str:
        if name == "A":
            return IN_B6 if v6 else IN_B4
        return IN_A6 if v6 else IN_A4


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


def impl_of(pair: str) -> str:
    return pair.split("-", 1)[1]


@pytest.mark.parametrize("outer6", [False, True], ids=["outer-v4", "outer-v6"])
@pytest.mark.parametrize("initiator", ["A", "B"])
@pytest.mark.parametrize("pair", PAIRS)
def test_handshake_and_ping_both_families(
    lab: Lab, pair: str, initiator: str, outer6: bool
) -> None:
    t = Tunnel(lab, impl_of(pair), outer6=outer6)
    other = "B" if initiator == "A" else "A"
    first, second = t.node(initiator), t.node(other)
    assert first.ping(t.addr_of_other(initiator), timeout=10)
    assert second.ping(t.addr_of_other(other), count=3)
    assert first.ping(t.addr_of_other(initiator, v6=True), count=3)
    assert second.ping(t.addr_of_other(other, v6=True), count=3)
    (pa,), (pb,) = t.a.dump(), t.b.dump()
    want_b = f"[{OUT_B6}]:{PORT_B}" if outer6 else f"{OUT_B4}:{PORT_B}"
    want_a = f"[{OUT_A6}]:{PORT_A}" if outer6 else f"{OUT_A4}:{PORT_A}"
    assert pa.endpoint == want_b and pb.endpoint == want_a
    assert pa.latest_handshake > 0 and pb.latest_handshake > 0
    assert pa.rx_bytes > 0 and pa.tx_bytes > 0


@pytest.mark.parametrize("pair", PAIRS)
def test_preshared_key(lab: Lab, pair: str) -> None:
    t = Tunnel(lab, impl_of(pair), psk=os.urandom(32))
    assert t.a.ping(IN_B4, timeout=10)
    assert t.b.ping(IN_A4, count=2)
    assert t.a.dump()[0].preshared_key not in ("", "(none)")


@pytest.mark.parametrize("pair", PAIRS)
def test_wrong_preshared_key_never_connects(lab: Lab, pair: str) -> None:
    t = Tunnel(lab, impl_of(pair), psk=os.urandom(32))
    t.b.add_peer(t.a, allowed_ips=[f"{IN_A4}/32"], psk=os.urandom(32))
    assert not t.a.ping(IN_B4, timeout=3)
    assert t.a.dump()[0].latest_handshake == 0


@pytest.mark.parametrize("pair", PAIRS)
def test_full_mtu_and_fragmented_pings(lab: Lab, pair: str) -> None:
    t = Tunnel(lab, impl_of(pair))
    assert t.a.ping(IN_B4, timeout=10)
    # 1392 + 8 (ICMP) + 20 (IPv4) = 1420: exactly the tunnel MTU, DF set.
    done = lab.run(
        t.ns_a, "ping", "-c", "3", "-i", "0.2", "-M", "do", "-s", "1392", IN_B4, check=False
    )
    assert done.returncode == 0, done.stdout
    # One byte more cannot pass with DF.
    done = lab.run(
        t.ns_a, "ping", "-c", "1", "-M", "do", "-s", "1393", "-W", "2", IN_B4, check=False
    )
    assert done.returncode != 0
    # Large pings are fragmented by the inner IP layer and reassembled.
    assert t.a.ping(IN_B4, count=3, size=8000)
    assert t.b.ping(IN_A4, count=3, size=20000)
    assert t.a.ping(IN_B6, count=3, size=1352)  # 1352 + 8 + 40 = 1400
    assert t.b.ping(IN_A6, count=2, size=6000)


@pytest.mark.skipif(shutil.which("iperf3") is None, reason="needs iperf3")
@pytest.mark.parametrize("direction", ["A->B", "B->A"])
@pytest.mark.parametrize("pair", PAIRS)
def test_iperf3_tcp_5s_without_stall(lab: Lab, pair: str, direction: str) -> None:
    t = Tunnel(lab, impl_of(pair))
    assert t.a.ping(IN_B4, timeout=10)
    client, server_addr, server_ns = (
        (t.a, IN_B4, t.ns_b) if direction == "A->B" else (t.b, IN_A4, t.ns_a)
    )
    server = lab.popen(server_ns, "iperf3", "-s", "-1", "-B", server_addr)
    time.sleep(0.5)
    out = client.sh("iperf3", "-c", server_addr, "-t", "5", "-i", "1", "-J", timeout=60)
    lab.stop_process(server)
    data = json.loads(out)
    intervals = [iv["sum"]["bytes"] for iv in data["intervals"]]
    assert len(intervals) >= 5
    assert all(b > 0 for b in intervals), intervals  # no interval without progress
    assert data["end"]["sum_received"]["bytes"] > 1_000_000


@pytest.mark.parametrize("pair", PAIRS)
def test_roaming_updates_the_far_endpoint(lab: Lab, pair: str) -> None:
    t = Tunnel(lab, impl_of(pair))
    assert t.a.ping(IN_B4, timeout=10)
    # A moves: new outer address and a new listen port.
    # (Deleting a primary address also deletes its secondaries: del, then add.)
    lab.run(t.ns_a, "ip", "address", "del", f"{OUT_A4}/24", "dev", "veth0")
    lab.run(t.ns_a, "ip", "address", "add", "192.168.241.77/24", "dev", "veth0")
    t.a.wg("set", t.a.ifname, "listen-port", "40404")
    assert t.a.ping(IN_B4, count=2, timeout=5)
    assert t.b.dump()[0].endpoint == "192.168.241.77:40404"
    assert t.b.ping(IN_A4, count=2)  # and B now answers to the new address
    # B moves (the responder roams too).
    t.b.wg("set", t.b.ifname, "listen-port", "40405")
    assert t.b.ping(IN_A4, count=2)
    assert t.a.dump()[0].endpoint == f"{OUT_B4}:40405"


def _capture(lab: Lab, ns: str, seconds: float, bpf: str) -> list[int]:
    """UDP payload lengths seen on veth0 of ``ns`` for ``seconds``."""
    proc = lab.popen(ns, "tcpdump", "-n", "-l", "--immediate-mode", "-i", "veth0", bpf)
    time.sleep(seconds)
    lab.stop_process(proc)
    return [int(m) for m in re.findall(r"UDP, length (\d+)", lab.output(proc))]


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
@pytest.mark.parametrize("pair", PAIRS)
def test_persistent_keepalive_seen_on_the_wire(lab: Lab, pair: str) -> None:
    t = Tunnel(lab, impl_of(pair))
    assert t.a.ping(IN_B4, timeout=10)
    time.sleep(11)  # let passive keepalives finish
    t.a.add_peer(t.b, allowed_ips=[f"{IN_B4}/32"], keepalive=1)
    lengths = _capture(lab, t.ns_b, 4.5, f"udp and src host {OUT_A4}")
    assert lengths.count(32) >= 3, lengths


@pytest.mark.parametrize("pair", PAIRS)
def test_private_key_change_then_fresh_handshake(lab: Lab, pair: str) -> None:
    t = Tunnel(lab, impl_of(pair))
    assert t.a.ping(IN_B4, timeout=10)
    old = t.a.public
    t.a.set_private_key(os.urandom(32))
    t.b.remove_peer(old)
    t.b.add_peer(t.a, allowed_ips=[f"{IN_A4}/32", f"{IN_A6}/128"], endpoint=f"{OUT_A4}:{PORT_A}")
    start = time.time()
    assert t.a.ping(IN_B4, count=1, timeout=10)
    assert t.b.dump()[0].latest_handshake >= int(start)
    assert t.b.ping(IN_A4, count=2)


@pytest.mark.parametrize("pair", PAIRS)
def test_peer_removal_stops_traffic(lab: Lab, pair: str) -> None:
    t = Tunnel(lab, impl_of(pair))
    assert t.a.ping(IN_B4, timeout=10)
    t.a.remove_peer(t.b)
    assert t.a.dump() == []
    assert not t.a.ping(IN_B4, timeout=2)
    assert not t.b.ping(IN_A4, timeout=2)


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
@pytest.mark.parametrize("initiator_impl", ["wgpy", "wireguard-go", "wireguard-go-modern"])
def test_cookie_path_with_responder_forced_under_load(lab: Lab, initiator_impl: str) -> None:
    # A (wgpy) is the responder, forced under load by the documented switch;
    # B initiates.  B first gets a 64-byte cookie reply, retries with mac2
    # after REKEY_TIMEOUT, and the handshake completes.
    t = Tunnel(lab, initiator_impl, env_a={"WGPY_FORCE_UNDER_LOAD": "1"})
    proc = lab.popen(
        t.ns_b,
        "tcpdump",
        "-n",
        "-l",
        "--immediate-mode",
        "-i",
        "veth0",
        f"udp and src host {OUT_A4}",
    )
    time.sleep(0.5)
    assert t.b.ping(IN_A4, count=1, timeout=15)
    time.sleep(0.5)
    lab.stop_process(proc)
    lengths = [int(m) for m in re.findall(r"UDP, length (\d+)", lab.output(proc))]
    assert 64 in lengths and 92 in lengths
    assert lengths.index(64) < lengths.index(92)


@pytest.mark.parametrize("pair", PAIRS)
def test_wg_show_reports_handshake_and_growing_counters(lab: Lab, pair: str) -> None:
    t = Tunnel(lab, impl_of(pair))
    assert t.a.ping(IN_B4, timeout=10)
    before = t.a.dump()[0]
    assert t.a.ping(IN_B4, count=5, size=1000)
    after = t.a.dump()[0]
    assert after.rx_bytes > before.rx_bytes + 5000 and after.tx_bytes > before.tx_bytes + 5000
    assert abs(time.time() - after.latest_handshake) < 30
    text = t.a.wg("show", t.a.ifname)
    for needle in (
        "public key:",
        "listening port: 51820",
        "endpoint:",
        "latest handshake:",
        "transfer:",
    ):
        assert needle in text


# -- the daemon convention ---------------------------------------------------------


def _wait(pred: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_daemonizes_and_exits_when_interface_deleted(lab: Lab) -> None:
    ns = lab.namespace("d")
    name = f"wgd{lab.tag}"
    sock = f"/var/run/wireguard/{name}.sock"
    lab.sockets.append(sock)
    env = {k: v for k, v in os.environ.items() if k != "WG_PROCESS_FOREGROUND"}
    done = subprocess.run(
        ["ip", "netns", "exec", ns, "wgpy-userspace", name],
        env=env,
        timeout=30,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert os.path.exists(sock)  # the parent returned only once UAPI was ready
    lab.run(ns, "wg", "show", name)
    lab.run(ns, "ip", "link", "del", name)
    assert _wait(lambda: not os.path.exists(sock), 10), "daemon did not exit on ip link del"


def test_sigterm_in_foreground_exits_cleanly(lab: Lab) -> None:
    ns = lab.namespace("f")
    node = lab.start(ns, "wgpy")
    sock = f"/var/run/wireguard/{node.ifname}.sock"
    assert node.stop() == 0
    assert not os.path.exists(sock)
    done = lab.run(ns, "ip", "link", "show", node.ifname, check=False)
    assert done.returncode != 0  # the TUN is gone with the process


def test_daemon_exits_when_uapi_socket_removed(lab: Lab) -> None:
    ns = lab.namespace("s")
    node = lab.start(ns, "wgpy")
    os.unlink(f"/var/run/wireguard/{node.ifname}.sock")
    assert _wait(lambda: not node.alive(), 10)


def test_bad_interface_name_fails_in_the_parent(lab: Lab) -> None:
    done = subprocess.run(["wgpy-userspace", "x" * 20], capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "x" * 20 in done.stderr


def test_wg_quick_with_wgpy_userspace(lab: Lab, tmp_path: object) -> None:
    ns_a, ns_b = lab.namespace("qa"), lab.namespace("qb")
    lab.veth(ns_a, ns_b, [f"{OUT_A4}/24"], [f"{OUT_B4}/24"])
    b = lab.start(ns_b, "wgpy")
    b.configure(PORT_B, address=[f"{IN_B4}/24"])
    name = f"wgq{lab.tag}"
    priv = clamp(os.urandom(32))
    conf = os.path.join(str(tmp_path), f"{name}.conf")
    with open(conf, "w") as fh:
        fh.write(
            f"[Interface]\nPrivateKey = {base64.b64encode(priv).decode()}\n"
            f"Address = {IN_A4}/24\nListenPort = {PORT_A}\n\n"
            f"[Peer]\nPublicKey = {b.public_b64}\nAllowedIPs = {IN_B4}/32\n"
            f"Endpoint = {OUT_B4}:{PORT_B}\n"
        )
    b.add_peer(public_key(priv), allowed_ips=[f"{IN_A4}/32"])
    lab.sockets.append(f"/var/run/wireguard/{name}.sock")
    env = dict(os.environ, WG_QUICK_USERSPACE_IMPLEMENTATION="wgpy-userspace")
    env.pop("WG_PROCESS_FOREGROUND", None)
    up = subprocess.run(
        ["ip", "netns", "exec", ns_a, "wg-quick", "up", conf],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 0, up.stderr
    try:
        assert lab.run(ns_a, "ping", "-c", "2", "-W", "5", IN_B4, check=False).returncode == 0
        assert "latest handshake" in lab.run(ns_a, "wg", "show", name).stdout
    finally:
        down = subprocess.run(
            ["ip", "netns", "exec", ns_a, "wg-quick", "down", conf],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert down.returncode == 0, down.stderr
    assert _wait(lambda: not os.path.exists(f"/var/run/wireguard/{name}.sock"), 10)


@pytest.mark.skipif(shutil.which("tcpdump") is None, reason="needs tcpdump")
@pytest.mark.skipif(shutil.which("wireguard-go") is None, reason="needs wireguard-go")
def test_live_wireguard_go_capture_replays(tmp_path: object) -> None:
    # Capture a fresh wgpy <-> wireguard-go handshake and replay it against the
    # sans-IO engine, as the committed vector in vectors/interop/ is replayed.
    import sys as _sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = Path(str(tmp_path)) / "capture.json"
    done = subprocess.run(
        [_sys.executable, str(root / "vectors" / "capture_wireguard_go.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    from test_interop_transcript import test_replay_wireguard_go_capture

    test_replay_wireguard_go_capture(out)


@pytest.mark.parametrize("pair", PAIRS)
def test_large_inner_mtu_fragments_the_outer_datagrams(lab: Lab, pair: str) -> None:
    # netns.sh repeats its tests with a ~34 KB tunnel MTU: every inner packet
    # becomes an outer datagram that IP fragments on the 1500-byte veth.
    t = Tunnel(lab, impl_of(pair))
    for node in (t.a, t.b):
        node.sh("ip", "link", "set", node.ifname, "mtu", "34000")
    assert t.a.ping(IN_B4, timeout=10)
    for node, dst in ((t.a, IN_B4), (t.b, IN_A4)):
        done = lab.run(
            node.ns,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-M",
            "do",
            "-s",
            "33000",
            "-W",
            "3",
            dst,
            check=False,
        )
        assert done.returncode == 0, done.stdout
    assert t.a.ping(IN_B6, count=2, size=32000)


@pytest.mark.parametrize("initiator", ["wgpy", "wireguard-go"])
def test_rekey_across_120_seconds_with_wireguard_go(lab: Lab, initiator: str) -> None:
    # The initiator of a session starts a new one when it sends on a keypair
    # older than REKEY_AFTER_TIME; traffic must keep flowing across it.
    t = Tunnel(lab, "wireguard-go")
    first, other = (t.a, IN_B4) if initiator == "wgpy" else (t.b, IN_A4)
    assert first.ping(other, timeout=10)
    start = {n.impl + n.ifname: n.dump()[0].latest_handshake for n in (t.a, t.b)}
    deadline = time.monotonic() + 135
    while time.monotonic() < deadline:
        assert first.ping(other, count=1, timeout=5)
        time.sleep(4)
    after = {n.impl + n.ifname: n.dump()[0].latest_handshake for n in (t.a, t.b)}
    assert all(after[k] >= start[k] + 110 for k in start), (start, after)
    assert t.a.ping(IN_B4, count=3) and t.b.ping(IN_A4, count=3)
