"""The ``wgpy`` command: keys, status, and wg-quick style ``up``/``down``.

Subcommands::

    wgpy genkey | genpsk            a key in base64 on stdout (as ``wg``)
    wgpy pubkey < private.key       the public key of a private key (as ``wg``)
    wgpy show [INTERFACE|all|interfaces]
    wgpy up CONFIG_FILE|INTERFACE   like ``wg-quick up`` with the wgpy daemon
    wgpy down CONFIG_FILE|INTERFACE like ``wg-quick down``
    wgpy strip CONFIG_FILE|INTERFACE
    wgpy userspace [-f] INTERFACE   the daemon (same as ``wgpy-userspace``)
    wgpy demo [...]                 a guided end-to-end demonstration

``up`` follows ``wg-quick(8)`` for Linux, except that the interface is always
created by the userspace daemon (``python -m wgpy.daemon NAME``, or
the command in ``WGPY_USERSPACE_CMD``).  It runs PreUp, starts the daemon,
configures it over UAPI (what ``wg setconf`` would send), adds addresses,
sets the MTU (given, or wg-quick's estimate), brings the link up, sets DNS
through ``resolvconf`` when it is installed, adds a route per AllowedIPs
prefix (for ``/0`` the fwmark and policy-routing rules wg-quick uses, with
its nftables or iptables rules), then runs PostUp.  A failure undoes what was
done.  ``down`` runs PreDown, saves the configuration if ``SaveConfig`` is
true, removes rules and the interface (the daemon exits), then PostDown.

Every error is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from wgpy.config import (
    ConfigError,
    InterfaceConfig,
    PeerConfig,
    WgQuickConfig,
    dumps,
    load,
    resolve_config_path,
    routes_of,
    strip,
    to_uapi_set,
)
from wgpy.keys import (
    KEY_BASE64_LEN,
    decode_key,
    encode_key,
    generate_private_key,
    generate_psk,
    public_key_of,
)

if TYPE_CHECKING:
    from wgpy.uapi import UapiConfig

__all__ = [
    "CliError",
    "apply_config",
    "down",
    "main",
    "start_userspace",
    "teardown",
    "up",
]

PROG = "wgpy"
#: First routing table tried for a /0 route when no FwMark is configured.
DEFAULT_ROUTE_TABLE = 51820
#: Overhead wg-quick subtracts from the path MTU: IPv6 (40) + UDP (8) + WireGuard (32).
MTU_OVERHEAD = 80
#: How long ``up`` waits for the daemon's UAPI socket after the daemon returned.
_SOCKET_WAIT = 10.0

Log = Callable[[str], None]


class CliError(Exception):
    """A command failed; the message is printed as one line."""


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Keys: genkey, genpsk, pubkey (byte-compatible with wg)
# ---------------------------------------------------------------------------

_C_SPACE = b" \t\n\v\f\r"


def _warn_world_accessible_stdout() -> None:
    # wg genkey/genpsk warn when redirected into a file others can read.
    with contextlib.suppress(OSError):
        st = os.fstat(sys.stdout.fileno())
        if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IRWXO:
            _stderr(
                "Warning: writing to world accessible file.\n"
                "Consider setting the umask to 077 and trying again."
            )


def cmd_genkey(_args: argparse.Namespace) -> int:
    """``wgpy genkey``: a clamped random private key."""
    _warn_world_accessible_stdout()
    sys.stdout.write(encode_key(generate_private_key()) + "\n")
    return 0


def cmd_genpsk(_args: argparse.Namespace) -> int:
    """``wgpy genpsk``: a random preshared key."""
    _warn_world_accessible_stdout()
    sys.stdout.write(encode_key(generate_psk()) + "\n")
    return 0


def pubkey_from_stdin_bytes(data: bytes) -> str:
    """What ``wg pubkey`` prints for ``data`` on stdin (without the newline).

    As ``wg``: the first 44 bytes must be the key; anything after it may only
    be whitespace or NUL bytes.  Raises CliError with wg's messages.
    """
    head, tail = data[:KEY_BASE64_LEN], data[KEY_BASE64_LEN:]
    if len(head) != KEY_BASE64_LEN:
        raise CliError("Key is not the correct length or format")
    if tail.strip(_C_SPACE + b"\x00"):
        raise CliError("Trailing characters found after key")
    try:
        private = decode_key(head.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise CliError("Key is not the correct length or format") from None
    return encode_key(public_key_of(private))


def cmd_pubkey(_args: argparse.Namespace) -> int:
    """``wgpy pubkey``: private key on stdin, public key on stdout."""
    sys.stdout.write(pubkey_from_stdin_bytes(sys.stdin.buffer.read()) + "\n")
    return 0


# ---------------------------------------------------------------------------
# UAPI access (wgpy.uapi is imported lazily: keys and config need none of it)
# ---------------------------------------------------------------------------


def _socket_path(name: str) -> str:
    """The interface's UAPI socket: the system directory's, else this user's
    (a userspace adapter of an unprivileged user; see wgpy.paths)."""
    from wgpy import paths

    return paths.find_uapi_socket(name) or os.path.join(paths.UAPI_SYSTEM_DIRECTORY, f"{name}.sock")


def _has_uapi_socket(name: str) -> bool:
    return _is_socket(_socket_path(name))


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def uapi_get(name: str) -> UapiConfig:
    """The interface's configuration and state, read over UAPI."""
    from wgpy.uapi import UapiClient

    try:
        return UapiClient(_socket_path(name)).get()
    except FileNotFoundError:
        raise CliError(
            f"'{name}' is not a userspace WireGuard interface (no UAPI socket)"
        ) from None
    except OSError as exc:
        raise CliError(f"unable to read the configuration of '{name}': {_oserror(exc)}") from None


def uapi_set(name: str, lines: Sequence[str]) -> None:
    """Send ``key=value`` lines in one UAPI set operation."""
    from wgpy.uapi import UapiClient

    try:
        UapiClient(_socket_path(name)).set(lines)
    except FileNotFoundError:
        raise CliError(
            f"'{name}' is not a userspace WireGuard interface (no UAPI socket)"
        ) from None
    except OSError as exc:
        raise CliError(f"unable to configure '{name}' over UAPI: {_oserror(exc)}") from None


def _oserror(exc: OSError) -> str:
    return exc.strerror or str(exc)


def userspace_interfaces() -> list[str]:
    """Names of the interfaces that have a UAPI socket (in the system
    directory or this user's), sorted."""
    from wgpy import paths

    names: set[str] = set()
    for directory in paths.uapi_directories():
        try:
            entries = os.listdir(directory)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".sock") and _is_socket(os.path.join(directory, entry)):
                names.add(entry[: -len(".sock")])
    return sorted(names)


# ---------------------------------------------------------------------------
# show
# ---------------------------------------------------------------------------


def _pretty_time(seconds: int) -> str:
    parts = []
    for unit, size in (("year", 365 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'' if count == 1 else 's'}")
    if seconds:
        parts.append(f"{seconds} second{'' if seconds == 1 else 's'}")
    return ", ".join(parts)


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    for unit, scale in (("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30)):
        if n < scale << 10:
            return f"{n / scale:.2f} {unit}"
    return f"{n / (1 << 40):.2f} TiB"


def format_show(name: str, state: UapiConfig, now: float | None = None) -> str:
    """A ``wg show``-style summary of one interface (no colours)."""
    now_s = int(time.time() if now is None else now)
    hide = os.environ.get("WG_HIDE_KEYS") != "never"
    out = [f"interface: {name}"]
    if state.private_key is not None:
        out.append(f"  public key: {encode_key(public_key_of(state.private_key))}")
        out.append(f"  private key: {'(hidden)' if hide else encode_key(state.private_key)}")
    if state.listen_port:
        out.append(f"  listening port: {state.listen_port}")
    if state.fwmark:
        out.append(f"  fwmark: 0x{state.fwmark:x}")
    # Most recent handshake first; never-handshaken peers last (as wg).
    peers = sorted(state.peers, key=lambda p: (p.last_handshake_ns == 0, -p.last_handshake_ns))
    for peer in peers:
        out.append("")
        out.append(f"peer: {encode_key(peer.public_key)}")
        if peer.preshared_key is not None:
            out.append(f"  preshared key: {'(hidden)' if hide else encode_key(peer.preshared_key)}")
        if peer.endpoint:
            out.append(f"  endpoint: {peer.endpoint}")
        out.append(f"  allowed ips: {', '.join(peer.allowed_ips) or '(none)'}")
        if peer.last_handshake_ns:
            sec = peer.last_handshake_ns // 1_000_000_000
            if sec == now_s:
                ago = "Now"
            elif sec > now_s:
                ago = "(System clock wound backward; connection problems may ensue.)"
            else:
                ago = f"{_pretty_time(now_s - sec)} ago"
            out.append(f"  latest handshake: {ago}")
        if peer.rx_bytes or peer.tx_bytes:
            out.append(
                f"  transfer: {_bytes(peer.rx_bytes)} received, {_bytes(peer.tx_bytes)} sent"
            )
        if peer.persistent_keepalive:
            out.append(f"  persistent keepalive: every {_pretty_time(peer.persistent_keepalive)}")
    return "\n".join(out) + "\n"


def cmd_show(args: argparse.Namespace) -> int:
    """``wgpy show [INTERFACE|all|interfaces]``."""
    target = args.interface or "all"
    if target == "interfaces":
        names = userspace_interfaces()
        if names:
            print(" ".join(names))
        return 0
    names = userspace_interfaces() if target == "all" else [target]
    blocks = [format_show(n, uapi_get(n)) for n in names]
    sys.stdout.write("\n".join(blocks))
    return 0


# ---------------------------------------------------------------------------
# Running commands (printed as wg-quick does: "[#] command")
# ---------------------------------------------------------------------------


def _log_stderr(message: str) -> None:
    _stderr(message)


def _run(
    argv: Sequence[str], log: Log | None, *, input: str | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run a command; print it first when ``log`` is given; CliError on failure."""
    if log is not None:
        log(f"[#] {shlex.join(argv)}")
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise CliError(f"command not found: {argv[0]}") from None
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise CliError(
            f"'{shlex.join(argv)}' failed (status {proc.returncode})"
            + (f": {detail[-1]}" if detail else "")
        )
    return proc


def _query(argv: Sequence[str]) -> str:
    """Output of a read-only command, or "" if it fails."""
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        return ""
    return proc.stdout if proc.returncode == 0 else ""


def _link_exists(name: str) -> bool:
    proc = subprocess.run(["ip", "link", "show", "dev", name], capture_output=True, check=False)
    return proc.returncode == 0


def run_hooks(hooks: Sequence[str], name: str, what: str, log: Log | None) -> None:
    """Run PreUp/PostUp/... snippets with bash, ``%i`` replaced by the name."""
    shell = shutil.which("bash") or "/bin/sh"
    for hook in hooks:
        command = hook.replace("%i", name)
        if log is not None:
            log(f"[#] {command}")
        proc = subprocess.run([shell, "-c", command], check=False)
        if proc.returncode != 0:
            raise CliError(f"{what} command failed (status {proc.returncode}): {command}")


# ---------------------------------------------------------------------------
# up: the daemon, then the configuration half (apply_config)
# ---------------------------------------------------------------------------


def _userspace_cmd() -> list[str]:
    text = os.environ.get("WGPY_USERSPACE_CMD")
    if text:
        return shlex.split(text)
    return [sys.executable, "-m", "wgpy.daemon"]


def start_userspace(name: str, log: Log | None = _log_stderr) -> None:
    """Start the userspace daemon for ``name`` and wait until its UAPI socket
    answers.  The daemon command is ``python -m wgpy.daemon`` or
    ``WGPY_USERSPACE_CMD`` (split like a shell word list), plus the name;
    it must daemonize itself, as ``wireguard-go NAME`` does."""
    argv = [*_userspace_cmd(), name]
    if log is not None:
        log(f"[#] {shlex.join(argv)}")
    env = dict(os.environ)
    env.pop("WG_PROCESS_FOREGROUND", None)  # the daemon must detach, or we would wait forever
    try:
        proc = subprocess.run(argv, stdin=subprocess.DEVNULL, env=env, check=False)
    except OSError as exc:
        raise CliError(f"cannot start the userspace daemon {argv[0]}: {_oserror(exc)}") from None
    if proc.returncode != 0:
        raise CliError(f"the userspace daemon failed to start (status {proc.returncode})")
    deadline = time.monotonic() + _SOCKET_WAIT
    while not _has_uapi_socket(name):
        if time.monotonic() > deadline:
            raise CliError(f"the userspace daemon did not create {_socket_path(name)}")
        time.sleep(0.05)


def _family_flag(net: object) -> str:
    """``-4`` or ``-6`` for an address, network or interface (or its text)."""
    return "-6" if ":" in str(net) else "-4"


def _mtu_of_route(output: str) -> int:
    """wg-quick's rule: the route's own ``mtu N``, else its device's MTU."""
    m = re.search(r"\bmtu (\d+)", output)
    if m:
        return int(m.group(1))
    m = re.search(r"\bdev (\S+)", output)
    if m:
        link = _query(["ip", "link", "show", "dev", m.group(1)])
        m2 = re.search(r"\bmtu (\d+)", link)
        if m2:
            return int(m2.group(1))
    return 0


def estimate_mtu(endpoints: Sequence[str]) -> int:
    """wg-quick's automatic MTU: the largest MTU on the routes to the peers'
    endpoints (else on the default route, else 1500) minus 80."""
    mtu = 0
    for endpoint in endpoints:
        m = re.match(r"^\[?([a-z0-9:.]+)\]?:[0-9]+$", endpoint)
        if m:
            mtu = max(mtu, _mtu_of_route(_query(["ip", "route", "get", m.group(1)])))
    if mtu == 0:
        first = _query(["ip", "route", "show", "default"]).partition("\n")[0]
        mtu = _mtu_of_route(first) if first else 0
    return (mtu or 1500) - MTU_OVERHEAD


def _resolvconf_name(name: str) -> str:
    # wg-quick: prefix with the first "NAME*" entry of resolvconf's interface-order.
    with contextlib.suppress(OSError):
        for line in Path("/etc/resolvconf/interface-order").read_text().splitlines():
            m = re.match(r"^([A-Za-z0-9-]+)\*$", line)
            if m:
                return f"{m.group(1)}.{name}"
    return name


def set_dns(name: str, iface: InterfaceConfig, log: Log | None) -> bool:
    """Hand the DNS servers to resolvconf; warn (and return False) without it."""
    if not iface.dns_servers:
        return False
    if shutil.which("resolvconf") is None:
        _stderr(
            f"{PROG}: warning: DNS = {', '.join(iface.dns)} not applied: "
            "resolvconf is not installed"
        )
        return False
    text = "".join(f"nameserver {s}\n" for s in iface.dns_servers)
    if iface.dns_search:
        text += f"search {' '.join(iface.dns_search)}\n"
    _run(["resolvconf", "-a", _resolvconf_name(name), "-m", "0", "-x"], log, input=text)
    return True


def unset_dns(name: str, iface: InterfaceConfig, log: Log | None) -> None:
    """Undo :func:`set_dns` (nothing to do without DNS servers or resolvconf)."""
    if iface.dns_servers and shutil.which("resolvconf") is not None:
        _run(["resolvconf", "-d", _resolvconf_name(name), "-f"], log, check=False)


def _firewall_marker(name: str) -> str:
    # The same comment and nftables table name as wg-quick, so either tool
    # can remove what the other added.
    return f"wg-quick(8) rule for {name}"


def _add_firewall(name: str, family: str, table: int, log: Log | None) -> None:
    """The rules wg-quick adds with a /0 route: drop packets for our addresses
    arriving on other interfaces, and carry the fwmark of the tunnel's UDP
    packets through conntrack so replies are routed outside the tunnel."""
    pf, iptables = ("ip6", "ip6tables") if family == "-6" else ("ip", "iptables")
    addrs = re.findall(
        r"\binet6? ([0-9a-f:.]+)/\d+", _query(["ip", "-o", family, "address", "show", "dev", name])
    )
    nft_table = f"wg-quick-{name}"
    if shutil.which("nft"):
        script = [
            f"add table {pf} {nft_table}",
            f"add chain {pf} {nft_table} preraw {{ type filter hook prerouting priority -300; }}",
            f"add chain {pf} {nft_table} premangle"
            " { type filter hook prerouting priority -150; }",
            f"add chain {pf} {nft_table} postmangle"
            " { type filter hook postrouting priority -150; }",
        ]
        script += [
            f'add rule {pf} {nft_table} preraw iifname != "{name}" {pf} daddr {a}'
            " fib saddr type != local drop"
            for a in addrs
        ]
        script += [
            f"add rule {pf} {nft_table} postmangle meta l4proto udp mark {table} ct mark set mark",
            f"add rule {pf} {nft_table} premangle meta l4proto udp meta mark set ct mark",
        ]
        _run(["nft", "-f", "-"], log, input="\n".join(script) + "\n")
    elif shutil.which(f"{iptables}-restore"):
        marker = f'-m comment --comment "{_firewall_marker(name)}"'
        rules = ["*raw"]
        rules += [
            f"-I PREROUTING ! -i {name} -d {a} -m addrtype ! --src-type LOCAL -j DROP {marker}"
            for a in addrs
        ]
        rules += [
            "COMMIT",
            "*mangle",
            f"-I POSTROUTING -m mark --mark {table} -p udp -j CONNMARK --save-mark {marker}",
            f"-I PREROUTING -p udp -j CONNMARK --restore-mark {marker}",
            "COMMIT",
        ]
        _run([f"{iptables}-restore", "-n"], log, input="\n".join(rules) + "\n")
    else:
        _stderr(
            f"{PROG}: warning: neither nft nor {iptables}-restore is installed: the firewall "
            "rules wg-quick adds with a default route were not added"
        )


def _remove_firewall(name: str, log: Log | None) -> None:
    if shutil.which("nft"):
        wanted = f" wg-quick-{name}"
        script = [
            f"delete {line.strip()}"
            for line in _query(["nft", "list", "tables"]).splitlines()
            if line.strip().endswith(wanted)
        ]
        if script:
            _run(["nft", "-f", "-"], log, input="\n".join(script) + "\n", check=False)
    marker = f'-m comment --comment "{_firewall_marker(name)}"'
    for iptables in ("iptables", "ip6tables"):
        if not shutil.which(f"{iptables}-restore"):
            continue
        restore, found = [], False
        for line in _query([f"{iptables}-save"]).splitlines():
            if line.startswith("*") or line == "COMMIT":
                restore.append(line)
            elif line.startswith("-A ") and marker in line:
                restore.append("-D " + line[3:])
                found = True
        if found:
            _run([f"{iptables}-restore", "-n"], log, input="\n".join(restore) + "\n", check=False)


def _free_table() -> int:
    table = DEFAULT_ROUTE_TABLE
    while (
        _query(["ip", "-4", "route", "show", "table", str(table)]).strip()
        or _query(["ip", "-6", "route", "show", "table", str(table)]).strip()
    ):
        table += 1
    return table


def _add_default_route(
    name: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network, log: Log | None
) -> None:
    """A /0 route as wg-quick does it: the tunnel's own packets carry a fwmark
    (the routing table number) and bypass the tunnel's table; everything
    else is routed into the tunnel by a policy rule, while more specific
    routes of the main table still win (suppress_prefixlength 0)."""
    table = uapi_get(name).fwmark
    if not table:
        table = _free_table()
        if log is not None:
            log(f"[#] (UAPI) fwmark={table}")
        uapi_set(name, [f"fwmark={table}"])
    family = _family_flag(net)
    _run(["ip", family, "route", "add", str(net), "dev", name, "table", str(table)], log)
    _run(["ip", family, "rule", "add", "not", "fwmark", str(table), "table", str(table)], log)
    _run(["ip", family, "rule", "add", "table", "main", "suppress_prefixlength", "0"], log)
    _add_firewall(name, family, table, log)
    if family == "-4":
        _set_src_valid_mark(log)


def _set_src_valid_mark(log: Log | None) -> None:
    # Reverse-path filtering must take the fwmark into account.
    if log is not None:
        log("[#] sysctl -q net.ipv4.conf.all.src_valid_mark=1")
    try:
        Path("/proc/sys/net/ipv4/conf/all/src_valid_mark").write_text("1\n")
    except OSError as exc:
        raise CliError(f"cannot set net.ipv4.conf.all.src_valid_mark: {_oserror(exc)}") from None


def _add_route(
    name: str,
    net: ipaddress.IPv4Network | ipaddress.IPv6Network,
    table: str | None,
    log: Log | None,
) -> None:
    family = _family_flag(net)
    if table == "off":
        return
    if table is not None and table != "auto":
        _run(["ip", family, "route", "add", str(net), "dev", name, "table", table], log)
    elif net.prefixlen == 0:
        _add_default_route(name, net, log)
    elif not _query(["ip", family, "route", "show", "dev", name, "match", str(net)]).strip():
        _run(["ip", family, "route", "add", str(net), "dev", name], log)


def apply_config(name: str, cfg: WgQuickConfig, log: Log | None = _log_stderr) -> None:
    """Configure a running userspace interface ``name`` from ``cfg``: the
    configuration half of ``up`` (everything but hooks and the daemon).

    Sends :func:`to_uapi_set` over UAPI, adds the addresses, sets the MTU
    (``cfg.interface.mtu`` or wg-quick's estimate) and brings the link up,
    applies DNS through resolvconf, and adds the routes for AllowedIPs.
    Commands are printed through ``log`` (None: silent).  Raises CliError.
    """
    iface = cfg.interface
    try:
        lines = to_uapi_set(cfg)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if log is not None:
        log(f"[#] (UAPI) set {len(lines)} lines: the configuration as wg setconf sends it")
    uapi_set(name, lines)
    for addr in iface.addresses:
        _run(["ip", _family_flag(addr), "address", "add", str(addr), "dev", name], log)
    mtu = iface.mtu
    if mtu is None:
        mtu = estimate_mtu([p.endpoint for p in uapi_get(name).peers if p.endpoint])
    _run(["ip", "link", "set", "mtu", str(mtu), "up", "dev", name], log)
    set_dns(name, iface, log)
    for net in routes_of(cfg):
        _add_route(name, net, iface.table, log)


def teardown(
    name: str, cfg: WgQuickConfig, log: Log | None = _log_stderr, *, check: bool = True
) -> None:
    """Undo ``up`` (wg-quick's ``del_if``): DNS, firewall, the policy rules of
    a /0 route, and the interface itself (the daemon exits when it goes)."""
    unset_dns(name, cfg.interface, log)
    _remove_firewall(name, log)
    table = cfg.interface.table
    if table is None or table == "auto":
        fwmark = 0
        default = False
        with contextlib.suppress(CliError):
            state = uapi_get(name)
            fwmark = state.fwmark
            default = any(ip.endswith("/0") for p in state.peers for ip in p.allowed_ips)
        if fwmark and default:
            for family in ("-4", "-6"):
                _delete_rules(family, f"lookup {fwmark}", ["table", str(fwmark)], log)
                _delete_rules(
                    family,
                    "from all lookup main suppress_prefixlength 0",
                    ["table", "main", "suppress_prefixlength", "0"],
                    log,
                )
    _run(["ip", "link", "delete", "dev", name], log, check=check)


def _delete_rules(family: str, needle: str, selector: list[str], log: Log | None) -> None:
    for _ in range(64):  # each pass removes one matching rule; bounded anyway
        if needle not in _query(["ip", family, "rule", "show"]):
            return
        _run(["ip", family, "rule", "delete", *selector], log, check=False)


# ---------------------------------------------------------------------------
# SaveConfig
# ---------------------------------------------------------------------------


def current_config(name: str, cfg: WgQuickConfig) -> WgQuickConfig:
    """What ``SaveConfig`` writes: the device's keys, port, fwmark and peers
    (read over UAPI), the addresses now on the link, the MTU now on the link
    if the file gave one, and DNS, Table, hooks and SaveConfig from ``cfg``."""
    state = uapi_get(name)
    addresses = []
    for line in _query(["ip", "-o", "address", "show", "dev", name]).splitlines():
        m = re.search(r"\binet6? (\S+)", line)
        if m and " scope link" not in line:
            addresses.append(ipaddress.ip_interface(m.group(1)))
    mtu = cfg.interface.mtu
    if mtu is not None:
        m = re.search(r"\bmtu (\d+)", _query(["ip", "link", "show", "dev", name]))
        if m:
            mtu = int(m.group(1))
    old = cfg.interface
    iface = InterfaceConfig(
        private_key=state.private_key,
        listen_port=state.listen_port or None,
        fwmark=state.fwmark or None,
        addresses=addresses,
        dns=list(old.dns),
        mtu=mtu,
        table=old.table,
        pre_up=list(old.pre_up),
        post_up=list(old.post_up),
        pre_down=list(old.pre_down),
        post_down=list(old.post_down),
        save_config=old.save_config,
    )
    peers = [
        PeerConfig(
            public_key=p.public_key,
            preshared_key=p.preshared_key,
            allowed_ips=[ipaddress.ip_interface(a) for a in p.allowed_ips],
            endpoint=p.endpoint,
            persistent_keepalive=p.persistent_keepalive or None,
        )
        for p in state.peers
    ]
    return WgQuickConfig(interface=iface, peers=peers, name=name)


def save_config(name: str, cfg: WgQuickConfig, path: Path, log: Log | None) -> None:
    """Write :func:`current_config` to ``path`` atomically, mode 0600."""
    text = dumps(current_config(name, cfg))
    if log is not None:
        log(f"[#] (save) {path}")
    tmp = path.with_name(path.name + ".tmp")
    old_umask = os.umask(0o077)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CliError(f"could not write the configuration file {path}: {_oserror(exc)}") from None
    finally:
        os.umask(old_umask)


# ---------------------------------------------------------------------------
# up / down / strip
# ---------------------------------------------------------------------------


def _load_for(arg: str) -> tuple[Path, str, WgQuickConfig]:
    path, name = resolve_config_path(arg)
    path = path.resolve()
    with contextlib.suppress(OSError):
        if path.stat().st_mode & path.parent.stat().st_mode & 0o007:
            _stderr(f"Warning: '{path}' is world accessible")
    return path, name, load(path)


def _require_root() -> None:
    if os.geteuid() != 0:
        raise CliError("must be run as root")


def up(arg: str, log: Log | None = _log_stderr) -> None:
    """``wgpy up CONFIG_FILE|INTERFACE`` (see the module docstring)."""
    _require_root()
    _path, name, cfg = _load_for(arg)
    if _link_exists(name):
        raise CliError(f"'{name}' already exists")
    try:
        run_hooks(cfg.interface.pre_up, name, "PreUp", log)
        start_userspace(name, log)
        apply_config(name, cfg, log)
        run_hooks(cfg.interface.post_up, name, "PostUp", log)
    except BaseException:
        # Undo as wg-quick's trap does; the original error is what we report.
        if _link_exists(name):
            with contextlib.suppress(Exception):
                teardown(name, cfg, log, check=False)
        raise


def is_wireguard_interface(name: str) -> bool:
    """A userspace interface (UAPI socket) or a kernel one (link kind)."""
    if _has_uapi_socket(name):
        return True
    return "wireguard" in _query(["ip", "-d", "link", "show", "dev", name])


def down(arg: str, log: Log | None = _log_stderr) -> None:
    """``wgpy down CONFIG_FILE|INTERFACE`` (see the module docstring)."""
    _require_root()
    path, name, cfg = _load_for(arg)
    if not is_wireguard_interface(name) or not _link_exists(name):
        raise CliError(f"'{name}' is not a WireGuard interface")
    run_hooks(cfg.interface.pre_down, name, "PreDown", log)
    if cfg.interface.save_config:
        save_config(name, cfg, path, log)
    teardown(name, cfg, log)
    run_hooks(cfg.interface.post_down, name, "PostDown", log)


def cmd_up(args: argparse.Namespace) -> int:
    up(args.config)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    down(args.config)
    return 0


def cmd_strip(args: argparse.Namespace) -> int:
    _path, _name, cfg = _load_for(args.config)
    sys.stdout.write(strip(cfg))
    return 0


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # Usage errors: one line plus the usage, status 1 (as wg).
        self.print_usage(sys.stderr)
        self.exit(1, f"{self.prog}: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = _Parser(prog=PROG, description="wgpy: a userspace WireGuard in Python.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    p = sub.add_parser("genkey", help="print a new private key (base64)")
    p.set_defaults(func=cmd_genkey)
    p = sub.add_parser("genpsk", help="print a new preshared key (base64)")
    p.set_defaults(func=cmd_genpsk)
    p = sub.add_parser("pubkey", help="read a private key on stdin, print its public key")
    p.set_defaults(func=cmd_pubkey)
    p = sub.add_parser("show", help="show userspace interfaces (through UAPI)")
    p.add_argument("interface", nargs="?", help="INTERFACE, 'all' (default) or 'interfaces'")
    p.set_defaults(func=cmd_show)
    for name, func, text in (
        ("up", cmd_up, "bring an interface up from CONFIG_FILE or /etc/wireguard/NAME.conf"),
        ("down", cmd_down, "take an interface down (as wg-quick down)"),
        ("strip", cmd_strip, "print the configuration without the wg-quick-only keys"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("config", metavar="CONFIG_FILE|INTERFACE")
        p.set_defaults(func=func)
    sub.add_parser("userspace", help="run the userspace daemon: userspace [-f] INTERFACE")
    sub.add_parser("demo", help="run the demonstration (see 'wgpy demo --help')")
    sub.add_parser(
        "conformance", help="test another implementation (see 'wgpy conformance --help')"
    )
    return parser


def _dispatch(argv: list[str]) -> int:
    # userspace/demo/conformance own their whole argument list.
    if argv and argv[0] == "userspace":
        from wgpy import daemon

        return int(daemon.main(argv[1:]))
    if argv and argv[0] == "demo":
        from wgpy import demo

        return int(demo.main(argv[1:]))
    if argv and argv[0] == "conformance":
        from wgpy import conformance

        return int(conformance.main(argv[1:]))
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wgpy`` console script; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(args)
    except SystemExit as exc:  # argparse: --help (0) or a usage error (already printed)
        return exc.code if isinstance(exc.code, int) else 1
    except (CliError, ConfigError) as exc:
        _stderr(f"{PROG}: {exc}")
    except KeyboardInterrupt:
        _stderr(f"{PROG}: interrupted")
        return 130
    except BrokenPipeError:
        # Output closed early (e.g. piped into head): nothing more to say.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        return 1
    except OSError as exc:
        _stderr(f"{PROG}: {exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
    except Exception as exc:  # never a traceback
        _stderr(f"{PROG}: internal error: {type(exc).__name__}: {exc}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
