"""The ``wgpy`` command line.

* Keys: ``genkey``/``genpsk``/``pubkey`` against the real ``wg`` in both
  directions, and the same errors for bad input.
* ``show`` against the real ``wg show`` on the same (fake) UAPI socket.
* ``apply_config`` (the configuration half of ``up``) and ``teardown`` against
  wireguard-go run in the foreground in a network namespace.
* ``wgpy up``/``down`` against the real ``wg-quick``: both bring the same
  file up in twin namespaces, with wireguard-go as the userspace daemon
  (started in the foreground by a wrapper that records its PID), and must
  leave the same addresses, routes, rules, nftables rules and device state.
* ``wgpy up``/``down`` end to end with the wgpy daemon: a tunnel to a
  wireguard-go peer over a veth pair carries a ping; hooks, SaveConfig and
  error paths.

Everything runs in namespaces created here and deleted afterwards; the only
processes signalled are wireguard-go instances whose PIDs we recorded.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import netns as nsh
import pytest
from test_config import FakeUapi, fake_uapi  # noqa: F401  (fixture re-export)

from wgpy import cli
from wgpy.config import load, loads
from wgpy.keys import decode_key, encode_key, generate_private_key, public_key_of

REPO = Path(__file__).resolve().parent.parent
WG = shutil.which("wg")
WIREGUARD_GO = shutil.which("wireguard-go")
WG_QUICK = shutil.which("wg-quick")
SOCKET_DIR = Path("/var/run/wireguard")

needs_wg = pytest.mark.skipif(WG is None, reason="needs the wg tool (wireguard-tools)")
needs_wggo = pytest.mark.skipif(WIREGUARD_GO is None, reason="needs wireguard-go")


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.pop("WG_PROCESS_FOREGROUND", None)
    env.pop("WGPY_USERSPACE_CMD", None)
    env.update(extra or {})
    return env


def wgpy(
    *args: str,
    ns: str | None = None,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m wgpy.cli ARGS`` (inside ``ns`` if given)."""
    argv = [sys.executable, "-m", "wgpy.cli", *args]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(
        argv, input=stdin, capture_output=True, env=_env(env), timeout=timeout, check=False
    )


def wg(
    *args: str, stdin: bytes | None = None, ns: str | None = None
) -> subprocess.CompletedProcess[bytes]:
    assert WG is not None
    argv = [WG, *args]
    if ns is not None:
        argv = ["ip", "netns", "exec", ns, *argv]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60, check=False)


def no_traceback(proc: subprocess.CompletedProcess[bytes]) -> str:
    err = proc.stderr.decode()
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------


@needs_wg
def test_our_genkey_piped_to_wg_pubkey() -> None:
    for _ in range(3):
        priv = wgpy("genkey")
        assert priv.returncode == 0
        text = priv.stdout.decode()
        assert re.fullmatch(r"[A-Za-z0-9+/]{43}=\n", text)
        raw = decode_key(text.strip())
        assert raw[0] & 7 == 0 and raw[31] & 0xC0 == 0x40  # clamped as wg genkey
        theirs = wg("pubkey", stdin=priv.stdout)
        ours = wgpy("pubkey", stdin=priv.stdout)
        assert theirs.returncode == 0 and ours.returncode == 0
        assert ours.stdout == theirs.stdout


@needs_wg
def test_wg_genkey_piped_to_our_pubkey() -> None:
    for _ in range(3):
        priv = wg("genkey").stdout
        assert wgpy("pubkey", stdin=priv).stdout == wg("pubkey", stdin=priv).stdout


@needs_wg
def test_genpsk_format_and_wg_accepts_it(tmp_path: Path) -> None:
    psk = wgpy("genpsk")
    assert psk.returncode == 0
    assert re.fullmatch(rb"[A-Za-z0-9+/]{43}=\n", psk.stdout)
    assert wgpy("genpsk").stdout != psk.stdout
    # wg's own parser accepts it as a key (pubkey parses any 32-byte key).
    assert wg("pubkey", stdin=psk.stdout).returncode == 0


def test_keys_module_matches_cli() -> None:
    priv = generate_private_key()
    out = wgpy("pubkey", stdin=(encode_key(priv) + "\n").encode())
    assert out.stdout.decode() == encode_key(public_key_of(priv)) + "\n"


BAD_KEYS = [
    b"",
    b"abc\n",
    b"a" * 43 + b"=\n",  # non-zero spare bits in the last character
    b"  " + b"A" * 43 + b"=\n",  # leading blanks: wg reads exactly 44 bytes first
    b"A" * 43 + b"= x\n",  # trailing junk
    b"A" * 42 + b"==\n",
    b"A" * 43 + b"!\n",
    b"\xff" * 44,
]


@needs_wg
@pytest.mark.parametrize("data", BAD_KEYS)
def test_pubkey_rejects_what_wg_rejects(data: bytes) -> None:
    ours, theirs = wgpy("pubkey", stdin=data), wg("pubkey", stdin=data)
    assert theirs.returncode == 1
    assert ours.returncode == 1 and ours.stdout == b""
    err = no_traceback(ours)
    # Same message as wg (which prefixes its argv[0]), with our program name.
    message = theirs.stderr.decode().split(": ", 1)[1]
    assert err == f"wgpy: {message}"


@needs_wg
def test_pubkey_accepts_trailing_blanks_and_nul_like_wg() -> None:
    key = wg("genkey").stdout.strip()
    for tail in (b"", b"\n", b" \t\r\n\n", b"\x00\n"):
        data = key + tail
        ours, theirs = wgpy("pubkey", stdin=data), wg("pubkey", stdin=data)
        assert theirs.returncode == 0 and ours.returncode == 0
        assert ours.stdout == theirs.stdout


def test_genkey_warns_when_written_to_a_world_readable_file(tmp_path: Path) -> None:
    target = tmp_path / "key"
    target.touch(mode=0o644)
    target.chmod(0o644)
    with target.open("wb") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "wgpy.cli", "genkey"],
            stdout=f,
            stderr=subprocess.PIPE,
            env=_env(),
            check=True,
            timeout=60,
        )
    assert b"Warning: writing to world accessible file." in proc.stderr
    assert len(target.read_text()) == 45


def test_usage_errors_are_one_line_without_traceback() -> None:
    proc = wgpy("frobnicate")
    assert proc.returncode != 0
    assert "invalid choice" in no_traceback(proc)
    proc = wgpy("up")
    assert proc.returncode != 0 and "CONFIG_FILE" in no_traceback(proc)


# ---------------------------------------------------------------------------
# show (same fake UAPI socket for wg and wgpy)
# ---------------------------------------------------------------------------

SHOW_REPLY = (
    "private_key=" + "a8" * 32 + "\n"
    "listen_port=51820\n"
    "fwmark=51820\n"
    "public_key=" + "11" * 32 + "\n"
    "preshared_key=" + "00" * 32 + "\n"
    "protocol_version=1\n"
    "endpoint=192.0.2.1:51820\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=5000000\n"
    "rx_bytes=1234\n"
    "persistent_keepalive_interval=3725\n"
    "allowed_ip=10.0.0.2/32\n"
    "allowed_ip=fd00::/64\n"
    "public_key=" + "22" * 32 + "\n"
    "preshared_key=" + "33" * 32 + "\n"
    "protocol_version=1\n"
    "endpoint=[2001:db8::1]:4\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=0\n"
    "persistent_keepalive_interval=0\n"
    "public_key=" + "44" * 32 + "\n"
    "preshared_key=" + "00" * 32 + "\n"
    "protocol_version=1\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=3000000000000\n"
    "persistent_keepalive_interval=1\n"
    "errno=0\n\n"
)


@needs_wg
@pytest.mark.parametrize("hide", ["", "never"])
def test_show_matches_wg_show(fake_uapi: FakeUapi, hide: str) -> None:  # noqa: F811
    fake_uapi.reply = SHOW_REPLY.encode()
    env = {"WG_HIDE_KEYS": hide} if hide else {}
    ours = wgpy("show", fake_uapi.name, env=env)
    theirs = subprocess.run(
        [WG or "wg", "show", fake_uapi.name],
        capture_output=True,
        env=_env(env),
        timeout=60,
        check=False,
    )
    assert theirs.returncode == 0, theirs.stderr
    assert ours.returncode == 0, ours.stderr
    assert ours.stdout.decode() == theirs.stdout.decode()
    assert "3725" not in ours.stdout.decode()  # "every 1 hour, 2 minutes, 5 seconds"
    assert "every 1 hour, 2 minutes, 5 seconds" in ours.stdout.decode()


def test_show_formats_handshake_age() -> None:
    from wgpy.uapi import UapiConfig, UapiPeer

    now = 1_700_000_000
    state = UapiConfig(
        peers=[
            UapiPeer(public_key=bytes(32)),
            UapiPeer(public_key=bytes([1] * 32), last_handshake_ns=(now - 90061) * 10**9),
            UapiPeer(public_key=bytes([2] * 32), last_handshake_ns=now * 10**9),
        ]
    )
    text = cli.format_show("wgx", state, now=now)
    # Most recent handshake first, never-handshaken last, as wg sorts them.
    order = [line for line in text.splitlines() if line.startswith("peer: ")]
    assert order == [
        f"peer: {encode_key(bytes([2] * 32))}",
        f"peer: {encode_key(bytes([1] * 32))}",
        f"peer: {encode_key(bytes(32))}",
    ]
    assert "latest handshake: Now" in text
    assert "latest handshake: 1 day, 1 hour, 1 minute, 1 second ago" in text


def test_show_missing_interface_is_an_error() -> None:
    proc = wgpy("show", f"nx{secrets.token_hex(4)}")
    assert proc.returncode == 1
    assert "is not a userspace WireGuard interface" in no_traceback(proc)


# ---------------------------------------------------------------------------
# Namespaced tests: helpers
# ---------------------------------------------------------------------------


@pytest.fixture
def wggo_starter(tmp_path: Path) -> Iterator[Callable[[str, str], int]]:
    """``start(ns, ifname)``: wireguard-go in the foreground inside ``ns``;
    returns its PID once the UAPI socket exists.  Every PID is killed at the
    end (wireguard-go also exits by itself when its interface is deleted)."""
    if WIREGUARD_GO is None:
        pytest.skip("needs wireguard-go")
    procs: list[subprocess.Popen[bytes]] = []

    def start(ns: str, ifname: str) -> int:
        log = (tmp_path / f"wggo-{ifname}.log").open("wb")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, WIREGUARD_GO or "", "-f", ifname],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_env(),
        )
        procs.append(proc)
        _wait_for_socket(ifname, proc)
        return proc.pid

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_socket(ifname: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    sock = SOCKET_DIR / f"{ifname}.sock"
    deadline = time.monotonic() + 30
    while not sock.is_socket():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"wireguard-go for {ifname} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{sock} did not appear")
        time.sleep(0.05)


@dataclass
class Wrapper:
    """An executable that starts ``wireguard-go -f NAME`` in the background,
    appends its PID to ``pidfile`` and returns once the UAPI socket exists:
    a daemon command for ``WGPY_USERSPACE_CMD`` and for wg-quick's
    ``WG_QUICK_USERSPACE_IMPLEMENTATION`` that never uses wireguard-go's own
    daemonizing."""

    path: Path
    pidfile: Path
    pids: list[int] = field(default_factory=list)

    def recorded(self) -> list[int]:
        if not self.pidfile.exists():
            return []
        return [int(x) for x in self.pidfile.read_text().split()]


@pytest.fixture
def wggo_wrapper(tmp_path: Path) -> Iterator[Wrapper]:
    if WIREGUARD_GO is None:
        pytest.skip("needs wireguard-go")
    pidfile = tmp_path / "wggo.pids"
    path = tmp_path / "wggo-daemon"
    path.write_text(
        "#!/bin/sh\n"
        f'"{WIREGUARD_GO}" -f "$1" >>"{tmp_path}/wggo-$1.log" 2>&1 </dev/null &\n'
        f'echo $! >>"{pidfile}"\n'
        "i=0\n"
        f'while [ ! -S "{SOCKET_DIR}/$1.sock" ]; do\n'
        "  i=$((i+1)); [ $i -gt 600 ] && exit 1; sleep 0.05\n"
        "done\n"
    )
    path.chmod(0o755)
    wrapper = Wrapper(path, pidfile)
    try:
        yield wrapper
    finally:
        for pid in wrapper.recorded():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _gone(pid: int) -> bool:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie child of ours is gone for our purpose.
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG) != (0, 0):
                return True
        time.sleep(0.05)
    return False


def q(ns: str, *argv: str) -> str:
    return nsh.run_in_ns(ns, list(argv), check=False).stdout.decode()


def uplink(ns: str, mtu: int, addrs: list[str]) -> str:
    """A veth (both ends in ``ns``, names fixed: the namespace is ours alone)
    with this MTU and these addresses: the route the automatic MTU is
    computed from."""
    near, far = nsh.veth_pair(ns, ns, name_a="up0", name_b="up1", addrs_a=addrs)
    nsh.ip(ns, "link", "set", "dev", near, "mtu", str(mtu))
    nsh.ip(ns, "link", "set", "dev", far, "mtu", str(mtu))
    return near


def keypair() -> tuple[str, str]:
    priv = generate_private_key()
    return encode_key(priv), encode_key(public_key_of(priv))


def write_conf(directory: Path, name: str, text: str) -> Path:
    directory.chmod(0o700)
    path = directory / f"{name}.conf"
    path.write_text(text)
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------
# apply_config / teardown against wireguard-go
# ---------------------------------------------------------------------------


def test_apply_config_against_wireguard_go(
    fresh_netns: str, wggo_starter: Callable[[str, str], int], tmp_path: Path
) -> None:
    ns = fresh_netns
    name = nsh.unique_ifname("wgc")
    # An endpoint route through a veth with MTU 1400: the automatic MTU is 1320.
    uplink(ns, 1400, ["10.250.0.1/24"])
    pid = wggo_starter(ns, name)
    priv, _ = keypair()
    _, peer1 = keypair()
    _, peer2 = keypair()
    psk = encode_key(secrets.token_bytes(32))
    text = f"""
[Interface]
PrivateKey = {priv}
ListenPort = 45321
Address = 10.80.0.1/24, fd80::1/64
Table = auto
PostUp = false   # hooks are not apply_config's business

[Peer]
PublicKey = {peer1}
PresharedKey = {psk}
Endpoint = 10.250.0.2:51820
AllowedIPs = 10.80.0.2/32, 10.81.0.0/16, 0.0.0.0/0
PersistentKeepalive = 25

[Peer]
PublicKey = {peer2}
AllowedIPs = fd81::/48, ::/0
"""
    conf = write_conf(tmp_path, name, text)
    code = (
        "import sys; from wgpy.quick import apply_config; from wgpy.config import load\n"
        "apply_config(sys.argv[1], load(sys.argv[2]))\n"
    )
    proc = nsh.python_in_ns(ns, code, name, str(conf), check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()

    # Device state, read back with the real wg.
    dump = wg("show", name, "dump", ns=ns).stdout.decode().splitlines()
    iface_fields = dump[0].split("\t")
    assert iface_fields[0] == priv and iface_fields[2] == "45321"
    assert iface_fields[3] == "0xca6c"  # wg-quick's fwmark for a /0 route: table 51820
    peers = {f[0]: f for f in (line.split("\t") for line in dump[1:])}
    assert peers[peer1][1] == psk
    assert peers[peer1][2] == "10.250.0.2:51820"
    assert peers[peer1][3] == "10.80.0.2/32,10.81.0.0/16,0.0.0.0/0"
    assert peers[peer1][7] == "25"
    assert peers[peer2][3] == "fd81::/48,::/0"

    # Link: addresses, automatic MTU (1400 - 80), up.
    link = q(ns, "ip", "link", "show", "dev", name)
    assert "mtu 1320" in link and ",UP" in link
    addrs = q(ns, "ip", "-o", "address", "show", "dev", name)
    assert "inet 10.80.0.1/24" in addrs and "inet6 fd80::1/64" in addrs

    # Routes: specific prefixes in the main table, /0 in table 51820.
    main4 = q(ns, "ip", "-4", "route", "show", "dev", name)
    assert "10.81.0.0/16" in main4
    assert "10.80.0.2" not in main4  # covered by the address's own /24, as wg-quick skips it
    assert "fd81::/48" in q(ns, "ip", "-6", "route", "show", "dev", name)
    assert q(ns, "ip", "-4", "route", "show", "table", "51820").startswith("default dev " + name)
    assert q(ns, "ip", "-6", "route", "show", "table", "51820").startswith("default dev " + name)
    for family in ("-4", "-6"):
        rules = q(ns, "ip", family, "rule", "show")
        assert "not from all fwmark 0xca6c lookup 51820" in rules
        assert "from all lookup main suppress_prefixlength 0" in rules
    assert q(ns, "cat", "/proc/sys/net/ipv4/conf/all/src_valid_mark").strip() == "1"
    if shutil.which("nft"):
        ruleset = q(ns, "nft", "list", "ruleset")
        assert f"table ip wg-quick-{name}" in ruleset
        assert f"table ip6 wg-quick-{name}" in ruleset
        assert f'iifname != "{name}" ip daddr 10.80.0.1 fib saddr type != local drop' in ruleset

    # teardown removes rules, nftables tables and the link; wireguard-go exits.
    code_down = (
        "import sys; from wgpy.quick import teardown; from wgpy.config import load\n"
        "teardown(sys.argv[1], load(sys.argv[2]))\n"
    )
    proc = nsh.python_in_ns(ns, code_down, name, str(conf), check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    assert name not in q(ns, "ip", "link")
    for family in ("-4", "-6"):
        rules = q(ns, "ip", family, "rule", "show")
        assert "51820" not in rules and "suppress_prefixlength" not in rules
    assert "wg-quick" not in q(ns, "nft", "list", "ruleset")
    assert _gone(pid)


def test_apply_config_table_off_and_numbered(
    fresh_netns: str, wggo_starter: Callable[[str, str], int], tmp_path: Path
) -> None:
    ns = fresh_netns
    for table, expect_main, expect_table in (("off", False, None), ("1234", False, "1234")):
        name = nsh.unique_ifname("wgt")
        wggo_starter(ns, name)
        priv, _ = keypair()
        _, peer = keypair()
        conf = write_conf(
            tmp_path,
            name,
            f"[Interface]\nPrivateKey = {priv}\nMTU = 1280\nTable = {table}\n"
            "Address = 10.83.0.1/24\n"
            f"[Peer]\nPublicKey = {peer}\nAllowedIPs = 10.82.0.0/16, 0.0.0.0/0\n",
        )
        code = (
            "import sys; from wgpy.quick import apply_config; from wgpy.config import load\n"
            "apply_config(sys.argv[1], load(sys.argv[2]), log=None)\n"
        )
        proc = nsh.python_in_ns(ns, code, name, str(conf), check=False, timeout=60)
        assert proc.returncode == 0, proc.stderr.decode()
        assert "mtu 1280" in q(ns, "ip", "link", "show", "dev", name)
        assert ("10.82.0.0/16" in q(ns, "ip", "route", "show", "dev", name)) == expect_main
        if expect_table:
            routes = q(ns, "ip", "route", "show", "table", expect_table)
            assert "10.82.0.0/16 dev " + name in routes and "default dev " + name in routes
        # A numbered or "off" table never installs the /0 policy rules.
        assert "suppress_prefixlength" not in q(ns, "ip", "rule", "show")
        assert wg("show", name, "fwmark", ns=ns).stdout.decode().strip() == "off"
        # Applying the same file again fails at the address step (it exists),
        # reported as one line naming the command.
        proc = nsh.python_in_ns(ns, code, name, str(conf), check=False, timeout=60)
        assert proc.returncode != 0
        err = proc.stderr.decode().strip()
        assert "'ip -4 address add 10.83.0.1/24 dev " in err and "failed (status 2)" in err
        nsh.ip(ns, "link", "del", name)


# ---------------------------------------------------------------------------
# wgpy up/down vs wg-quick up/down
# ---------------------------------------------------------------------------


def _snapshot(ns: str, name: str) -> dict[str, str]:
    """Everything up/down touch, with the interface name replaced by IFACE
    and random link-local addresses dropped."""

    def norm(text: str) -> str:
        lines = [line for line in text.splitlines() if "fe80" not in line]
        return "\n".join(lines).replace(name, "IFACE")

    link = q(ns, "ip", "link", "show", "dev", name)
    return {
        "link": norm(re.sub(r"^\d+: ", "", link)),
        "addr": norm(q(ns, "ip", "-o", "address", "show", "dev", name)).replace("\\", ""),
        "route4": norm(q(ns, "ip", "-4", "route", "show", "table", "all")),
        "route6": norm(q(ns, "ip", "-6", "route", "show", "table", "all")),
        "rule4": norm(q(ns, "ip", "-4", "rule", "show")),
        "rule6": norm(q(ns, "ip", "-6", "rule", "show")),
        "nft": norm(q(ns, "nft", "list", "ruleset")) if shutil.which("nft") else "",
        # wireguard-go lists peers in random (Go map) order: sort the blocks.
        "wg": _sorted_peers(norm(wg("showconf", name, ns=ns).stdout.decode()))
        if _sock(name)
        else "",
        "src_valid_mark": q(ns, "cat", "/proc/sys/net/ipv4/conf/all/src_valid_mark"),
    }


def _sorted_peers(showconf: str) -> str:
    head, *peers = showconf.strip().split("\n\n")
    return "\n\n".join([head, *sorted(peers)])


def _sock(name: str) -> bool:
    return (SOCKET_DIR / f"{name}.sock").is_socket()


@needs_wg
@pytest.mark.skipif(WG_QUICK is None, reason="needs the wg-quick script")
def test_up_down_leave_the_same_state_as_wg_quick(
    netns_factory: Callable[..., str], wggo_wrapper: Wrapper, tmp_path: Path
) -> None:
    priv, _ = keypair()
    _, peer1 = keypair()
    _, peer2 = keypair()
    body = f"""
[Interface]
PrivateKey = {priv}
ListenPort = 40001
Address = 10.90.0.1/24
Address = fd90::1/64, 10.91.0.1
PostUp = ip link set dev %i txqueuelen 77

[Peer]
PublicKey = {peer1}
Endpoint = 10.251.0.2:51820
AllowedIPs = 10.90.0.0/24, 10.92.0.0/16, 10.92.1.0/24, 0.0.0.0/0

[Peer]
PublicKey = {peer2}
Endpoint = [fd25:1::2]:51820
AllowedIPs = fd92::/32, ::/0
PersistentKeepalive = 15
"""
    snaps = {}
    for tool in ("wg-quick", "wgpy"):
        ns = netns_factory(f"cli{tool[:3]}")
        uplink(ns, 1450, ["10.251.0.1/24", "fd25:1::1/64"])
        name = nsh.unique_ifname("wgq")
        d = tmp_path / tool
        d.mkdir()
        conf = write_conf(d, name, body)
        if tool == "wg-quick":
            env = _env({"WG_QUICK_USERSPACE_IMPLEMENTATION": str(wggo_wrapper.path)})
            up = subprocess.run(
                ["ip", "netns", "exec", ns, WG_QUICK or "", "up", str(conf)],
                capture_output=True,
                env=env,
                timeout=120,
                check=False,
            )
        else:
            up = wgpy("up", str(conf), ns=ns, env={"WGPY_USERSPACE_CMD": str(wggo_wrapper.path)})
        assert up.returncode == 0, up.stderr.decode()
        no_traceback(up)
        up_state = _snapshot(ns, name)
        pid = wggo_wrapper.recorded()[-1]
        if tool == "wg-quick":
            down = subprocess.run(
                ["ip", "netns", "exec", ns, WG_QUICK or "", "down", str(conf)],
                capture_output=True,
                env=_env(),
                timeout=120,
                check=False,
            )
        else:
            down = wgpy("down", str(conf), ns=ns)
        assert down.returncode == 0, down.stderr.decode()
        assert _gone(pid), f"{tool}: wireguard-go did not exit after down"
        snaps[tool] = (up_state, _snapshot(ns, name))
    (up_ref, down_ref), (up_ours, down_ours) = snaps["wg-quick"], snaps["wgpy"]
    assert up_ours == up_ref
    assert down_ours == down_ref
    # The comparison is about something: the up state has what we expect.
    assert "mtu 1370" in up_ref["link"] and "qlen 77" in up_ref["link"]
    assert "lookup 51820" in up_ref["rule4"] and "lookup 51820" in up_ref["rule6"]
    assert "10.92.0.0/16 dev IFACE" in up_ref["route4"]
    assert down_ref["link"] == "" and "51820" not in down_ref["rule4"]


# ---------------------------------------------------------------------------
# wgpy up/down end to end with the wgpy daemon
# ---------------------------------------------------------------------------


@needs_wg
def test_up_down_with_wgpy_daemon_pings_a_wireguard_go_peer(
    netns_factory: Callable[..., str], wggo_wrapper: Wrapper, tmp_path: Path
) -> None:
    # wgpy's own daemon must import: an ImportError here is a wgpy bug (not
    # ``import wgpy.daemon``: that would shadow this module's wgpy() helper).
    importlib.import_module("wgpy.daemon")

    a, b = netns_factory("clia"), netns_factory("clib")
    nsh.veth_pair(a, b, addrs_a=["10.252.0.1/24"], addrs_b=["10.252.0.2/24"])
    name_a, name_b = nsh.unique_ifname("wga"), nsh.unique_ifname("wgb")
    priv_a, pub_a = keypair()
    priv_b, pub_b = keypair()
    psk = encode_key(secrets.token_bytes(32))
    marks = tmp_path / "marks"
    conf_a = write_conf(
        tmp_path,
        name_a,
        f"""[Interface]
PrivateKey = {priv_a}
ListenPort = 41001
Address = 10.93.0.1/24
PreUp = echo "pre-up %i" >> {marks}
PostUp = echo "post-up %i" >> {marks}
PreDown = echo "pre-down %i" >> {marks}
PostDown = echo "post-down %i" >> {marks}

[Peer]
PublicKey = {pub_b}
PresharedKey = {psk}
Endpoint = 10.252.0.2:41002
AllowedIPs = 10.93.0.2/32
""",
    )
    conf_b = write_conf(
        tmp_path,
        name_b,
        f"""[Interface]
PrivateKey = {priv_b}
ListenPort = 41002
Address = 10.93.0.2/24

[Peer]
PublicKey = {pub_a}
PresharedKey = {psk}
AllowedIPs = 10.93.0.1/32
""",
    )
    up_b = wgpy("up", str(conf_b), ns=b, env={"WGPY_USERSPACE_CMD": str(wggo_wrapper.path)})
    assert up_b.returncode == 0, up_b.stderr.decode()
    up_a = wgpy("up", str(conf_a), ns=a)  # the default daemon: python -m wgpy.daemon
    try:
        assert up_a.returncode == 0, up_a.stderr.decode()
        assert marks.read_text() == f"pre-up {name_a}\npost-up {name_a}\n"
        ping = nsh.run_in_ns(
            a, ["ping", "-c", "2", "-W", "10", "10.93.0.2"], check=False, timeout=60
        )
        assert ping.returncode == 0, ping.stdout.decode() + ping.stderr.decode()
        shown = wgpy("show", name_a, ns=a).stdout.decode()
        assert f"peer: {pub_b}" in shown and "latest handshake:" in shown
        assert "transfer:" in shown
        # Bringing it up twice is refused without touching the running one.
        again = wgpy("up", str(conf_a), ns=a)
        assert again.returncode == 1 and f"'{name_a}' already exists" in no_traceback(again)
    finally:
        down_a = wgpy("down", str(conf_a), ns=a)
        down_b = wgpy("down", str(conf_b), ns=b)
    assert down_a.returncode == 0, down_a.stderr.decode()
    assert down_b.returncode == 0, down_b.stderr.decode()
    assert marks.read_text().endswith(f"pre-down {name_a}\npost-down {name_a}\n")
    assert name_a not in q(a, "ip", "link")
    deadline = time.monotonic() + 15
    while _sock(name_a) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _sock(name_a), "the wgpy daemon did not exit after its interface was deleted"


@needs_wg
def test_save_config_writes_back_the_running_state(
    fresh_netns: str, wggo_wrapper: Wrapper, tmp_path: Path
) -> None:
    ns = fresh_netns
    name = nsh.unique_ifname("wgs")
    priv, _ = keypair()
    _, peer1 = keypair()
    _, peer2 = keypair()
    conf = write_conf(
        tmp_path,
        name,
        f"""[Interface]
PrivateKey = {priv}
ListenPort = 41111
Address = 10.94.0.1/24
MTU = 1300
PostUp = true
SaveConfig = true

[Peer]
PublicKey = {peer1}
AllowedIPs = 10.94.0.2/32
""",
    )
    env = {"WGPY_USERSPACE_CMD": str(wggo_wrapper.path)}
    assert wgpy("up", str(conf), ns=ns, env=env).returncode == 0
    # Change the running interface: a new peer, another address, another MTU.
    assert wg("set", name, "peer", peer2, "allowed-ips", "10.94.0.3/32", ns=ns).returncode == 0
    nsh.ip(ns, "address", "add", "10.95.0.1/24", "dev", name)
    nsh.ip(ns, "link", "set", "dev", name, "mtu", "1310")
    down = wgpy("down", str(conf), ns=ns)
    assert down.returncode == 0, down.stderr.decode()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    saved = load(conf)
    # wireguard-go lists peers in random order: compare as a set.
    assert sorted(encode_key(p.public_key) for p in saved.peers) == sorted([peer1, peer2])
    assert [str(a) for a in saved.interface.addresses] == ["10.94.0.1/24", "10.95.0.1/24"]
    assert saved.interface.mtu == 1310
    assert saved.interface.listen_port == 41111
    assert saved.interface.post_up == ["true"] and saved.interface.save_config is True
    assert encode_key(saved.interface.private_key or b"") == priv


# ---------------------------------------------------------------------------
# Error paths: one line, non-zero, nothing left behind
# ---------------------------------------------------------------------------


def test_up_errors_are_one_line(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (up refuses to run otherwise)")
    missing = wgpy("up", str(tmp_path / "nope0.conf"))
    assert missing.returncode == 1
    assert "does not exist" in no_traceback(missing)
    bad = write_conf(
        tmp_path, "bad0", "[Interface]\nListenPort = 1\n\n[Peer]\nAllowedIPs = 1.2.3.4/40\n"
    )
    proc = wgpy("up", str(bad))
    err = no_traceback(proc)
    assert proc.returncode == 1
    assert err.strip().endswith("line 5: invalid AllowedIPs '1.2.3.4/40'")
    assert len(err.strip().splitlines()) == 1
    odd = tmp_path / "not-an-interface-name-at-all.conf"
    odd.write_text("")
    proc = wgpy("up", str(odd))
    assert proc.returncode == 1 and "valid interface name" in no_traceback(proc)


def test_down_of_a_non_wireguard_interface_is_refused(fresh_netns: str, tmp_path: Path) -> None:
    ns = fresh_netns
    other = uplink(ns, 1500, [])
    conf = write_conf(tmp_path, other, "[Interface]\nPreDown = touch /nonexistent/x\n")
    proc = wgpy("down", str(conf), ns=ns)
    assert proc.returncode == 1
    assert f"'{other}' is not a WireGuard interface" in no_traceback(proc)
    assert other in q(ns, "ip", "link")  # untouched


def test_failed_pre_up_or_daemon_leaves_nothing(
    fresh_netns: str, wggo_wrapper: Wrapper, tmp_path: Path
) -> None:
    ns = fresh_netns
    name = nsh.unique_ifname("wgf")
    priv, _ = keypair()
    conf = write_conf(tmp_path, name, f"[Interface]\nPrivateKey = {priv}\nPreUp = exit 3\n")
    proc = wgpy("up", str(conf), ns=ns, env={"WGPY_USERSPACE_CMD": str(wggo_wrapper.path)})
    assert proc.returncode == 1
    assert "PreUp command failed (status 3): exit 3" in no_traceback(proc)
    assert wggo_wrapper.recorded() == []  # the daemon was never started

    # A failing PostUp undoes everything: the interface goes, the daemon exits.
    conf.write_text(f"[Interface]\nPrivateKey = {priv}\nAddress = 10.96.0.1/24\nPostUp = false\n")
    proc = wgpy("up", str(conf), ns=ns, env={"WGPY_USERSPACE_CMD": str(wggo_wrapper.path)})
    assert proc.returncode == 1
    assert "PostUp command failed (status 1): false" in no_traceback(proc)
    assert name not in q(ns, "ip", "link")
    assert _gone(wggo_wrapper.recorded()[-1])

    # A daemon command that fails is reported, not hidden.
    proc = wgpy("up", str(conf), ns=ns, env={"WGPY_USERSPACE_CMD": "false"})
    assert proc.returncode == 1
    assert "userspace daemon failed to start" in no_traceback(proc)
    proc = wgpy("up", str(conf), ns=ns, env={"WGPY_USERSPACE_CMD": "/nonexistent/daemon"})
    assert proc.returncode == 1
    assert "cannot start the userspace daemon" in no_traceback(proc)


def test_dns_without_resolvconf_warns(
    fresh_netns: str, wggo_starter: Callable[[str, str], int], tmp_path: Path
) -> None:
    if shutil.which("resolvconf"):
        pytest.skip("resolvconf is installed: applying DNS would change the host's resolver")
    ns = fresh_netns
    name = nsh.unique_ifname("wgd")
    wggo_starter(ns, name)
    priv, _ = keypair()
    conf = write_conf(tmp_path, name, f"[Interface]\nPrivateKey = {priv}\nDNS = 10.0.0.53, lan\n")
    code = (
        "import sys; from wgpy.quick import apply_config; from wgpy.config import load\n"
        "apply_config(sys.argv[1], load(sys.argv[2]), log=None)\n"
    )
    proc = nsh.python_in_ns(ns, code, name, str(conf), check=False, timeout=60)
    assert proc.returncode == 0
    assert "DNS = 10.0.0.53, lan not applied: resolvconf is not installed" in proc.stderr.decode()


def test_strip_subcommand(tmp_path: Path) -> None:
    priv, _ = keypair()
    conf = write_conf(
        tmp_path, "wgst0", f"[Interface]\nPrivateKey = {priv}\nAddress = 10.0.0.1/24\nMTU = 1400\n"
    )
    proc = wgpy("strip", str(conf))
    assert proc.returncode == 0
    assert loads(proc.stdout.decode()) == loads(f"[Interface]\nPrivateKey = {priv}\n")
