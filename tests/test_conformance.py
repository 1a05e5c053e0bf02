"""``wgpy conformance`` against three implementations, and the runner's parts.

* wgpy (the daemon in a namespace): every default scenario must PASS; a FAIL
  here is a wgpy bug.  A second run with ``WGPY_FORCE_UNDER_LOAD=1`` checks
  the cookie path in every role.
* Debian's wireguard-go: the scenarios it is known to pass must PASS; the
  others are reported (docs/conformance.md records the differences).
* The Linux kernel module in a qemu VM (tests/kernel_peer.py): same, skipped
  with the reason when the VM cannot boot here.

Set ``WGPY_CONFORMANCE_OUT=DIR`` to keep each run's JSON and JUnit files.
The runs need root (namespaces); the unit tests at the top do not.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wgpy.conformance import (
    LOW_ORDER_POINTS,
    SCENARIOS,
    ControlError,
    NtControl,
    PeerSpec,
    Result,
    RunnerConfig,
    Status,
    main,
    run,
    select,
)
from wgpy.conformance.report import format_table, to_json, to_junit, to_markdown
from wgpy.inet import echo_packet, inner_length, parse_echo
from wgpy.lab import Lab, Node
from wgpy.noise.primitives import CryptoError, clamp, dh, public_key

ROOT = Path(__file__).resolve().parent.parent

DEFAULT = [name for name, sc in SCENARIOS.items() if not sc.long]

#: What each reference implementation passed here (see docs/conformance.md).
KNOWN_PASS = {
    # wireguard-go checks the 20 ms flood limit and records the consumption in
    # two separate locked sections, so two initiations handled in parallel can
    # both pass (1 run in 25 here).
    "wireguard-go": set(DEFAULT) - {"initiation-rate"},
    # The kernel in the qemu TCG VM: its handshake worker runs emulated, so
    # 50,000 junk initiations/s fill its queue past the 1/8 mark and it goes
    # under load (a cookie reply to the genuine initiation); junk-flood is
    # reported, not asserted (docs/conformance.md).
    # uapi: the kernel has no UAPI socket (its control is `wg` in the VM), so
    # the scenario reports SKIP there.
    "kernel": set(DEFAULT) - {"junk-flood", "uapi"},
}


# -- the parts (no root) --------------------------------------------------------------


def test_default_selection_excludes_long_scenarios() -> None:
    names = [sc.name for sc in select()]
    assert names == DEFAULT
    assert "rekey" not in names and "rekey" in [sc.name for sc in select(long=True)]
    assert [sc.name for sc in select(["rekey", "garbage"])] == ["rekey", "garbage"]
    with pytest.raises(ValueError, match="nope"):
        select(["garbage", "nope"])


def test_every_scenario_is_documented() -> None:
    for sc in SCENARIOS.values():
        assert len(sc.description) > 40, sc.name


def test_low_order_points_give_zero_dh() -> None:
    assert len(set(LOW_ORDER_POINTS)) == 7
    for point in LOW_ORDER_POINTS:
        with pytest.raises(CryptoError):
            dh(clamp(os.urandom(32)), point)


def _ones_complement_ok(data: bytes) -> bool:
    if len(data) % 2:
        data += b"\x00"
    total = sum(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_echo_packets_have_valid_checksums_and_parse_back() -> None:
    v4 = echo_packet("10.1.0.1", "10.1.0.2", 0x1234, 7, b"abcde")
    assert len(v4) == 20 + 8 + 5 and inner_length(v4) == len(v4)
    assert _ones_complement_ok(v4[:20]) and _ones_complement_ok(v4[20:])
    assert v4[6] & 0x40  # DF
    e = parse_echo(v4 + bytes(11))  # tunnel padding is ignored
    assert e is not None and not e.reply and (e.ident, e.seq, e.payload) == (0x1234, 7, b"abcde")
    assert (e.src, e.dst, e.length) == ("10.1.0.1", "10.1.0.2", 33)
    v6 = echo_packet("fd00::1", "fd00::2", 1, 2, b"xyz", reply=True)
    pseudo = (
        bytes.fromhex("fd00" + "00" * 13 + "01")
        + bytes.fromhex("fd00" + "00" * 13 + "02")
        + (len(v6) - 40).to_bytes(4, "big")
        + bytes([0, 0, 0, 58])
    )
    assert _ones_complement_ok(pseudo + v6[40:])
    e6 = parse_echo(v6)
    assert e6 is not None and e6.reply and e6.src == "fd00::1" and e6.payload == b"xyz"
    assert parse_echo(v4[:25]) is None  # claims more than it has
    assert parse_echo(b"\x45" + bytes(30)) is None


def _results() -> list[Result]:
    return [
        Result("a", Status.PASS, "fine", "first", ["+0.001s -> x"], 0.5),
        Result("b", Status.FAIL, "the target answered", "second", ["+0.002s <- y"], 1.0),
        Result("c", Status.SKIP, "needs setup", "third", [], 0.0),
        Result("d", Status.ERROR, "runner error", "fourth", [], 0.1),
        Result("e", Status.PARTIAL, "ok (not checked: x)", "fifth", [], 0.2, ["x"]),
    ]


def test_reports_json_junit_and_table() -> None:
    meta = {"date": "2026-01-01T00:00:00+00:00", "target": {"label": "t", "endpoint": "x:1"}}
    doc = json.loads(json.dumps(to_json(_results(), meta)))
    assert doc["counts"] == {"PASS": 1, "FAIL": 1, "SKIP": 1, "ERROR": 1, "PARTIAL": 1}
    assert [r["status"] for r in doc["results"]] == ["PASS", "FAIL", "SKIP", "ERROR", "PARTIAL"]
    assert doc["results"][4]["unchecked"] == ["x"]
    suite = ET.fromstring(ET.tostring(to_junit(_results(), meta))).find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["b"].find("failure") is not None
    assert cases["c"].find("skipped") is not None
    assert cases["d"].find("error") is not None
    assert "<- y" in (cases["b"].findtext("system-out") or "")
    table = format_table(_results())
    assert "1 PASS, 1 PARTIAL, 1 FAIL, 1 SKIP, 1 ERROR" in table
    assert cases["e"].find("failure") is None and cases["e"].find("skipped") is None
    md = to_markdown(_results(), meta).splitlines()
    assert (
        md[2].startswith("| scenario |") and md[5] == "| b | FAIL | 1.0 s | the target answered |"
    )


def test_cli_list_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--list"]) == 0
    assert "cookie-under-load" in capsys.readouterr().out
    assert main([]) == 2
    assert main(["--target-endpoint", "192.0.2.1:1", "--scenario", "nope"]) == 2
    assert main(["--target-endpoint", "192.0.2.1:1", "--target-public-key", "short"]) == 2
    capsys.readouterr()
    assert main(["--target-endpoint", "192.0.2.1:1", "--psk", "/nonexistent/psk"]) == 2
    assert "--psk /nonexistent/psk" in capsys.readouterr().err
    done = subprocess.run(
        [sys.executable, "-m", "wgpy.cli", "conformance", "--list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0 and "handshake-responder" in done.stdout


def test_nt_control_is_a_clean_hook() -> None:
    with pytest.raises(ControlError, match=r"wireguard\.h API"):
        NtControl("wg0", api=object())

    class FakeApi:
        def __init__(self) -> None:
            self.buffers: list[bytes] = []

        def WireGuardOpenAdapter(self, name: str) -> object:
            return object()

        def WireGuardSetConfiguration(self, handle: object, buf: bytes, size: int) -> bool:
            self.buffers.append(bytes(buf[:size]))
            return True

    from wgpy.nt import abi

    api = FakeApi()
    nt = NtControl("wg0", api=api)
    key = os.urandom(32)
    nt.set_peer(PeerSpec(key, ["10.9.0.1/32"], "192.0.2.1:5", persistent_keepalive=3), fresh=True)
    cfg = abi.parse_configuration(api.buffers[0], len(api.buffers[0]))
    remove, add = cfg.peers
    assert remove.flags & abi.PeerFlag.REMOVE and remove.public_key == key
    assert add.endpoint == ("192.0.2.1", 5) and add.persistent_keepalive == 3
    assert add.flags & abi.PeerFlag.REPLACE_ALLOWED_IPS
    assert [(a.address, a.cidr) for a in add.allowed_ips] == [("10.9.0.1", 32)]
    nt.set_keepalive(key, 0)
    (upd,) = abi.parse_configuration(api.buffers[1], len(api.buffers[1])).peers
    assert upd.flags & abi.PeerFlag.UPDATE_ONLY and upd.persistent_keepalive == 0


def test_runner_needs_the_target_key() -> None:
    with pytest.raises(ValueError, match="public key"):
        run(RunnerConfig(target_endpoint="192.0.2.1:9"), select(["garbage"]))


# -- runs against real implementations (root, namespaces) -------------------------------

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and TUN")
wg_tools = pytest.mark.skipif(shutil.which("wg") is None, reason="needs wg (wireguard-tools)")

OUT_R, OUT_R2, OUT_T = "192.168.79.1", "192.168.79.11", "192.168.79.2"
IN_R, IN_T = "10.79.0.1", "10.79.0.2"
PORT = 51820


@pytest.fixture
def lab() -> Iterator[Lab]:
    with Lab() as lab:
        yield lab


def _keep(label: str, json_path: Path, junit_path: Path | None) -> None:
    out = os.environ.get("WGPY_CONFORMANCE_OUT")
    if out:
        os.makedirs(out, exist_ok=True)
        shutil.copy(json_path, os.path.join(out, f"{label}.json"))
        if junit_path is not None and junit_path.exists():
            shutil.copy(junit_path, os.path.join(out, f"{label}.xml"))


def _target(lab: Lab, impl: str, env: dict[str, str] | None = None) -> tuple[str, Node]:
    """Namespaces R (runner) and T (``impl``, configured with its tunnel IP)."""
    if shutil.which(impl if impl != "wgpy" else "wg") is None:
        pytest.skip(f"needs {impl}")
    ns_r, ns_t = lab.namespace("cr"), lab.namespace("ct")
    lab.veth(ns_r, ns_t, [f"{OUT_R}/24", f"{OUT_R2}/24"], [f"{OUT_T}/24"])
    node = lab.start(ns_t, impl, env=env)
    node.configure(PORT, address=[f"{IN_T}/24"], mtu=1420)
    return ns_r, node


def _cli(
    lab: Lab, ns_r: str, node: Node, tmp_path: Path, label: str, args: list[str]
) -> tuple[int, dict[str, Any], str]:
    """Run ``wgpy conformance`` (through the ``wgpy`` CLI) in namespace R."""
    json_path, junit_path = tmp_path / f"{label}.json", tmp_path / f"{label}.xml"
    argv = [
        *("ip", "netns", "exec", ns_r, sys.executable, "-m", "wgpy.cli", "conformance"),
        *("--target-endpoint", f"{OUT_T}:{PORT}", "--roam-bind", OUT_R2),
        *("--target-tunnel-ip", IN_T, "--our-tunnel-ip", IN_R),
        *("--label", label, "--json", str(json_path), "--junit", str(junit_path), *args),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert json_path.exists(), done.stdout + done.stderr
    data = json.loads(json_path.read_text())
    _keep(label, json_path, junit_path)
    assert node.alive(), f"{node.impl} died during the run:\n{lab.output(node.proc)[-3000:]}"
    # The table on the terminal names every scenario that ran.
    for r in data["results"]:
        assert r["name"] in done.stdout
    return done.returncode, data, done.stdout


def _run_cli(
    lab: Lab,
    impl: str,
    tmp_path: Path,
    label: str,
    *,
    env: dict[str, str] | None = None,
    scenarios: list[str] | None = None,
) -> tuple[int, dict[str, Any], str]:
    """``impl`` in T, set up by the runner over UAPI."""
    ns_r, node = _target(lab, impl, env)
    args = ["--setup-uapi", node.ifname]
    for name in scenarios or []:
        args += ["--scenario", name]
    return _cli(lab, ns_r, node, tmp_path, label, args)


def _statuses(data: dict[str, Any]) -> dict[str, str]:
    return {r["name"]: r["status"] for r in data["results"]}


def _explain(data: dict[str, Any], names: set[str]) -> str:
    lines = []
    for r in data["results"]:
        if r["name"] in names:
            lines.append(f"{r['name']}: {r['status']}: {r['summary']}")
            lines += [f"    {d}" for d in r["details"][-40:]]
    return "\n".join(lines)


@root
@wg_tools
def test_wgpy_passes_every_default_scenario(lab: Lab, tmp_path: Path) -> None:
    rc, data, _ = _run_cli(lab, "wgpy", tmp_path, "wgpy")
    st = _statuses(data)
    assert list(st) == DEFAULT
    bad = {n for n, s in st.items() if s != "PASS"}
    assert not bad, "wgpy is not conformant:\n" + _explain(data, bad)
    assert rc == 0
    # The JUnit file agrees.
    suite = ET.parse(tmp_path / "wgpy.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == str(len(DEFAULT))
    assert suite.get("failures") == "0" and suite.get("errors") == "0"


FORCED = [
    "handshake-initiator",
    "handshake-responder",
    "handshake-psk",
    "transport",
    "replay-initiation",
    "stale-timestamp",
    "initiation-rate",
    "reserved-bytes",
    "mac1-wrong",
    "low-order",
    "cookie-under-load",
    "cookie-initiator",
]


@root
@wg_tools
def test_wgpy_under_forced_load_passes_with_cookies(lab: Lab, tmp_path: Path) -> None:
    env = {"WGPY_FORCE_UNDER_LOAD": "1"}
    rc, data, _ = _run_cli(lab, "wgpy", tmp_path, "wgpy-forced-load", env=env, scenarios=FORCED)
    st = _statuses(data)
    bad = {n for n, s in st.items() if s != "PASS"}
    assert not bad, "wgpy under forced load:\n" + _explain(data, bad)
    assert rc == 0
    # Under forced load every handshake went through a cookie reply first.
    details = "\n".join(d for r in data["results"] for d in r["details"])
    assert "cookie stored: the target is under load" in details


@root
@wg_tools
def test_wireguard_go(lab: Lab, tmp_path: Path) -> None:
    rc, data, out = _run_cli(lab, "wireguard-go", tmp_path, "wireguard-go")
    st = _statuses(data)
    print(out)  # the table, for the log
    bad = {n for n in KNOWN_PASS["wireguard-go"] if st.get(n) != "PASS"}
    assert not bad, "wireguard-go regressed:\n" + _explain(data, bad)
    assert rc == (0 if all(s in ("PASS", "SKIP") for s in st.values()) else 1)


@root
@wg_tools
def test_wgpy_configured_by_hand_without_setup_mode(lab: Lab, tmp_path: Path) -> None:
    # No control: the runner's key and PSK come from files, the target was
    # configured by someone else (here: wg set), the responder role is
    # triggered by the target's new-handshake timer, setup-only parts skip.
    ns_r, node = _target(lab, "wgpy")
    ours, psk = clamp(os.urandom(32)), os.urandom(32)
    node.add_peer(public_key(ours), allowed_ips=[f"{IN_R}/32"], psk=psk)
    names = ["handshake-responder", "handshake-psk", "roaming", "keepalive-persistent", "low-order"]
    args = [
        *("--target-public-key", node.public_b64, "--listen", OUT_R),
        *("--our-private-key", lab.key_file(ours), "--psk", lab.key_file(psk)),
        *(arg for name in names for arg in ("--scenario", name)),
    ]
    rc, data, _ = _cli(lab, ns_r, node, tmp_path, "wgpy-by-hand", args)
    st = _statuses(data)
    assert st == {
        "handshake-responder": "PASS",
        "handshake-psk": "PASS",
        "roaming": "PASS",
        "keepalive-persistent": "SKIP",
        # The low-order peer keys need a setup mode: a pass with that check
        # named as not made, not a PASS.
        "low-order": "PARTIAL",
    }, _explain(data, set(names))
    assert rc == 0
    by_name = {r["name"]: r for r in data["results"]}
    assert "new-handshake timer" in by_name["handshake-responder"]["summary"]
    assert data["runner"]["psk"] is True and data["target"]["control"] is None
    assert by_name["low-order"]["unchecked"] == [
        "peers configured with low-order keys (needs a setup mode)"
    ]


@root
@wg_tools
def test_wgpy_over_ipv6_outside_and_inside(lab: Lab, tmp_path: Path) -> None:
    ns_r, ns_t = lab.namespace("cr6"), lab.namespace("ct6")
    lab.veth(ns_r, ns_t, ["fd00:79::1/64", "fd00:79::11/64"], ["fd00:79::2/64"])
    node = lab.start(ns_t, "wgpy")
    node.configure(PORT, address=["fd79::2/64"], mtu=1420)
    names = ["handshake-responder", "transport", "padding-mtu", "roaming", "replay-transport"]
    json_path = tmp_path / "v6.json"
    argv = [
        *("ip", "netns", "exec", ns_r, sys.executable, "-m", "wgpy.cli", "conformance"),
        *("--target-endpoint", f"[fd00:79::2]:{PORT}", "--setup-uapi", node.ifname),
        *("--target-tunnel-ip", "fd79::2", "--our-tunnel-ip", "fd79::1"),
        *("--roam-bind", "fd00:79::11", "--json", str(json_path)),
        *(a for n in names for a in ("--scenario", n)),
    ]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    data = json.loads(json_path.read_text())
    st = _statuses(data)
    assert st == dict.fromkeys(names, "PASS"), _explain(data, set(names))
    assert done.returncode == 0
    # IPv6 echo: 40-byte header + 8 ICMPv6, so the smallest size tried is 48.
    assert "from 48 to the MTU" in data["results"][2]["summary"]


@root
@wg_tools
def test_wgpy_set_up_through_the_wireguard_h_api(lab: Lab, tmp_path: Path) -> None:
    # --setup-nt: WireGuardOpenAdapter finds the UAPI interface by name; the
    # target's key and the roaming endpoint are read with GetConfiguration.
    ns_r, node = _target(lab, "wgpy")
    names = ["handshake-initiator", "roaming", "keepalive-persistent"]
    args = ["--setup-nt", node.ifname, *(a for n in names for a in ("--scenario", n))]
    rc, data, _ = _cli(lab, ns_r, node, tmp_path, "wgpy-nt", args)
    st = _statuses(data)
    assert st == dict.fromkeys(names, "PASS"), _explain(data, set(names))
    assert rc == 0 and data["target"]["control"] == f"nt:{node.ifname}"
    assert data["target"]["public_key"] == node.public_b64
    assert "endpoint read back" in data["results"][1]["summary"]
    assert node.dump() == []  # the runner removed its peer at the end


# -- the kernel module in a VM ---------------------------------------------------------


class KernelVmControl:
    """:class:`wgpy.conformance.TargetControl` for the kernel peer VM: ``wg``
    inside the VM through its control shell."""

    def __init__(self, vm: Any) -> None:
        self.vm = vm
        self.name = f"kernel-vm:wg0 ({vm.kernel_release or 'qemu'})"

    def target_public_key(self) -> bytes | None:
        return base64.b64decode(self.vm.public_key)

    @staticmethod
    def _b64(key: bytes) -> str:
        return base64.b64encode(key).decode()

    def set_peer(self, spec: PeerSpec, *, fresh: bool) -> None:
        key = self._b64(spec.public_key)
        cmds = ["umask 077"]
        if fresh:
            cmds.append(f"wg set wg0 peer {key} remove")
        psk = self._b64(spec.preshared_key) if spec.preshared_key else ""
        cmds.append(f"echo '{psk}' > /tmp/conf-psk" if psk else ": > /tmp/conf-psk")
        parts = [f"wg set wg0 peer {key} preshared-key /tmp/conf-psk"]
        parts.append(f"persistent-keepalive {int(spec.persistent_keepalive)}")
        if spec.allowed_ips:
            parts.append(f"allowed-ips {','.join(spec.allowed_ips)}")
        if spec.endpoint:
            parts.append(f"endpoint {spec.endpoint}")
        try:
            self.vm.exec(" && ".join([*cmds, " ".join(parts)]))
        except Exception as exc:
            raise ControlError(str(exc)) from exc

    def set_keepalive(self, public_key: bytes, interval: int) -> None:
        key = self._b64(public_key)
        self.vm.exec(f"wg set wg0 peer {key} persistent-keepalive {int(interval)}")

    def remove_peer(self, public_key: bytes) -> None:
        self.vm.exec(f"wg set wg0 peer {self._b64(public_key)} remove")

    def peer_endpoint(self, public_key: bytes) -> str | None:
        peer = self.vm.wg_show().peers.get(self._b64(public_key))
        return peer.endpoint if peer is not None else None


@root
@wg_tools
def test_kernel_module(tmp_path: Path) -> None:
    import netns as nsh
    from kernel_peer import genkey, kernel_peer_or_skip

    missing = nsh.have_netns_support()
    if missing:
        pytest.skip(f"needs {missing}")
    vm_priv, _ = genkey()
    _, placeholder = genkey()
    with kernel_peer_or_skip(
        private_key=vm_priv,
        peer_public_key=placeholder,
        peer_allowed_ips=["10.202.0.250/32"],
        wg_addrs=("10.202.0.2/24",),
    ) as vm:
        vm.exec(f"wg set wg0 peer {placeholder} remove")

        def factory(family: int) -> socket.socket:
            return nsh.call_in_ns(vm.netns, socket.socket, family, socket.SOCK_DGRAM)

        config = RunnerConfig(
            target_endpoint=vm.endpoint,
            target_tunnel_ip=vm.wg_addr,
            our_tunnel_ip="10.202.0.1",
            target_mtu=1420,
            label="kernel",
        )
        lines: list[str] = []
        results, meta = run(
            config,
            select(),
            KernelVmControl(vm),
            socket_factory=factory,
            progress=lambda r: lines.append(f"{r.name}: {r.status.value}: {r.summary}"),
        )
    meta["target"]["kernel"] = vm.kernel_release
    json_path = tmp_path / "kernel.json"
    json_path.write_text(json.dumps(to_json(results, meta), indent=2))
    ET.ElementTree(to_junit(results, meta)).write(tmp_path / "kernel.xml")
    _keep("kernel", json_path, tmp_path / "kernel.xml")
    print("\n".join(lines))
    data = json.loads(json_path.read_text())
    st = _statuses(data)
    bad = {n for n in KNOWN_PASS["kernel"] if st.get(n) != "PASS"}
    assert not bad, "the kernel module regressed:\n" + _explain(data, bad)


def test_parse_echo_never_raises_on_arbitrary_bytes() -> None:
    from hypothesis import given
    from hypothesis import strategies as st

    @given(st.binary(max_size=120))
    def check(data: bytes) -> None:
        parse_echo(data)
        inner_length(data)
        parse_echo(b"\x45" + data)
        parse_echo(b"\x60" + data)

    check()
