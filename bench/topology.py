"""Tunnels under test: pairs of implementations in network namespaces.

A userspace pair gets two namespaces joined by a veth (underlay 10.99.0.1 ↔
10.99.0.2), an implementation in each (tunnel 10.50.0.1 ↔ 10.50.0.2, MTU
1420) and an iperf3 server on B.  The kernel pairs share one VM from the
kernel peer fixture (tests/kernel_peer.py around kernel-wg-peer.sh): its wg0
has one peer per userspace side, and the userspace sides run in the VM's
namespace (wgpy: 10.202.0.1 ↔ 10.202.0.2, wireguard-go: 10.203.0.1 ↔
10.203.0.2); the iperf3 server runs inside the VM.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
import os
import secrets
import stat
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from wgpy.lab import Lab, Node
from wgpy.noise.primitives import clamp, public_key

__all__ = [
    "IMPL_NAMES",
    "PAIRS",
    "KernelVM",
    "Pair",
    "import_kernel_peer",
    "kernel_vm",
    "start_kernel_pair",
    "start_userspace_pair",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Short names used in pair names → Lab implementation names: ``gomod`` is
#: wireguard-go 0.0.20250522 (TUN offloads, UDP GSO/GRO; the main anchor),
#: ``go`` Debian's 0.0.20220316.
IMPL_NAMES = {
    "wgpy": "wgpy",
    "gomod": "wireguard-go-modern",
    "go": "wireguard-go",
    "kernel": "kernel",
}

#: Every pair the harness knows, in table order: (A, B).  A runs the iperf3
#: client ("forward" = A→B), B the server.
PAIRS: dict[str, tuple[str, str]] = {
    "wgpy-wgpy": ("wgpy", "wgpy"),
    "gomod-gomod": ("gomod", "gomod"),
    "wgpy-gomod": ("wgpy", "gomod"),
    "gomod-wgpy": ("gomod", "wgpy"),
    "go-go": ("go", "go"),
    "wgpy-go": ("wgpy", "go"),
    "wgpy-kernel": ("wgpy", "kernel"),
    "go-kernel": ("go", "kernel"),
}

_PORT_A, _PORT_B = 51820, 51821
_UNDER_A, _UNDER_B = "10.99.0.1", "10.99.0.2"
_TUN_A, _TUN_B = "10.50.0.1", "10.50.0.2"
#: Per userspace implementation facing the VM: (its address, the VM's, port).
_KERNEL_SIDES = {
    "wgpy": ("10.202.0.1", "10.202.0.2", 51821),
    "go": ("10.203.0.1", "10.203.0.2", 51822),
}
_VM_HOST_IP, _VM_IP, _VM_PORT = "10.201.0.1", "10.201.0.2", 51820


@dataclass
class Pair:
    """A running tunnel between side A (client) and side B (server)."""

    name: str
    ns_a: str
    addr_a: str
    addr_b: str
    node_a: Node
    node_b: Node | None  # None when B is the kernel VM
    kernel: bool = False
    server: Any = None  # the iperf3 server process on B (userspace pairs)

    @property
    def pids_a(self) -> list[int]:
        """PIDs of A's implementation process."""
        return [self.node_a.proc.pid]

    @property
    def pids_b(self) -> list[int]:
        """PIDs of B's implementation process (none for the kernel)."""
        return [self.node_b.proc.pid] if self.node_b is not None else []

    def wgpy_nodes(self) -> list[tuple[str, Node]]:
        """(side, node) of the ends run by wgpy."""
        out = []
        if self.node_a.impl == "wgpy":
            out.append(("a", self.node_a))
        if self.node_b is not None and self.node_b.impl == "wgpy":
            out.append(("b", self.node_b))
        return out


def _impl_env() -> dict[str, str]:
    # Quiet daemons: a chatty log costs CPU that would count against them.
    return {"LOG_LEVEL": "error", "PYTHONPATH": str(REPO_ROOT)}


def start_userspace_pair(lab: Lab, name: str) -> Pair:
    """Namespaces, veth, both implementations configured, iperf3 server on B."""
    a_impl, b_impl = (IMPL_NAMES[x] for x in PAIRS[name])
    hint = name.replace("-", "")[:10]
    ns_a = lab.namespace(hint + "a")
    ns_b = lab.namespace(hint + "b")
    lab.veth(ns_a, ns_b, [f"{_UNDER_A}/24"], [f"{_UNDER_B}/24"])
    a = lab.start(ns_a, a_impl, env=_impl_env())
    b = lab.start(ns_b, b_impl, env=_impl_env())
    a.configure(_PORT_A, address=[f"{_TUN_A}/24"])
    b.configure(_PORT_B, address=[f"{_TUN_B}/24"])
    a.add_peer(b, allowed_ips=[f"{_TUN_B}/32"], endpoint=f"{_UNDER_B}:{_PORT_B}")
    b.add_peer(a, allowed_ips=[f"{_TUN_A}/32"], endpoint=f"{_UNDER_A}:{_PORT_A}")
    server = lab.popen(ns_b, "iperf3", "-s", "-B", _TUN_B)
    return Pair(name, ns_a, _TUN_A, _TUN_B, a, b, server=server)


# -- the kernel VM -----------------------------------------------------------------


def import_kernel_peer() -> ModuleType:
    """tests/kernel_peer.py (the fixture around kernel-wg-peer.sh), imported
    from the repository's tests directory."""
    tests = str(REPO_ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    return importlib.import_module("kernel_peer")


@dataclass
class KernelVM:
    """The booted kernel peer and the userspace keys it was given."""

    vm: Any  # kernel_peer.KernelPeer
    keys: dict[str, bytes]  # userspace side ("wgpy"/"go") → its private key
    description: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def netns(self) -> str:
        """The namespace that holds the VM's TAP link."""
        return str(self.vm.netns)


def _iperf3_wrapper(real: Path, directory: Path) -> Path:
    """A kernel-wg-peer.sh stand-in that adds ``--iperf3`` to ``up`` (the
    fixture has no option for it); every other verb passes through."""
    path = directory / "kernel-wg-peer.sh"
    path.write_text(
        "#!/bin/sh\n"
        "# bench: start an iperf3 server inside the VM\n"
        f'if [ "$1" = up ]; then shift; exec "{real}" up --iperf3 "$@"; fi\n'
        f'exec "{real}" "$@"\n'
    )
    path.chmod(stat.S_IRWXU)
    return path


def describe_vm(backend: str, accel: str) -> str:
    """How the kernel ran, for the report."""
    if backend == "uml":
        return "User-Mode Linux (the kernel runs natively as a host process)"
    if accel == "kvm":
        return "qemu with KVM"
    if accel == "tcg":
        return "qemu with TCG emulation (throughput measures the emulator)"
    return f"{backend} ({accel or 'unknown acceleration'})"


def choose_backend(kp: ModuleType, wanted: str) -> str:
    """``auto``: UML when a prebuilt UML kernel exists (native speed), else qemu."""
    if wanted != "auto":
        return wanted
    finder = getattr(kp, "_uml_kernel", None)
    if finder is not None and finder(os.environ):
        return "uml"
    return "qemu"


@contextlib.contextmanager
def kernel_vm(sides: list[str], backend: str = "auto") -> Iterator[KernelVM]:
    """Boot the kernel peer with one wg0 peer per userspace side in ``sides``.

    Raises the fixture's KernelPeerUnavailable when the VM cannot boot.
    """
    kp = import_kernel_peer()
    real = kp.find_script()
    if real is None:
        raise kp.KernelPeerUnavailable(0, "kernel-wg-peer.sh not found (set WGPY_KWG_SCRIPT)")
    keys = {s: clamp(secrets.token_bytes(32)) for s in sides}
    pubs = {s: base64.b64encode(public_key(k)).decode() for s, k in keys.items()}
    backend = choose_backend(kp, backend)
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="wgpy-bench-kwg-")))
        wrapper = _iperf3_wrapper(Path(real), tmp)
        saved = os.environ.get("WGPY_KWG_SCRIPT")
        os.environ["WGPY_KWG_SCRIPT"] = str(wrapper)
        try:
            first = sides[0]
            vm = stack.enter_context(
                kp.kernel_peer(
                    peer_public_key=pubs[first],
                    peer_allowed_ips=[f"{_KERNEL_SIDES[first][0]}/32"],
                    host_ip=f"{_VM_HOST_IP}/24",
                    vm_ip=f"{_VM_IP}/24",
                    wg_addrs=tuple(f"{_KERNEL_SIDES[s][1]}/24" for s in sides),
                    listen_port=_VM_PORT,
                    backend=backend,
                )
            )
        finally:
            if saved is None:
                os.environ.pop("WGPY_KWG_SCRIPT", None)
            else:
                os.environ["WGPY_KWG_SCRIPT"] = saved
        for s in sides[1:]:
            vm.exec(f"wg set wg0 peer {pubs[s]} allowed-ips {_KERNEL_SIDES[s][0]}/32")
        info = {
            "backend": vm.backend,
            "accel": vm.accel,
            "kernel_release": vm.kernel_release,
            "boot_seconds": vm.boot_seconds,
        }
        yield KernelVM(vm, keys, describe_vm(vm.backend, vm.accel), info)


def start_kernel_pair(lab: Lab, kvm: KernelVM, name: str) -> Pair:
    """Start side A of ``wgpy-kernel``/``go-kernel`` in the VM's namespace."""
    side = PAIRS[name][0]
    addr, vm_addr, port = _KERNEL_SIDES[side]
    node = lab.start(kvm.netns, IMPL_NAMES[side], env=_impl_env())
    node.private = kvm.keys[side]
    node.configure(port, address=[f"{addr}/24"])
    vm_pub = base64.b64decode(kvm.vm.public_key)
    node.add_peer(vm_pub, allowed_ips=[f"{vm_addr}/32"], endpoint=kvm.vm.endpoint)
    return Pair(name, kvm.netns, addr, vm_addr, node, None, kernel=True)
