"""Wireshark can read what wgpy and its runner saw: the key log and --pcap.

* The daemon, with ``WGPY_KEYLOG_FILE``, writes Wireshark's key-log lines for
  every handshake it makes; a tcpdump capture of its tunnel then decodes to
  the inner ICMP with ``-o wg.keylog_file:`` and does not without it.
* ``wgpy conformance --pcap DIR`` writes one pcapng per scenario whose
  Decryption Secrets Block holds the runner's keys: tshark decodes the inner
  ICMP straight away, and not once the secrets are discarded (editcap).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from simutil import ping

from wgpy.keylog import keylog_block
from wgpy.lab import Lab
from wgpy.noise.primitives import public_key
from wgpy.pcapng import SECRETS_WIREGUARD_KEYLOG, write_pcapng
from wgpy.sim import make_pair

OUT_R, OUT_T = "192.168.83.1", "192.168.83.2"
IN_R, IN_T = "10.83.0.1", "10.83.0.2"
PORT = 51820

needs_tshark = pytest.mark.skipif(
    shutil.which("tshark") is None or shutil.which("editcap") is None,
    reason="needs tshark and editcap (Debian package tshark)",
)
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")


def test_keylog_block_is_wiresharks_format() -> None:
    block = keylog_block(b"\1" * 32, b"\2" * 32, bytearray(b"\3" * 32), bytes(32))
    lines = block.splitlines()
    names = [line.split(" = ")[0] for line in lines]
    assert names == [
        "LOCAL_STATIC_PRIVATE_KEY",
        "REMOTE_STATIC_PUBLIC_KEY",
        "LOCAL_EPHEMERAL_PRIVATE_KEY",
        "PRESHARED_KEY",
    ]
    assert base64.b64decode(lines[2].split(" = ")[1]) == b"\3" * 32
    assert block.endswith("\n")


def _field(block: str, name: str) -> bytes:
    (line,) = [x for x in block.splitlines() if x.startswith(name + " = ")]
    return base64.b64decode(line.split(" = ")[1])


def test_device_logs_the_keys_of_each_handshake_it_makes() -> None:
    psk = os.urandom(32)
    net, a, b = make_pair(psk=psk)
    logs: dict[str, list[str]] = {"A": [], "B": []}
    a.device.keylog = logs["A"].append
    b.device.keylog = logs["B"].append
    ping(net, a, b"hello")
    (init,) = [d for _, d in a.sent if d[0] == 1]
    (resp,) = [d for _, d in b.sent if d[0] == 2]
    (la,), (lb,) = logs["A"], logs["B"]
    # Each side's block: its own static key, the other's public key, the
    # ephemeral whose public half is in the message it sent, and the PSK.
    assert public_key(_field(la, "LOCAL_EPHEMERAL_PRIVATE_KEY")) == init[8:40]
    assert public_key(_field(lb, "LOCAL_EPHEMERAL_PRIVATE_KEY")) == resp[12:44]
    assert _field(la, "REMOTE_STATIC_PUBLIC_KEY") == b.device.public_key
    assert public_key(_field(lb, "LOCAL_STATIC_PRIVATE_KEY")) == b.device.public_key
    assert _field(la, "PRESHARED_KEY") == _field(lb, "PRESHARED_KEY") == psk


def test_pcapng_blocks_are_aligned_and_hold_the_secrets() -> None:
    buf = io.BytesIO()
    n = write_pcapng(buf, [(1_700_000_000_000_000, b"\x45" + bytes(27))], "X = 1\n")
    data = buf.getvalue()
    assert n == 1 and len(data) % 4 == 0
    kinds = []
    off = 0
    while off < len(data):
        kind = int.from_bytes(data[off : off + 4], "little")
        size = int.from_bytes(data[off + 4 : off + 8], "little")
        assert data[off + size - 4 : off + size] == data[off + 4 : off + 8]  # trailing length
        kinds.append(kind)
        if kind == 0x0A:
            assert int.from_bytes(data[off + 8 : off + 12], "little") == SECRETS_WIREGUARD_KEYLOG
        off += size
    assert kinds == [0x0A0D0D0A, 1, 0x0A, 6]


def _tshark_icmp(path: Path, *options: str) -> int:
    done = subprocess.run(
        [
            "tshark",
            "-n",
            "-r",
            str(path),
            *options,
            "-Y",
            "icmp",
            "-T",
            "fields",
            "-e",
            "icmp.type",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return len(done.stdout.split())


@root
@needs_tshark
def test_daemon_keylog_and_runner_pcap_decode_in_tshark(tmp_path: Path) -> None:
    keylog = tmp_path / "wg.keys"
    capture = tmp_path / "wire.pcap"
    pcaps = tmp_path / "pcap"
    with Lab() as lab:
        ns_r, ns_t = lab.namespace("klr"), lab.namespace("klt")
        lab.veth(ns_r, ns_t, [f"{OUT_R}/24"], [f"{OUT_T}/24"])
        node = lab.start(ns_t, "wgpy", env={"WGPY_KEYLOG_FILE": str(keylog)})
        node.configure(PORT, address=[f"{IN_T}/24"], mtu=1420)
        dump = lab.popen(ns_t, "tcpdump", "-i", "veth0", "-n", "-U", "-w", str(capture), "udp")
        time.sleep(1.0)  # tcpdump is listening
        argv = [
            *("ip", "netns", "exec", ns_r, sys.executable, "-m", "wgpy.cli", "conformance"),
            *("--target-endpoint", f"{OUT_T}:{PORT}", "--setup-uapi", node.ifname),
            *("--target-tunnel-ip", IN_T, "--our-tunnel-ip", IN_R),
            *("--scenario", "transport,handshake-responder", "--pcap", str(pcaps)),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        time.sleep(0.5)
        lab.stop_process(dump)
        assert node.alive()
    # The daemon's key log: one block per handshake it made (it answered the
    # runner in "transport" and initiated in "handshake-responder"), 0600.
    text = keylog.read_text()
    assert text.count("LOCAL_EPHEMERAL_PRIVATE_KEY = ") >= 2, text
    assert stat.S_IMODE(keylog.stat().st_mode) == 0o600
    assert _tshark_icmp(capture, "-o", f"wg.keylog_file:{keylog}") >= 4  # 2 requests, 2 replies
    assert _tshark_icmp(capture) == 0
    # The runner's pcapng carries its own keys.
    (transport,) = sorted(pcaps.glob("*-transport.pcapng"))
    assert _tshark_icmp(transport) >= 4
    stripped = tmp_path / "stripped.pcapng"
    subprocess.run(
        ["editcap", "--discard-all-secrets", str(transport), str(stripped)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert _tshark_icmp(stripped) == 0
    (responder,) = sorted(pcaps.glob("*-handshake-responder.pcapng"))
    assert _tshark_icmp(responder) >= 2  # the target initiated; we were the responder
