"""The Linux in-kernel WireGuard as a test peer, booted in a throw-away VM.

This wraps the shared tool ``kernel-wg-peer.sh`` (``shared/tools`` beside the
repository): Debian's kernel and its ``wireguard.ko`` run in qemu (or as
User-Mode Linux) whose only link is a TAP device inside a network namespace of
this host.  The userspace implementation under test runs in that same
namespace and talks to the VM over the TAP link; nothing leaves the namespace.

Typical use::

    with kernel_peer(peer_public_key=pub, peer_allowed_ips=["10.202.0.1/32"]) as vm:
        vm.exec("ip addr")                     # shell in the VM (control port)
        vm.wg_show().peers[pub].latest_handshake
        vm.ping_from_vm("10.202.0.1")

``kernel_peer`` always tears down (stops exactly the VM's PID, deletes the TAP
and, if it made it, the namespace), even when the body or the boot failed.
When the VM cannot be booted here (missing qemu/kernel, not root, boot
timeout) it raises :class:`KernelPeerUnavailable`; ``kernel_peer_or_skip``
turns that into ``pytest.skip``.

``userspace_wg`` starts a userspace implementation that follows the
``wireguard-go -f IFNAME`` convention (``wgpy-userspace -f IFNAME`` does too) in
a namespace and kills exactly its PID at the end; ``wg_set``/``wg_dump``
configure and read it with ``wg``.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import netns as nsh
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

__all__ = [
    "DEFAULT_BOOT_TIMEOUT",
    "KernelPeer",
    "KernelPeerError",
    "KernelPeerUnavailable",
    "VmExecResult",
    "WgDump",
    "WgPeerDump",
    "find_script",
    "genkey",
    "genpsk",
    "kernel_peer",
    "kernel_peer_or_skip",
    "parse_wg_dump",
    "public_key_of",
    "userspace_wg",
    "wg_dump",
    "wg_set",
]

_REPO_ROOT = Path(__file__).resolve().parent.parent
_SCRIPT_NAME = "kernel-wg-peer.sh"

# Seconds to wait for the VM's KWG-READY line.  qemu under TCG boots in about
# 10 s on an idle 2-core machine; the margin is for a loaded one.
DEFAULT_BOOT_TIMEOUT = float(os.environ.get("WGPY_KWG_BOOT_TIMEOUT", "120"))
# Extra time `up` may need before booting (building the cached initramfs).
_BUILD_MARGIN = 120.0
_UAPI_DIR = Path("/var/run/wireguard")


class KernelPeerUnavailable(RuntimeError):
    """The kernel peer VM could not be booted on this machine.

    ``reason`` names what was missing or what went wrong; ``str()`` is the
    message tests pass to ``pytest.skip``.
    """

    def __init__(self, timeout: float, reason: str) -> None:
        self.timeout = timeout
        self.reason = reason
        super().__init__(f"kernel WireGuard VM did not boot within {timeout:g} s: {reason}")


class KernelPeerError(RuntimeError):
    """The VM is up but a command in or about it failed (a real test failure)."""


# -- keys ------------------------------------------------------------------------


def genkey() -> tuple[str, str]:
    """A fresh Curve25519 key pair as (private, public) base64 strings."""
    key = X25519PrivateKey.generate()
    priv = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(priv).decode(), base64.b64encode(pub).decode()


def public_key_of(private_b64: str) -> str:
    """The base64 public key for a base64 private key."""
    key = X25519PrivateKey.from_private_bytes(base64.b64decode(private_b64))
    return base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def genpsk() -> str:
    """A fresh 32-byte preshared key, base64."""
    return base64.b64encode(secrets.token_bytes(32)).decode()


def _write_secret(directory: Path, name: str, value: str) -> Path:
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value + "\n")
    return path


# -- `wg show IFACE dump` --------------------------------------------------------


@dataclass(frozen=True)
class WgPeerDump:
    """One peer line of ``wg show IFACE dump``."""

    public_key: str
    preshared_key: str | None = field(repr=False)
    endpoint: str | None
    allowed_ips: tuple[str, ...]
    latest_handshake: int  # unix seconds, 0 = never
    rx_bytes: int
    tx_bytes: int
    persistent_keepalive: int | None  # None = off


@dataclass(frozen=True)
class WgDump:
    """``wg show IFACE dump``: the interface line and its peers by public key."""

    private_key: str | None = field(repr=False)
    public_key: str | None
    listen_port: int
    fwmark: int | None
    peers: dict[str, WgPeerDump]


def _opt(value: str) -> str | None:
    return None if value in ("(none)", "off") else value


def parse_wg_dump(text: str) -> WgDump:
    """Parse the tab-separated output of ``wg show IFACE dump``."""
    lines = [ln.rstrip("\r") for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ValueError("empty wg dump")
    head = lines[0].split("\t")
    if len(head) != 4:
        raise ValueError(f"bad interface line in wg dump: {lines[0]!r}")
    fwmark = _opt(head[3])
    peers: dict[str, WgPeerDump] = {}
    for line in lines[1:]:
        f = line.split("\t")
        if len(f) != 8:
            raise ValueError(f"bad peer line in wg dump: {line!r}")
        ips = _opt(f[3])
        ka = _opt(f[7])
        peers[f[0]] = WgPeerDump(
            public_key=f[0],
            preshared_key=_opt(f[1]),
            endpoint=_opt(f[2]),
            allowed_ips=tuple(ips.split(",")) if ips else (),
            latest_handshake=int(f[4]),
            rx_bytes=int(f[5]),
            tx_bytes=int(f[6]),
            persistent_keepalive=int(ka) if ka else None,
        )
    return WgDump(
        private_key=_opt(head[0]),
        public_key=_opt(head[1]),
        listen_port=int(head[2]),
        fwmark=int(fwmark, 0) if fwmark else None,
        peers=peers,
    )


# -- the VM ----------------------------------------------------------------------


@dataclass(frozen=True)
class VmExecResult:
    """Exit status and combined stdout+stderr of a command run in the VM."""

    returncode: int
    output: str


_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9+/=.:,\[\]_-]+$")


def _token(value: str) -> str:
    """Refuse anything that is not a plain address/key token (it goes into sh)."""
    if not _SAFE_TOKEN.match(value):
        raise ValueError(f"unsafe token for the VM shell: {value!r}")
    return value


@dataclass
class KernelPeer:
    """A running kernel WireGuard VM (interface ``wg0``) attached to ``netns``."""

    netns: str
    host_ip: str  # TAP address in netns, without prefix
    vm_ip: str  # VM's transport address, without prefix
    wg_addrs: tuple[str, ...]  # VM's wg0 addresses (CIDR)
    public_key: str
    listen_port: int
    pid: int
    backend: str
    accel: str
    kernel_release: str
    boot_seconds: float
    summary: dict[str, str]
    _script: Path = field(repr=False)
    _env: dict[str, str] = field(repr=False)
    _run_dir: Path = field(repr=False)

    @property
    def wg_addr(self) -> str:
        """The VM's first WireGuard address, without prefix length."""
        return self.wg_addrs[0].split("/")[0]

    @property
    def endpoint(self) -> str:
        """``VM_IP:PORT`` as seen from the namespace (the peer endpoint to use)."""
        return f"{self.vm_ip}:{self.listen_port}"

    def console(self) -> str:
        """The VM's serial console log so far."""
        try:
            return (self._run_dir / self.netns / "console.log").read_text(errors="replace")
        except OSError:
            return ""

    def exec(self, cmd: str, *, timeout: float = 60.0, check: bool = True) -> VmExecResult:
        """Run ``cmd`` with the VM's /bin/sh (the script's ``exec`` verb).

        Returns exit status and output; with ``check`` a non-zero status
        raises :class:`KernelPeerError`.  A broken control channel always raises.
        """
        proc = subprocess.run(
            [
                str(self._script),
                "exec",
                "--netns",
                self.netns,
                "--timeout",
                str(int(timeout)),
                "--",
                cmd,
            ],
            capture_output=True,
            env=self._env,
            timeout=timeout + 10,
            check=False,
        )
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
        if f"{_SCRIPT_NAME}: error:" in err:
            raise KernelPeerError(f"exec {cmd!r} in VM failed: {err.strip()} {out.strip()}")
        if check and proc.returncode != 0:
            raise KernelPeerError(f"{cmd!r} in VM exited {proc.returncode}: {out.strip()}")
        return VmExecResult(proc.returncode, out)

    def wg_show(self) -> WgDump:
        """Parsed ``wg show wg0 dump`` from inside the VM."""
        return parse_wg_dump(self.exec("wg show wg0 dump").output)

    def ping_from_vm(self, addr: str, *, count: int = 1, wait: int = 2) -> bool:
        """Ping ``addr`` from inside the VM (busybox ping); True if a reply came."""
        flag = "-6 " if ":" in addr else ""
        res = self.exec(
            f"ping {flag}-c {int(count)} -W {int(wait)} {_token(addr)}",
            timeout=count * wait + 20,
            check=False,
        )
        return res.returncode == 0

    def set_peer(
        self,
        public_key: str,
        allowed_ips: Sequence[str],
        *,
        endpoint: str | None = None,
        keepalive: int | None = None,
        preshared_key: str | None = None,
    ) -> None:
        """Replace every peer of wg0 by this one (fresh peer: no sessions, no stats).

        Lets one VM serve many tests: removing a peer drops its keypairs and
        handshake state in the kernel.
        """
        parts = [
            f"wg set wg0 peer {_token(public_key)} allowed-ips {_token(','.join(allowed_ips))}"
        ]
        pre = ["umask 077"]
        for old in self.wg_show().peers:
            pre.append(f"wg set wg0 peer {_token(old)} remove")
        if endpoint is not None:
            parts.append(f"endpoint {_token(endpoint)}")
        if keepalive is not None:
            parts.append(f"persistent-keepalive {int(keepalive)}")
        if preshared_key is not None:
            pre.append(f"echo {_token(preshared_key)} > /tmp/wgpy-psk")
            parts.append("preshared-key /tmp/wgpy-psk")
        self.exec(" && ".join([*pre, " ".join(parts)]))


def find_script() -> Path | None:
    """Locate kernel-wg-peer.sh: $WGPY_KWG_SCRIPT, ../shared/tools, /work/shared/tools."""
    candidates = []
    if os.environ.get("WGPY_KWG_SCRIPT"):
        candidates.append(Path(os.environ["WGPY_KWG_SCRIPT"]))
    candidates += [
        _REPO_ROOT.parent / "shared" / "tools" / _SCRIPT_NAME,
        Path("/work/shared/tools") / _SCRIPT_NAME,
    ]
    for c in candidates:
        if c.is_file() and os.access(c, os.R_OK):
            return c
    return None


def _have_wg_kernel() -> bool:
    """A kernel in /boot whose module tree has wireguard (what `up` looks for)."""
    for image in glob.glob("/boot/vmlinuz-*"):
        moddir = Path("/lib/modules") / image.removeprefix("/boot/vmlinuz-")
        with contextlib.suppress(OSError):
            if re.search(r"/wireguard\.ko(\.\w+)?:", (moddir / "modules.dep").read_text()):
                return True
    return False


def _uml_kernel(env: Mapping[str, str]) -> str | None:
    """A prebuilt UML kernel: $KWG_UML_KERNEL or the newest one in $KWG_CACHE."""
    if env.get("KWG_UML_KERNEL"):
        return env["KWG_UML_KERNEL"]
    cache = env.get("KWG_CACHE") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME", "/root"), ".cache"),
        "kernel-wg-peer",
    )
    found = sorted(glob.glob(os.path.join(cache, "uml-*", "linux")), key=os.path.getmtime)
    return found[-1] if found else None


def _missing(backend: str, env: Mapping[str, str]) -> str | None:
    """What this machine lacks to boot the VM, or None."""
    if os.geteuid() != 0:
        return "not root (needs netns and TAP)"
    for tool, pkg in (("ip", "iproute2"), ("wg", "wireguard-tools"), ("cpio", "cpio")):
        if shutil.which(tool) is None:
            return f"'{tool}' not found (apt-get install {pkg})"
    if not any(os.access(b, os.X_OK) for b in ("/bin/busybox", "/usr/bin/busybox")):
        return "busybox not found (apt-get install busybox-static)"
    if backend == "uml":
        if _uml_kernel(env) is None:
            return "no prebuilt UML kernel (run kernel-wg-peer.sh build-uml once)"
        return None
    if shutil.which(env.get("KWG_QEMU", "qemu-system-x86_64")) is None:
        return "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"
    if not env.get("KWG_KERNEL") and not _have_wg_kernel():
        return (
            "no kernel with a wireguard module in /boot (apt-get install linux-image-cloud-amd64)"
        )
    return None


def _classify_up_failure(stderr: str) -> str:
    """Short reason from the script's stderr (its last `error:` line if any)."""
    errs = [ln for ln in stderr.splitlines() if f"{_SCRIPT_NAME}: error:" in ln]
    if errs:
        return errs[-1].split("error:", 1)[1].strip()
    tail = [ln for ln in stderr.splitlines() if ln.strip()][-3:]
    return " | ".join(tail) or "kernel-wg-peer.sh up failed"


def _is_config_failure(kwg_fail: str) -> bool:
    """True for the VM's setup steps that apply our arguments to wg0.

    The others (insmod, no network device, services) mean the kernel or the
    image does not suit this machine: the peer is unavailable, not wrong.
    """
    return kwg_fail.startswith(("wg set", "wg setconf", "addr ", "wg0 up"))


def _parse_summary(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        m = re.match(r"^(KWG_[A-Z0-9_]+)=(.*)$", line.strip())
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _kill_if_ours(pid: int, netns: str) -> None:
    """Last-resort stop of the VM: only if /proc/PID/cmdline names our instance."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return
    if f"kwg-{netns}," in cmdline or f"kwg.instance=kwg-{netns} " in cmdline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def kernel_peer(
    *,
    peer_public_key: str,
    peer_allowed_ips: Sequence[str],
    private_key: str | None = None,
    netns: str | None = None,
    host_ip: str = "10.201.0.1/24",
    vm_ip: str = "10.201.0.2/24",
    wg_addrs: Sequence[str] = ("10.202.0.2/24",),
    listen_port: int = 51820,
    peer_endpoint: str | None = None,
    keepalive: int | None = None,
    preshared_key: str | None = None,
    mtu: int = 1420,
    timeout: float = DEFAULT_BOOT_TIMEOUT,
    backend: str | None = None,
    ctl_port: int = 7000,
) -> Iterator[KernelPeer]:
    """Boot the kernel WireGuard peer in ``netns`` (created if None) and yield it.

    The VM's wg0 gets ``private_key`` (a fresh one if None), ``listen_port``,
    ``wg_addrs`` and one peer (``peer_public_key`` with ``peer_allowed_ips``,
    optional ``peer_endpoint``, ``keepalive`` seconds and ``preshared_key``).
    The TAP link has ``host_ip`` on this side and ``vm_ip`` in the VM.
    ``backend`` is "qemu" (default, or $KWG_BACKEND) or "uml" (needs a
    prebuilt UML kernel; never builds one here).

    Raises :class:`KernelPeerUnavailable` if the VM cannot boot within
    ``timeout`` seconds or this machine lacks what it needs.  Teardown (stop
    the VM, delete the TAP, delete the namespace if made here, remove the
    state directory) always runs.
    """
    backend = backend or os.environ.get("KWG_BACKEND", "qemu")
    if backend not in ("qemu", "uml"):
        raise ValueError(f"backend must be qemu or uml, not {backend!r}")
    script = find_script()
    if script is None:
        raise KernelPeerUnavailable(timeout, f"{_SCRIPT_NAME} not found (set WGPY_KWG_SCRIPT)")
    env = dict(os.environ)
    reason = _missing(backend, env)
    if reason:
        raise KernelPeerUnavailable(timeout, reason)
    if backend == "uml":
        env["KWG_UML_KERNEL"] = _uml_kernel(env) or ""

    private_key = private_key or genkey()[0]
    with contextlib.ExitStack() as stack:
        # Per-instance state (pid file, console log, initrd with the keys) in a
        # private directory that is removed at the end.
        run_dir = Path(tempfile.mkdtemp(prefix="wgpy-kwg-"))
        stack.callback(shutil.rmtree, run_dir, True)
        env["KWG_RUN"] = str(run_dir / "run")
        env["KWG_BACKEND"] = backend
        # A namespace made here is deleted after `down`; a given one is left.
        ns = netns if netns is not None else stack.enter_context(nsh.netns("kwg"))
        secrets_dir = run_dir / "secrets"
        secrets_dir.mkdir(mode=0o700)

        argv = [
            str(script),
            "up",
            "--netns",
            ns,
            "--host-ip",
            host_ip,
            "--vm-ip",
            vm_ip,
            "--wg-key-file",
            str(_write_secret(secrets_dir, "vm.key", private_key)),
            "--listen-port",
            str(listen_port),
            "--peer",
            peer_public_key,
            "--peer-allowed-ips",
            ",".join(peer_allowed_ips),
            "--wg-addr",
            ",".join(wg_addrs),
            "--wg-mtu",
            str(mtu),
            "--tap",
            nsh.unique_ifname("kwgtap"),
            "--timeout",
            str(max(1, int(timeout))),
            "--ctl-port",
            str(ctl_port),
            "--backend",
            backend,
        ]
        if peer_endpoint is not None:
            argv += ["--peer-endpoint", peer_endpoint]
        if keepalive is not None:
            argv += ["--keepalive", str(keepalive)]
        if preshared_key is not None:
            argv += ["--psk-file", str(_write_secret(secrets_dir, "psk", preshared_key))]

        pid_holder: list[int] = []

        def teardown() -> None:
            # `down` stops exactly the recorded VM PID (it checks its cmdline)
            # and deletes the TAP; the namespace goes with nsh.netns() if ours.
            with contextlib.suppress(Exception):
                subprocess.run(
                    [str(script), "down", "--netns", ns],
                    capture_output=True,
                    env=env,
                    timeout=60,
                    check=False,
                )
            for pid in pid_holder:
                _kill_if_ours(pid, ns)

        stack.callback(teardown)

        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            out_b, err_b = proc.communicate(timeout=timeout + _BUILD_MARGIN)
        except subprocess.TimeoutExpired:
            # Kill only the script's own process group (qemu daemonizes into
            # its own session; `down` in teardown stops it by PID).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise KernelPeerUnavailable(timeout, "kernel-wg-peer.sh up did not return") from None
        out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
        summary = _parse_summary(out)
        with contextlib.suppress(KeyError, ValueError):
            pid_holder.append(int(summary["KWG_PID"]))
        if proc.returncode != 0:
            reason = _classify_up_failure(err)
            fail = re.findall(r"KWG-FAIL: (.*)", err)
            if fail and _is_config_failure(fail[-1]):
                # The VM booted but its wg0 rejected our configuration: a bug
                # in the caller, not a missing capability of this machine.
                raise KernelPeerError(f"kernel peer rejected its configuration: {fail[-1]}\n{err}")
            if fail:
                reason = f"{reason}: {fail[-1].strip()}"
            raise KernelPeerUnavailable(timeout, reason)

        vm = KernelPeer(
            netns=ns,
            host_ip=host_ip.split("/")[0],
            vm_ip=vm_ip.split("/")[0],
            wg_addrs=tuple(wg_addrs),
            public_key=summary.get("KWG_VM_PUBKEY", ""),
            listen_port=int(summary.get("KWG_VM_LISTEN_PORT", listen_port)),
            pid=int(summary.get("KWG_PID", "0")),
            backend=summary.get("KWG_BACKEND", backend),
            accel=summary.get("KWG_ACCEL", ""),
            kernel_release=summary.get("KWG_KERNEL_RELEASE", ""),
            boot_seconds=float(summary.get("KWG_BOOT_SECONDS", "nan")),
            summary=summary,
            _script=script,
            _env=env,
            _run_dir=Path(env["KWG_RUN"]),
        )
        yield vm


@contextlib.contextmanager
def kernel_peer_or_skip(**kwargs: object) -> Iterator[KernelPeer]:
    """``kernel_peer(**kwargs)``, but ``pytest.skip`` when the VM cannot boot."""
    import pytest

    with contextlib.ExitStack() as stack:
        try:
            vm = stack.enter_context(kernel_peer(**kwargs))  # type: ignore[arg-type]
        except KernelPeerUnavailable as exc:
            pytest.skip(str(exc))
        yield vm


# -- the userspace side ----------------------------------------------------------


@contextlib.contextmanager
def userspace_wg(
    ns: str,
    command: Sequence[str],
    ifname: str,
    *,
    log_dir: Path | None = None,
    ready_timeout: float = 15.0,
    env: Mapping[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command + [ifname]`` (e.g. ``["wireguard-go", "-f"]``) in ``ns``.

    The command must stay in the foreground and serve UAPI at
    /var/run/wireguard/IFNAME.sock.  Waits for that socket and the interface,
    yields the process, and at the end signals exactly its PID (``ip netns
    exec`` execs, so the PID is the implementation's own): SIGTERM, then
    SIGKILL after 5 s.  Its output goes to ``log_dir/IFNAME.log`` if given.
    """
    if shutil.which(command[0]) is None:
        raise FileNotFoundError(command[0])
    sock = _UAPI_DIR / f"{ifname}.sock"
    with contextlib.ExitStack() as stack:
        if log_dir is not None:
            log = stack.enter_context(open(log_dir / f"{ifname}.log", "wb"))
            out: int | object = log
        else:
            out = subprocess.DEVNULL
        proc_env = dict(os.environ if env is None else env)
        proc_env.setdefault("LOG_LEVEL", "info")
        proc: subprocess.Popen[bytes] = subprocess.Popen(
            ["ip", "netns", "exec", ns, *command, ifname],
            stdin=subprocess.DEVNULL,
            stdout=out,  # type: ignore[arg-type]
            stderr=subprocess.STDOUT,
            env=proc_env,
            start_new_session=True,
        )

        def stop() -> None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(proc.pid, signal.SIGKILL)
                    proc.wait()

        stack.callback(stop)
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {proc.returncode} before ready")
            if sock.exists() and nsh.ip(ns, "link", "show", ifname, check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} {ifname}: no UAPI socket after {ready_timeout} s")
            time.sleep(0.05)
        yield proc


def wg_set(
    ns: str,
    ifname: str,
    *,
    private_key: str,
    listen_port: int,
    peer_public_key: str,
    peer_allowed_ips: Sequence[str],
    peer_endpoint: str | None = None,
    keepalive: int | None = None,
    preshared_key: str | None = None,
    addrs: Sequence[str] = (),
    up: bool = True,
) -> None:
    """Configure a userspace interface in ``ns`` with ``wg set`` (keys via 0600 files)."""
    with tempfile.TemporaryDirectory(prefix="wgpy-wgset-") as tmp:
        d = Path(tmp)
        argv = [
            "wg",
            "set",
            ifname,
            "private-key",
            str(_write_secret(d, "key", private_key)),
            "listen-port",
            str(listen_port),
            "peer",
            peer_public_key,
            "allowed-ips",
            ",".join(peer_allowed_ips),
        ]
        if peer_endpoint is not None:
            argv += ["endpoint", peer_endpoint]
        if keepalive is not None:
            argv += ["persistent-keepalive", str(keepalive)]
        if preshared_key is not None:
            argv += ["preshared-key", str(_write_secret(d, "psk", preshared_key))]
        nsh.run_in_ns(ns, argv)
    for addr in addrs:
        extra = ["nodad"] if ":" in addr else []
        nsh.ip(ns, "addr", "add", addr, "dev", ifname, *extra)
    if up:
        nsh.ip(ns, "link", "set", ifname, "up")


def wg_dump(ns: str, ifname: str) -> WgDump:
    """Parsed ``wg show IFNAME dump`` of an interface in ``ns``."""
    return parse_wg_dump(nsh.run_in_ns(ns, ["wg", "show", ifname, "dump"]).stdout.decode())
