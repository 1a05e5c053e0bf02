"""The wg-quick port: ``wgpy up``/``down``/``strip`` for Linux.

``up`` follows ``wg-quick(8)`` for Linux, except that the interface is always
created by the userspace daemon (``python -m wgpy.daemon NAME``, or the
command in ``WGPY_USERSPACE_CMD``).  It runs PreUp, starts the daemon,
configures it over UAPI (what ``wg setconf`` would send), adds addresses,
sets the MTU (given, or wg-quick's estimate), brings the link up, sets DNS
through ``resolvconf`` when it is installed, adds a route per AllowedIPs
prefix (for ``/0`` the fwmark and policy-routing rules wg-quick uses, with
its nftables or iptables rules), then runs PostUp.  A failure undoes what was
done.  ``down`` runs PreDown, saves the configuration if ``SaveConfig`` is
true, removes rules and the interface (the daemon exits), then PostDown.
The ``wg``-like commands and the argument parsing are in :mod:`wgpy.cli`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from wgpy.cli import (
    PROG,
    CliError,
    Log,
    _has_uapi_socket,
    _oserror,
    _socket_path,
    _stderr,
    configure_interface,
    read_interface,
)
from wgpy.config import (
    ConfigError,
    InterfaceConfig,
    PeerConfig,
    WgQuickConfig,
    dumps,
    load,
    resolve_config_path,
    routes_of,
    to_uapi_set,
)

__all__ = ["apply_config", "down", "start_userspace", "teardown", "up"]

#: First routing table tried for a /0 route when no FwMark is configured.
DEFAULT_ROUTE_TABLE = 51820
#: Overhead wg-quick subtracts from the path MTU: IPv6 (40) + UDP (8) + WireGuard (32).
MTU_OVERHEAD = 80
#: How long ``up`` waits for the daemon's UAPI socket after the daemon returned.
_SOCKET_WAIT = 10.0


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
    table = read_interface(name).fwmark
    if not table:
        table = _free_table()
        if log is not None:
            log(f"[#] (UAPI) fwmark={table}")
        configure_interface(name, [f"fwmark={table}"])
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
    configure_interface(name, lines)
    for addr in iface.addresses:
        _run(["ip", _family_flag(addr), "address", "add", str(addr), "dev", name], log)
    mtu = iface.mtu
    if mtu is None:
        mtu = estimate_mtu([p.endpoint for p in read_interface(name).peers if p.endpoint])
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
            state = read_interface(name)
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
    state = read_interface(name)
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
