"""wg-quick configuration files (``NAME.conf``): parse, write, and translate.

The format is ``wg(8)``'s INI-like file plus the ``wg-quick(8)`` additions:

* ``[Interface]``: ``PrivateKey``, ``ListenPort``, ``FwMark`` (``wg``) and
  ``Address``, ``DNS``, ``MTU``, ``Table``, ``PreUp``, ``PostUp``, ``PreDown``,
  ``PostDown``, ``SaveConfig`` (``wg-quick``);
* ``[Peer]`` (any number): ``PublicKey``, ``PresharedKey``, ``AllowedIPs``,
  ``Endpoint``, ``PersistentKeepalive``.

As in the reference tools, key names are case-insensitive, ``#`` starts a
comment that runs to the end of the line, blank lines are ignored, and list
keys (``Address``, ``DNS``, ``AllowedIPs`` and the four hooks) may repeat,
each occurrence appending.  A repeated single-valued key overrides the
earlier value, as in ``wg``.  Every problem raises :class:`ConfigError`
naming the file and the line.

``Endpoint`` keeps its text: a host name is resolved only when the
configuration is applied (:func:`resolve_endpoint`, called by
:func:`to_uapi_set`), as ``wg setconf`` does it.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from wgpy.constants import KEY_LEN
from wgpy.keys import decode_key, encode_key

__all__ = [
    "CONFIG_DIR",
    "INTERFACE_NAME_RE",
    "ConfigError",
    "IPInterface",
    "InterfaceConfig",
    "PeerConfig",
    "WgQuickConfig",
    "dumps",
    "format_prefix",
    "load",
    "loads",
    "resolve_config_path",
    "resolve_endpoint",
    "routes_of",
    "split_endpoint",
    "strip",
    "to_uapi_set",
]

#: An address with a prefix length, host bits kept (``10.0.0.1/24``).
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

#: Interface names wg-quick accepts (and the stem of a config file name).
INTERFACE_NAME_RE = re.compile(r"^[a-zA-Z0-9_=+.-]{1,15}$")

#: Where wg-quick looks for ``NAME.conf`` when given a bare interface name.
CONFIG_DIR = Path("/etc/wireguard")


class ConfigError(ValueError):
    """A configuration file (or value) is invalid.

    ``str()`` gives ``"FILE: line N: what is wrong"``; ``filename`` and
    ``line`` are also available as attributes (either may be None).
    """

    def __init__(self, message: str, *, filename: str | None = None, line: int | None = None):
        self.message = message
        self.filename = filename
        self.line = line
        where = []
        if filename is not None:
            where.append(filename)
        if line is not None:
            where.append(f"line {line}")
        super().__init__(": ".join([*where, message]))


@dataclass
class InterfaceConfig:
    """The ``[Interface]`` section.

    ``None`` means "not given".  ``fwmark`` 0 means ``off``.  ``dns`` keeps
    the entries in file order; :attr:`dns_servers` and :attr:`dns_search`
    split them the way wg-quick does.
    """

    private_key: bytes | None = None
    listen_port: int | None = None
    fwmark: int | None = None
    addresses: list[IPInterface] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    mtu: int | None = None
    table: str | None = None
    pre_up: list[str] = field(default_factory=list)
    post_up: list[str] = field(default_factory=list)
    pre_down: list[str] = field(default_factory=list)
    post_down: list[str] = field(default_factory=list)
    save_config: bool = False

    @property
    def dns_servers(self) -> list[str]:
        """DNS entries that are IP addresses (wg-quick's ``DNS`` array)."""
        return [d for d in self.dns if _is_dns_server(d)]

    @property
    def dns_search(self) -> list[str]:
        """DNS entries that are search domains (wg-quick's ``DNS_SEARCH``)."""
        return [d for d in self.dns if not _is_dns_server(d)]


@dataclass
class PeerConfig:
    """One ``[Peer]`` section.

    ``endpoint`` is the text from the file (a host name stays a host name);
    ``persistent_keepalive`` 0 means ``off``; ``line`` is where the section
    starts (for messages; not part of equality).
    """

    public_key: bytes
    preshared_key: bytes | None = None
    allowed_ips: list[IPInterface] = field(default_factory=list)
    endpoint: str | None = None
    persistent_keepalive: int | None = None
    line: int | None = field(default=None, compare=False, repr=False)


@dataclass
class WgQuickConfig:
    """A whole file: the interface, its peers, and the interface name the file
    name implies (``wg0`` for ``wg0.conf``; None when it does not imply one)."""

    interface: InterfaceConfig = field(default_factory=InterfaceConfig)
    peers: list[PeerConfig] = field(default_factory=list)
    name: str | None = field(default=None, compare=False)


# ---------------------------------------------------------------------------
# Value parsers: each returns the value or raises ValueError with a message
# that already quotes the offending text.
# ---------------------------------------------------------------------------

_WG_QUICK_DNS_SERVER = re.compile(r"^[0-9.]+$")


def _is_dns_server(entry: str) -> bool:
    # wg-quick: digits-and-dots or anything with a colon is a server address.
    return bool(_WG_QUICK_DNS_SERVER.match(entry)) or ":" in entry


def _parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # inet_pton semantics: no zone, no leading zeros (ipaddress agrees).
    if "%" in text:
        raise ValueError
    if ":" in text:
        return ipaddress.IPv6Address(text)
    return ipaddress.IPv4Address(text)


def _parse_prefix(text: str) -> IPInterface:
    """``addr[/cidr]`` as wg parses AllowedIPs: the default cidr is the full
    length; host bits are kept (``wg`` only warns about them)."""
    addr_text, sep, cidr_text = text.partition("/")
    addr = _parse_ip(addr_text)
    if sep:
        if not cidr_text.isascii() or not cidr_text.isdigit():
            raise ValueError
        cidr = int(cidr_text)
        if cidr > addr.max_prefixlen:
            raise ValueError
    else:
        cidr = addr.max_prefixlen
    if isinstance(addr, ipaddress.IPv4Address):
        return ipaddress.IPv4Interface((addr, cidr))
    return ipaddress.IPv6Interface((addr, cidr))


def format_prefix(prefix: IPInterface) -> str:
    """``addr/cidr`` with the address as ``inet_ntop`` writes it (what ``wg``
    prints; differs from ``str()`` for IPv4-mapped IPv6 addresses)."""
    family = socket.AF_INET if prefix.version == 4 else socket.AF_INET6
    return f"{socket.inet_ntop(family, prefix.ip.packed)}/{prefix.network.prefixlen}"


def _parse_port(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) > 0xFFFF:
        raise ValueError
    return int(text)


def _parse_fwmark(text: str) -> int:
    # wg: "off", decimal, or 0x-prefixed hex; 32 bits.
    if text.lower() == "off":
        return 0
    if not text.isascii() or not text[:1].isdigit():
        raise ValueError
    base = 16 if len(text) > 2 and text.startswith("0x") else 10
    value = int(text, base)  # ValueError on junk
    if value > 0xFFFFFFFF or "_" in text:
        raise ValueError
    return value


def _parse_keepalive(text: str) -> int:
    if text.lower() == "off":
        return 0
    if not text.isascii() or not text.isdigit() or int(text) > 0xFFFF:
        raise ValueError
    return int(text)


def _parse_bool(text: str) -> bool:
    # wg-quick's read_bool runs under nocasematch.
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise ValueError


def split_endpoint(text: str) -> tuple[str, str]:
    """Split ``host:port`` or ``[v6]:port`` into (host, port) as ``wg`` does.

    Numeric hosts are checked (IPv4 dotted quad, IPv6 with optional
    ``%zone``); other hosts are names, resolved later.  Raises ValueError.
    """
    if text.startswith("["):
        host, sep, port = text[1:].partition("]")
        if not sep or not port.startswith(":") or len(port) == 1:
            raise ValueError(f"invalid Endpoint {text!r}: expected [IPv6]:port")
        port = port[1:]
        if not host:
            raise ValueError(f"invalid Endpoint {text!r}: empty address")
        try:
            ipaddress.IPv6Address(host.partition("%")[0])
        except ValueError:
            raise ValueError(f"invalid Endpoint {text!r}: bad IPv6 address") from None
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not port or not host:
            raise ValueError(f"invalid Endpoint {text!r}: expected host:port")
        if ":" in host:
            # wg accepts an unbracketed IPv6 address before the last colon.
            try:
                ipaddress.IPv6Address(host.partition("%")[0])
            except ValueError:
                raise ValueError(f"invalid Endpoint {text!r}: bad IPv6 address") from None
        elif re.fullmatch(r"[0-9.]+", host):
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                raise ValueError(f"invalid Endpoint {text!r}: bad IPv4 address") from None
    if not port.isascii() or not port.isdigit() or int(port) > 0xFFFF:
        raise ValueError(f"invalid Endpoint {text!r}: the port must be a number 0-65535")
    return host, port


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------

# wg and wg-quick (LC_ALL=C) treat only ASCII whitespace as blanks.
_BLANKS = " \t\n\r\v\f"
_WS = re.compile(r"[ \t\n\r\v\f]+")
_LIST_SPLIT = re.compile(r"[ \t\n\r\v\f,]+")

# Canonical spelling of every key, by lower-case name and section.
_INTERFACE_KEYS = {
    k.lower(): k
    for k in (
        "PrivateKey",
        "ListenPort",
        "FwMark",
        "Address",
        "DNS",
        "MTU",
        "Table",
        "PreUp",
        "PostUp",
        "PreDown",
        "PostDown",
        "SaveConfig",
    )
}
_PEER_KEYS = {
    k.lower(): k
    for k in ("PublicKey", "PresharedKey", "AllowedIPs", "Endpoint", "PersistentKeepalive")
}
_HOOKS = {"preup": "pre_up", "postup": "post_up", "predown": "pre_down", "postdown": "post_down"}


class _Parser:
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.iface = InterfaceConfig()
        self.peers: list[PeerConfig] = []
        self.section: str | None = None
        self.seen_interface = False
        self.peer_key_given: list[bool] = []

    def error(self, lineno: int | None, message: str) -> ConfigError:
        return ConfigError(message, filename=self.filename, line=lineno)

    def feed(self, lineno: int, raw: str) -> None:
        text = raw.split("#", 1)[0].strip(_BLANKS)
        if not text:
            return
        if text.startswith("["):
            self.header(lineno, text)
            return
        key_text, eq, value = text.partition("=")
        key = key_text.strip(_BLANKS)
        if not eq or not key:
            raise self.error(lineno, f"expected 'Key = Value', got {text!r}")
        value = value.strip(_BLANKS)
        lower = key.lower()
        if self.section is None:
            raise self.error(lineno, f"{key!r} is outside any [Interface] or [Peer] section")
        if self.section == "interface":
            if lower not in _INTERFACE_KEYS:
                if lower in _PEER_KEYS:
                    raise self.error(lineno, f"{_PEER_KEYS[lower]} belongs in a [Peer] section")
                raise self.error(lineno, f"unknown key {key!r} in [Interface]")
            self.interface_key(lineno, lower, value)
        else:
            if lower not in _PEER_KEYS:
                if lower in _INTERFACE_KEYS:
                    raise self.error(
                        lineno, f"{_INTERFACE_KEYS[lower]} belongs in the [Interface] section"
                    )
                raise self.error(lineno, f"unknown key {key!r} in [Peer]")
            self.peer_key(lineno, lower, value)

    def header(self, lineno: int, text: str) -> None:
        name = _WS.sub("", text).lower()
        if name == "[interface]":
            if self.seen_interface:
                raise self.error(lineno, "a second [Interface] section (only one is allowed)")
            self.seen_interface = True
            self.section = "interface"
        elif name == "[peer]":
            self.section = "peer"
            # Placeholder key until PublicKey is read; checked at the end.
            self.peers.append(PeerConfig(public_key=bytes(KEY_LEN), line=lineno))
            self.peer_key_given.append(False)
        else:
            raise self.error(lineno, f"unknown section {text!r} (expected [Interface] or [Peer])")

    def key(self, lineno: int, name: str, value: str) -> bytes:
        try:
            return decode_key(_WS.sub("", value))
        except ValueError as exc:
            raise self.error(lineno, f"invalid {name} {value!r}: {exc}") from None

    def interface_key(self, lineno: int, lower: str, value: str) -> None:
        iface = self.iface
        name = _INTERFACE_KEYS[lower]
        compact = _WS.sub("", value)  # wg ignores whitespace inside its own values
        bad = self.error(lineno, f"invalid {name} {value!r}")
        if lower == "privatekey":
            iface.private_key = self.key(lineno, name, value)
        elif lower == "listenport":
            try:
                iface.listen_port = _parse_port(compact)
            except ValueError:
                raise self.error(
                    lineno, f"invalid ListenPort {value!r}: expected a number 0-65535"
                ) from None
        elif lower == "fwmark":
            try:
                iface.fwmark = _parse_fwmark(compact)
            except ValueError:
                raise self.error(
                    lineno, f"invalid FwMark {value!r}: expected off or 0-0xffffffff"
                ) from None
        elif lower == "address":
            for item in _split_list(value):
                try:
                    iface.addresses.append(_parse_prefix(item))
                except ValueError:
                    raise self.error(lineno, f"invalid Address {item!r}") from None
        elif lower == "dns":
            for item in _split_list(value):
                if _is_dns_server(item):
                    try:
                        _parse_ip(item)
                    except ValueError:
                        raise self.error(lineno, f"invalid DNS server {item!r}") from None
                iface.dns.append(item)
        elif lower == "mtu":
            if not compact.isascii() or not compact.isdigit() or not 68 <= int(compact) <= 65535:
                raise self.error(lineno, f"invalid MTU {value!r}: expected a number 68-65535")
            iface.mtu = int(compact)
        elif lower == "table":
            if not value or _WS.search(value):
                raise bad
            iface.table = value
        elif lower in _HOOKS:
            getattr(iface, _HOOKS[lower]).append(value)
        elif lower == "saveconfig":
            try:
                iface.save_config = _parse_bool(value)
            except ValueError:
                raise self.error(
                    lineno, f"invalid SaveConfig {value!r}: neither true nor false"
                ) from None

    def peer_key(self, lineno: int, lower: str, value: str) -> None:
        peer = self.peers[-1]
        name = _PEER_KEYS[lower]
        compact = _WS.sub("", value)
        if lower == "publickey":
            peer.public_key = self.key(lineno, name, value)
            self.peer_key_given[-1] = True
        elif lower == "presharedkey":
            peer.preshared_key = self.key(lineno, name, value)
        elif lower == "allowedips":
            if not compact:
                return  # wg accepts an empty list
            for item in compact.split(","):
                try:
                    peer.allowed_ips.append(_parse_prefix(item))
                except ValueError:
                    raise self.error(lineno, f"invalid AllowedIPs {item!r}") from None
        elif lower == "endpoint":
            if not compact:
                raise self.error(lineno, "invalid Endpoint '': empty")
            try:
                split_endpoint(compact)
            except ValueError as exc:
                raise self.error(lineno, str(exc)) from None
            peer.endpoint = compact
        elif lower == "persistentkeepalive":
            try:
                peer.persistent_keepalive = _parse_keepalive(compact)
            except ValueError:
                raise self.error(
                    lineno, f"invalid PersistentKeepalive {value!r}: expected off or 0-65535"
                ) from None

    def finish(self, name: str | None) -> WgQuickConfig:
        for peer, given in zip(self.peers, self.peer_key_given, strict=True):
            if not given:
                raise self.error(peer.line, "[Peer] section has no PublicKey")
        return WgQuickConfig(interface=self.iface, peers=self.peers, name=name)


def _split_list(value: str) -> list[str]:
    # wg-quick turns commas into spaces and word-splits Address/DNS values.
    return [item for item in _LIST_SPLIT.split(value) if item]


def loads(text: str, filename: str = "<config>", name: str | None = None) -> WgQuickConfig:
    """Parse configuration text; ``filename`` is used in error messages and
    ``name`` becomes :attr:`WgQuickConfig.name`."""
    parser = _Parser(filename)
    # Only "\n" ends a line (as for getline/read); a "\r" before it is a blank.
    for lineno, raw in enumerate(text.split("\n"), start=1):
        if "\x00" in raw:
            raise parser.error(lineno, "NUL character in line")
        parser.feed(lineno, raw)
    return parser.finish(name)


def load(path: str | os.PathLike[str]) -> WgQuickConfig:
    """Read and parse a file.  The interface name is taken from the file name
    (``wg0.conf`` -> ``wg0``) when it is a valid one, else left as None."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", filename=str(p)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError("not valid UTF-8", filename=str(p), line=line) from None
    name = p.name[: -len(".conf")] if p.name.endswith(".conf") else None
    if name is not None and not INTERFACE_NAME_RE.match(name):
        name = None
    return loads(text, str(p), name)


def resolve_config_path(arg: str) -> tuple[Path, str]:
    """Map a ``wg-quick up`` argument to (config path, interface name).

    A bare interface name means ``/etc/wireguard/NAME.conf``; otherwise the
    argument is a path whose file name must be ``NAME.conf`` with a valid
    interface name.  Raises ConfigError (with the reason) otherwise.
    """
    path = CONFIG_DIR / f"{arg}.conf" if INTERFACE_NAME_RE.match(arg) else Path(arg)
    if not path.exists():
        raise ConfigError(f"'{path}' does not exist")
    name = path.name[: -len(".conf")] if path.name.endswith(".conf") else ""
    if not INTERFACE_NAME_RE.match(name):
        raise ConfigError(
            f"'{path}': the config file must be a valid interface name (at most 15 of "
            "a-z A-Z 0-9 _ = + . -), followed by .conf"
        )
    return path, name


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def dumps(cfg: WgQuickConfig) -> str:
    """The configuration as file text; :func:`loads` gives back an equal value."""
    iface = cfg.interface
    out = ["[Interface]"]
    if iface.private_key is not None:
        out.append(f"PrivateKey = {encode_key(iface.private_key)}")
    if iface.listen_port is not None:
        out.append(f"ListenPort = {iface.listen_port}")
    if iface.fwmark is not None:
        out.append(f"FwMark = {f'0x{iface.fwmark:x}' if iface.fwmark else 'off'}")
    if iface.addresses:
        out.append(f"Address = {', '.join(format_prefix(a) for a in iface.addresses)}")
    if iface.dns:
        out.append(f"DNS = {', '.join(iface.dns)}")
    if iface.mtu is not None:
        out.append(f"MTU = {iface.mtu}")
    if iface.table is not None:
        out.append(f"Table = {iface.table}")
    for key, attr in (
        ("PreUp", "pre_up"),
        ("PostUp", "post_up"),
        ("PreDown", "pre_down"),
        ("PostDown", "post_down"),
    ):
        for hook in getattr(iface, attr):
            if "#" in hook or "\n" in hook:
                raise ConfigError(f"{key} {hook!r} cannot be written: it contains '#' or a newline")
            out.append(f"{key} = {hook}")
    if iface.save_config:
        out.append("SaveConfig = true")
    for peer in cfg.peers:
        out.append("")
        out.append("[Peer]")
        out.append(f"PublicKey = {encode_key(peer.public_key)}")
        if peer.preshared_key is not None:
            out.append(f"PresharedKey = {encode_key(peer.preshared_key)}")
        if peer.allowed_ips:
            out.append(f"AllowedIPs = {', '.join(format_prefix(a) for a in peer.allowed_ips)}")
        if peer.endpoint is not None:
            out.append(f"Endpoint = {peer.endpoint}")
        if peer.persistent_keepalive is not None:
            out.append(f"PersistentKeepalive = {peer.persistent_keepalive or 'off'}")
    return "\n".join(out) + "\n"


def strip(cfg: WgQuickConfig) -> str:
    """Like ``wg-quick strip``: the file text without the wg-quick-only keys
    (Address, DNS, MTU, Table, hooks, SaveConfig), ready for ``wg setconf``."""
    bare = dataclasses.replace(
        cfg,
        interface=InterfaceConfig(
            private_key=cfg.interface.private_key,
            listen_port=cfg.interface.listen_port,
            fwmark=cfg.interface.fwmark,
        ),
    )
    return dumps(bare)


# ---------------------------------------------------------------------------
# Applying: endpoint resolution and the UAPI "set" lines
# ---------------------------------------------------------------------------

# getaddrinfo errors that retrying cannot fix (glibc's "permanent failures").
_PERMANENT_GAI_ERRORS = {
    getattr(socket, n)
    for n in ("EAI_NONAME", "EAI_FAIL", "EAI_NODATA", "EAI_SERVICE", "EAI_FAMILY")
    if hasattr(socket, n)
}


def _resolution_retries() -> int:
    # Same knob and default as wg: WG_ENDPOINT_RESOLUTION_RETRIES (15, "infinity").
    text = os.environ.get("WG_ENDPOINT_RESOLUTION_RETRIES")
    if text is None:
        return 15
    if text == "infinity":
        return -1
    if not text.isdigit():
        raise ConfigError(f"unable to parse WG_ENDPOINT_RESOLUTION_RETRIES: {text!r}")
    return int(text)


def resolve_endpoint(text: str, *, sleep: Callable[[float], None] = time.sleep) -> str:
    """Resolve an Endpoint to the numeric ``ip:port`` / ``[v6]:port`` form UAPI
    takes, picking the first ``getaddrinfo`` answer as ``wg`` does.

    Transient failures are retried with wg's back-off (1 s growing by 1.2x,
    at most 20 s) up to ``WG_ENDPOINT_RESOLUTION_RETRIES`` times (default 15);
    permanent ones (no such name) fail at once.  Raises ConfigError.
    """
    try:
        host, port = split_endpoint(text)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    retries = _resolution_retries()
    delay = 1.0
    while True:
        try:
            infos = socket.getaddrinfo(
                host, port, socket.AF_UNSPEC, socket.SOCK_DGRAM, socket.IPPROTO_UDP
            )
            break
        except socket.gaierror as exc:
            if exc.errno in _PERMANENT_GAI_ERRORS or retries == 0:
                raise ConfigError(f"cannot resolve Endpoint {text!r}: {exc.strerror}") from None
            if retries > 0:
                retries -= 1
            sleep(delay)
            delay = min(20.0, delay * 1.2)
    for family, _type, _proto, _canon, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        num_host, num_port = socket.getnameinfo(
            sockaddr, socket.NI_NUMERICHOST | socket.NI_NUMERICSERV | socket.NI_DGRAM
        )
        if family == socket.AF_INET6 and ":" in num_host:
            return f"[{num_host}]:{num_port}"
        return f"{num_host}:{num_port}"
    raise ConfigError(f"cannot resolve Endpoint {text!r}: neither IPv4 nor IPv6 address found")


def to_uapi_set(
    cfg: WgQuickConfig, *, resolve: Callable[[str], str] = resolve_endpoint
) -> list[str]:
    """The ``key=value`` lines ``wg setconf`` sends for this configuration.

    The lines come in wg's order, without the leading ``set=1`` and the
    terminating blank line: ``private_key`` (all zeros when the file has
    none, which clears the key), ``listen_port`` (0 = random), ``fwmark``,
    ``replace_peers=true``, then per peer ``public_key``, ``preshared_key``
    (if given), ``endpoint`` (resolved to numbers by ``resolve``),
    ``persistent_keepalive_interval`` (if given), ``replace_allowed_ips=true``
    and one ``allowed_ip`` per prefix.  Raises ConfigError if an endpoint
    cannot be resolved.
    """
    iface = cfg.interface
    lines = [
        f"private_key={(iface.private_key or bytes(KEY_LEN)).hex()}",
        f"listen_port={iface.listen_port or 0}",
        f"fwmark={iface.fwmark or 0}",
        "replace_peers=true",
    ]
    for peer in cfg.peers:
        lines.append(f"public_key={peer.public_key.hex()}")
        if peer.preshared_key is not None:
            lines.append(f"preshared_key={peer.preshared_key.hex()}")
        if peer.endpoint is not None:
            lines.append(f"endpoint={resolve(peer.endpoint)}")
        if peer.persistent_keepalive is not None:
            lines.append(f"persistent_keepalive_interval={peer.persistent_keepalive}")
        lines.append("replace_allowed_ips=true")
        lines.extend(f"allowed_ip={format_prefix(a)}" for a in peer.allowed_ips)
    return lines


def routes_of(cfg: WgQuickConfig) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The distinct AllowedIPs networks (host bits cleared), most specific
    first, in the order wg-quick adds routes: ``sort -nr -k 2 -t /`` in the C
    locale, so equal lengths fall back to the whole text, in reverse."""
    seen: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, None] = {}
    for peer in cfg.peers:
        for prefix in peer.allowed_ips:
            seen.setdefault(prefix.network, None)

    def key(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, str]:
        family = socket.AF_INET if net.version == 4 else socket.AF_INET6
        return net.prefixlen, socket.inet_ntop(family, net.network_address.packed)

    return sorted(seen, key=key, reverse=True)
