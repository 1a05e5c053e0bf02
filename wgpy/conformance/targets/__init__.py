"""Third-party WireGuard implementations as conformance targets.

boringtun (Cloudflare's Rust WireGuard) ships inside two PyPI wheels that
install on CPython 3.11 without a compiler:

* ``mitmproxy`` -- ``mitmproxy_rs`` 0.11.1, a WireGuard *server*: boringtun's
  ``Tunn`` driven by mitmproxy's own UDP loop; smoltcp behind it answers ICMP
  echo for any address, and our script echoes every UDP datagram.
* ``wireguard-requests`` -- ``wireguard-requests`` 0.0.3, a WireGuard
  *client*: boringtun with its timer thread running (it initiates, keeps the
  session fresh, sends keepalives); our script echoes UDP on port 9999 of its
  tunnel address.  It answers no ICMP.  The wrapper ignores the listen port:
  its UDP socket is bound to a random port and *connected* to the peer's
  endpoint (find the port with :func:`udp_ports`), so it hears nothing from
  any other address.

Each runs from a small script in this directory with the Python of its own
virtual environment (created on first use, ``WGPY_TARGETS_DIR`` or
``~/.cache/wgpy/targets``), so nothing of it touches wgpy's environment and
the script imports nothing of wgpy.  :func:`command` gives the argv to start
one (in a namespace, with ``ip netns exec``); it prints ``ready ...`` once it
serves.  docs/conformance.md lists what the runner finds in each.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

__all__ = ["TARGETS", "Target", "TargetError", "command", "udp_ports", "venv_python"]

HERE: Final = Path(__file__).resolve().parent


class TargetError(RuntimeError):
    """A target's environment could not be made (no network, wrong Python)."""


@dataclass(frozen=True)
class Target:
    """One third-party target: its wheel and the script that serves it."""

    name: str
    requirement: str  # a pinned pip requirement
    script: str  # file in this directory
    udp_echo_port: int | None  # the port it echoes UDP on inside the tunnel (None: any)
    answers_icmp: bool


TARGETS: Final = {
    t.name: t
    for t in (
        Target("mitmproxy", "mitmproxy_rs==0.11.1", "mitmproxy_server.py", None, True),
        Target(
            "wireguard-requests",
            "wireguard-requests==0.0.3",
            "wireguard_requests_peer.py",
            9999,
            False,
        ),
    )
}


def _root() -> Path:
    env = os.environ.get("WGPY_TARGETS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "wgpy" / "targets"


def venv_python(name: str, *, python: str | None = None) -> Path:
    """The Python of ``name``'s virtual environment, created and filled with
    its pinned wheel on first use (pip needs network access once).
    TargetError when that fails."""
    target = TARGETS[name]
    venv = _root() / name
    py = venv / "bin" / "python"
    stamp = venv / ".requirement"
    if py.exists() and stamp.exists() and stamp.read_text() == target.requirement:
        return py
    steps = [
        [python or sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(py), "-m", "pip", "install", "-q", "--only-binary=:all:", target.requirement],
    ]
    for argv in steps:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise TargetError(
                f"{' '.join(argv)} exited {done.returncode}: {(done.stderr or done.stdout)[-2000:]}"
            )
    stamp.write_text(target.requirement)
    return py


def command(name: str, *args: str) -> list[str]:
    """The argv that serves target ``name`` with the script's arguments
    (see the script's docstring)."""
    return [str(venv_python(name)), str(HERE / TARGETS[name].script), *args]


def udp_ports(pid: int) -> list[int]:
    """The local ports of the UDP sockets process ``pid`` holds (read from
    /proc in the process's own network namespace)."""
    inodes = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    ports = []
    for table in ("udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.append(int(fields[1].rsplit(":", 1)[1], 16))
    return sorted(ports)
