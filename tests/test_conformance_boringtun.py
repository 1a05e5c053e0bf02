"""``wgpy conformance`` against boringtun, from the two PyPI wheels that embed it.

Each wheel runs in its own virtual environment (wgpy.conformance.targets),
inside a namespace, configured by its own script: no setup mode, so every
verdict comes from the wire.  The test asserts what docs/conformance.md says:
the scenarios boringtun passes PASS, and its known deviations FAIL, with the
reason the runner gives.  A scenario that changes verdict here is either a
boringtun/wrapper change or a runner regression; both need the docs updated.

Needs root (namespaces) and network access for pip the first time.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from wgpy.conformance.targets import TARGETS, TargetError, command, udp_ports, venv_python
from wgpy.lab import Lab
from wgpy.noise.primitives import clamp, public_key

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")

OUT_R, OUT_R2, OUT_T = "192.168.81.1", "192.168.81.11", "192.168.81.2"
IN_R, IN_T = "10.81.0.1", "10.81.0.2"
PORT, RUNNER_PORT = 51820, 51821

#: The scenarios run here (the rest need a setup mode or take long).
SCENARIOS = [
    "handshake-initiator",
    "transport",
    "padding-mtu",
    "replay-transport",
    "replay-initiation",
    "stale-timestamp",
    "initiation-rate",
    "mac1-wrong",
    "reserved-bytes",
    "low-order",
    "roaming",
    "message-limit",
    "retransmit-jitter",
]

#: What boringtun itself does, in both wheels (docs/conformance.md).
BORINGTUN_PASS = {
    "handshake-initiator",
    "transport",
    "replay-transport",
    "replay-initiation",
    "stale-timestamp",
    "mac1-wrong",
    "reserved-bytes",
}
BORINGTUN_FAIL = {
    "padding-mtu": "padded to",  # session.rs: "TODO: spec requires padding"
    "initiation-rate": "no per-peer flood limit",
    "low-order": "low-order ephemeral were answered",
    "message-limit": "was delivered",  # session.rs: no REJECT_AFTER_MESSAGES on receive
}
#: What each wrapper adds.
WRAPPER_FAIL = {
    # mitmproxy_rs sets the peer's endpoint before the packet authenticates.
    "mitmproxy": {
        "roaming": "moved the target's endpoint",
        "retransmit-jitter": "never sent a handshake initiation",
    },
    # wireguard-requests' socket is connected to the runner's main address:
    # the roaming socket's datagrams never reach boringtun.
    # boringtun's own timers retry without jitter (timers.rs); only this
    # wrapper runs them, mitmproxy_rs never initiates at all.
    "wireguard-requests": {
        "roaming": "no echo reply to the echo sent from the second socket",
        "retransmit-jitter": "no jitter",
    },
}


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _start(lab: Lab, ns: str, name: str, target_priv: bytes, our_pub: bytes) -> tuple[int, Any]:
    """Start target ``name`` in ``ns``; returns (its UDP port, the process)."""
    if name == "mitmproxy":
        args = [OUT_T, str(PORT), _b64(target_priv), _b64(our_pub)]
    else:
        args = [_b64(target_priv), f"{IN_T}/24", str(PORT), _b64(our_pub)]
        args += [f"{OUT_R}:{RUNNER_PORT}", IN_R]
    proc = lab.popen(ns, *command(name, *args), env={**os.environ, "RUST_LOG": "error"})
    deadline = time.monotonic() + 30
    while "ready" not in lab.output(proc):
        assert proc.poll() is None, lab.output(proc)
        assert time.monotonic() < deadline, f"{name} did not start: {lab.output(proc)}"
        time.sleep(0.1)
    if name == "mitmproxy":
        return PORT, proc
    ports = udp_ports(proc.pid)
    assert len(ports) == 1, ports  # the wrapper binds one random port
    return ports[0], proc


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_boringtun_deviations_are_found(name: str, tmp_path: Path) -> None:
    try:
        venv_python(name)
    except TargetError as exc:  # pragma: no cover - a fresh machine without PyPI
        pytest.fail(f"cannot install {TARGETS[name].requirement}: {exc}")
    target_priv, our_priv = clamp(os.urandom(32)), clamp(os.urandom(32))
    with Lab() as lab:
        ns_r, ns_t = lab.namespace("btr"), lab.namespace("btt")
        lab.veth(ns_r, ns_t, [f"{OUT_R}/24", f"{OUT_R2}/24"], [f"{OUT_T}/24"])
        port, proc = _start(lab, ns_t, name, target_priv, public_key(our_priv))
        out = tmp_path / "r.json"
        argv = [
            *("ip", "netns", "exec", ns_r, sys.executable, "-m", "wgpy.cli", "conformance"),
            *("--target-endpoint", f"{OUT_T}:{port}", "--roam-bind", OUT_R2),
            *("--target-public-key", _b64(public_key(target_priv))),
            *("--our-private-key", lab.key_file(our_priv), "--listen", f"{OUT_R}:{RUNNER_PORT}"),
            *("--target-tunnel-ip", IN_T, "--our-tunnel-ip", IN_R, "--label", name),
            *("--json", str(out), "--scenario", ",".join(SCENARIOS)),
        ]
        if TARGETS[name].udp_echo_port:
            argv += ["--udp-echo", str(TARGETS[name].udp_echo_port)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        assert out.exists(), done.stdout + done.stderr
        assert proc.poll() is None, f"{name} died: {lab.output(proc)[-3000:]}"
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    table = done.stdout
    for scenario in BORINGTUN_PASS:
        assert results[scenario]["status"] == "PASS", table
    for scenario, why in {**BORINGTUN_FAIL, **WRAPPER_FAIL[name]}.items():
        assert results[scenario]["status"] == "FAIL", table
        assert why in results[scenario]["summary"], table
    assert done.returncode == 1  # a FAIL makes the run fail
